//! Unit tests of the semaphore: threads in one process (the multi-process ones are in
//! `tests/sync.rs`).

use super::*;

#[test]
fn semaphore_counts_and_times_out() {
    let s = Semaphore::new(2);
    assert!(s.try_wait());
    s.wait();
    assert!(!s.try_wait());
    let t = Instant::now();
    assert!(!s.wait_timeout(Duration::from_millis(30)));
    assert!(t.elapsed() >= Duration::from_millis(30));
    s.post().unwrap();
    assert!(s.wait_timeout(Duration::from_secs(5)));
    let full = Semaphore::new(SEMAPHORE_MAX);
    assert!(full.post().is_err());
    assert_eq!(full.value(), SEMAPHORE_MAX);
}

/// Threads that take and post one permit as fast as they can (a philosopher's fork):
/// the post that finds the contended flag clears it and wakes one sleeper; a sleeper
/// about to sleep on the flagged value must see the clearing and look again. A lost
/// wake-up shows as a wait that times out while the permit sits there.
#[test]
fn barging_threads_never_lose_a_wakeup() {
    let fork = Semaphore::new(1);
    std::thread::scope(|s| {
        for t in 0..3 {
            let fork = &fork;
            s.spawn(move || {
                for i in 0..30_000u32 {
                    // A lost wake-up is noticed when the timeout ends the sleep: the
                    // permit is then found, after far longer than anyone held it.
                    let asked = Instant::now();
                    assert!(fork.wait_timeout(Duration::from_secs(30)));
                    assert!(asked.elapsed() < Duration::from_secs(2), "lost wake-up");
                    // Hold the permit now and then past a waiter's spin, so waiters
                    // sleep and posts find them.
                    if (i + t) % 64 == 0 {
                        let held = Instant::now();
                        while held.elapsed() < Duration::from_micros(20) {
                            std::hint::spin_loop();
                        }
                    }
                    fork.post().unwrap();
                }
            });
        }
    });
    assert_eq!(fork.value(), 1);
}

#[test]
fn threads_ping_pong_without_lost_wakeups() {
    let ping = Semaphore::new(0);
    let pong = Semaphore::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..20_000 {
                ping.wait();
                pong.post().unwrap();
            }
        });
        for _ in 0..20_000 {
            ping.post().unwrap();
            pong.wait();
        }
    });
    assert_eq!(ping.value() + pong.value(), 0);
}

/// Waits that must not be lost: a wait that takes longer than this, while its peers
/// hold permits for microseconds, was a permit that sat there while the waiter slept
/// (until a post or RECHECK woke it: the bound must stay below RECHECK).
const LOST: Duration = Duration::from_secs(2);
const _: () = assert!(LOST.as_millis() < RECHECK.as_millis());

/// `wait_timeout` with a long timeout, which must succeed well within [`LOST`].
fn timed_wait(sem: &Semaphore) {
    let asked = Instant::now();
    assert!(sem.wait_timeout(Duration::from_secs(30)), "lost wake-up");
    let took = asked.elapsed();
    assert!(took < LOST, "lost wake-up: a wait took {took:?}");
}

/// Hold a permit past a waiter's spin now and then, so waiters sleep and posts find them.
fn hold_now_and_then(i: u32) {
    if i.is_multiple_of(64) {
        let held = Instant::now();
        while held.elapsed() < Duration::from_micros(20) {
            std::hint::spin_loop();
        }
    }
}

/// Two posts on a full semaphore must both fail with the count unchanged. A single
/// `fetch_add` at SEMAPHORE_MAX carries into the flag (and from there into the starver
/// count) until the failing post undoes it: a post in between saw a count of 0, succeeded,
/// cleared the "flag" and the undo then took the count to 0.
#[test]
fn racing_posts_at_the_maximum_all_fail_and_leave_the_count() {
    for start in [u64::from(SEMAPHORE_MAX), u64::from(SEMAPHORE_MAX) | CONTENDED] {
        let sem = Semaphore::default();
        sem.state.store(start, Ordering::Relaxed);
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while t0.elapsed() < Duration::from_millis(300) {
                        for _ in 0..1_000 {
                            assert!(
                                sem.post().is_err(),
                                "a post succeeded on a full semaphore, now {:#x}",
                                sem.state.load(Ordering::Relaxed)
                            );
                        }
                    }
                });
            }
        });
        assert_eq!(sem.state.load(Ordering::Relaxed), start);
    }
}

/// The count kept at the maximum by a poster while other threads take a permit and post
/// it back: every failed post leaves the word as it was, no wait is lost, and no
/// starving waiter is left counted.
#[test]
fn takers_racing_posts_at_the_maximum_keep_the_word_intact() {
    let sem = Semaphore::new(SEMAPHORE_MAX);
    let t0 = Instant::now();
    let run = Duration::from_millis(500);
    std::thread::scope(|s| {
        s.spawn(|| {
            while t0.elapsed() < run {
                for _ in 0..100 {
                    // Fails while the semaphore is full; fills it when a taker holds one.
                    let _ = sem.post();
                }
            }
        });
        for t in 0..2 {
            let sem = &sem;
            s.spawn(move || {
                let mut i = t;
                while t0.elapsed() < run {
                    timed_wait(sem);
                    hold_now_and_then(i);
                    // Fails if the poster filled the semaphore meanwhile.
                    let _ = sem.post();
                    i += 1;
                }
            });
        }
    });
    let s = sem.state.load(Ordering::Relaxed);
    assert_eq!(s >> 32, 0, "starvers or garbage left: {s:#x}");
    assert_eq!(count(s), SEMAPHORE_MAX, "permits lost: {s:#x}");
}

/// A failing post on a full semaphore with the flag set and starving waiters counted
/// leaves all three as they were (the add carries through the flag into the starver
/// count; the undo must borrow it back).
#[test]
fn overflow_with_the_flag_set_and_starvers_leaves_the_word() {
    let sem = Semaphore::default();
    let full = (3 * STARVER) | CONTENDED | u64::from(SEMAPHORE_MAX);
    sem.state.store(full, Ordering::Relaxed);
    assert!(sem.post().is_err());
    assert_eq!(sem.state.load(Ordering::Relaxed), full);
}

/// A sleeper asleep on a word whose flag is then cleared with no wake-up (a peer that
/// died between a post's add and its wake-up, or garbage written over the word) must
/// still get a permit that is there: posts that find the flag clear wake nobody.
#[test]
fn a_sleeper_gets_a_permit_though_the_flag_was_cleared_without_a_wake() {
    // Each case: what happens to the word while the waiter sleeps, then whether a
    // correct post follows.
    type Scribble = fn(&AtomicU64);
    let cases: [(&str, Scribble, bool); 3] = [
        // A poster added its permit and died before it looked at the flag.
        (
            "died after the add",
            |w| {
                w.fetch_add(1, Ordering::Release);
            },
            false,
        ),
        // A poster added, cleared the flag and died before the futex wake.
        (
            "died before the wake",
            |w| {
                w.fetch_add(1, Ordering::Release);
                w.fetch_and(!CONTENDED, Ordering::Relaxed);
            },
            false,
        ),
        // Garbage: zero written over the word; then a correct post, which sees no flag.
        ("zeroed, then posted", |w| w.store(0, Ordering::Relaxed), true),
    ];
    std::thread::scope(|s| {
        for (what, scribble, post) in cases {
            s.spawn(move || {
                let sem = Semaphore::new(0);
                std::thread::scope(|s| {
                    let waiter = s.spawn(|| {
                        let asked = Instant::now();
                        (sem.wait_timeout(Duration::from_secs(10)), asked.elapsed())
                    });
                    // Let it go to sleep (the flag is set just before).
                    while sem.state.load(Ordering::Relaxed) & CONTENDED == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    scribble(&sem.state);
                    if post {
                        sem.post().unwrap();
                    }
                    let (got, took) = waiter.join().unwrap();
                    assert!(got, "{what}: no permit");
                    assert!(took < RECHECK + LOST, "{what}: stranded for {took:?}");
                });
                assert_eq!(sem.value(), 0, "{what}");
            });
        }
    });
}

/// Counts above one: threads take one to three permits each (the first with a long
/// timed wait, the others with very short ones, giving back what they hold when one
/// fails, so nobody deadlocks holding part of what it needs) and post them back in a
/// row, so posts often find the flag clear and the woken waiter must pass the permits
/// left on.
#[test]
fn threads_taking_and_posting_several_permits_never_lose_a_wakeup() {
    const PERMITS: u32 = 3;
    let sem = Semaphore::new(PERMITS);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..6u32 {
            let sem = &sem;
            s.spawn(move || {
                let mut i = t;
                while t0.elapsed() < Duration::from_millis(1500) {
                    let want = 1 + i % PERMITS;
                    timed_wait(sem);
                    let mut held = 1;
                    while held < want && sem.wait_timeout(Duration::from_micros(50)) {
                        held += 1;
                    }
                    hold_now_and_then(i);
                    for _ in 0..held {
                        sem.post().unwrap();
                    }
                    i += 1;
                }
            });
        }
    });
    let s = sem.state.load(Ordering::Relaxed);
    assert_eq!((count(s), starvers(s)), (PERMITS, 0), "{s:#x}");
}

/// Bursts of posts in a row to sleepers that each take one permit per round: the first
/// post wakes one sleeper and clears the flag, the others find it clear and wake nobody,
/// so the woken waiter must pass the permits left on (and so on down the chain). A
/// consumer takes no second item before the round ends, so nobody covers for a sleeper
/// left asleep: the producer's wait for the round shows it.
#[test]
fn bursts_of_posts_wake_one_sleeper_per_permit() {
    const CONSUMERS: u32 = 4;
    let (items, done, go) = (Semaphore::new(0), Semaphore::new(0), Semaphore::new(0));
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..CONSUMERS {
            s.spawn(|| loop {
                timed_wait(&items);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                done.post().unwrap();
                timed_wait(&go);
            });
        }
        let t0 = Instant::now();
        let mut round = 0;
        while t0.elapsed() < Duration::from_millis(1500) {
            let k = 1 + round % CONSUMERS;
            for _ in 0..k {
                items.post().unwrap();
            }
            for _ in 0..k {
                timed_wait(&done);
            }
            for _ in 0..k {
                go.post().unwrap();
            }
            round += 1;
        }
        stop.store(true, Ordering::Relaxed);
        for _ in 0..CONSUMERS {
            items.post().unwrap();
        }
    });
    assert_eq!((items.value(), done.value(), go.value()), (0, 0, 0));
}

/// Very short timeouts (zero to a few dozen microseconds) under contention: a wait that
/// times out takes nothing and returns about on time, one that succeeds takes one
/// permit, and a patient waiter among them is never left asleep by the others.
#[test]
fn very_short_timeouts_under_contention_keep_the_count() {
    const PERMITS: u32 = 2;
    let sem = Semaphore::new(PERMITS);
    let t0 = Instant::now();
    let run = Duration::from_millis(1500);
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let sem = &sem;
            s.spawn(move || {
                let mut i = t;
                while t0.elapsed() < run {
                    let timeout = Duration::from_micros(u64::from((i * 7 + t * 13) % 60));
                    let asked = Instant::now();
                    if sem.wait_timeout(timeout) {
                        hold_now_and_then(i);
                        sem.post().unwrap();
                    } else {
                        let took = asked.elapsed();
                        assert!(took < timeout + LOST, "a {timeout:?} wait took {took:?}");
                    }
                    i += 1;
                }
            });
        }
        s.spawn(|| {
            let mut i = 0;
            while t0.elapsed() < run {
                timed_wait(&sem);
                hold_now_and_then(i);
                sem.post().unwrap();
                i += 1;
            }
        });
    });
    let s = sem.state.load(Ordering::Relaxed);
    assert_eq!((count(s), starvers(s)), (PERMITS, 0), "{s:#x}");
}

/// A waiter that counted itself as starving and then timed out takes itself off the
/// count: afterwards try_wait takes a posted permit again and newcomers do not give way.
#[test]
fn a_starving_waiter_that_times_out_unregisters() {
    let sem = Semaphore::new(0);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| sem.wait_timeout(Duration::from_millis(300)));
        let asleep = || {
            let t0 = Instant::now();
            while sem.state.load(Ordering::Relaxed) & CONTENDED == 0 {
                assert!(t0.elapsed() < LOST, "the waiter never slept");
                std::thread::yield_now();
            }
        };
        asleep();
        std::thread::sleep(PATIENCE * 2);
        // What a barger leaves: a post that cleared the flag and woke the waiter, its
        // permit taken again before the waiter ran. The waiter finds nothing, has waited
        // past its patience, counts itself as starving and sleeps again.
        sem.state.fetch_and(!CONTENDED, Ordering::Relaxed);
        sys::futex_wake(&sem.state, 1);
        asleep();
        let t0 = Instant::now();
        while starvers(sem.state.load(Ordering::Relaxed)) == 0 {
            assert!(t0.elapsed() < LOST, "the waiter never counted as starving");
            std::thread::yield_now();
        }
        assert!(!waiter.join().unwrap(), "nothing was posted");
    });
    assert_eq!(starvers(sem.state.load(Ordering::Relaxed)), 0);
    sem.post().unwrap();
    assert!(sem.try_wait(), "try_wait gives way to a waiter that is gone");
}

/// Barging threads and waiters with short timeouts (a few milliseconds: they starve,
/// then give up), for a while: the bargers always get the permit back within the bound,
/// and when everyone is done no starver is left counted and the permit is there.
#[test]
fn starving_waiters_timing_out_among_barging_threads() {
    let fork = Semaphore::new(1);
    let t0 = Instant::now();
    let run = Duration::from_millis(1500);
    std::thread::scope(|s| {
        for t in 0..2u32 {
            let fork = &fork;
            s.spawn(move || {
                let mut i = t;
                while t0.elapsed() < run {
                    timed_wait(fork);
                    hold_now_and_then(i);
                    fork.post().unwrap();
                    i += 1;
                }
            });
        }
        for t in 0..2u32 {
            let fork = &fork;
            s.spawn(move || {
                let mut i = t;
                while t0.elapsed() < run {
                    let timeout = Duration::from_millis(u64::from(1 + (i + t) % 5));
                    if fork.wait_timeout(timeout) {
                        fork.post().unwrap();
                    }
                    i += 1;
                }
            });
        }
    });
    let s = fork.state.load(Ordering::Relaxed);
    assert_eq!((count(s), starvers(s)), (1, 0), "{s:#x}");
    assert!(fork.try_wait());
}
