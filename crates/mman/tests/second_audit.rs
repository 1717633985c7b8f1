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

/// What follows `prefix` on the first line of `out` (a re-run test binary's standard
/// output, where the harness writes too) that holds it; empty at the end of the output.
/// (The pipe stays open: a child writing to a closed one would fail.)
fn line_starting(out: &mut std::process::ChildStdout, prefix: &str) -> String {
    use std::io::BufRead;
    for line in std::io::BufReader::new(out).lines() {
        let line = line.unwrap();
        // The harness may have begun the line ("test NAME ... ").
        if let Some(at) = line.find(prefix) {
            return line[at + prefix.len()..].to_string();
        }
    }
    String::new()
}

// ---------------------------------------------------------------------------------------
// 5. `wait_for` answered Ready without looking at the deadline: a peer that keeps changing
//    a watched word to values that still mean "nothing" kept recv_timeout retrying past it,
//    until a look happened to find the word unchanged. Which look that is, the race
//    decides: the unit test `a_deadline_past_ends_a_wait_whatever_the_words_say` (in
//    `channel/tests.rs`) is the one that fails without the fix; these two keep the
//    end-to-end behaviour.

/// A subscriber's slot whose sequence word counts down from 0 (2^64 - 1, 2^64 - 2...: all
/// "not published yet" for message 0, each a change): recv_timeout(100 ms) times out. The
/// bound, 2 s, is not a measurement: only that the wait ends while the peer goes on.
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
    let name = unique("huge");
    let chan = Options::new().capacity(4096).create(&name).unwrap();
    let mut child = common::rerun(HUGE, "receiver")
        .env("MMAN_AUDIT_NAME", &name)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    line_starting(child.stdout.as_mut().unwrap(), "attached");
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

// ---------------------------------------------------------------------------------------
// 2. The table of descriptors closed in a forked child had 1,024 entries: past them, a
//    child created by fork kept the parent's endpoint locks, and a peer killed afterwards
//    was never reported gone while that child lived.

const MANY: &str = "a_forked_child_does_not_keep_the_1100th_endpoint_alive";

/// A peer holds 1,100 channel handles, attaches a sender to ours, forks a child that only
/// sleeps, and is killed: the receiver is told the sender is gone, although the child
/// (which inherited the sender's descriptors) lives on.
#[test]
fn a_forked_child_does_not_keep_the_1100th_endpoint_alive() {
    if common::is("peer") {
        // 1,100 handles hold 2,200 descriptors: raise the soft limit if it is lower.
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit read and write the struct we own.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            if lim.rlim_cur < 4096 && lim.rlim_max >= 4096 {
                lim.rlim_cur = 4096;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
        let handles: Vec<_> = (0..1100)
            .map(|_| mman::channel::Channel::anonymous(4096).unwrap())
            .collect();
        let chan = mman::channel::Channel::open(&std::env::var("MMAN_AUDIT_NAME").unwrap()).unwrap();
        let mut tx = chan.sender().unwrap();
        tx.send(b"attached").unwrap();
        // SAFETY: the child only sleeps and exits (async-signal-safe calls).
        let child = unsafe { libc::fork() };
        if child == 0 {
            let ts = libc::timespec {
                tv_sec: 30,
                tv_nsec: 0,
            };
            // SAFETY: nanosleep and _exit are async-signal-safe.
            unsafe {
                libc::nanosleep(&ts, std::ptr::null_mut());
                libc::_exit(0);
            }
        }
        println!("forked {child}");
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let _ = &handles;
        }
    }
    if common::role().is_some() {
        return;
    }
    let name = unique("many");
    let chan = Options::new().capacity(4096).create(&name).unwrap();
    let mut rx = chan.receiver().unwrap();
    let mut peer = common::rerun(MANY, "peer")
        .env("MMAN_AUDIT_NAME", &name)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let line = line_starting(peer.stdout.as_mut().unwrap(), "forked ");
    let grandchild: i32 = line.trim().parse().unwrap_or_else(|_| {
        let _ = peer.kill();
        panic!("the peer did not fork: {line:?}")
    });
    assert_eq!(rx.recv().unwrap(), b"attached");
    peer.kill().unwrap();
    peer.wait().unwrap();
    let r = rx.recv_timeout(Duration::from_secs(5));
    // SAFETY: kill(2) of the sleeping child this test's peer forked (reparented to init or
    // a subreaper, still ours to end).
    unsafe { libc::kill(grandchild, libc::SIGKILL) };
    match r {
        Err(e) => assert_eq!(e.kind(), ErrorKind::Disconnected, "{e}"),
        Ok(m) => panic!("the killed sender was not reported gone (its forked child lives): {m:?}"),
    }
}

const WINDOW: &str = "forks_racing_attaches_leave_no_lock_in_a_child";

/// One thread attaches and drops senders without pause while another forks children that
/// only sleep: a fork that came between opening a lock's descriptor and registering it (or
/// between unregistering and closing it) left the child holding the lock, so the lane
/// stayed "occupied" by a sender long gone while the child slept.
#[test]
fn forks_racing_attaches_leave_no_lock_in_a_child() {
    if common::is("forker") {
        let chan = Options::new().capacity(4096).anonymous().unwrap();
        let stop = AtomicBool::new(false);
        let mut children = Vec::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    // Refused for a moment after a fork: the child holds the copies of the
                    // descriptors until its fork handler has closed them.
                    drop(chan.sender());
                }
            });
            for _ in 0..300 {
                // SAFETY: the child only sleeps and exits (async-signal-safe calls).
                let child = unsafe { libc::fork() };
                if child == 0 {
                    let ts = libc::timespec {
                        tv_sec: 3,
                        tv_nsec: 0,
                    };
                    // SAFETY: nanosleep and _exit are async-signal-safe.
                    unsafe {
                        libc::nanosleep(&ts, std::ptr::null_mut());
                        libc::_exit(0);
                    }
                }
                children.push(child);
                std::thread::sleep(Duration::from_micros(200));
            }
            stop.store(true, Ordering::Relaxed);
        });
        // Every sender was dropped; the children sleep on (3 s), each past its fork handler
        // within moments of its fork.
        let t = Instant::now();
        let attached = loop {
            match chan.sender() {
                Ok(_) => break Ok(()),
                Err(e) if t.elapsed() > Duration::from_secs(1) => break Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        for c in children {
            // SAFETY: kill(2) and waitpid(2) of this process's own children.
            unsafe {
                libc::kill(c, libc::SIGKILL);
                libc::waitpid(c, std::ptr::null_mut(), 0);
            }
        }
        if let Err(e) = attached {
            panic!("a forked child kept a dropped sender's lock: {e}");
        }
        return;
    }
    if common::role().is_some() {
        return;
    }
    let status = common::rerun(WINDOW, "forker").status().unwrap();
    assert!(
        status.success(),
        "the forker ended with {status:?} (see its output)"
    );
}
