//! The slot pool of `mman::channel` (see `channel/pool.rs`): messages of any mix of sizes
//! arrive once, in order, intact; a slot held by one side is never loaned to the other;
//! peers killed at every step of a pooled message lose no slot and are noticed; garbage in
//! every pool field is `Corrupted` or a defined value, never a panic or a hang.
//!
//! Raw accesses go through a second mapping of the named object (8-byte atomics), as a
//! peer's would. Offsets follow `channel/lanes.rs` and `channel/pool.rs`, for one lane of
//! `CAP` bytes: the ring at 4096 (its first record's header at 4096, the record's two
//! words after it), the pool's header at `4096 + CAP` (rounded up to 4096): the free clock,
//! the event word one line pair (128 bytes) later, then the state word of slot `k` at
//! `(2 + k) * 128`; the slots after the header's page, `SLOT` bytes each.

mod common;
use common::without_panic;

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mman::channel::{Channel, Options};
use mman::shm::SharedMemory;
use mman::ErrorKind;
use proptest::prelude::*;

const CAP: usize = 64 * 1024;
const SLOT: usize = 64 * 1024;
const POOL: usize = 4096 + CAP;

fn unique(tag: &str) -> String {
    format!("pool-{}-{tag}", std::process::id())
}

fn raw(name: &str) -> mman::Mapping {
    SharedMemory::open(name, 0).unwrap().map().unwrap()
}

fn word(map: &mman::Mapping, byte: usize) -> &AtomicU64 {
    map.atomic_u64(byte).unwrap()
}

fn state(k: usize) -> usize {
    POOL + (2 + k) * 128
}

/// A named channel of one lane of `CAP` bytes and `slots` slots of `SLOT` bytes, pooled
/// from 1 KiB.
fn small_pool(name: &str, slots: usize) -> Channel {
    Options::new()
        .capacity(CAP)
        .pool(slots, SLOT)
        .pool_threshold(1024)
        .create(name)
        .unwrap()
}

/// Message `i` of `len` bytes: its index, then a pattern from it.
fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len).map(|j| (j as u64 * 31 + i * 7) as u8).collect();
    for (j, b) in i.to_le_bytes().iter().enumerate().take(len) {
        v[j] = *b;
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Any mix of pool and ring messages (0 to 4 MiB; each sent and received in any of
    /// the ways there are) arrives once, in order, intact.
    #[test]
    fn any_mix_arrives_once_in_order_intact(
        msgs in prop::collection::vec(
            (prop_oneof![0usize..64, 64usize..40_000, 40_000usize..=4 << 20], 0u8..3, 0u8..3),
            1..10,
        ),
    ) {
        let chan = Options::new()
            .capacity(64 * 1024)
            .pool(2, 4 << 20)
            .pool_threshold(8 * 1024)
            .anonymous()
            .unwrap();
        let mut tx = chan.sender().unwrap();
        let mut rx = chan.receiver().unwrap();
        let expect: Vec<(Vec<u8>, u8)> =
            msgs.iter().enumerate().map(|(i, &(len, _, how))| (payload(i as u64, len), how)).collect();
        let sends: Vec<(Vec<u8>, u8)> =
            expect.iter().zip(&msgs).map(|((m, _), &(_, s, _))| (m.clone(), s)).collect();
        let sender = std::thread::spawn(move || {
            for (m, how) in sends {
                match how {
                    0 => tx.send(&m).unwrap(),
                    1 if m.len() <= 4 << 20 => {
                        let mut loan = tx.loan(m.len()).unwrap();
                        loan.write_all(&m).unwrap();
                        loan.send().unwrap();
                    }
                    // SAFETY: this process's own anonymous channel.
                    _ => unsafe { tx.send_in_place(m.len(), |out| out.copy_from_slice(&m)).unwrap() },
                }
            }
        });
        for (i, (m, how)) in expect.iter().enumerate() {
            let got = match how {
                0 => rx.recv().unwrap(),
                1 => rx.recv_borrowed().unwrap().to_vec(),
                // SAFETY: as above.
                _ => unsafe { rx.recv_in_place(|b| b.to_vec()).unwrap() },
            };
            prop_assert!(got == *m, "message {} of {} bytes differs", i, m.len());
        }
        sender.join().unwrap();
        prop_assert_eq!(rx.recv().unwrap_err().kind(), ErrorKind::Disconnected);
    }
}

/// A slot the receiver holds, or one in flight to it, is never loaned: with both slots
/// of a pool of two held, no loan succeeds; each slot given back is loaned next (most
/// recently freed first), and never the one still held.
#[test]
fn a_slot_held_by_the_other_side_is_never_loaned() {
    let chan = Options::new()
        .capacity(CAP)
        .pool(2, SLOT)
        .pool_threshold(1024)
        .anonymous()
        .unwrap();
    let (mut tx, mut rx) = (chan.sender().unwrap(), chan.receiver().unwrap());
    for round in 0..200u64 {
        // Slot a in flight, then held by the receiver; slot b in flight behind it.
        let a = {
            let mut l = tx.try_loan(2000).unwrap().expect("a free slot");
            l.write_at(0, &round.to_le_bytes()).unwrap();
            let s = l.slot();
            l.send().unwrap();
            s
        };
        let b = {
            let l = tx.try_loan(2000).unwrap().expect("the other free slot");
            let s = l.slot();
            assert_ne!(s, a, "round {round}: slot {a} loaned while in flight");
            l.send().unwrap();
            s
        };
        let held = rx.recv_borrowed().unwrap();
        assert!(held.is_pooled());
        let mut first = [0u8; 8];
        held.read_at(0, &mut first);
        assert_eq!(u64::from_le_bytes(first), round);
        // Slot a held by the receiver, b in flight: nothing to loan.
        assert!(
            tx.try_loan(10).unwrap().is_none(),
            "round {round}: a held slot was loaned"
        );
        held.finish().unwrap();
        let again = tx.try_loan(10).unwrap().expect("the slot given back");
        assert_eq!(again.slot(), a, "round {round}: not the slot given back");
        drop(again); // unsent: back to the pool, most recent
        let held = rx.recv_borrowed().unwrap(); // slot b
        let other = tx.try_loan(10).unwrap().expect("slot a is free");
        assert_ne!(
            other.slot(),
            b,
            "round {round}: slot {b} loaned while the receiver holds it"
        );
        drop(other);
        drop(held);
    }
}

/// `send` goes through the pool from the threshold up to a slot; `max_message` says
/// what a sender sends; a message larger than a slot and the ring is refused.
#[test]
fn send_routes_large_messages_through_the_pool() {
    let chan = Options::new()
        .capacity(4096)
        .pool(2, 1 << 20)
        .pool_threshold(4081)
        .anonymous()
        .unwrap();
    assert_eq!(chan.max_message(), 1 << 20);
    let ring_only = Options::new()
        .capacity(4096)
        .pool_threshold(8192)
        .anonymous()
        .unwrap();
    assert_eq!(ring_only.max_message(), 4080, "4081 to 8191 bytes are refused");
    let e = ring_only.sender().unwrap().send(&[0; 4081]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(chan.pool(), (2, 1 << 20));
    let (mut tx, mut rx) = (chan.sender().unwrap(), chan.receiver().unwrap());
    for len in [0, 100, 4080, 4081, 100_000, 1 << 20] {
        let m = payload(len as u64, len);
        tx.send(&m).unwrap();
        let got = rx.recv_borrowed().unwrap();
        assert_eq!(got.is_pooled(), len > 4080, "{len} bytes");
        assert_eq!(got.to_vec(), m);
    }
    let e = tx.send(&vec![0; (1 << 20) + 1]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = tx.loan((1 << 20) + 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let none = Options::new().pool(0, 0).anonymous().unwrap();
    assert_eq!(none.pool(), (0, 0));
    assert_eq!(
        none.sender().unwrap().loan(1).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert!(Options::new().pool(1, 1000).anonymous().is_err());
}

/// A `Loan` dropped unsent gives its slot back; `Read` and `Write` move a cursor.
#[test]
fn loans_read_and_write_by_copy() {
    let chan = Options::new()
        .pool(1, 4096)
        .pool_threshold(1)
        .anonymous()
        .unwrap();
    let (mut tx, mut rx) = (chan.sender().unwrap(), chan.receiver().unwrap());
    drop(tx.loan(100).unwrap());
    let mut l = tx.try_loan(10).unwrap().expect("the slot came back");
    assert_eq!(l.write(b"hello, world").unwrap(), 10);
    assert_eq!(l.write(b"!").unwrap(), 0);
    assert_eq!(l.write_at(8, b"xyz").unwrap_err().kind(), ErrorKind::InvalidInput);
    l.send().unwrap();
    let mut got = rx.recv_borrowed().unwrap();
    let mut s = String::new();
    got.read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello, wor");
    assert_eq!(got.read_at(8, &mut [0; 8]), 2);
    assert_eq!(got.read_at(100, &mut [0; 8]), 0);
}

// ---------------------------------------------------------------------------------------
// Peers killed at every step.

const DEATH: &str = "a_peer_killed_at_every_step_loses_no_slot";

fn env_name() -> String {
    std::env::var("MMAN_TEST_POOL").unwrap()
}

/// A child process, killed and reaped when dropped (a failing test leaves none behind).
struct Kid(std::process::Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run this test binary as `role` on channel `name`; its stdout piped.
fn spawn(role: &str, name: &str) -> Kid {
    Kid(common::rerun(DEATH, role)
        .env("MMAN_TEST_POOL", name)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap())
}

/// The file a child creates when it has reached its step.
fn ready_file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("mman-test-{name}.ready"))
}

/// Wait (up to 20 s) for the child to reach its step.
fn ready(child: &mut Kid, name: &str) {
    let started = Instant::now();
    while !ready_file(name).exists() {
        if let Some(st) = child.0.try_wait().unwrap() {
            panic!("the child ended ({st}) before reaching its step");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the child never reached its step"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    std::fs::remove_file(ready_file(name)).unwrap();
}

fn say_ready_and_wait() -> ! {
    std::fs::write(ready_file(&env_name()), b"").unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Loan every slot of the pool (waiting up to 10 s for each): none was lost.
fn all_slots_come_back(chan: &Channel, slots: usize) -> Duration {
    let started = Instant::now();
    let mut tx = chan.sender().unwrap();
    let mut held = Vec::new();
    for _ in 0..slots {
        // Each loan is a separate borrow of `tx`: record the slot and send nothing.
        let l = tx
            .loan_timeout(10, Duration::from_secs(10))
            .unwrap()
            .expect("a slot lost for good");
        held.push(l.slot());
        std::mem::forget(l); // keep it loaned (the test's sender dies with the channel)
    }
    held.sort();
    held.dedup();
    assert_eq!(held.len(), slots, "a slot was loaned twice");
    started.elapsed()
}

/// SIGKILL of a sender after it loaned a slot, after it filled it, after it sent it, and
/// of a receiver while it holds one: the other side gets the message sent (if it was),
/// then `Disconnected`, within the peer-death bound; every slot can be loaned again.
#[test]
fn a_peer_killed_at_every_step_loses_no_slot() {
    if let Some(role) = common::role() {
        let chan = Channel::open(&env_name()).unwrap();
        if role == "receiver" {
            let mut rx = chan.receiver().unwrap();
            let held = rx.recv_borrowed().unwrap();
            assert!(held.is_pooled());
            say_ready_and_wait();
        }
        let mut tx = chan.sender().unwrap();
        let mut l = tx.loan(SLOT).unwrap();
        if role != "loaned" {
            l.write_all(&payload(1, SLOT)).unwrap();
        }
        if role == "sent" {
            l.send().unwrap();
        } else {
            std::mem::forget(l);
        }
        say_ready_and_wait();
    }
    let mut slowest = Duration::ZERO;
    for role in ["loaned", "filled", "sent", "receiver"] {
        let name = unique(&format!("death-{role}"));
        let chan = small_pool(&name, 2);
        let noticed = if role == "receiver" {
            let mut tx = chan.sender().unwrap();
            let mut child = spawn(role, &name);
            tx.send(&payload(0, SLOT)).unwrap();
            ready(&mut child, &name);
            child.0.kill().unwrap();
            let killed = Instant::now();
            child.0.wait().unwrap();
            // One slot free, one held by the dead receiver: the second loan waits for it
            // and learns the receiver is gone.
            let first = tx.loan(10).unwrap();
            drop(first);
            let e = loop {
                let a = tx.loan_timeout(10, Duration::from_secs(10));
                match a {
                    Ok(Some(l)) => std::mem::forget(l),
                    Ok(None) => panic!("{role}: no Disconnected within 10 s"),
                    Err(e) => break e,
                }
            };
            assert_eq!(e.kind(), ErrorKind::Disconnected, "{role}: {e}");
            let t = killed.elapsed();
            drop(tx);
            // A new receiver: the dead one's slot comes back.
            let _rx = chan.receiver().unwrap();
            // Slots forgotten above were loaned by the sender dropped since: they are gone
            // with it, and come back too.
            all_slots_come_back(&chan, 2);
            t
        } else {
            let mut rx = chan.receiver().unwrap();
            let mut child = spawn(role, &name);
            ready(&mut child, &name);
            child.0.kill().unwrap();
            let killed = Instant::now();
            child.0.wait().unwrap();
            if role == "sent" {
                let got = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
                assert!(got == payload(1, SLOT), "{role}: the message sent differs");
            }
            let e = rx.recv_timeout(Duration::from_secs(10)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Disconnected, "{role}: {e}");
            let t = killed.elapsed();
            let back = all_slots_come_back(&chan, 2);
            eprintln!("{role}: every slot loanable again after {back:?}");
            t
        };
        slowest = slowest.max(noticed);
    }
    // The promise is 100 ms; a loaded CI machine gets slack, a hang does not.
    assert!(slowest < Duration::from_secs(2), "slowest notice {slowest:?}");
    eprintln!("slowest notice of a killed peer: {slowest:?}");
}

// ---------------------------------------------------------------------------------------
// Garbage in every pool field.

const GARBAGE: [u64; 8] = [
    u64::MAX,
    3,                    // no state
    1 | 63 << 2 | 5 << 8, // a sender of a lane the channel does not have
    2 | 9 << 2,           // a receiver state with bits that must be 0
    1 | 7 << 8,           // a sender of lane 0 that is nobody
    2 | 7 << 8,           // a receiver that is nobody
    0x5555_5555_5555_5555,
    0, // free, stamp 0
];

/// Every value in `GARBAGE` in every slot's state word, the free clock and the event word:
/// loans and receives end (a value, `None` or `Corrupted`), without a panic.
#[test]
fn garbage_in_the_pool_words_is_corrupted_or_defined() {
    for (n, &g) in GARBAGE.iter().enumerate() {
        for field in 0..4 {
            let name = unique(&format!("garbage-{n}-{field}"));
            let chan = small_pool(&name, 2);
            let map = raw(&name);
            let (mut tx, mut rx) = (chan.sender().unwrap(), chan.receiver().unwrap());
            tx.send(&payload(0, 5000)).unwrap(); // a pooled message in flight
            let at = match field {
                0 => state(0),
                1 => state(1),
                2 => POOL,       // the free clock
                _ => POOL + 128, // the event word
            };
            word(&map, at).store(g, Ordering::SeqCst);
            let loaned = without_panic("sender", || {
                match tx.loan_timeout(10, Duration::from_millis(200)) {
                    Ok(Some(l)) => l.send().map(|_| true),
                    Ok(None) => Ok(false),
                    Err(e) => Err(e),
                }
            });
            if let Err(e) = &loaned {
                assert_eq!(e.kind(), ErrorKind::Corrupted, "{g:#x} at {at}: {e}");
            }
            for _ in 0..2 {
                let got = without_panic("receiver", || rx.recv_timeout(Duration::from_millis(200)));
                match got {
                    Ok(Some(m)) => assert!(m.len() == 5000 || m.len() == 10, "{g:#x} at {at}"),
                    Ok(None) => {}
                    Err(e) => assert_eq!(e.kind(), ErrorKind::Corrupted, "{g:#x} at {at}: {e}"),
                }
            }
        }
    }
}

/// Garbage in each field of a pool record (the slot's index, its length, the state it
/// names) is `Corrupted` for the receiver, which reads nothing outside the pool; garbage
/// in the pool's configuration word makes the channel refuse to open.
#[test]
fn garbage_in_a_pool_record_is_corrupted() {
    let record = 4096 + 8; // the first record's payload: index | len << 32, then the state
    let cases: [(usize, u64); 6] = [
        (record, 2),                       // a slot the pool does not have
        (record, u32::MAX as u64),         // far outside
        (record, (SLOT as u64 + 1) << 32), // longer than a slot
        (record, u64::MAX),
        (record + 8, 0),          // names a free slot
        (record + 8, 2 | 1 << 8), // names a receiver state
    ];
    for (n, &(at, g)) in cases.iter().enumerate() {
        let name = unique(&format!("record-{n}"));
        let chan = small_pool(&name, 2);
        let map = raw(&name);
        let (mut tx, mut rx) = (chan.sender().unwrap(), chan.receiver().unwrap());
        tx.send(&payload(0, 5000)).unwrap();
        word(&map, at).store(g, Ordering::SeqCst);
        let e = without_panic("receiver", || rx.recv_timeout(Duration::from_millis(500))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupted, "case {n}: {e}");
        let e = without_panic("receiver", || unsafe { rx.recv_in_place(|m| m.len()) });
        assert!(e.is_err() || e.is_ok(), "case {n}");
    }
    // The configuration word (the third parameter, word 4): garbage refuses to open.
    for g in [u64::MAX, 2000, 1 | 1 << 16 | 1 << 40, 1 | 3 << 60] {
        let name = unique("config");
        let chan = small_pool(&name, 2);
        let map = raw(&name);
        word(&map, 4 * 8).store(g, Ordering::SeqCst);
        let e = Channel::open(&name).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupted, "{g:#x}: {e}");
        drop(chan);
    }
}

/// A state word rewritten while the receiver holds its slot (a peer taking the slot from
/// under it) is reported when the slot is given back: `Corrupted`, not silence.
#[test]
fn a_slot_taken_from_the_receiver_is_reported() {
    let name = unique("taken");
    let chan = small_pool(&name, 2);
    let map = raw(&name);
    let (mut tx, mut rx) = (chan.sender().unwrap(), chan.receiver().unwrap());
    tx.send(&payload(0, 5000)).unwrap();
    let held = rx.recv_borrowed().unwrap();
    for k in 0..2 {
        let w = word(&map, state(k));
        if w.load(Ordering::SeqCst) & 3 == 2 {
            w.store(0, Ordering::SeqCst);
        }
    }
    assert_eq!(held.finish().unwrap_err().kind(), ErrorKind::Corrupted);
}

/// A receiver that died between taking a slot (its state names the receiver) and moving
/// past the record leaves the record at its position: the next receiver gives the slot
/// back and moves past the record (the message went with the receiver that took it, as any
/// message a receiver took does), and the messages after it arrive; nothing is `Corrupted`.
#[test]
fn a_receiver_dead_before_moving_past_a_pool_record_loses_no_slot() {
    let name = unique("window");
    let chan = small_pool(&name, 2);
    let map = raw(&name);
    let mut tx = chan.sender().unwrap();
    tx.send(&payload(0, 5000)).unwrap();
    tx.send(&payload(1, 5000)).unwrap();
    // The first message's slot, as a receiver (tag 7, no live process) left it.
    let k = (word(&map, 4096 + 8).load(Ordering::SeqCst) & 0xffff_ffff) as usize;
    word(&map, state(k)).store(2 | 7 << 8, Ordering::SeqCst);
    let mut rx = chan.receiver().unwrap();
    assert!(rx.recv().unwrap() == payload(1, 5000), "the message after it");
    // Both slots are free again (loaned by this sender: a new one could meet the lock of
    // a description a concurrent test's fork holds for a moment).
    let a = tx.try_loan(10).unwrap().expect("a free slot");
    let first = a.slot();
    std::mem::forget(a);
    let b = tx.try_loan(10).unwrap().expect("the slot the dead receiver held");
    assert_ne!(b.slot(), first);
}

/// Bytes of `/dev/shm` the named object takes (its allocated blocks).
fn taken(name: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/dev/shm/mman.{name}"))
        .unwrap()
        .blocks()
        * 512
}

#[test]
fn a_pool_takes_memory_only_for_the_slots_loaned() {
    // The default pool: 4 slots of 1 MiB, past a ring of 64 KiB.
    let name = unique("lazy");
    let chan = Options::new().create(&name).unwrap();
    let (mut tx, mut rx) = (chan.sender().unwrap(), chan.receiver().unwrap());
    let ring = taken(&name);
    assert!(ring < 256 * 1024, "a new channel took {ring} bytes of /dev/shm");
    tx.send(b"small").unwrap();
    assert_eq!(rx.recv().unwrap(), b"small");
    assert_eq!(taken(&name), ring, "a ring message took pool memory");
    // Sent one after the other, large messages keep using the slot freed last: one slot.
    for i in 0..8 {
        tx.send(&payload(i, 1 << 20)).unwrap();
        assert_eq!(rx.recv().unwrap(), payload(i, 1 << 20));
    }
    let one = taken(&name);
    assert!(one >= ring + (1 << 20), "{one} bytes after a loan");
    assert!(
        one < ring + (2 << 20),
        "{one} bytes after loans of one slot at a time"
    );
    // Slots in flight make the sender take others.
    tx.send(&payload(8, 1 << 20)).unwrap();
    tx.send(&payload(9, 1 << 20)).unwrap();
    assert_eq!(rx.recv().unwrap(), payload(8, 1 << 20));
    assert_eq!(rx.recv().unwrap(), payload(9, 1 << 20));
    let two = taken(&name);
    assert!(two >= ring + (2 << 20), "{two} bytes after two slots were loaned");
    // A second sender handle of the same channel backs what it loans too (no-op for slots
    // already backed), and opening the channel by name takes nothing more.
    drop(tx);
    let again = Channel::open(&name).unwrap();
    let mut tx2 = again.sender().unwrap();
    tx2.send(&payload(10, 1 << 20)).unwrap();
    assert_eq!(rx.recv().unwrap(), payload(10, 1 << 20));
    assert_eq!(taken(&name), two);
}
