//! A hostile review of `mman::channel`, kept as regression tests: each test is a defect the
//! review found (stamps that wrapped to 0, overflow panics on garbage positions, a
//! subscriber spinning on garbage, Disconnected with a message pending, spins that
//! outlasted timeouts, names removed under live handles, open racing create, a send that
//! reported success without room, sealed records naming another user's process, a
//! waited-for subscriber missing messages, async waits in a forked child, forged owner
//! words), and asserts the behaviour that replaced it. Longer than 600 lines on purpose:
//! the findings stay together as the review's record, one test each.
//!
//! Raw accesses to a region go through a second mapping of the named object (8-byte atomics,
//! the crate's one scheme), as a peer process would make them. Word offsets follow
//! `channel/lanes.rs` and `channel/broadcast.rs`:
//! * lanes: lane `i`'s head word at word `(3 + 3i) * 16`, its owner at `+1`, its tail at
//!   `+16`; the rings start at `((3 + 3 * lanes) * 128)` rounded up to 4096, `cap` bytes each.
//! * broadcast: HEAD at word 18; slots start at `((4 + subs) * 128)` rounded up to 4096,
//!   each `16 + size` (rounded to 8) bytes, the sequence word first.

mod common;
use common::without_panic;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mman::channel::broadcast::{self, Broadcast};
use mman::channel::{Channel, Message, Options};
use mman::shm::SharedMemory;
use mman::ErrorKind;

const OCCUPIED: u64 = 1 << 63;

fn unique(tag: &str) -> String {
    format!("audit-{}-{tag}", std::process::id())
}

fn object_exists(name: &str) -> bool {
    std::path::Path::new(&format!("/dev/shm/mman.{name}")).exists()
}

/// A second, raw mapping of the named object, as a peer has.
fn raw(name: &str) -> mman::Mapping {
    SharedMemory::open(name, 0).unwrap().map().unwrap()
}

fn word(map: &mman::Mapping, index: usize) -> &AtomicU64 {
    map.atomic_u64(index * 8).unwrap()
}

fn lane_head(i: usize) -> usize {
    (3 + 3 * i) * 16
}
fn lane_owner(i: usize) -> usize {
    lane_head(i) + 1
}
fn lane_tail(i: usize) -> usize {
    lane_head(i) + 16
}
fn ring_at(lanes: usize, cap: usize, i: usize) -> usize {
    ((3 + 3 * lanes) * 128).next_multiple_of(4096) + i * cap
}

/// The PID of a process that existed and is gone (reaped).
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

// ---------------------------------------------------------------------------------------
// 1. The stamp is 0 in every lap L with L + 1 ≡ 0 (mod 2^28): a header can then be 0.
//
// A lane of `cap` bytes gets there after (2^28 - 1) * cap bytes: 16 GiB for a 64-byte ring,
// 1 TiB for 4 KiB, 16 TiB for the default 64 KiB. The positions are set here to the start of
// the lap before (the state such a channel is in), then only the API is used.

const CAP: usize = 64;
const LAP0: u64 = ((1u64 << 28) - 2) * CAP as u64; // stamp 2^28 - 1
const LAP1: u64 = ((1u64 << 28) - 1) * CAP as u64; // stamp 0

/// A named one-lane channel of 64 bytes whose positions stand at `LAP0`, with a receiver
/// attached, and a sender that has brought both to `LAP1` (through the API).
fn channel_at_lap_2_pow_28(tag: &str) -> (String, Channel, mman::channel::Sender, mman::channel::Receiver) {
    let name = unique(tag);
    let chan = Options::new().capacity(CAP).create(&name).unwrap();
    let map = raw(&name);
    word(&map, lane_head(0)).store(LAP0, Ordering::SeqCst);
    word(&map, lane_tail(0)).store(LAP0, Ordering::SeqCst);
    let mut tx = chan.sender().unwrap();
    let mut rx = chan.receiver().unwrap();
    tx.send(&[1; 48]).unwrap(); // 56 bytes: LAP0 .. LAP0 + 56
    assert_eq!(rx.recv().unwrap(), [1; 48]);
    tx.send(b"").unwrap(); // 8 bytes: up to LAP1
    assert_eq!(rx.recv().unwrap(), b"");
    (name, chan, tx, rx)
}

/// An empty message written in such a lap has the header word 0 (length 0, kind 0, stamp
/// 0): the receiver never sees it, nor anything after it; the lane is dead for good.
#[test]
fn an_empty_message_in_lap_2_pow_28_arrives() {
    let (_name, _chan, mut tx, mut rx) = channel_at_lap_2_pow_28("emptylap");
    tx.send(b"").unwrap();
    tx.send(b"after").unwrap();
    let got = rx.recv_timeout(Duration::from_millis(300)).unwrap();
    assert_eq!(
        got,
        Some(Vec::new()),
        "the empty message (and {:?} after it) never arrive: the receiver waits on a header of 0",
        "after"
    );
}

/// A sender attaching while the lane's head is in such a lap (a restarted producer, a
/// sender taking over a dead one's lane) takes every zero word for an empty record and
/// skips a whole ring: its head ends a ring ahead of the tail, the empty ring looks full,
/// and nothing it sends reaches the receiver.
#[test]
fn a_sender_attaching_in_lap_2_pow_28_is_heard() {
    let (_name, chan, tx, mut rx) = channel_at_lap_2_pow_28("attachlap");
    drop(tx); // head word = LAP1, the ring is empty
    let mut tx2 = chan.sender().unwrap();
    let shown = format!("{tx2:?}");
    let sent = tx2.try_send(b"x").unwrap();
    let got = rx.recv_timeout(Duration::from_millis(300)).unwrap();
    assert_eq!(
        got,
        Some(b"x".to_vec()),
        "the new sender attached as {shown} (the tail is {LAP1}); try_send returned {sent}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Positions read from the region are used in unchecked u64 arithmetic: a peer's
//    garbage panics the process in builds with overflow checks (the dev profile).

/// Sender: tail = 2^64 - 8 and head = 8 pass the attach check (head - tail wraps to 16,
/// within a ring); `self.head - self.tail` in `put` then overflows.
#[test]
fn garbage_positions_fail_the_sender_without_a_panic() {
    let name = unique("ovf-tx");
    let chan = Channel::create(&name, 4096).unwrap();
    let map = raw(&name);
    word(&map, lane_tail(0)).store(u64::MAX - 7, Ordering::SeqCst);
    word(&map, lane_head(0)).store(8, Ordering::SeqCst);
    let mut tx = chan.sender().unwrap();
    let _ = without_panic("sender", || tx.send(b"x"));
}

/// Receiver: tail = 2^64 - 8 and, at that position, a header the stamp check accepts
/// (length 1, kind 0, stamp 0): `l.tail + 8` in `read_record` overflows.
#[test]
fn garbage_positions_fail_the_receiver_without_a_panic() {
    let name = unique("ovf-rx");
    let chan = Channel::create(&name, 4096).unwrap();
    let map = raw(&name);
    let tail = u64::MAX - 7;
    word(&map, lane_tail(0)).store(tail, Ordering::SeqCst);
    let mut rx = chan.receiver().unwrap();
    let at = ring_at(1, 4096, 0) + (tail as usize & 4095);
    word(&map, at / 8).store(1, Ordering::SeqCst);
    let _ = without_panic("receiver", || rx.try_recv());
}

// ---------------------------------------------------------------------------------------
// 3. A subscriber loops (about 2^61 times) over slots whose sequence words are garbage
//    "ahead" of it while HEAD does not show it was overtaken: try_recv never returns.

const SUBHANG: &str = "garbage_sequence_words_fail_a_subscriber";

#[test]
fn garbage_sequence_words_fail_a_subscriber() {
    if common::is("subscriber") {
        let bus = Broadcast::open(&std::env::var("MMAN_AUDIT_NAME").unwrap()).unwrap();
        let mut sub = bus.subscriber().unwrap();
        let r = sub.try_recv();
        eprintln!("try_recv returned {r:?}");
        return;
    }
    if common::role().is_some() {
        return;
    }
    let name = unique("subhang");
    let bus = broadcast::Options::new()
        .slots(2)
        .message_size(8)
        .subscribers(1)
        .create(&name)
        .unwrap();
    let map = raw(&name);
    let slots_at = ((4 + 1) * 128usize).next_multiple_of(4096);
    // Written once; the writer may go away. HEAD stays 0 (nothing published).
    for s in 0..2 {
        word(&map, (slots_at + s * 24) / 8).store(1 << 62, Ordering::SeqCst);
    }
    let mut child = common::rerun(SUBHANG, "subscriber")
        .env("MMAN_AUDIT_NAME", &name)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let finished = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if started.elapsed() > Duration::from_secs(5) {
            child.kill().unwrap();
            child.wait().unwrap();
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(bus);
    assert!(
        finished,
        "Subscriber::try_recv spun for 5 s over garbage sequence words (killed)"
    );
}

// ---------------------------------------------------------------------------------------
// 4. `senders_present` decides "every sender is gone" after the lanes were seen empty,
//    without looking at the lanes again: a sender that sends and leaves in between makes
//    recv() report Disconnected while its message is in the lane.
//
// Lanes 0..63 belong to senders whose processes died (their owner words hold a reaped
// PID: the state SIGKILLed senders leave); lane 63 to a live sender. When the receiver,
// after a 50 ms slice, looks at /proc for each dead owner, the live sender (which notices
// lane 0 being released) sends one message and leaves.

#[test]
fn no_disconnected_while_a_message_is_pending() {
    for round in 0..10 {
        let name = unique(&format!("pending{round}"));
        let chan = Options::new()
            .senders(64)
            .capacity(64)
            .spin(Duration::ZERO)
            .create(&name)
            .unwrap();
        let map = Arc::new(raw(&name));
        let placeholders: Vec<_> = (0..63).map(|_| chan.sender().unwrap()).collect();
        let mut last = chan.sender().unwrap(); // lane 63
        let dead = OCCUPIED | dead_pid() as u64;
        for i in 0..63 {
            word(&map, lane_owner(i)).store(dead, Ordering::SeqCst);
        }
        drop(placeholders); // their release finds another word there and does nothing
        let mut rx = chan.receiver().unwrap();
        let m2 = Arc::clone(&map);
        let t = std::thread::spawn(move || {
            let started = Instant::now();
            while word(&m2, lane_owner(0)).load(Ordering::SeqCst) != 0 {
                if started.elapsed() > Duration::from_secs(5) {
                    return;
                }
                std::hint::spin_loop();
            }
            last.send(b"late").unwrap();
            drop(last);
        });
        let first = rx.recv();
        t.join().unwrap();
        match first {
            Ok(m) => assert_eq!(m, b"late"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Disconnected, "{e}");
                let after = rx.try_recv();
                assert!(
                    !matches!(after, Ok(Some(_))),
                    "round {round}: recv() said Disconnected ({e}), then try_recv() returned {after:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 5. The spin phase ignores the deadline (and the peers): with a spin budget of 2 s,
//    recv_timeout(50 ms) takes 2 s. (Options::spin documents no upper bound.)

#[test]
fn timeouts_bound_the_spin_budget() {
    let chan = Options::new().spin(Duration::from_secs(2)).anonymous().unwrap();
    let _tx = chan.sender().unwrap();
    let mut rx = chan.receiver().unwrap();
    let t = Instant::now();
    assert_eq!(rx.recv_timeout(Duration::from_millis(50)).unwrap(), None);
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "recv_timeout(50 ms) took {took:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 6. Dropping a handle that has no endpoint unlinks the name while another live handle
//    (here: the creator's) still exists; nobody can open the channel any more.

#[test]
fn dropping_an_opened_handle_keeps_the_creators_channel() {
    let name = unique("handles");
    let creator = Channel::create(&name, 4096).unwrap();
    let peek = Channel::open(&name).unwrap();
    assert_eq!(peek.capacity(), 4096);
    drop(peek);
    let exists = object_exists(&name);
    let reopen = Channel::open(&name).map(|_| ()).map_err(|e| e.to_string());
    drop(creator);
    assert!(
        exists,
        "the name was removed while its creator's handle lives (then open: {reopen:?})"
    );
}

// ---------------------------------------------------------------------------------------
// 7. Opening a channel while its creator is still making it: the object exists with 0
//    bytes until fallocate, and open fails with InvalidInput ("smaller than the 4096
//    needed", hint "recreate it larger") instead of being given the moment `adopt` gives
//    a region whose READY word is not set yet.

#[test]
fn open_racing_create_waits_for_the_size() {
    let mut kinds = Vec::new();
    for round in 0..5 {
        let name = unique(&format!("race{round}"));
        let n2 = name.clone();
        let maker = std::thread::spawn(move || Options::new().capacity(16 << 20).create(&n2).unwrap());
        let started = Instant::now();
        let r = loop {
            match Channel::open(&name) {
                Err(e) if e.kind() == ErrorKind::NotFound && started.elapsed() < Duration::from_secs(5) => {
                    std::hint::spin_loop()
                }
                r => break r,
            }
        };
        let chan = maker.join().unwrap();
        if let Err(e) = &r {
            kinds.push(format!("{:?}: {e}", e.kind()));
        }
        drop(r);
        drop(chan);
    }
    assert!(kinds.is_empty(), "open during create failed: {kinds:#?}");
}

// ---------------------------------------------------------------------------------------
// 8. A blocking send() that returns Ok(()) without sending: make_room's wait ends when a
//    (garbage) tail passes its test, the refresh that follows reads another value and
//    reports "no room", and put's Ok(false) is dropped by send() (and counted as sent by
//    send_batch).

#[test]
fn a_blocking_send_reports_success_only_when_sent() {
    let name = unique("falsesend");
    let chan = Options::new().capacity(64).create(&name).unwrap();
    let map = raw(&name);
    let mut tx = chan.sender().unwrap();
    tx.send(&[1; 48]).unwrap(); // the ring is full; no receiver yet (so none is "gone")
    let stop = AtomicBool::new(false);
    let tail = word(&map, lane_tail(0));
    let head = word(&map, lane_head(0));
    let (mut lies, mut errors) = (0u32, 0u32);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                tail.store(1 << 40, Ordering::Relaxed);
                tail.store(0, Ordering::Relaxed);
            }
        });
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) && lies == 0 {
            let before = head.load(Ordering::SeqCst);
            match tx.send(&[2; 48]) {
                // Nothing can be sent: the real tail never moves.
                Ok(()) => {
                    if head.load(Ordering::SeqCst) == before {
                        lies += 1;
                    }
                }
                Err(_) => errors += 1,
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    word(&map, lane_tail(0)).store(0, Ordering::SeqCst);
    assert_eq!(
        lies, 0,
        "send() returned Ok(()) {lies} time(s) with the head unchanged (and {errors} errors)"
    );
}

// ---------------------------------------------------------------------------------------
// 9. The sealed hand-off's "the sender must be the lane's owner" check compares the
//    record's PID with an owner word the same peer can write: a record makes the receiver
//    open a descriptor of any process it may inspect, one not attached to the channel.

#[test]
fn a_sealed_record_cannot_open_an_unrelated_process() {
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    let secret = b"a frame of an unrelated process";
    let memfd = mman::shm::Memfd::create("unrelated", 4096).unwrap();
    memfd.map().unwrap().write_at(0, secret).unwrap();
    memfd.add_seals(mman::shm::Seals::FROZEN).unwrap();
    let meta = std::fs::File::from(memfd.as_fd().try_clone_to_owned().unwrap())
        .metadata()
        .unwrap();
    // The unrelated process holds the memfd as its descriptor 0.
    let mut victim = std::process::Command::new("sleep")
        .arg("30")
        .stdin(Stdio::from(OwnedFd::from(memfd)))
        .spawn()
        .unwrap();
    let vpid = victim.id() as u64;

    let name = unique("deputy");
    let chan = Channel::create(&name, 4096).unwrap();
    let mut rx = chan.receiver().unwrap();
    let map = raw(&name);
    // The peer names the victim as the lane's owner, and writes a sealed record.
    word(&map, lane_owner(0)).store(OCCUPIED | vpid, Ordering::SeqCst);
    let data = ring_at(1, 4096, 0) / 8;
    for (k, w) in [vpid, meta.dev(), meta.ino(), meta.size()].iter().enumerate() {
        word(&map, data + 1 + k).store(*w, Ordering::SeqCst);
    }
    // Length 32, kind 1 (sealed), the stamp of the first lap (bit 63).
    word(&map, data).store(32 | 1 << 32 | 1 << 63, Ordering::SeqCst);
    let got = rx.recv_message();
    let _ = victim.kill();
    let _ = victim.wait();
    if let Ok(Message::Sealed(view)) = &got {
        panic!(
            "the receiver opened /proc/{vpid}/fd/0 of a process not attached to the channel: {:?}",
            String::from_utf8_lossy(&view[..secret.len()])
        );
    }
}

// ---------------------------------------------------------------------------------------
// 10. A waited-for subscriber can miss messages it joined before: `subscribe` reads HEAD,
//     then stores its cursor and the WAIT_FOR_ME flag; a publisher that recomputes its
//     floor in between does not see the subscriber and overwrites the message at its
//     cursor (and from then on ignores it: its cursor is "more than a ring behind").
//
// The subscriber's thread is stalled at random instants (a signal whose handler sleeps
// 200 µs), as preemption does; the child process keeps the handler away from other tests.
// Found at e97e2ce; fixed since by 0809fdb (the JOINS count): this test passes at cfc410c
// and stays as a regression test.

const MISSED: &str = "a_waited_for_subscriber_misses_nothing";

extern "C" fn stall(_: libc::c_int) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 200_000,
    };
    // SAFETY: nanosleep is async-signal-safe; `ts` lives for the call.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

#[test]
fn a_waited_for_subscriber_misses_nothing() {
    if common::is("child") {
        // SAFETY: installs a handler that only sleeps; SIGUSR1 is not used otherwise here.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = stall as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        }
        let bus = broadcast::Options::new()
            .slots(2)
            .message_size(8)
            .subscribers(2)
            .anonymous()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut publisher = bus.publisher().unwrap();
        let pstop = Arc::clone(&stop);
        let pt = std::thread::spawn(move || {
            let mut n = 0u64;
            while !pstop.load(Ordering::Relaxed) {
                n = publisher.publish_value(&n).unwrap() + 1;
            }
        });
        // SAFETY: this thread's own handle; the kicker is joined before the thread ends.
        let me = unsafe { libc::pthread_self() } as usize;
        let kstop = Arc::new(AtomicBool::new(false));
        let ks = Arc::clone(&kstop);
        let kicker = std::thread::spawn(move || {
            let mut x = 0x9e3779b97f4a7c15u64;
            while !ks.load(Ordering::Relaxed) {
                // SAFETY: the target thread outlives this loop (joined below).
                unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGUSR1) };
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                std::thread::sleep(Duration::from_micros(20 + x % 200));
            }
        });
        let started = Instant::now();
        let mut hit = None;
        let mut rounds = 0u64;
        while started.elapsed() < Duration::from_secs(10) {
            let mut sub = bus.subscriber_waited_for().unwrap();
            let start = sub.next_seq();
            let d = sub.recv().unwrap();
            rounds += 1;
            if d.missed != 0 || d.seq != start {
                hit = Some((start, d.seq, d.missed));
                break;
            }
        }
        kstop.store(true, Ordering::Relaxed);
        kicker.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        pt.join().unwrap();
        if let Some((start, seq, missed)) = hit {
            panic!(
                "round {rounds}: a waited-for subscriber joined at {start} got message {seq} first, having missed {missed}"
            );
        }
        eprintln!("{rounds} rounds, no miss");
        return;
    }
    if common::role().is_some() {
        return;
    }
    let out = common::rerun(MISSED, "child").output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let why = text
        .lines()
        .find(|l| l.contains("waited-for subscriber joined") || l.contains("rounds, no miss"))
        .unwrap_or("")
        .to_string();
    assert!(out.status.success(), "{why}");
}

// ---------------------------------------------------------------------------------------
// 11. (feature "async") The reactor thread is started once per process (a OnceLock), but
//     a child created by fork inherits the OnceLock and not the thread: in the child every
//     future that returns Pending is registered with a reactor that does not exist, and is
//     never woken again (not by a message, nor by the 50 ms liveness slice).

#[cfg(feature = "async")]
const FORKED: &str = "async_waits_in_a_forked_child_are_woken";

#[cfg(feature = "async")]
#[test]
fn async_waits_in_a_forked_child_are_woken() {
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }
    if common::is("forker") {
        // Start the reactor: one async receive that has to wait.
        let chan0 = Channel::anonymous(4096).unwrap();
        let mut rx0 = chan0.receiver().unwrap();
        let mut tx0 = chan0.sender().unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            tx0.send(b"start").unwrap();
            tx0
        });
        assert_eq!(runtime().block_on(rx0.recv_async()).unwrap(), b"start");
        drop(t.join().unwrap());
        // Keep the channel across fork, attach each end on its side (the documented way).
        let chan = Channel::anonymous(4096).unwrap();
        // SAFETY: the child only makes a runtime, attaches a receiver, awaits, and _exits.
        match unsafe { libc::fork() } {
            0 => {
                let mut rx = chan.receiver().unwrap();
                let started = Instant::now();
                let r = runtime()
                    .block_on(async { tokio::time::timeout(Duration::from_secs(2), rx.recv_async()).await });
                // (tokio's Timeout polls the inner future once more when the time is up.)
                let code = match r {
                    Ok(Ok(m)) if m == b"hello" && started.elapsed() < Duration::from_secs(1) => 0,
                    Ok(Ok(_)) => 3, // taken only when the timeout re-polled it: never woken
                    Ok(Err(_)) => 2,
                    Err(_) => 4,
                };
                // SAFETY: end the child without the parent's exit handlers.
                unsafe { libc::_exit(code) }
            }
            pid => {
                assert!(pid > 0);
                let mut tx = chan.sender().unwrap();
                std::thread::sleep(Duration::from_millis(200));
                tx.send(b"hello").unwrap();
                let mut status = 0;
                // SAFETY: our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                let code = libc::WEXITSTATUS(status);
                assert_eq!(
                    code, 0,
                    "the forked child's recv_async (message sent 200 ms in) ended with code {code} (3: taken only at the 2 s timeout: never woken)"
                );
            }
        }
        return;
    }
    if common::role().is_some() {
        return;
    }
    let out = common::rerun(FORKED, "forker").output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let why = text
        .lines()
        .find(|l| l.contains("forked child"))
        .unwrap_or("")
        .to_string();
    assert!(out.status.success(), "{why}");
}

// ---------------------------------------------------------------------------------------
// 12. Liveness rests on owner words a peer can forge: an owner word naming a process that
//     lives for ever (PID 1; token 0 means "PID alone") keeps a sender blocked on a full
//     ring "waiting for the receiver" after the peer that wrote it is gone, and it is never
//     told Disconnected, though no receiver process exists.

#[test]
fn a_forged_owner_word_does_not_outlive_its_writer() {
    let name = unique("forged");
    let chan = Options::new().capacity(64).create(&name).unwrap();
    let mut tx = chan.sender().unwrap();
    tx.send(&[1; 48]).unwrap(); // full
    {
        // The peer: writes the word and goes away.
        let map = raw(&name);
        word(&map, 16).store(OCCUPIED | 1, Ordering::SeqCst); // RX_OWNER
        word(&map, 18).store(1, Ordering::SeqCst); // EVER_RECEIVER
    }
    let r = tx.send_timeout(b"x", Duration::from_millis(500));
    // The forged word also keeps the name alive for ever (Guarded::drop sees a live
    // owner): clear it so this test leaves nothing behind.
    word(&raw(&name), 16).store(0, Ordering::SeqCst);
    drop(tx);
    drop(chan);
    assert!(!object_exists(&name));
    assert!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::Disconnected),
        "no receiver process exists, yet send waits for one: {r:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Fast paths (put_now / take_now): positions a peer wrote that are not multiples of 8 reach
// `Region::write_record` and `Region::word_at`, which assert alignment: a panic.

/// Sender: head = 4 (tail 0) passes the attach check; `put_now` writes a record at byte 4
/// of the ring and `write_record`'s alignment assert fires.
#[test]
fn a_misaligned_head_fails_the_sender_without_a_panic() {
    let name = unique("mis-tx");
    let chan = Channel::create(&name, 4096).unwrap();
    let map = raw(&name);
    word(&map, lane_head(0)).store(4, Ordering::SeqCst);
    let got = without_panic("sender", || chan.sender()?.try_send(b"x"));
    assert_eq!(got.map_err(|e| e.kind()), Err(ErrorKind::Corrupted));
}

/// Receiver: tail = 4, and a non-zero word at the start of the ring (so a lane looks
/// ready): `take_now` loads the header with `word_at(ring + 4)`, whose alignment assert
/// fires.
#[test]
fn a_misaligned_tail_fails_the_receiver_without_a_panic() {
    let name = unique("mis-rx");
    let chan = Channel::create(&name, 4096).unwrap();
    let map = raw(&name);
    word(&map, lane_tail(0)).store(4, Ordering::SeqCst);
    word(&map, ring_at(1, 4096, 0) / 8).store(1 | 1 << 63, Ordering::SeqCst);
    let got = without_panic("receiver", || chan.receiver()?.try_recv());
    assert_eq!(got.map_err(|e| e.kind()), Err(ErrorKind::Corrupted));
}

// ---------------------------------------------------------------------------------------
// Re-attachment: a sender killed after writing a record's header and before storing its
// head leaves a record the receiver takes; the receiver then publishes a tail *ahead* of
// the head word, and every later sender's attach saw "head more than a ring ahead of tail"
// (the head minus the tail wraps): the lane, and so the channel, refused senders for good.

/// The dead sender's state is made by hand (a record at position 0, head word left at 0),
/// the rest through the API.
#[test]
fn a_sender_attaches_after_a_dead_senders_record_was_taken() {
    let name = unique("reattach");
    let chan = Channel::create(&name, 4096).unwrap();
    let map = raw(&name);
    let ring = ring_at(1, 4096, 0) / 8;
    word(&map, ring + 1).store(u64::from_le_bytes(*b"orphan\0\0"), Ordering::SeqCst);
    word(&map, ring).store(6 | 1 << 63, Ordering::SeqCst); // length 6, kind 0, first lap
    let mut rx = chan.receiver().unwrap();
    assert_eq!(rx.try_recv().unwrap(), Some(b"orphan".to_vec()));
    assert_eq!(word(&map, lane_tail(0)).load(Ordering::SeqCst), 16);
    let mut tx = chan.sender().expect("a sender attaches to the lane");
    tx.send(b"next").unwrap();
    assert_eq!(rx.try_recv().unwrap(), Some(b"next".to_vec()));
}

// ---------------------------------------------------------------------------------------
// In place (`send_in_place`): the lanes doc says a record lying whole before the end of the
// ring has its padding zeroed (its last word written whole); one written in place kept the
// bytes that were there.

/// A 3-byte message written in place over old bytes (0xff) at the start of the ring: the
/// word holding it must read "abc" and five zeros, as a copying `send` leaves it.
#[test]
fn a_record_written_in_place_has_its_padding_zeroed() {
    let name = unique("in-place-pad");
    let chan = Channel::create(&name, 4096).unwrap();
    let map = raw(&name);
    let ring = ring_at(1, 4096, 0) / 8;
    word(&map, ring + 1).store(u64::MAX, Ordering::SeqCst);
    let mut tx = chan.sender().unwrap();
    // SAFETY: no other process can reach the channel (a name only this test knows).
    unsafe { tx.send_in_place(3, |m| m.copy_from_slice(b"abc")) }.unwrap();
    assert_eq!(
        word(&map, ring + 1).load(Ordering::SeqCst).to_le_bytes(),
        *b"abc\0\0\0\0\0"
    );
    let mut rx = chan.receiver().unwrap();
    assert_eq!(rx.try_recv().unwrap(), Some(b"abc".to_vec()));
}
