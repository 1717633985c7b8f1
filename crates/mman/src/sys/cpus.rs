//! How many CPUs this process can use at once: its affinity mask (`sched_getaffinity`),
//! bounded by the CPU bandwidth limit of its cgroup and of every cgroup above it (cgroup v2
//! `cpu.max`, as a one-CPU container sets it). Behind `mman::sync::usable_cpus`.

use std::path::{Path, PathBuf};

/// The CPUs this process may run on at once (at least 1). See `mman::sync::usable_cpus`.
pub fn usable() -> usize {
    let cpus = affinity().unwrap_or_else(online);
    let quota = cgroup_dir().and_then(|(dir, top)| quota_below(&dir, &top));
    cpus.min(quota.unwrap_or(usize::MAX)).max(1)
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

/// This process's cgroup v2 directory, and the mount point of the hierarchy it is in.
fn cgroup_dir() -> Option<(PathBuf, PathBuf)> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    locate(&cgroup, &mountinfo)
}

/// From the texts of `/proc/self/cgroup` and `/proc/self/mountinfo`: the directory of the
/// process's cgroup v2 (its `0::PATH` line) under the cgroup2 mount that holds it, and that
/// mount point.
pub(crate) fn locate(cgroup: &str, mountinfo: &str) -> Option<(PathBuf, PathBuf)> {
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split(' ').next()? != "cgroup2" {
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

#[cfg(test)]
mod tests {
    use super::*;

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
