//! Where this thread runs and how many CPUs it may use: what the waiting policy
//! (`sync::wait`) needs to decide whether spinning can help.
//!
//! Everything here is a hint for speed, never for correctness: a wrong answer makes a waiter
//! spin in vain or sleep where a spin would have caught its peer, nothing worse. The answers
//! that cost a system call or a file read are cached and refreshed by the clock, so that a
//! waiter about to spin pays a few nanoseconds, not microseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The CPU this thread runs on now (glibc reads it from the rseq area: a load, no system
/// call), or `None` where it cannot be had.
#[inline]
pub fn current_cpu() -> Option<u32> {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).ok()
}

/// Microseconds since the first call, on the monotonic clock: the time stamps of the caches.
fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// A value cached with the time it was computed; refreshed when older than `max_age`.
/// Packed into one word (value in the high 24 bits, time in the low 40 bits, µs: 12 days
/// before it wraps, after which it is merely refreshed more often).
struct Cached {
    word: AtomicU64,
    max_age: Duration,
}

const TIME_BITS: u32 = 40;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

impl Cached {
    const fn new(max_age: Duration) -> Cached {
        Cached {
            word: AtomicU64::new(0),
            max_age,
        }
    }

    fn get(&self, compute: impl FnOnce() -> u32) -> u32 {
        let w = self.word.load(Ordering::Relaxed);
        let now = now_us() & TIME_MASK;
        let age = now.wrapping_sub(w & TIME_MASK) & TIME_MASK;
        if w != 0 && age < self.max_age.as_micros() as u64 {
            return (w >> TIME_BITS) as u32;
        }
        let v = compute().min((1 << (64 - TIME_BITS)) - 1);
        // Time 0 would read as "never computed": nudge it.
        self.word
            .store((u64::from(v) << TIME_BITS) | now.max(1), Ordering::Relaxed);
        v
    }
}

/// How many CPUs this process may use at once: the CPUs in its affinity mask
/// (`sched_getaffinity`, as `taskset` sets it), lowered by a CPU quota of its control group
/// (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`, rounded down, at least 1), as a container
/// limited to one CPU has. Cached for 100 ms: a `taskset -p` on a running process is seen
/// within that.
pub fn usable_cpus() -> u32 {
    pinned_cpus().min(shared_cpus())
}

/// How many CPUs this thread's affinity mask holds (`taskset`; 1 when it cannot be read).
/// Cached for 100 ms.
pub fn pinned_cpus() -> u32 {
    static CACHE: Cached = Cached::new(Duration::from_millis(100));
    CACHE.get(affinity_cpus)
}

/// How many CPUs the processes of this control group may use at once, whichever they run
/// on: the CPUs online, lowered by the group's CPU quota (rounded down, at least 1). Where
/// it is 1, no two of them ever run at the same time. Cached for 1 s.
pub fn shared_cpus() -> u32 {
    static CACHE: Cached = Cached::new(Duration::from_secs(1));
    CACHE.get(|| match quota_cpus() {
        Some(q) => online_cpus().min(q),
        None => online_cpus(),
    })
}

/// The number of CPUs in this thread's affinity mask (1 when it cannot be read).
fn affinity_cpus() -> u32 {
    rustix::thread::sched_getaffinity(None)
        .map(|set| set.count())
        .unwrap_or(1)
        .max(1)
}

/// The CPU quota of this process's control group and its ancestors, in whole CPUs (at least
/// 1), or `None` when there is none (or it cannot be read).
fn quota_cpus() -> Option<u32> {
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut best: Option<f64> = None;
    let mut take = |q: Option<f64>| {
        if let Some(q) = q {
            best = Some(best.map_or(q, |b: f64| b.min(q)));
        }
    };
    for line in groups.lines() {
        // "ID:CONTROLLERS:PATH": v2 is "0::PATH"; v1 names its controllers.
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let v2 = controllers.is_empty();
        if !v2 && !controllers.split(',').any(|c| c == "cpu") {
            continue;
        }
        let root = if v2 {
            "/sys/fs/cgroup".to_owned()
        } else {
            // The v1 cpu hierarchy is mounted as "cpu", "cpu,cpuacct" or "cpuacct,cpu".
            ["cpu", "cpu,cpuacct", "cpuacct,cpu"]
                .iter()
                .map(|d| format!("/sys/fs/cgroup/{d}"))
                .find(|d| std::path::Path::new(d).is_dir())
                .unwrap_or_default()
        };
        if root.is_empty() {
            continue;
        }
        // The group and each ancestor up to the root: the tightest quota holds.
        let mut p = std::path::PathBuf::from(format!("{root}{path}"));
        loop {
            take(if v2 { quota_v2(&p) } else { quota_v1(&p) });
            if p.as_os_str().len() <= root.len() || !p.pop() {
                break;
            }
        }
    }
    best.map(|q| (q.floor() as u32).max(1))
}

/// `cpu.max`: "QUOTA PERIOD" or "max PERIOD".
fn quota_v2(dir: &std::path::Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("cpu.max")).ok()?;
    let mut it = text.split_whitespace();
    let quota: f64 = it.next()?.parse().ok()?;
    let period: f64 = it.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// `cpu.cfs_quota_us` (-1: none) over `cpu.cfs_period_us`.
fn quota_v1(dir: &std::path::Path) -> Option<f64> {
    let read = |f: &str| -> Option<f64> { std::fs::read_to_string(dir.join(f)).ok()?.trim().parse().ok() };
    let quota = read("cpu.cfs_quota_us")?;
    let period = read("cpu.cfs_period_us")?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// Whether more tasks are ready to run on this machine than it has CPUs online (the first
/// half of the fourth field of `/proc/loadavg` against `sysconf(_SC_NPROCESSORS_ONLN)`):
/// then a spinning waiter takes a CPU that another task, perhaps the peer it waits for, is
/// waiting for. Cached for 10 ms; `false` where it cannot be read.
pub fn oversubscribed() -> bool {
    static CACHE: Cached = Cached::new(Duration::from_millis(10));
    CACHE.get(|| {
        let Some(running) = runnable_tasks() else {
            return 0;
        };
        u32::from(running > online_cpus())
    }) != 0
}

/// The CPUs online (at least 1).
fn online_cpus() -> u32 {
    static N: OnceLock<u32> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *N.get_or_init(|| (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).clamp(1, 1 << 20) as u32)
}

/// The number of tasks running or ready to run now, machine-wide, from `/proc/loadavg`
/// ("0.20 0.18 0.12 1/80 11206": the 1).
fn runnable_tasks() -> Option<u32> {
    let mut buf = [0u8; 128];
    let f = std::fs::File::open("/proc/loadavg").ok()?;
    let n = rustix::io::read(&f, &mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let field = text.split_whitespace().nth(3)?;
    field.split('/').next()?.parse().ok()
}

/// Give the CPU to another task ready to run on it, if there is one (`sched_yield`).
#[inline]
pub fn yield_cpu() {
    rustix::thread::sched_yield();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_and_the_counts_are_plausible() {
        let usable = usable_cpus();
        assert!(usable >= 1);
        assert!(usable <= online_cpus().max(affinity_cpus()));
        if let Some(cpu) = current_cpu() {
            assert!(cpu < 1 << 20);
        }
        assert!(runnable_tasks().is_some_and(|r| r >= 1), "this thread runs");
        // Cached: the second answer comes from the word.
        assert_eq!(usable_cpus(), usable);
    }

    #[test]
    fn a_cached_value_is_refreshed_by_age() {
        let c = Cached::new(Duration::from_millis(1));
        assert_eq!(c.get(|| 7), 7);
        assert_eq!(c.get(|| 9), 7, "fresh: not recomputed");
        std::thread::sleep(Duration::from_millis(3));
        assert_eq!(c.get(|| 9), 9, "stale: recomputed");
    }
}
