//! Process-shared synchronization with real processes: the test binary re-runs itself as the
//! peer (`MMAN_SYNC_CHILD` names the role, `MMAN_SYNC_FILE` the shared file).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mman::sync::{place, Barrier, Condvar, Mutex, NamedSemaphore, PosixSemaphore, Semaphore};
use mman::{MapOptions, Mapping};

const ROUNDS: u32 = 100_000;

fn shared_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let p = dir.path().join("shared");
    std::fs::write(&p, vec![0u8; 8192]).unwrap();
    p
}

fn map(path: &std::path::Path) -> Mapping {
    MapOptions::new().read_write().shared().map_path(path).unwrap()
}

mod common;

fn spawn(role: &str, path: &std::path::Path) -> Child {
    common::rerun("peer", role)
        .env("MMAN_SYNC_FILE", path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_ok(child: Child) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "peer failed: {out:?}");
}

/// The peer processes. Does nothing unless run as one.
#[test]
fn peer() {
    let (Some(role), Ok(path)) = (common::role(), std::env::var("MMAN_SYNC_FILE")) else {
        return;
    };
    let m = map(path.as_ref());
    match role.as_str() {
        "pong" => {
            let (ping, pong): (&Semaphore, &Semaphore) = (place(&m, 0).unwrap(), place(&m, 8).unwrap());
            for _ in 0..ROUNDS {
                assert!(
                    ping.wait_timeout(Duration::from_secs(10)),
                    "lost wake-up in the peer"
                );
                pong.post().unwrap();
            }
        }
        "hold-and-die" => {
            let mx = Mutex::<u64>::open(&m, 0, || 0).unwrap();
            let mut g = mx.lock().unwrap();
            *g = 7;
            g.write_back();
            *g = 9; // only in the guard's copy: lost when this process dies
            println!("LOCKED");
            std::thread::sleep(Duration::from_secs(60));
        }
        "add" => {
            let mx = Mutex::<u64>::open(&m, 0, || 0).unwrap();
            for _ in 0..1_000_000 {
                *mx.lock().unwrap() += 1;
            }
        }
        "barrier" => {
            let b = Barrier::open(&m, 0, 3).unwrap();
            let count = m.atomic_u64(64).unwrap();
            for round in 0..200u64 {
                count.fetch_add(1, Ordering::SeqCst);
                b.wait();
                assert_eq!(count.load(Ordering::SeqCst), 3 * (round + 1));
                b.wait();
            }
        }
        "condvar" => {
            let mx = Mutex::<u64>::open(&m, 0, || 0).unwrap();
            let cv = Condvar::open(&m, 128).unwrap();
            let mut g = mx.lock().unwrap();
            let t0 = Instant::now();
            while *g != 1 {
                assert!(t0.elapsed() < Duration::from_secs(10), "never notified");
                g = cv.wait_timeout(g, Duration::from_millis(100)).unwrap().0;
            }
            *g = 2;
            cv.notify_all();
        }
        "barge" => {
            let sem: &Semaphore = place(&m, 0).unwrap();
            barge(sem, Duration::from_secs(1));
        }
        "consume" => {
            let [items, done, go] = [0, 8, 16].map(|o| place::<Semaphore>(&m, o).unwrap());
            let stop = m.atomic_u64(24).unwrap();
            loop {
                timed_wait(items);
                if stop.load(Ordering::SeqCst) != 0 {
                    break;
                }
                done.post().unwrap();
                timed_wait(go);
            }
        }
        "starve" => {
            let sem: &Semaphore = place(&m, 0).unwrap();
            let word = m.atomic_u64(0).unwrap();
            std::thread::scope(|s| {
                s.spawn(|| loop {
                    sem.wait();
                });
                // Barge (post, which wakes the waiter, and take the permit straight back)
                // until the waiter has waited past its patience, counts itself as starving
                // and sleeps with nothing to take.
                let t0 = Instant::now();
                loop {
                    assert!(t0.elapsed() < Duration::from_secs(5), "never starved");
                    sem.post().unwrap();
                    sem.try_wait();
                    std::thread::sleep(Duration::from_millis(2));
                    let w = word.load(Ordering::SeqCst);
                    if w >> 32 != 0 && w & 0x7FFF_FFFF == 0 {
                        break;
                    }
                }
                println!("STARVING");
                std::thread::sleep(Duration::from_secs(60));
            });
        }
        other => panic!("unknown role {other}"),
    }
}

/// `wait_timeout` with a long timeout, which must succeed well within the bound: a permit
/// left while its waiter slept shows as a wait far longer than anyone held one (the
/// semaphore's own recheck wakes a sleeper after 3 s; the bound stays below it).
fn timed_wait(sem: &Semaphore) {
    let asked = Instant::now();
    assert!(sem.wait_timeout(Duration::from_secs(30)), "lost wake-up");
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "lost wake-up: a wait took {took:?}"
    );
}

/// Take one or two permits (the second with a very short timeout), hold them now and then
/// past a waiter's spin, post them back in a row; for `run`. Every first wait is timed: a
/// permit left while its waiter slept shows as a wait far longer than anyone held one.
fn barge(sem: &Semaphore, run: Duration) {
    let t0 = Instant::now();
    let mut i = 0u32;
    while t0.elapsed() < run {
        timed_wait(sem);
        let held = 1 + u32::from(i.is_multiple_of(3) && sem.wait_timeout(Duration::from_micros(20)));
        if i.is_multiple_of(32) {
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(30) {
                std::hint::spin_loop();
            }
        }
        for _ in 0..held {
            sem.post().unwrap();
        }
        i += 1;
    }
}

/// Three processes (two children and this one) barging on a semaphore of two permits, one
/// or two at a time: the futex word is shared, so the flag, the chain of wake-ups and the
/// starver count work across processes as between threads.
#[test]
fn barging_processes_with_several_permits_never_lose_a_wakeup() {
    let dir = tempfile::tempdir().unwrap();
    let path = shared_file(&dir);
    let m = map(&path);
    let sem: &Semaphore = place(&m, 0).unwrap();
    sem.post().unwrap();
    sem.post().unwrap();
    let kids: Vec<Child> = (0..2).map(|_| spawn("barge", &path)).collect();
    barge(sem, Duration::from_secs(1));
    for k in kids {
        wait_ok(k);
    }
    let word = m.atomic_u64(0).unwrap().load(Ordering::SeqCst);
    assert_eq!(sem.value(), 2, "{word:#x}");
    assert_eq!(word >> 32, 0, "a starving waiter left counted: {word:#x}");
}

/// Bursts of posts in a row to consumer processes that each take one item per round: the
/// first post wakes one sleeper and clears the flag, the others find it clear and wake
/// nobody, so each woken consumer must pass the items left on to the next, across
/// processes. No consumer takes a second item before the round ends (it waits for `go`), so
/// nobody covers for a sleeper left asleep: the wait for the round's `done`s shows it.
#[test]
fn bursts_of_posts_reach_one_sleeping_process_per_permit() {
    const CONSUMERS: u32 = 3;
    let dir = tempfile::tempdir().unwrap();
    let path = shared_file(&dir);
    let m = map(&path);
    let [items, done, go] = [0, 8, 16].map(|o| place::<Semaphore>(&m, o).unwrap());
    let kids: Vec<Child> = (0..CONSUMERS).map(|_| spawn("consume", &path)).collect();
    let t0 = Instant::now();
    let mut round = 0;
    while t0.elapsed() < Duration::from_millis(1500) {
        let k = 1 + round % CONSUMERS;
        for _ in 0..k {
            items.post().unwrap();
        }
        for _ in 0..k {
            timed_wait(done);
        }
        for _ in 0..k {
            go.post().unwrap();
        }
        round += 1;
    }
    m.atomic_u64(24).unwrap().store(1, Ordering::SeqCst);
    for _ in 0..CONSUMERS {
        items.post().unwrap();
    }
    for k in kids {
        wait_ok(k);
    }
    assert_eq!((items.value(), done.value(), go.value()), (0, 0, 0));
}

/// A process killed while one of its waiters counts as starving never takes itself off the
/// count (it has no owner to check): every newcomer's wait then gives way for GIVE_WAY
/// first, but try_wait, which gives way to nobody, still takes a permit that is there.
#[test]
fn a_killed_starving_waiter_does_not_stop_try_wait() {
    let dir = tempfile::tempdir().unwrap();
    let path = shared_file(&dir);
    let m = map(&path);
    let sem: &Semaphore = place(&m, 0).unwrap();
    let mut child = spawn("starve", &path);
    let mut out = BufReader::new(child.stdout.as_mut().unwrap());
    let mut line = String::new();
    while !line.contains("STARVING") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the peer ended without starving"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    sem.post().unwrap();
    assert!(sem.try_wait(), "try_wait gives way to a dead waiter");
}

#[test]
fn semaphore_ping_pong_100k_rounds_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = shared_file(&dir);
    let m = map(&path);
    let (ping, pong): (&Semaphore, &Semaphore) = (place(&m, 0).unwrap(), place(&m, 8).unwrap());
    let child = spawn("pong", &path);
    for i in 0..ROUNDS {
        ping.post().unwrap();
        assert!(
            pong.wait_timeout(Duration::from_secs(10)),
            "lost wake-up at round {i}"
        );
    }
    wait_ok(child);
    assert_eq!((ping.value(), pong.value()), (0, 0));
}

#[test]
fn robust_mutex_survives_its_owner_being_killed() {
    let dir = tempfile::tempdir().unwrap();
    let path = shared_file(&dir);
    let m = map(&path);
    let mx = Mutex::<u64>::open(&m, 0, || 0).unwrap();
    for consistent in [true, false] {
        let mut child = spawn("hold-and-die", &path);
        // The harness prints its own lines first; wait for the peer's.
        let mut out = BufReader::new(child.stdout.as_mut().unwrap());
        let mut line = String::new();
        while !line.contains("LOCKED") {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "the peer ended without locking"
            );
        }
        assert!(mx.try_lock().unwrap().is_none(), "the child holds it");
        child.kill().unwrap();
        child.wait().unwrap();
        let mut g = mx.lock().unwrap();
        assert!(g.owner_died());
        assert_eq!(*g, 7, "the dead owner's write is visible");
        if consistent {
            *g = 8;
            g.make_consistent().unwrap();
            drop(g);
            let g = mx.lock().unwrap();
            assert!(!g.owner_died());
            assert_eq!(*g, 8);
        } else {
            drop(g); // not repaired: the mutex is now unrecoverable
            let e = mx
                .lock()
                .err()
                .expect("a mutex left inconsistent must refuse to lock");
            assert!(e.to_string().contains("make_consistent"), "{e}");
        }
    }
}

#[test]
fn eight_processes_adding_a_million_each_end_at_eight_million() {
    let dir = tempfile::tempdir().unwrap();
    let path = shared_file(&dir);
    let m = map(&path);
    let mx = Mutex::<u64>::open(&m, 0, || 0).unwrap();
    let kids: Vec<Child> = (0..8).map(|_| spawn("add", &path)).collect();
    for k in kids {
        wait_ok(k);
    }
    assert_eq!(*mx.lock().unwrap(), 8_000_000);
}

#[test]
fn barrier_rounds_across_three_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = shared_file(&dir);
    let m = map(&path);
    let b = Barrier::open(&m, 0, 3).unwrap();
    let count = m.atomic_u64(64).unwrap();
    let kids: Vec<Child> = (0..2).map(|_| spawn("barrier", &path)).collect();
    let mut leaders = 0;
    for round in 0..200u64 {
        count.fetch_add(1, Ordering::SeqCst);
        // Half the rounds with a bound the children always meet.
        leaders += if round % 2 == 0 {
            b.wait()
        } else {
            b.wait_timeout(Duration::from_secs(30))
                .expect("the children come")
        } as u32;
        assert_eq!(count.load(Ordering::SeqCst), 3 * (round + 1));
        b.wait();
    }
    for k in kids {
        wait_ok(k);
    }
    assert!(leaders <= 200);
    assert!(Barrier::open(&m, 0, 4).is_err(), "the count is fixed at creation");
}

/// A wait that times out takes its arrival back: the next round still needs every
/// participant (a lost take-back would let the next arrival complete the round alone).
#[test]
fn a_barrier_wait_that_times_out_takes_its_arrival_back() {
    let m = common::shared_page();
    let b = Barrier::open(&m, 0, 2).unwrap();
    for _ in 0..3 {
        let t0 = Instant::now();
        assert_eq!(b.wait_timeout(Duration::from_millis(30)), None);
        assert!(t0.elapsed() >= Duration::from_millis(30));
    }
    let start = std::sync::Barrier::new(2);
    let results: Vec<Option<bool>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    b.wait_timeout(Duration::from_secs(20))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = results.clone();
    sorted.sort();
    assert_eq!(sorted, [Some(false), Some(true)], "{results:?}");
}

/// A round completed without a wake-up (what a last arriver killed between its step and its
/// wake leaves, or a peer writing the next generation) does not leave the waiters asleep for
/// good: they look again within a few seconds.
#[test]
fn a_round_completed_without_a_wake_up_still_releases_the_waiters() {
    // Leaked, so the waiter can be left behind (asleep) if it never comes back.
    let m: &'static Mapping = Box::leak(Box::new(common::shared_page()));
    let b = Barrier::open(m, 0, 2).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(b.wait()).unwrap());
    // Let the waiter arrive and sleep, then complete its round behind its back.
    let round = m.atomic_u64(16).unwrap();
    let t0 = Instant::now();
    while round.load(Ordering::SeqCst) >> 32 != 1 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the waiter never arrived");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    round.store(1, Ordering::SeqCst); // generation 1, no arrivals, no futex wake
    let led = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the waiter slept on although its round was complete");
    assert!(!led, "the waiter was not the last to arrive");
}

/// Garbage a peer writes into a barrier makes waits fail or end, never hang a bounded wait:
/// a participant count no round reaches times out; an arrival count past the participants
/// completes the round at the next arrival.
#[test]
fn a_barrier_scribbled_on_by_a_peer_never_hangs_a_bounded_wait() {
    let m = common::shared_page();
    let b = Barrier::open(&m, 0, 3).unwrap();
    // The layout (repr(C)): init state, participants, round (generation low, arrivals high).
    m.atomic_u64(8).unwrap().store(u64::MAX, Ordering::SeqCst);
    let t0 = Instant::now();
    assert_eq!(b.wait_timeout(Duration::from_millis(50)), None);
    assert!(t0.elapsed() < Duration::from_secs(5));
    m.atomic_u64(8).unwrap().store(3, Ordering::SeqCst);
    m.atomic_u64(16)
        .unwrap()
        .store(0xFFFF_FFFF_0000_0007, Ordering::SeqCst);
    assert_eq!(b.wait_timeout(Duration::from_secs(5)), Some(true));
    assert_eq!(
        m.atomic_u64(16).unwrap().load(Ordering::SeqCst),
        8,
        "next generation, no one arrived"
    );
    // A participant count of 0 (open refuses it; a peer can still write it): every arrival
    // completes its round.
    m.atomic_u64(8).unwrap().store(0, Ordering::SeqCst);
    assert!(b.wait());
}

#[test]
fn condvar_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = shared_file(&dir);
    let m = map(&path);
    let mx = Mutex::<u64>::open(&m, 0, || 0).unwrap();
    let cv = Condvar::open(&m, 128).unwrap();
    let child = spawn("condvar", &path);
    std::thread::sleep(Duration::from_millis(50));
    {
        let mut g = mx.lock().unwrap();
        *g = 1;
        cv.notify_all();
    }
    let mut g = mx.lock().unwrap();
    let t0 = Instant::now();
    while *g != 2 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the child never answered");
        g = cv.wait_timeout(g, Duration::from_millis(100)).unwrap().0;
    }
    drop(g);
    wait_ok(child);
    let (_g, timed_out) = cv
        .wait_timeout(mx.lock().unwrap(), Duration::from_millis(20))
        .unwrap();
    assert!(timed_out);
}

#[test]
fn an_opener_takes_over_from_an_initialiser_that_died() {
    let dir = tempfile::tempdir().unwrap();
    let path = shared_file(&dir);
    let m = map(&path);
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    // Leave the state word as a creator that died half-way would: BUSY | its pid.
    m.atomic_u64(0)
        .unwrap()
        .store((1 << 63) | dead_pid as u64, Ordering::SeqCst);
    let t0 = Instant::now();
    let mx = Mutex::<u64>::open(&m, 0, || 41).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2), "took {:?}", t0.elapsed());
    *mx.lock().unwrap() += 1;
    assert_eq!(*mx.lock().unwrap(), 42);

    // A live initialiser that never finishes: an error naming it, not a hang.
    let mut alive = Command::new("sleep").arg("30").spawn().unwrap();
    let m2 = MapOptions::new().len(4096).shared().map_anonymous().unwrap();
    m2.atomic_u64(0)
        .unwrap()
        .store((1 << 63) | alive.id() as u64, Ordering::SeqCst);
    let e = Mutex::<u64>::open(&m2, 0, || 0).err().expect("must time out");
    assert!(e.to_string().contains(&format!("process {}", alive.id())), "{e}");
    alive.kill().unwrap();
    alive.wait().unwrap();
}

fn cc(dir: &tempfile::TempDir, src: &str) -> std::path::PathBuf {
    let c = dir.path().join("peer.c");
    std::fs::write(&c, src).unwrap();
    let exe = dir.path().join("peer");
    let st = Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&exe)
        .arg(&c)
        .status()
        .unwrap();
    assert!(st.success(), "cc failed");
    exe
}

#[test]
fn a_c_process_posts_to_our_semaphores() {
    let dir = tempfile::tempdir().unwrap();
    let exe = cc(
        &dir,
        r#"
#include <fcntl.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int n = atoi(argv[3]);
    sem_t *s;
    if (strcmp(argv[1], "named") == 0) {
        s = sem_open(argv[2], 0);
        if (s == SEM_FAILED) return 2;
    } else {
        int fd = open(argv[2], O_RDWR);
        char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) return 3;
        s = (sem_t *)(p + 64);
    }
    for (int i = 0; i < n; i++) sem_post(s);
    return 0;
}
"#,
    );
    let name = format!("/mman-test-{}", std::process::id());
    // SAFETY: a name of this test's own, used by the C peer only through sem_* calls.
    let named = unsafe { NamedSemaphore::create(&name, 0) }.unwrap();
    let st = Command::new(&exe)
        .args(["named", &name, "1000"])
        .status()
        .unwrap();
    assert!(st.success());
    for i in 0..1000 {
        assert!(
            named.wait_timeout(Duration::from_secs(5)).unwrap(),
            "missing post {i}"
        );
    }
    assert!(!named.try_wait().unwrap());
    NamedSemaphore::unlink(&name).unwrap();

    let path = shared_file(&dir);
    let m = map(&path);
    // SAFETY: a fresh file nobody uses yet.
    let sem = unsafe { PosixSemaphore::init_in(&m, 64, 0) }.unwrap();
    let st = Command::new(&exe)
        .arg("mapped")
        .arg(&path)
        .arg("500")
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(sem.value(), 500);
    for _ in 0..500 {
        sem.wait().unwrap();
    }
    assert!(!sem.wait_timeout(Duration::from_millis(20)).unwrap());
    // SAFETY: refused before anything is opened.
    assert!(unsafe { NamedSemaphore::create("no-slash", 0) }.is_err());
}
