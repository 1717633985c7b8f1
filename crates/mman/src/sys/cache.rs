//! Page-cache calls (Linux): `cachestat(2)`, `posix_fadvise(2)`, and the checks that say
//! whether the kernel tells this process the truth about a file's residency.

use std::ffi::c_void;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use super::{FileInfo, FileType};

/// What `cachestat(2)` reports for a byte range, in pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CacheStat {
    pub cached: u64,
    pub dirty: u64,
    pub writeback: u64,
    pub evicted: u64,
    pub recently_evicted: u64,
}

#[repr(C)]
struct CacheStatRange {
    off: u64,
    len: u64,
}

/// The syscall number: 451 on every Linux architecture (the unified table from 424 on).
const SYS_CACHESTAT: libc::c_long = 451;

/// 0 unknown, 1 available, 2 absent (ENOSYS).
static CACHESTAT: AtomicU8 = AtomicU8::new(0);

/// Whether this kernel has `cachestat(2)` (Linux 6.5+), as far as calls so far have shown.
pub fn cachestat_available() -> bool {
    CACHESTAT.load(Ordering::Relaxed) != 2
}

/// `cachestat(2)` of `len` bytes from `off` (`len` 0: to the end of the file).
pub fn cachestat(fd: BorrowedFd<'_>, off: u64, len: u64) -> io::Result<CacheStat> {
    if CACHESTAT.load(Ordering::Relaxed) == 2 {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    let range = CacheStatRange { off, len };
    let mut out = CacheStat::default();
    // SAFETY: both pointers are to live, correctly laid out structs (the kernel's
    // cachestat_range and cachestat); the kernel writes only `out`.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd.as_raw_fd(),
            &range as *const CacheStatRange,
            &mut out as *mut CacheStat,
            0u32,
        )
    };
    if r == 0 {
        CACHESTAT.store(1, Ordering::Relaxed);
        Ok(out)
    } else {
        let e = super::errno();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            CACHESTAT.store(2, Ordering::Relaxed);
        }
        Err(e)
    }
}

/// The advice of `posix_fadvise(2)` that the cache module gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileAdvice {
    DontNeed,
    Random,
    Normal,
}

/// `posix_fadvise(2)`: `len` 0 means to the end of the file.
pub fn fadvise(fd: BorrowedFd<'_>, off: u64, len: u64, advice: FileAdvice) -> io::Result<()> {
    use rustix::fs::Advice;
    let a = match advice {
        FileAdvice::DontNeed => Advice::DontNeed,
        FileAdvice::Random => Advice::Random,
        FileAdvice::Normal => Advice::Normal,
    };
    let len = std::num::NonZeroU64::new(len);
    Ok(rustix::fs::fadvise(fd, off, len, a)?)
}

/// `pread(2)` until `buf` is full or the file ends; the bytes read.
pub fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8], mut off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(fd, &mut buf[done..], off) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                off += n as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// The directory a relative name is looked up in: `dir`, or the working directory.
fn base(dir: Option<BorrowedFd<'_>>) -> BorrowedFd<'_> {
    dir.unwrap_or(rustix::fs::CWD)
}

/// Open `name` (relative to `dir`, or the working directory) read-only to look at its pages:
/// close-on-exec, never blocking on a FIFO, never becoming a controlling terminal, without
/// touching its access time where allowed (`O_NOATIME` is for the owner or `CAP_FOWNER`:
/// tried, then dropped); with `follow` false a symbolic link is refused (`ELOOP`).
pub fn open_file_at(dir: Option<BorrowedFd<'_>>, name: &Path, follow: bool) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let mut flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    match rustix::fs::openat(base(dir), name, flags | OFlags::NOATIME, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::PERM) => Ok(rustix::fs::openat(base(dir), name, flags, Mode::empty())?),
        Err(e) => Err(e.into()),
    }
}

/// Open directory `name` (relative to `dir`, or the working directory) to read it; with
/// `follow` false a symbolic link is refused.
pub fn open_dir_at(dir: Option<BorrowedFd<'_>>, name: &Path, follow: bool) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    Ok(rustix::fs::openat(base(dir), name, flags, Mode::empty())?)
}

/// `stat(2)` of `name` relative to `dir` (or the working directory), following a final
/// symbolic link when `follow` is set.
pub fn stat_at(dir: Option<BorrowedFd<'_>>, name: &Path, follow: bool) -> io::Result<FileInfo> {
    let at = if follow {
        rustix::fs::AtFlags::empty()
    } else {
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW
    };
    Ok(FileInfo::of(&rustix::fs::statat(base(dir), name, at)?))
}

/// The entries of an open directory but `.` and `..`: each name, and its type as the
/// directory records it ([`FileType::Unknown`] where the file system does not say).
pub fn read_dir(dir: &OwnedFd) -> io::Result<impl Iterator<Item = io::Result<(OsString, FileType)>>> {
    Ok(rustix::fs::Dir::read_from(dir)?.filter_map(|entry| match entry {
        Err(e) => Some(Err(e.into())),
        Ok(e) => {
            let bytes = e.file_name().to_bytes();
            (bytes != b"." && bytes != b"..").then(|| {
                Ok((
                    OsStr::from_bytes(bytes).to_os_string(),
                    FileType::of(e.file_type()),
                ))
            })
        }
    }))
}

/// `fdatasync(2)`.
pub fn fdatasync(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::fdatasync(fd)?)
}

/// The effective capability set of this process (from `/proc/self/status`), read once.
fn effective_caps() -> u64 {
    static CAPS: OnceLock<u64> = OnceLock::new();
    *CAPS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .unwrap_or(0)
    })
}

const CAP_FOWNER: u32 = 3;
const CAP_IPC_LOCK: u32 = 14;

/// Whether this process may lock memory beyond `RLIMIT_MEMLOCK` (`CAP_IPC_LOCK`).
pub fn may_lock_unlimited() -> bool {
    effective_caps() & (1 << CAP_IPC_LOCK) != 0
}

/// Whether `mincore(2)` reports the page cache truthfully for the open file `fd`: since
/// Linux 5.2 it does only for the file's owner, a process that may write it, or one with
/// `CAP_FOWNER`; for anyone else it reports every page resident. Write permission is asked of
/// the open file itself (through `/proc/self/fd`), not of a name someone may have pointed at
/// another file since; `path` only where `/proc` is missing.
pub fn mincore_tells_truth(owner_uid: u32, fd: BorrowedFd<'_>, path: &Path) -> bool {
    if effective_caps() & (1 << CAP_FOWNER) != 0 || rustix::process::geteuid().as_raw() == owner_uid {
        return true;
    }
    let me = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let name = if Path::new("/proc/self/fd").is_dir() {
        Path::new(&me)
    } else {
        path
    };
    rustix::fs::accessat(
        rustix::fs::CWD,
        name,
        rustix::fs::Access::WRITE_OK,
        rustix::fs::AtFlags::EACCESS,
    )
    .is_ok()
}

/// `vm.max_map_count` and the number of mappings this process has now.
pub fn map_count() -> (Option<u64>, Option<u64>) {
    let max = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let now = std::fs::read("/proc/self/maps")
        .ok()
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64);
    (max, now)
}

/// `MADV_POPULATE_READ` over a range of a mapping the caller owns: faults the pages in and
/// reports `EFAULT` (rather than raising SIGBUS) where the file no longer has them.
pub fn populate_read(addr: *mut c_void, len: usize) -> io::Result<()> {
    // SAFETY: populating reads pages in; it never changes what a mapping holds, and the
    // kernel checks the range (ENOMEM if unmapped).
    unsafe { super::madvise(addr, len, libc::MADV_POPULATE_READ) }
}
