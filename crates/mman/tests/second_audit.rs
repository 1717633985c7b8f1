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

// ---------------------------------------------------------------------------------------
// 1. The copying receives copied a sealed hand-off whole, whatever its size: a sparse
//    1 TiB memfd killed the receiver (SIGABRT, the allocation failed).

const HUGE: &str = "a_sparse_terabyte_sealed_hand_off_is_refused_and_the_next_message_arrives";

/// A peer sends a sealed memfd of 1 TiB (sparse: it costs the peer nothing), then a plain
/// message. The receiver, in a process of its own (so that an abort is seen as one), gets
/// an error for the first and the second intact; a limit raised with `max_sealed` lets a
/// sealed hand-off through `recv`.
#[test]
fn a_sparse_terabyte_sealed_hand_off_is_refused_and_the_next_message_arrives() {
    if common::is("receiver") {
        let name = std::env::var("MMAN_AUDIT_NAME").unwrap();
        let chan = Options::new().max_sealed(8192).open(&name).unwrap();
        let mut rx = chan.receiver().unwrap();
        // Attached: the sender may start.
        println!("attached");
        let e = rx.recv().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceLimit, "{e}");
        assert!(e.to_string().contains("1099511627776 bytes"), "{e}");
        assert_eq!(rx.recv().unwrap(), b"next");
        // Within the limit: copied.
        assert_eq!(&rx.recv().unwrap()[..5], b"small");
        // Every copying receive refuses it, and the channel goes on.
        let e = rx.recv_timeout(Duration::from_secs(10)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceLimit, "{e}");
        let mut buf = Vec::new();
        let e = rx.recv_into(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceLimit, "{e}");
        // The sealed view maps it without copying.
        match rx.recv_message().unwrap() {
            mman::channel::Message::Sealed(view) => assert_eq!(view.len(), 1 << 40),
            other => panic!("not a sealed view: {other:?}"),
        }
        assert_eq!(rx.recv().unwrap(), b"last");
        return;
    }
    if common::role().is_some() {
        return;
    }
    use std::io::BufRead;
    let name = unique("huge");
    let chan = Options::new().capacity(4096).create(&name).unwrap();
    let mut child = common::rerun(HUGE, "receiver")
        .env("MMAN_AUDIT_NAME", &name)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut tx = chan.sender().unwrap();
    let huge = || {
        // Sparse: made empty, then given its size (Memfd::create allocates the pages).
        let fd = mman::shm::Memfd::create("huge", 0).unwrap();
        fd.set_len(1 << 40).unwrap();
        fd
    };
    tx.send_sealed(huge()).unwrap();
    tx.send(b"next").unwrap();
    let small = mman::shm::Memfd::create("small", 8192).unwrap();
    small.map().unwrap().write_at(0, b"small").unwrap();
    tx.send_sealed(small).unwrap();
    tx.send_sealed(huge()).unwrap();
    tx.send_sealed(huge()).unwrap();
    tx.send_sealed(huge()).unwrap();
    tx.send(b"last").unwrap();
    let flushed = tx.flush();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the receiver of a 1 TiB sealed hand-off ended with {status:?} (see its output above)"
    );
    flushed.unwrap();
}
