//! In-process checks of the lanes' record paths: the fast paths (a record lying whole
//! before the end of the ring), the in-place ones, and the general ones (records wrapping
//! around it, batches, waits for room) must agree, message for message. Across processes: `tests/channel.rs`.

use proptest::prelude::*;

use super::Options;

/// One step of a test: what the sender or the receiver does.
#[derive(Clone, Debug)]
enum Step {
    Send(usize),
    SendInPlace(usize),
    TrySend(usize),
    Batch(Vec<usize>),
    Recv,
    RecvInPlace,
    TryRecv,
    RecvBatch(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..200usize).prop_map(Step::Send),
        (0..200usize).prop_map(Step::SendInPlace),
        (0..200usize).prop_map(Step::TrySend),
        proptest::collection::vec(0..100usize, 1..6).prop_map(Step::Batch),
        Just(Step::Recv),
        Just(Step::RecvInPlace),
        Just(Step::TryRecv),
        (1..5usize).prop_map(Step::RecvBatch),
    ]
}

/// The `i`th message of a test: its length, and bytes that tell it from every other.
fn message(i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (i as u8).wrapping_mul(31).wrapping_add(k as u8))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Messages of 0 to 199 bytes through a 512-byte ring, in any mix of operations: every
    /// message sent arrives once, in order, intact; a blocking send or receive that could
    /// only wait forever is not made.
    #[test]
    fn every_path_delivers_in_order(steps in proptest::collection::vec(step(), 1..300)) {
        let chan = Options::new().capacity(512).anonymous().unwrap();
        let (mut tx, mut rx) = (chan.sender().unwrap(), chan.receiver().unwrap());
        let mut sent: std::collections::VecDeque<Vec<u8>> = Default::default();
        let (mut n, mut buf) = (0u64, Vec::new());
        // Whether a message of `len` bytes surely has room: the records in the ring, the
        // zero word ahead, and up to a quarter ring the receiver took but has not
        // published yet (it publishes lazily; a blocking send that found no room would
        // wait for a receiver that, here, never comes).
        let room = |sent: &std::collections::VecDeque<Vec<u8>>, len: usize| {
            let used: usize = sent.iter().map(|m| 8 + m.len().next_multiple_of(8)).sum();
            used + 8 + len.next_multiple_of(8) + 8 + 128 <= 512
        };
        for s in steps {
            match s {
                Step::Send(len) if room(&sent, len) => {
                    let m = message(n, len);
                    tx.send(&m).unwrap();
                    sent.push_back(m);
                    n += 1;
                }
                Step::SendInPlace(len) if room(&sent, len) => {
                    let m = message(n, len);
                    // SAFETY: no other process can reach this anonymous channel.
                    unsafe { tx.send_in_place(len, |b| b.copy_from_slice(&m)) }.unwrap();
                    sent.push_back(m);
                    n += 1;
                }
                Step::TrySend(len) => {
                    let m = message(n, len);
                    if tx.try_send(&m).unwrap() {
                        sent.push_back(m);
                        n += 1;
                    } else {
                        prop_assert!(!room(&sent, len), "try_send refused with room");
                    }
                    // (A try_send may also succeed where `room` is unsure.)
                }
                Step::Batch(lens) => {
                    let mut all = sent.clone();
                    let msgs: Vec<Vec<u8>> = lens
                        .iter()
                        .enumerate()
                        .map(|(k, &len)| message(n + k as u64, len))
                        .take_while(|m| {
                            let fits = room(&all, m.len());
                            all.push_back(m.clone());
                            fits
                        })
                        .collect();
                    prop_assert_eq!(tx.send_batch(&msgs).unwrap(), msgs.len());
                    n += msgs.len() as u64;
                    sent.extend(msgs);
                }
                Step::Recv if !sent.is_empty() => {
                    rx.recv_into(&mut buf).unwrap();
                    prop_assert_eq!(&buf, &sent.pop_front().unwrap());
                }
                Step::RecvInPlace if !sent.is_empty() => {
                    // SAFETY: as above.
                    let got = unsafe { rx.recv_in_place(|m| m.to_vec()) }.unwrap();
                    prop_assert_eq!(&got, &sent.pop_front().unwrap());
                }
                Step::TryRecv => match rx.try_recv().unwrap() {
                    Some(m) => prop_assert_eq!(&m, &sent.pop_front().expect("a message was sent")),
                    None => prop_assert!(sent.is_empty(), "try_recv missed a message"),
                },
                Step::RecvBatch(max) if !sent.is_empty() => {
                    let mut got = Vec::new();
                    let k = rx.recv_batch(max, |m| got.push(m.to_vec())).unwrap();
                    prop_assert_eq!(k, got.len());
                    for m in got {
                        prop_assert_eq!(&m, &sent.pop_front().expect("a message was sent"));
                    }
                }
                _ => {}
            }
        }
        while let Some(m) = sent.pop_front() {
            prop_assert_eq!(rx.try_recv().unwrap(), Some(m));
        }
        prop_assert_eq!(rx.try_recv().unwrap(), None);
    }
}

/// A closure of `recv_in_place` that panics leaves the message for the next receive (as
/// the docs say), whatever path gives it: in place, from a copy (a record wrapping around
/// the end of the ring), or a sealed hand-off.
#[test]
fn a_panicking_recv_in_place_keeps_the_message() {
    let chan = Options::new().capacity(128).anonymous().unwrap();
    let (mut tx, mut rx) = (chan.sender().unwrap(), chan.receiver().unwrap());
    let panics = |rx: &mut super::Receiver| {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: no other process can reach this anonymous channel.
            unsafe { rx.recv_in_place(|_| -> () { panic!("the closure panics") }) }
        }));
        assert!(r.is_err(), "the closure's panic goes through");
    };
    // In place (position 0).
    tx.send(&[1; 40]).unwrap();
    panics(&mut rx);
    assert_eq!(rx.try_recv().unwrap(), Some(vec![1; 40]));
    tx.send(&[2; 40]).unwrap();
    rx.recv().unwrap();
    // Position 96: a 40-byte record (48 bytes) wraps around the end of the 128-byte ring.
    tx.send(&[3; 40]).unwrap();
    panics(&mut rx);
    assert_eq!(rx.try_recv().unwrap(), Some(vec![3; 40]));
    // A sealed hand-off.
    let memfd = crate::shm::Memfd::create("in-place", 4096).unwrap();
    memfd.map().unwrap().write_at(0, b"sealed").unwrap();
    tx.send_sealed(memfd).unwrap();
    panics(&mut rx);
    match rx.recv_message().unwrap() {
        super::Message::Sealed(m) => assert_eq!(&m[..6], b"sealed"),
        other => panic!("not the sealed hand-off: {other:?}"),
    }
    assert_eq!(rx.try_recv().unwrap(), None);
}

/// Serde values through a channel: they arrive equal; a message that is not the JSON of
/// the type asked for is an error and is consumed (the next value follows).
#[cfg(feature = "serde")]
#[test]
fn serde_values_round_trip_and_garbage_is_an_error() {
    use std::collections::BTreeMap;
    let chan = Options::new().capacity(4096).anonymous().unwrap();
    let (mut tx, mut rx) = (chan.sender().unwrap(), chan.receiver().unwrap());
    let value: BTreeMap<String, Vec<Option<i64>>> =
        [("a".to_string(), vec![Some(-1), None]), ("b".to_string(), vec![])].into();
    tx.send_serde(&value).unwrap();
    assert_eq!(
        rx.recv_serde::<BTreeMap<String, Vec<Option<i64>>>>().unwrap(),
        value
    );
    tx.send(b"{not json").unwrap();
    tx.send_serde(&42u8).unwrap();
    let e = rx.recv_serde::<u8>().unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{e}");
    assert_eq!(rx.recv_serde::<u8>().unwrap(), 42);
    // A map with non-string keys has no JSON form: refused before anything is sent.
    let bad: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
    assert_eq!(
        tx.send_serde(&bad).unwrap_err().kind(),
        crate::ErrorKind::InvalidInput
    );
    assert_eq!(rx.try_recv().unwrap(), None);
}

/// Garbage in the CPU hints that notifiers leave in the event words (bits 48 to 62, the
/// waiting policy's only field in shared memory; see `sync::wait`) costs speed at most: a
/// timed receive still ends at its deadline, and messages still flow both ways, while a
/// peer rewrites the hints (and the rest of the high half) as fast as it can.
#[test]
fn garbage_in_the_cpu_hints_never_hangs_a_waiter() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use super::lanes::RX_EVENT;

    let chan = Options::new().capacity(4096).anonymous().unwrap();
    let (mut tx, mut rx) = (chan.sender().unwrap(), chan.receiver().unwrap());
    let back = Options::new().capacity(4096).anonymous().unwrap();
    let (mut tx2, mut rx2) = (back.sender().unwrap(), back.receiver().unwrap());
    let events = [
        chan.region.word(RX_EVENT),
        chan.region.word(chan.layout.lane(0).event),
        back.region.word(RX_EVENT),
        back.region.word(back.layout.lane(0).event),
    ];
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                for e in events {
                    // The high half only: the sequence and the sleeping flag are what a
                    // waiter sleeps on, and garbage there is covered by the channel tests.
                    e.fetch_xor(x & !0x1_ffff_ffff, Ordering::Relaxed);
                }
            }
        });
        let t = Instant::now();
        assert!(rx.recv_timeout(Duration::from_millis(100)).unwrap().is_none());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        s.spawn(move || {
            for _ in 0..5000 {
                let m = rx.recv().unwrap();
                tx2.send(&m).unwrap();
            }
        });
        for i in 0..5000u32 {
            tx.send(&i.to_le_bytes()).unwrap();
            let m = rx2
                .recv_timeout(Duration::from_secs(10))
                .unwrap()
                .expect("an answer within 10 s");
            assert_eq!(m, i.to_le_bytes());
        }
        stop.store(true, Ordering::Relaxed);
    });
}

/// `wait_for` answered `Ready` whenever the watched words had changed, without looking at
/// the deadline: a caller that looked again, found nothing, and called again with the same
/// deadline (every retry loop of the channels) spun for as long as a peer kept changing a
/// word. Past the deadline, the answer is `TimedOut`, whatever `ready()` says.
#[test]
fn a_deadline_past_ends_a_wait_whatever_the_words_say() {
    use super::wait::{wait_for, Waited, Waiting};
    use std::sync::atomic::AtomicU64;
    use std::time::{Duration, Instant};
    let event = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + Duration::from_millis(20);
    let mut rounds = 0u64;
    // The callers' loop: Ready, nothing found, wait again.
    while let Waited::Ready = wait_for(
        &event,
        Waiting {
            how: crate::sync::Wait::Block,
            spin: Duration::ZERO,
        },
        Some(deadline),
        || true,
        |_| Ok(()),
    )
    .unwrap()
    {
        rounds += 1;
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still answered Ready {:?} after a 20 ms deadline ({rounds} rounds)",
            start.elapsed()
        );
    }
    assert!(Instant::now() >= deadline, "timed out before the deadline");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// The parameters and record headers a peer writes, as the receiving side parses them:
    /// any words give a layout whose sizes fit, or an error; any header gives a length the
    /// ring can hold, or nothing. Never a panic.
    #[test]
    fn configuration_words_and_headers_of_any_value_never_panic(
        lanes in prop_oneof![any::<u64>(), 0..70u64],
        cap in prop_oneof![any::<u64>(), (0..45u32).prop_map(|k| 1u64 << k)],
        h in any::<u64>(),
        pos in any::<u64>(),
        params in any::<[u64; 3]>(),
    ) {
        if let Ok(layout) = super::lanes::Layout::check(lanes, cap) {
            prop_assert!(layout.len() >= layout.cap);
            if let Some((len, _)) = layout.parse(h, pos) {
                prop_assert!(len <= layout.max_message());
            }
            let lane = layout.lane(layout.lanes - 1);
            prop_assert!(layout.header_at(&lane, pos) * 8 < layout.len());
        }
        let _ = super::broadcast::check_shape(params);
    }
}

/// The timeout forms of the sealed hand-off and of `recv_message` (for callers that wait
/// in slices, such as the Python binding): a try when nothing is there, the memfd handed
/// back when the ring has no room, the message whole otherwise.
#[test]
fn sealed_send_and_message_receive_with_timeouts() {
    use std::time::Duration;
    let chan = Options::new().capacity(4096).anonymous().unwrap();
    let (mut tx, mut rx) = (chan.sender().unwrap(), chan.receiver().unwrap());
    assert!(rx.recv_message_timeout(Duration::ZERO).unwrap().is_none());
    assert!(rx
        .recv_message_timeout(Duration::from_millis(20))
        .unwrap()
        .is_none());
    let memfd = crate::shm::Memfd::create("timeouts", 4096).unwrap();
    memfd.map().unwrap().write_at(0, b"sealed").unwrap();
    assert!(tx.send_sealed_timeout(memfd, Duration::ZERO).unwrap().is_none());
    match rx.recv_message_timeout(Duration::from_secs(5)).unwrap().unwrap() {
        super::Message::Sealed(m) => assert_eq!(&m[..6], b"sealed"),
        other => panic!("not the sealed hand-off: {other:?}"),
    }
    // A full ring: the memfd comes back unsent, and goes once there is room.
    while tx.try_send(&[7; 100]).unwrap() {}
    while tx.try_send(&[]).unwrap() {}
    let memfd = crate::shm::Memfd::create("timeouts", 4096).unwrap();
    let memfd = tx
        .send_sealed_timeout(memfd, Duration::from_millis(20))
        .unwrap()
        .expect("no room");
    while rx.try_recv().unwrap().is_some() {}
    assert!(tx.send_sealed_timeout(memfd, Duration::ZERO).unwrap().is_none());
    match rx.recv_message_timeout(Duration::ZERO).unwrap().unwrap() {
        super::Message::Sealed(m) => assert_eq!(m.len(), 4096),
        other => panic!("not the sealed hand-off: {other:?}"),
    }
}
