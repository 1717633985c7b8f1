//! The CPUs: how many this process can use at once (its affinity mask, `sched_getaffinity`,
//! bounded by the CPU bandwidth limit of its cgroup and of every cgroup above it: v2
//! `cpu.max`, as a one-CPU container sets it, or v1 `cpu.cfs_quota_us`), which one this
//! thread runs on, and whether more tasks are ready to run than there are CPUs: what
//! `mman::sync::usable_cpus` reports and the waiting policy (`sync::wait`) decides from.
//!
//! For the waiting policy everything here is a hint for speed, never for correctness: a
//! wrong answer makes a waiter spin in vain or sleep where a spin would have caught its
//! peer, nothing worse. Its answers are cached and refreshed by the clock ([`Cached`]), so
//! that a waiter about to spin pays a few nanoseconds, not a file read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The CPUs this process may run on at once (at least 1). See `mman::sync::usable_cpus`.
pub fn usable() -> usize {
    let cpus = affinity().unwrap_or_else(online);
    cpus.min(quota_cpus().unwrap_or(usize::MAX)).max(1)
}

/// The CPU quota of this process's cgroup and those above it, in whole CPUs (rounded down,
/// at least 1): cgroup v2 `cpu.max`, else v1 `cpu.cfs_quota_us`; None when none is set.
fn quota_cpus() -> Option<usize> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    if let Some(q) = locate(&cgroup, &mountinfo).and_then(|(dir, top)| quota_below(&dir, &top)) {
        return Some(q);
    }
    let (dir, top) = locate_v1(&cgroup, &mountinfo)?;
    quota_below_v1(&dir, &top)
}

/// The CPUs in the calling thread's affinity mask (which a process's threads inherit from
/// the thread that started them, and `taskset` sets for all); None when the mask cannot be read (more CPUs
/// than a `cpu_set_t` holds, or a sandbox that forbids the call).
fn affinity() -> Option<usize> {
    // SAFETY: an all-zero cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most the given size into the set we own.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return None;
    }
    // SAFETY: CPU_COUNT reads the set we own.
    Some(unsafe { libc::CPU_COUNT(&set) } as usize)
}

/// The CPUs online, when the affinity mask cannot be read.
fn online() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// From the texts of `/proc/self/cgroup` and `/proc/self/mountinfo`: the directory of the
/// process's cgroup v2 (its `0::PATH` line) under the cgroup2 mount that holds it, and that
/// mount point.
pub(crate) fn locate(cgroup: &str, mountinfo: &str) -> Option<(PathBuf, PathBuf)> {
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    under_mount(mountinfo, path, |mut fs| fs.next() == Some("cgroup2"))
}

/// As [`locate`], for cgroup v1: the directory of the process's cgroup in the hierarchy
/// of the `cpu` controller (its `ID:...cpu...:PATH` line), under the `cgroup` mount whose
/// options name `cpu`.
pub(crate) fn locate_v1(cgroup: &str, mountinfo: &str) -> Option<(PathBuf, PathBuf)> {
    let path = cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == "cpu").then_some(path)
    })?;
    under_mount(mountinfo, path, |mut fs| {
        fs.next() == Some("cgroup") && fs.nth(1).is_some_and(|o| o.split(',').any(|o| o == "cpu"))
    })
}

/// The cgroup `path` under the first mount of `mountinfo` whose file-system fields (type,
/// source, options) `wanted` accepts and whose root holds `path`: the cgroup's directory
/// there, and the mount point.
fn under_mount<'a>(
    mountinfo: &'a str,
    path: &str,
    wanted: impl Fn(std::str::Split<'a, char>) -> bool,
) -> Option<(PathBuf, PathBuf)> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if !wanted(fs.split(' ')) {
            return None;
        }
        let fields: Vec<&str> = mount.split(' ').collect();
        let (root, point) = (unescape(fields.get(3)?), unescape(fields.get(4)?));
        // The cgroup's path as seen from this mount (its root may be a sub-tree).
        let rel = if root == "/" {
            path
        } else {
            path.strip_prefix(root.as_str())
                .filter(|r| r.is_empty() || r.starts_with('/'))?
        };
        let top = PathBuf::from(point);
        Some((top.join(rel.trim_start_matches('/')), top))
    })
}

/// As [`quota_below`], from v1's `cpu.cfs_quota_us` (-1: none) and `cpu.cfs_period_us`.
fn quota_below_v1(dir: &Path, top: &Path) -> Option<usize> {
    let read =
        |d: &Path, f: &str| -> Option<i64> { std::fs::read_to_string(d.join(f)).ok()?.trim().parse().ok() };
    let mut least: Option<usize> = None;
    let mut at = Some(dir);
    while let Some(d) = at {
        if let (Some(q), Some(p)) = (read(d, "cpu.cfs_quota_us"), read(d, "cpu.cfs_period_us")) {
            if q > 0 && p > 0 {
                let cpus = ((q / p) as usize).max(1);
                least = Some(least.map_or(cpus, |l| l.min(cpus)));
            }
        }
        if d == top || !d.starts_with(top) {
            break;
        }
        at = d.parent();
    }
    least
}

/// A mountinfo field, its octal escapes (`\040` for a space) decoded.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b.get(i + 1..i + 4).and_then(|o| std::str::from_utf8(o).ok());
        match code.and_then(|o| u8::from_str_radix(o, 8).ok()) {
            Some(c) if b[i] == b'\\' => {
                out.push(c);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The smallest CPU quota of `dir` and the cgroups above it up to `top`, in whole CPUs
/// (rounded down, at least 1); None when none sets one.
fn quota_below(dir: &Path, top: &Path) -> Option<usize> {
    let mut least: Option<usize> = None;
    let mut at = Some(dir);
    while let Some(d) = at {
        if let Some(q) = std::fs::read_to_string(d.join("cpu.max"))
            .ok()
            .and_then(|t| quota(&t))
        {
            least = Some(least.map_or(q, |l| l.min(q)));
        }
        if d == top || !d.starts_with(top) {
            break;
        }
        at = d.parent();
    }
    least
}

/// The CPUs a `cpu.max` text ("QUOTA PERIOD", or "max PERIOD" for none) allows, rounded
/// down, at least 1; None for no limit or a text not understood.
pub(crate) fn quota(cpu_max: &str) -> Option<usize> {
    let mut it = cpu_max.split_whitespace();
    let quota: u64 = it.next()?.parse().ok()?; // "max" fails here: no limit
    let period: u64 = it.next().map_or(Some(100_000), |p| p.parse().ok())?;
    if period == 0 {
        return None;
    }
    Some(((quota / period) as usize).max(1))
}

// ---------------------------------------------------------------------------------------
// For the waiting policy: cached answers.

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

/// How many CPUs the calling thread's affinity mask holds (`taskset`; the CPUs online when
/// it cannot be read). Cached for 100 ms, process-wide: a `taskset -p` of a running process
/// is seen within that.
pub fn pinned_cpus() -> u32 {
    static CACHE: Cached = Cached::new(Duration::from_millis(100));
    CACHE.get(|| affinity().unwrap_or_else(online).max(1) as u32)
}

/// How many CPUs the processes of this control group may use at once, whichever they run
/// on: the CPUs online, lowered by the group's CPU quota. Where it is 1, no two of them
/// ever run at the same time. Cached for 1 s.
pub fn shared_cpus() -> u32 {
    static CACHE: Cached = Cached::new(Duration::from_secs(1));
    CACHE.get(|| online().min(quota_cpus().unwrap_or(usize::MAX)).max(1) as u32)
}

/// Whether more tasks are ready to run on this machine than it has CPUs online (the first
/// half of the fourth field of `/proc/loadavg` against the CPUs online): then a spinning
/// waiter takes a CPU that another task, perhaps the peer it waits for, is waiting for.
/// Cached for 10 ms; `false` where it cannot be read.
pub fn oversubscribed() -> bool {
    static CACHE: Cached = Cached::new(Duration::from_millis(10));
    CACHE.get(|| match runnable_tasks() {
        Some(running) => u32::from(running as usize > online()),
        None => 0,
    }) != 0
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
    fn cgroup_v1_cpu_hierarchy_is_found() {
        let mi = "35 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  36 25 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            locate_v1("4:memory:/m\n3:cpu,cpuacct:/docker/abc\n", mi),
            Some((
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/docker/abc"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
            ))
        );
        assert_eq!(locate_v1("0::/x\n", mi), None, "v2 only: nothing here");
    }

    #[test]
    fn the_cached_answers_are_plausible() {
        assert!(pinned_cpus() >= 1 && shared_cpus() >= 1);
        assert!(runnable_tasks().is_some_and(|r| r >= 1), "this thread runs");
        if let Some(cpu) = current_cpu() {
            assert!(cpu < 1 << 20);
        }
    }

    #[test]
    fn a_cached_value_is_refreshed_by_age() {
        let c = Cached::new(Duration::from_millis(1));
        assert_eq!(c.get(|| 7), 7);
        assert_eq!(c.get(|| 9), 7, "fresh: not recomputed");
        std::thread::sleep(Duration::from_millis(3));
        assert_eq!(c.get(|| 9), 9, "stale: recomputed");
    }

    #[test]
    fn cpu_max_is_read_as_whole_cpus() {
        assert_eq!(quota("max 100000\n"), None);
        assert_eq!(quota("50000 100000\n"), Some(1));
        assert_eq!(quota("150000 100000"), Some(1));
        assert_eq!(quota("200000 100000"), Some(2));
        assert_eq!(quota("400000 100000"), Some(4));
        assert_eq!(quota("garbage"), None);
        assert_eq!(quota("100 0"), None);
    }

    #[test]
    fn the_cgroup_is_found_under_its_mount() {
        let mi = "24 1 0:22 / /proc rw - proc proc rw\n\
                  30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            locate("0::/user.slice/app.scope\n", mi),
            Some((
                PathBuf::from("/sys/fs/cgroup/user.slice/app.scope"),
                PathBuf::from("/sys/fs/cgroup")
            ))
        );
        assert_eq!(
            locate("0::/\n", mi),
            Some((PathBuf::from("/sys/fs/cgroup"), PathBuf::from("/sys/fs/cgroup")))
        );
        // A mount of a sub-tree (a container's view), and a mount point with a space.
        let sub = "30 24 0:26 /kube/pod1 /sys/fs/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            locate("0::/kube/pod1/c\n", sub),
            Some((PathBuf::from("/sys/fs/my cg/c"), PathBuf::from("/sys/fs/my cg")))
        );
        assert_eq!(locate("0::/elsewhere\n", sub), None);
        // cgroup v1 only: nothing to read.
        assert_eq!(locate("4:cpu:/x\n", mi), None);
    }

    /// `taskset -c 0` in miniature: a thread whose affinity mask holds one CPU can use one.
    #[test]
    fn a_one_cpu_affinity_mask_is_one_usable_cpu() {
        std::thread::spawn(|| {
            // SAFETY: an all-zero cpu_set_t is empty; CPU_SET and sched_setaffinity touch
            // only the set we own and this thread's mask.
            unsafe {
                let mut one: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut one);
                let r = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one);
                assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
            }
            assert_eq!(usable(), 1);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn at_least_one_and_at_most_the_affinity_mask() {
        let n = usable();
        assert!(n >= 1);
        assert!(n <= affinity().unwrap_or(usize::MAX));
    }
}
