//! Process-shared locks when things go wrong, in one process: owners that die or panic
//! while holding a lock, initialisers that panic or name impossible processes, signals that
//! keep interrupting a wait, and timeouts of every length. (Across real processes:
//! `sync.rs`.)

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mman::sync::{Condvar, Mutex, PosixSemaphore};

mod common;

/// Every timeout is accepted, however long: `Duration::MAX` and other durations past what
/// an `Instant` can hold wait (until the lock is free, or a notification comes), and zero
/// does not wait at all. None may panic.
#[test]
fn timeouts_of_any_length_wait_and_never_panic() {
    let m = common::shared_page();
    let mx = Mutex::<u64>::open(&m, 0, || 0).unwrap();
    let cv = Condvar::open(&m, 64).unwrap();
    let huge = [
        Duration::MAX,
        Duration::from_secs(u64::MAX / 2),
        Duration::from_secs(1 << 40),
    ];
    for t in huge {
        assert!(
            mx.lock_timeout(t).unwrap().is_some(),
            "{t:?}: free, so taken at once"
        );
    }
    // Held by another thread for a moment: a huge timeout waits for it.
    let (got, held) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let g = mx.lock().unwrap();
            got.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            drop(g);
        });
        held.recv().unwrap();
        assert!(
            mx.lock_timeout(Duration::ZERO).unwrap().is_none(),
            "held by a live thread"
        );
        assert!(mx.lock_timeout(Duration::MAX).unwrap().is_some());
    });
    // A condition variable wait of Duration::MAX ends with the notification.
    std::thread::scope(|s| {
        let g = mx.lock().unwrap();
        s.spawn(|| {
            let mut g = mx.lock().unwrap();
            *g = 1;
            cv.notify_all();
        });
        let mut g = g;
        let t0 = Instant::now();
        while *g != 1 {
            assert!(t0.elapsed() < Duration::from_secs(10), "never notified");
            g = cv.wait_timeout(g, Duration::MAX).unwrap().0;
        }
    });
    let (_g, timed_out) = cv.wait_timeout(mx.lock().unwrap(), Duration::ZERO).unwrap();
    assert!(timed_out);
    // glibc's semaphores too.
    // SAFETY: fresh memory of this test's own, used only through sem_* calls.
    let sem = unsafe { PosixSemaphore::init_in(&m, 128, 1) }.unwrap();
    assert!(sem.wait_timeout(Duration::MAX).unwrap());
    assert!(!sem.wait_timeout(Duration::ZERO).unwrap());
}

/// A thread that locked the mutex and ended without unlocking: the lock word names a TID
/// that no longer runs.
fn abandon(mx: &Mutex<u64>, value: u64) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut g = mx.lock().unwrap();
            *g = value;
            g.write_back();
            std::mem::forget(g);
        });
    });
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// An owner that died is noticed even by a waiter whose sleeps keep being cut short: a
/// process with a signal handler and a steady stream of signals (a profiler's SIGPROF, a
/// timer) has every futex wait end early with EINTR, and a waiter that checked the owner
/// only after a sleep ran its full course never checked it, and waited for ever.
#[test]
fn a_dead_owner_is_noticed_while_signals_keep_interrupting_the_wait() {
    let m = common::shared_page();
    let mx = Mutex::<u64>::open(&m, 0, || 0).unwrap();
    abandon(mx, 5);
    // SAFETY: a handler that does nothing, for a signal this test alone sends.
    let old = unsafe { libc::signal(libc::SIGURG, ignore_signal as *const () as libc::sighandler_t) };
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let done = &done;
        s.spawn(move || {
            while !done.load(Ordering::SeqCst) {
                // SAFETY: the locking thread lives until `done` is set (the scope joins).
                unsafe { libc::pthread_kill(me, libc::SIGURG) };
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let t0 = Instant::now();
        let g = mx.lock_timeout(Duration::from_secs(3)).unwrap();
        done.store(true, Ordering::SeqCst);
        let mut g = g.expect("the dead owner was never noticed");
        assert!(g.owner_died());
        assert_eq!(*g, 5);
        assert!(t0.elapsed() < Duration::from_secs(1), "took {:?}", t0.elapsed());
        g.make_consistent().unwrap();
    });
    // SAFETY: the disposition found before.
    unsafe { libc::signal(libc::SIGURG, old) };
    // lock_timeout(0) and a dead owner: taken over, as try_lock does, not None. (A thread
    // joined may still show in /proc for a moment while the kernel finishes its exit: ask
    // again until it is gone.)
    abandon(mx, 6);
    let t0 = Instant::now();
    let g = loop {
        if let Some(g) = mx.lock_timeout(Duration::ZERO).unwrap() {
            break g;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "a dead owner's lock is never taken over"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(g.owner_died());
}

/// A panic while the guard is held leaves the data as it was last written back, never the
/// guard's half-changed copy, and the next owner is told, as after an owner's death.
#[test]
fn a_panic_while_holding_the_mutex_is_reported_like_an_owner_death() {
    let m = common::shared_page();
    let mx = Mutex::<[u64; 2]>::open(&m, 0, || [0, 0]).unwrap();
    std::thread::scope(|s| {
        let r = s
            .spawn(|| {
                let mut g = mx.lock().unwrap();
                g[0] = 1;
                g[1] = 1;
                g.write_back();
                g[0] = 2; // half of an update of both to 2
                panic!("in the middle of an update");
            })
            .join();
        assert!(r.is_err());
    });
    let mut g = mx
        .lock_timeout(Duration::from_secs(2))
        .unwrap()
        .expect("the lock was left held");
    assert_eq!(*g, [1, 1], "the torn copy was written back");
    assert!(g.owner_died(), "the next owner was not told of the panic");
    g.make_consistent().unwrap();
    drop(g);
    let g = mx.lock().unwrap();
    assert!(!g.owner_died());
    assert_eq!(*g, [1, 1]);
}

/// An initialiser that panics leaves the object to the next opener, at once: not a state
/// word naming a live process as its initialiser, which every opener waited 5 s for and
/// then refused, for as long as this process lived.
#[test]
fn an_initialiser_that_panics_leaves_the_object_to_the_next_opener() {
    let m = common::shared_page();
    let r = std::panic::catch_unwind(|| {
        let _ = Mutex::<u64>::open(&m, 0, || panic!("no initial value"));
    });
    assert!(r.is_err());
    let t0 = Instant::now();
    let mx = Mutex::<u64>::open(&m, 0, || 3).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1), "took {:?}", t0.elapsed());
    assert_eq!(*mx.lock().unwrap(), 3);
}

/// A state word naming as initialiser a PID no process can have (past `i32::MAX`, written
/// by a peer) is garbage to recover from, not a reason to panic: rustix's `Pid::from_raw`
/// asserts that a PID is positive (debug builds), and in C terms it was `kill(-1, 0)`.
#[test]
fn an_initialiser_pid_no_process_can_have_is_taken_over() {
    for pid in [0x8000_0000u64, 0xFFFF_FFFF] {
        let m = common::shared_page();
        m.atomic_u64(0).unwrap().store((1 << 63) | pid, Ordering::SeqCst);
        let t0 = Instant::now();
        let mx = Mutex::<u64>::open(&m, 0, || 9).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(2), "took {:?}", t0.elapsed());
        assert_eq!(*mx.lock().unwrap(), 9);
    }
}
