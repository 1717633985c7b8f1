//! The thin layer over rustix and libc: every system call mman makes goes through here.
//!
//! Every platform difference is chosen once, below: the module `os` is `os/linux.rs` on
//! Linux and Android, the full target, and `os/unix.rs` on the other Unix systems (macOS,
//! FreeBSD), which exposes the same items. There the Linux-only calls answer `ENOSYS` (shown
//! to users as [`ErrorKind::Unsupported`]) and missing flags are empty. Modules gated on
//! `linux_like` here are the Linux-only features (futexes, signal handlers, page-cache
//! tools), whose public modules do not exist elsewhere.
//!
//! [`ErrorKind::Unsupported`]: crate::ErrorKind::Unsupported

use std::ffi::c_void;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::OnceLock;

use rustix::mm::{MapFlags, MprotectFlags, MsyncFlags, ProtFlags};

#[cfg(all(linux_like, feature = "cache"))]
pub mod cache;
#[cfg(all(linux_like, feature = "sync"))]
pub mod cpus;
#[cfg(linux_like)]
pub mod fault;
mod file;
#[cfg(all(linux_like, any(feature = "sync", feature = "fault")))]
pub mod forks;
#[cfg(all(linux_like, feature = "fault"))]
pub mod guard;
#[cfg(all(linux_like, feature = "channel"))]
pub mod liveness;
mod mm;
#[cfg_attr(linux_like, path = "sys/os/linux.rs")]
#[cfg_attr(not(linux_like), path = "sys/os/unix.rs")]
mod os;
#[cfg(feature = "persist")]
pub mod persist;
pub mod shm;
#[cfg(linux_like)]
mod signal;
#[cfg(all(linux_like, feature = "sync"))]
pub mod sync;
pub mod words;

pub use file::*;
pub use mm::*;
// Truncation protection of file mappings (sys/fault.rs on Linux; no-ops on other Unix).
pub use os::allocate_range;
pub use os::{guard_mapping, mapping_fault, reguard_mapping, suspend_guard, unguard_mapping};
// Only the glibc semaphores (Linux) ask whether their mapping was poisoned.
#[cfg(all(linux_like, feature = "sync"))]
pub use os::mapping_poisoned;
pub use os::{madv, zerocopy};

/// The error a libc call left in `errno`. Every raw call's failure goes through here or
/// [`check`], the one place `errno` is read.
pub(crate) fn errno() -> io::Error {
    io::Error::last_os_error()
}

/// The result of a libc call that returns 0 on success and -1 with `errno` set on failure.
pub(crate) fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// The base page size of this system.
pub fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // sysconf rather than rustix's auxv reader, which valgrind's synthetic stack confuses.
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize)
}

/// The default huge page size, from `/proc/meminfo` (`Hugepagesize:`).
pub fn default_huge_page_size() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("Hugepagesize:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

// ---------------------------------------------------------------------------------------
// Futexes (Linux): the sleeping half of mman's process-shared primitives.

/// `FUTEX_WAIT` (shared, not `FUTEX_PRIVATE`: waiters may be in other processes) on the low
/// 32 bits of `word` while they equal `expected`, for at most `timeout` (measured on
/// CLOCK_MONOTONIC by the kernel). Returns `Ok(false)` on timeout, `Ok(true)` when woken, the
/// value changed or a signal came.
#[cfg(all(linux_like, feature = "sync"))]
pub fn futex_wait(
    word: &std::sync::atomic::AtomicU64,
    expected: u32,
    timeout: Option<std::time::Duration>,
) -> io::Result<bool> {
    use rustix::thread::futex;
    let ts = timeout.map(|d| futex::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    // SAFETY: the low half of a live, aligned word; the reference is only handed to the
    // kernel, which reads it atomically. No Rust code accesses it as a 32-bit atomic.
    let half = unsafe { std::sync::atomic::AtomicU32::from_ptr(words::futex_half(word)) };
    match futex::wait(half, futex::Flags::empty(), expected, ts.as_ref()) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => Ok(true),
        Err(rustix::io::Errno::TIMEDOUT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `FUTEX_WAKE` of up to `n` waiters (shared) on the low half of `word`. Returns how many
/// were woken.
#[cfg(all(linux_like, feature = "sync"))]
pub fn futex_wake(word: &std::sync::atomic::AtomicU64, n: u32) -> usize {
    use rustix::thread::futex;
    // The kernel reads the count as an int: u32::MAX would be -1 and wake just one waiter.
    let n = n.min(i32::MAX as u32);
    // SAFETY: as in futex_wait: handed to the kernel only.
    let half = unsafe { std::sync::atomic::AtomicU32::from_ptr(words::futex_half(word)) };
    // The only failures are EFAULT/EINVAL for a bad address, which a reference rules out.
    futex::wake(half, futex::Flags::empty(), n).unwrap_or(0)
}

/// `futex_waitv` (Linux 5.16+): wait until any of `words` (the low half of each, shared,
/// not private) no longer holds its expected value, it is woken, or `timeout` passes.
/// Returns the index of the word that woke it, or `None` on a timeout, a signal, or a
/// value that already differed (the caller looks at them all then).
#[cfg(all(linux_like, feature = "async"))]
pub fn futex_waitv(
    words: &[(&std::sync::atomic::AtomicU64, u32)],
    timeout: std::time::Duration,
) -> io::Result<Option<usize>> {
    use rustix::thread::futex;
    let waiters: Vec<futex::Wait> = words
        .iter()
        .map(|(w, expected)| {
            let mut x = futex::Wait::new();
            x.val = *expected as u64;
            x.uaddr = futex::WaitPtr::new(words::futex_half(w).cast());
            x.flags = futex::WaitFlags::SIZE_U32;
            x
        })
        .collect();
    // libc's clock (not rustix's vDSO lookup, which valgrind's synthetic auxv defeats).
    let d = sync::monotonic_deadline(timeout);
    let deadline = futex::Timespec {
        tv_sec: d.tv_sec as _,
        tv_nsec: d.tv_nsec as _,
    };
    match futex::waitv(
        &waiters,
        futex::WaitvFlags::empty(),
        Some(&deadline),
        rustix::thread::ClockId::Monotonic,
    ) {
        Ok(i) => Ok(Some(i)),
        Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::TIMEDOUT) => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// A close-on-exec duplicate of a descriptor.
pub fn dup(fd: BorrowedFd<'_>) -> io::Result<std::os::fd::OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 0)?)
}
