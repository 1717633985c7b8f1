//! The waiting policy (`sync::wait`) in each placement of two real processes: both pinned to
//! one CPU (`same`), pinned to two (`split`), unpinned (`free`), and unpinned beside a
//! CPU-bound process on every CPU (`busy`). Each side is this test binary re-run, pinned
//! before it starts; each plays 20,000 round trips of a `Semaphore` pair, or of a pair of
//! channels, with every wait bounded, and reports how its waits ended
//! (`sync::wait::Stats`). Timing belongs to the benches (`mman bench ipc --placement all`);
//! these tests check that every round trip completes, that no wait ever sleeps past a
//! bound, and that the policy chooses what it should: never a spin that cannot help.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mman::channel::Channel;
use mman::sync::{place, wait::Stats, Semaphore};
use mman::MapOptions;
use rustix::thread::CpuSet;

mod common;

const ROUNDS: u32 = 20_000;
/// No wait may last this long (the policy's sleeps are futex waits woken by the peer).
const BOUND: Duration = Duration::from_secs(2);

fn allowed() -> Vec<usize> {
    let set = rustix::thread::sched_getaffinity(None).expect("sched_getaffinity");
    (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect()
}

fn online() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `cmd`, pinned to `cpus` from its start (in the child, before exec).
fn pinned(mut cmd: Command, cpus: &[usize]) -> Command {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    // SAFETY: one system call between fork and exec (async-signal-safe), no allocation.
    unsafe {
        cmd.pre_exec(move || rustix::thread::sched_setaffinity(None, &set).map_err(std::io::Error::from));
    }
    cmd
}

/// CPU-bound processes, one pinned to each CPU, ended on drop.
struct Hogs(Vec<Child>);

impl Drop for Hogs {
    fn drop(&mut self) {
        for h in &mut self.0 {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}

fn hogs(cpus: &[usize]) -> Hogs {
    Hogs(
        cpus.iter()
            .map(|&c| {
                pinned(common::rerun("peer", "hog"), &[c])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("spawn a CPU-bound process")
            })
            .collect(),
    )
}

/// The two sides of a round-trip test. Do nothing unless run as one.
#[test]
fn peer() {
    let Some(role) = common::role() else { return };
    if role == "hog" {
        let parent = rustix::process::getppid();
        let mut n = 0u64;
        while rustix::process::getppid() == parent {
            for _ in 0..1_000_000 {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        return;
    }
    let target = std::env::var("MMAN_PLACEMENT_TARGET").expect("a target");
    let first = role.ends_with("-ping");
    if role.starts_with("semaphore") {
        let map = MapOptions::new().read_write().shared().map_path(&target).unwrap();
        let (ping, pong): (&Semaphore, &Semaphore) = (place(&map, 0).unwrap(), place(&map, 64).unwrap());
        let (give, take) = if first { (ping, pong) } else { (pong, ping) };
        for i in 0..ROUNDS {
            if first {
                give.post().unwrap();
            }
            assert!(take.wait_timeout(BOUND), "round {i}: a wait lasted {BOUND:?}");
            if !first {
                give.post().unwrap();
            }
        }
    } else {
        let ping = Channel::open(&format!("{target}-ping")).unwrap();
        let pong = Channel::open(&format!("{target}-pong")).unwrap();
        let (mut tx, mut rx) = if first {
            (ping.sender().unwrap(), pong.receiver().unwrap())
        } else {
            (pong.sender().unwrap(), ping.receiver().unwrap())
        };
        let msg = [7u8; 64];
        for i in 0..ROUNDS {
            if first {
                tx.send(&msg).unwrap();
            }
            let got = rx.recv_timeout(BOUND).unwrap();
            assert!(got.is_some(), "round {i}: a wait lasted {BOUND:?}");
            if !first {
                tx.send(&msg).unwrap();
            }
        }
    }
    let s = Stats::this_thread();
    // On a line of its own: the harness prints the test's name before it.
    println!(
        "\nSTATS {} {} {} {}",
        s.spun, s.yielded, s.gave_up, s.slept_at_once
    );
}

/// Run both sides of `kind` pinned to `ping_cpus` and `pong_cpus`; how each side's waits
/// ended.
fn round_trips(kind: &str, target: &str, ping_cpus: &[usize], pong_cpus: &[usize]) -> [Stats; 2] {
    let side = |name: &str, cpus: &[usize]| {
        let mut c = common::rerun("peer", format!("{kind}-{name}"));
        c.env("MMAN_PLACEMENT_TARGET", target).stdout(Stdio::piped());
        pinned(c, cpus).spawn().expect("spawn a side")
    };
    let pong = side("pong", pong_cpus);
    let ping = side("ping", ping_cpus);
    [ping, pong].map(|child| {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{kind}: a side failed: {out:?}");
        let line = BufReader::new(&out.stdout[..])
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.split_once("STATS ").map(|(_, n)| n.to_owned()))
            .expect("a STATS line");
        let n: Vec<u64> = line.split(' ').map(|f| f.parse().unwrap()).collect();
        Stats {
            spun: n[0],
            yielded: n[1],
            gave_up: n[2],
            slept_at_once: n[3],
        }
    })
}

/// Both kinds of round trip in one placement.
fn both(tag: &str, ping_cpus: &[usize], pong_cpus: &[usize]) -> Vec<Stats> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sems");
    std::fs::write(&file, vec![0u8; 4096]).unwrap();
    let mut all = round_trips("semaphore", file.to_str().unwrap(), ping_cpus, pong_cpus).to_vec();
    let name = format!("placement-{tag}-{}", std::process::id());
    let _ping = Channel::create(&format!("{name}-ping"), 4096).unwrap();
    let _pong = Channel::create(&format!("{name}-pong"), 4096).unwrap();
    all.extend(round_trips("channel", &name, ping_cpus, pong_cpus));
    all
}

/// The placements take turns: one's CPU-bound load would be another's placement.
static TURNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURNS.lock().unwrap_or_else(|e| e.into_inner())
}

fn waits(s: &Stats) -> u64 {
    s.spun + s.yielded + s.gave_up + s.slept_at_once
}

/// Both processes on one CPU: a spin can only keep the peer from running, so the policy
/// almost never ends a wait by spinning (a spinner preempted mid-spin may see the answer
/// when it runs again: at most a few such), and, after its first wait, yields or sleeps.
#[test]
fn same_cpu_waits_never_pay_for_spinning() {
    if common::role().is_some() {
        return;
    }
    let _turn = turn();
    let cpu = allowed()[0];
    for s in both("same", &[cpu], &[cpu]) {
        assert!(waits(&s) > 0, "{s:?}");
        assert!(s.spun * 100 <= waits(&s), "spins answered on one CPU: {s:?}");
    }
}

/// Pinned to two CPUs: every round trip completes with bounded waits; when the machine has
/// a CPU for each side (nothing else running), the waits are answered while spinning.
#[test]
fn split_cpus_complete_with_bounded_waits() {
    if common::role().is_some() {
        return;
    }
    let _turn = turn();
    let cpus = allowed();
    if cpus.len() < 2 {
        eprintln!("skipped: split needs two CPUs, this process may use {cpus:?}");
        return;
    }
    for s in both("split", &cpus[..1], &cpus[1..2]) {
        assert!(waits(&s) > 0, "{s:?}");
        // Nothing here says whether other tests ran beside this one (the policy then
        // sleeps, rightly): the counts only show that no wait hung.
    }
}

/// Unpinned: every round trip completes with bounded waits.
#[test]
fn free_placement_completes_with_bounded_waits() {
    if common::role().is_some() {
        return;
    }
    let _turn = turn();
    let cpus = allowed();
    for s in both("free", &cpus, &cpus) {
        assert!(waits(&s) > 0, "{s:?}");
    }
}

/// Beside a CPU-bound process on every CPU: a yield would hand the CPU to the load for a
/// time slice, so no wait is ever answered by one (a spin may be, while both sides run).
#[test]
fn busy_cpus_never_make_a_wait_yield() {
    if common::role().is_some() {
        return;
    }
    let _turn = turn();
    let cpus = allowed();
    let _load = hogs(&cpus);
    std::thread::sleep(Duration::from_millis(100));
    let stats = both("busy", &cpus, &cpus);
    if cpus.len() < online() {
        eprintln!(
            "skipped the policy check: the load covers {cpus:?} of {} CPUs",
            online()
        );
        return;
    }
    for s in stats {
        assert_eq!(s.yielded, 0, "yielded beside load: {s:?}");
        assert!(waits(&s) > 0, "{s:?}");
    }
}
