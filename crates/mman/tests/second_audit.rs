//! The second hostile review of the library (issue 24, part A), kept as regression tests:
//! waits that outlived their deadline while a peer kept changing a watched word, sealed
//! hand-offs of any size copied whole, liveness that a forked child kept alive past 1,024
//! endpoints. (A lock holder that execs: `sync_recovery.rs`.)
//!
//! Raw accesses to a region go through a second mapping of the named object, as in
//! `channel_audit.rs` (whose module documentation gives the word offsets).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mman::channel::broadcast;
use mman::channel::Options;
use mman::shm::SharedMemory;
use mman::ErrorKind;

fn unique(tag: &str) -> String {
    format!("audit2-{}-{tag}", std::process::id())
}

fn raw(name: &str) -> mman::Mapping {
    SharedMemory::open(name, 0).unwrap().map().unwrap()
}

fn word(map: &mman::Mapping, index: usize) -> &AtomicU64 {
    map.atomic_u64(index * 8).unwrap()
}

/// Run `wait` while another thread keeps changing `w` with `next` (for at most 10 s); how
/// long `wait` took.
fn while_changing<R>(
    w: &AtomicU64,
    next: impl Fn(u64) -> u64 + Sync,
    wait: impl FnOnce() -> R,
) -> (R, Duration) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let t = Instant::now();
            while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(10) {
                for _ in 0..1000 {
                    w.store(next(w.load(Ordering::Relaxed)), Ordering::SeqCst);
                }
            }
        });
        let t = Instant::now();
        let r = wait();
        let took = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        (r, took)
    })
}

// ---------------------------------------------------------------------------------------
// 5. `wait_for` answered Ready without looking at the deadline: a peer that keeps changing
//    a watched word to values that still mean "nothing" kept recv_timeout spinning past it
//    (for as long as the peer went on).

/// A subscriber's slot whose sequence word counts down from 0 (2^64 - 1, 2^64 - 2...: all
/// "not published yet" for message 0, each a change): recv_timeout(100 ms) times out. The bound, 2 s, is not a
/// measurement: before the fix it returned only when the peer stopped changing the word, or a little past the deadline.
#[test]
fn a_changing_slot_word_does_not_outlive_the_subscribers_deadline() {
    let name = unique("flipslot");
    let bus = broadcast::Options::new()
        .slots(4)
        .message_size(8)
        .subscribers(1)
        .create(&name)
        .unwrap();
    let _publisher = bus.publisher().unwrap();
    let mut sub = bus.subscriber().unwrap();
    let map = raw(&name);
    let slots_at = ((4 + 1) * 128usize).next_multiple_of(4096);
    let (r, took) = while_changing(
        word(&map, slots_at / 8),
        |v| v.wrapping_sub(1),
        || sub.recv_timeout(Duration::from_millis(100)),
    );
    assert!(r.unwrap().is_none(), "nothing was published");
    assert!(
        took < Duration::from_secs(2),
        "recv_timeout(100 ms) returned after {took:?}, when the peer stopped"
    );
}

/// The receiver's watched header flips between 0 and garbage: recv_timeout(100 ms) ends
/// (timed out, or with the garbage reported) instead of spinning while the peer goes on.
#[test]
fn a_changing_header_does_not_outlive_the_receivers_deadline() {
    let name = unique("fliphead");
    let chan = Options::new().capacity(4096).create(&name).unwrap();
    let _tx = chan.sender().unwrap();
    let mut rx = chan.receiver().unwrap();
    let map = raw(&name);
    let ring = ((3 + 3) * 128usize).next_multiple_of(4096);
    let (r, took) = while_changing(
        word(&map, ring / 8),
        |v| if v == 0 { 0xdead_beef_0000_0001 } else { 0 },
        || rx.recv_timeout(Duration::from_millis(100)),
    );
    match r {
        Ok(None) => {}
        Err(e) if e.kind() == ErrorKind::Corrupted => {}
        other => panic!("recv_timeout over a changing header: {other:?}"),
    }
    assert!(
        took < Duration::from_secs(2),
        "recv_timeout(100 ms) returned after {took:?}, when the peer stopped"
    );
}
