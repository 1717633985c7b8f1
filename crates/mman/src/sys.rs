//! The thin layer over rustix and libc: every system call mman makes goes through here, and
//! every platform difference lives here. Linux is the full target; on other Unix systems the
//! Linux-only calls answer `ENOSYS` (shown to users as [`ErrorKind::Unsupported`]).
//!
//! [`ErrorKind::Unsupported`]: crate::ErrorKind::Unsupported

use std::ffi::c_void;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::OnceLock;

use rustix::mm::{MapFlags, MprotectFlags, MsyncFlags, ProtFlags};

#[cfg(all(any(target_os = "linux", target_os = "android"), feature = "cache"))]
pub mod cache;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub mod fault;
#[cfg(all(any(target_os = "linux", target_os = "android"), feature = "fault"))]
pub mod guard;
#[cfg(feature = "persist")]
pub mod persist;
pub mod shm;
#[cfg(all(any(target_os = "linux", target_os = "android"), feature = "sync"))]
pub mod sync;
pub mod words;

/// The base page size of this system.
pub fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // sysconf rather than rustix's auxv reader, which valgrind's synthetic stack confuses.
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize)
}

/// Protection bits as the kernel takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prot {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Prot {
    /// No access.
    // Used by the `fault` feature (Linux) only.
    #[allow(dead_code)]
    pub const NONE: Prot = Prot {
        read: false,
        write: false,
        exec: false,
    };
    /// Read only.
    pub const READ: Prot = Prot {
        read: true,
        write: false,
        exec: false,
    };
    /// Read and write.
    // Used by the `fault` and `sync` features (Linux) only.
    #[allow(dead_code)]
    pub const READ_WRITE: Prot = Prot {
        read: true,
        write: true,
        exec: false,
    };

    fn flags(self) -> ProtFlags {
        let mut f = ProtFlags::empty();
        if self.read {
            f |= ProtFlags::READ;
        }
        if self.write {
            f |= ProtFlags::WRITE;
        }
        if self.exec {
            f |= ProtFlags::EXEC;
        }
        f
    }
    fn mprotect_flags(self) -> MprotectFlags {
        MprotectFlags::from_bits_retain(self.flags().bits())
    }
}

/// How a mapping is placed in the address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The kernel chooses; the address, if not null, is only a hint.
    Anywhere,
    /// Exactly at the address, failing with `EEXIST` if anything is mapped there.
    FixedNoReplace,
    /// Exactly at the address, replacing whatever is mapped there (`MAP_FIXED`).
    FixedReplace,
}

/// The flags of an `mmap` call.
#[derive(Clone, Copy, Debug)]
pub struct MapRequest {
    pub shared: bool,
    pub placement: Placement,
    pub populate: bool,
    pub no_reserve: bool,
    /// `Some(0)`: `MAP_HUGETLB` with the default huge page size; `Some(n)`: pages of `n` bytes.
    pub huge_page_size: Option<usize>,
}

impl MapRequest {
    /// `MAP_SHARED`, placed by the kernel, nothing else.
    pub const SHARED: MapRequest = MapRequest {
        shared: true,
        placement: Placement::Anywhere,
        populate: false,
        no_reserve: false,
        huge_page_size: None,
    };
    /// `MAP_PRIVATE`, placed by the kernel, nothing else.
    pub const PRIVATE: MapRequest = MapRequest {
        shared: false,
        ..MapRequest::SHARED
    };
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn map_flags(r: &MapRequest) -> io::Result<MapFlags> {
    let mut f = if r.shared {
        MapFlags::SHARED
    } else {
        MapFlags::PRIVATE
    };
    match r.placement {
        Placement::Anywhere => {}
        Placement::FixedNoReplace => f |= MapFlags::FIXED_NOREPLACE,
        Placement::FixedReplace => f |= MapFlags::FIXED,
    }
    if r.populate {
        f |= MapFlags::POPULATE;
    }
    if r.no_reserve {
        f |= MapFlags::NORESERVE;
    }
    if let Some(size) = r.huge_page_size {
        f |= MapFlags::HUGETLB;
        if size != 0 {
            if !size.is_power_of_two() {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            // MAP_HUGE_SHIFT: the log2 of the page size goes in bits 26..32.
            f |= MapFlags::from_bits_retain(size.trailing_zeros() << 26);
        }
    }
    Ok(f)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn map_flags(r: &MapRequest) -> io::Result<MapFlags> {
    let mut f = if r.shared {
        MapFlags::SHARED
    } else {
        MapFlags::PRIVATE
    };
    match r.placement {
        Placement::Anywhere => {}
        // Elsewhere there is no atomic no-replace placement: emulated by the caller with a
        // hint and a check of the address obtained.
        Placement::FixedNoReplace => {}
        Placement::FixedReplace => f |= MapFlags::FIXED,
    }
    if r.huge_page_size.is_some() {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    // No MAP_POPULATE or portable MAP_NORESERVE here: both are advisory, so they are dropped.
    let _ = (r.populate, r.no_reserve);
    Ok(f)
}

/// `mmap(2)` of a file (`fd` is `Some`) or of anonymous memory.
///
/// # Safety
/// With [`Placement::FixedReplace`], `addr..addr+len` must be memory the caller owns and no
/// live reference may point into it: it is replaced.
pub unsafe fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: Prot,
    req: &MapRequest,
    fd: Option<BorrowedFd<'_>>,
    offset: u64,
) -> io::Result<*mut c_void> {
    let flags = map_flags(req)?;
    // SAFETY: forwarded from the caller for fixed placements; otherwise the kernel picks a
    // free range and replaces nothing.
    let r = unsafe {
        match fd {
            Some(fd) => rustix::mm::mmap(addr, len, prot.flags(), flags, fd, offset),
            None => rustix::mm::mmap_anonymous(addr, len, prot.flags(), flags),
        }
    };
    Ok(r?)
}

/// `munmap(2)`.
///
/// # Safety
/// The range must be a mapping the caller owns, with no live reference into it.
pub unsafe fn munmap(addr: *mut c_void, len: usize) -> io::Result<()> {
    // SAFETY: forwarded from the caller.
    Ok(unsafe { rustix::mm::munmap(addr, len) }?)
}

/// `mprotect(2)`.
///
/// # Safety
/// The range must be a mapping the caller owns; no reference into it may outlive the
/// protection it assumes.
pub unsafe fn mprotect(addr: *mut c_void, len: usize, prot: Prot) -> io::Result<()> {
    // SAFETY: forwarded from the caller.
    Ok(unsafe { rustix::mm::mprotect(addr, len, prot.mprotect_flags()) }?)
}

/// `mlock(2)`, or `mlock2(MLOCK_ONFAULT)` where asked (Linux).
pub fn mlock(addr: *mut c_void, len: usize, on_fault: bool) -> io::Result<()> {
    // SAFETY: locking changes residency, never contents or validity; an unmapped range is an
    // error (ENOMEM), not undefined behaviour.
    unsafe {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if on_fault {
            return Ok(rustix::mm::mlock_with(
                addr,
                len,
                rustix::mm::MlockFlags::ONFAULT,
            )?);
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        if on_fault {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        Ok(rustix::mm::mlock(addr, len)?)
    }
}

/// `munlock(2)`.
pub fn munlock(addr: *mut c_void, len: usize) -> io::Result<()> {
    // SAFETY: unlocking changes residency only.
    Ok(unsafe { rustix::mm::munlock(addr, len) }?)
}

/// Which pages `mlockall(2)` applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockAll {
    pub current: bool,
    pub future: bool,
    pub on_fault: bool,
}

/// `mlockall(2)`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn mlockall(how: LockAll) -> io::Result<()> {
    use rustix::mm::MlockAllFlags;
    let mut f = MlockAllFlags::empty();
    if how.current {
        f |= MlockAllFlags::CURRENT;
    }
    if how.future {
        f |= MlockAllFlags::FUTURE;
    }
    if how.on_fault {
        f |= MlockAllFlags::ONFAULT;
    }
    Ok(rustix::mm::mlockall(f)?)
}

/// `mlockall(2)`.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn mlockall(how: LockAll) -> io::Result<()> {
    if how.on_fault {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    let mut f = 0;
    if how.current {
        f |= libc::MCL_CURRENT;
    }
    if how.future {
        f |= libc::MCL_FUTURE;
    }
    // SAFETY: mlockall changes residency only.
    if unsafe { libc::mlockall(f) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `munlockall(2)`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn munlockall() -> io::Result<()> {
    Ok(rustix::mm::munlockall()?)
}

/// `munlockall(2)`.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn munlockall() -> io::Result<()> {
    // SAFETY: munlockall changes residency only.
    if unsafe { libc::munlockall() } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The `msync(2)` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsyncMode {
    Sync,
    Async,
    Invalidate,
}

/// `msync(2)`.
///
/// # Safety
/// `MS_INVALIDATE` may replace the contents of a private mapping's pages with the file's:
/// no reference may assume the old contents.
pub unsafe fn msync(addr: *mut c_void, len: usize, how: MsyncMode) -> io::Result<()> {
    let f = match how {
        MsyncMode::Sync => MsyncFlags::SYNC,
        MsyncMode::Async => MsyncFlags::ASYNC,
        MsyncMode::Invalidate => MsyncFlags::INVALIDATE,
    };
    // SAFETY: forwarded from the caller.
    Ok(unsafe { rustix::mm::msync(addr, len, f) }?)
}

/// `madvise(2)` with a raw advice number (the map module owns the names).
///
/// # Safety
/// Some advice (`MADV_DONTNEED`, `MADV_FREE`, `MADV_REMOVE`, `MADV_DONTFORK`) changes what
/// the range holds or whether it exists in a child: the caller makes sure no reference
/// assumes otherwise.
pub unsafe fn madvise(addr: *mut c_void, len: usize, advice: i32) -> io::Result<()> {
    // SAFETY: forwarded from the caller. libc is used because rustix's `Advice` cannot carry
    // every value on every platform.
    let r = unsafe { libc::madvise(addr, len, advice) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `mincore(2)`: one byte a page, bit 0 set when resident.
pub fn mincore(addr: *mut c_void, len: usize, out: &mut [u8]) -> io::Result<()> {
    let ps = page_size();
    assert!(out.len() >= len.div_ceil(ps));
    // SAFETY: mincore only reads the page tables and writes one byte per page into `out`,
    // which is long enough (checked above); an unmapped range is an error, ENOMEM.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let r = unsafe { libc::mincore(addr, len, out.as_mut_ptr()) };
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    // SAFETY: as above.
    let r = unsafe { libc::mincore(addr as *const c_void, len, out.as_mut_ptr() as _) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `mremap(2)` with `MREMAP_MAYMOVE` (Linux only).
///
/// # Safety
/// The old range must be a mapping the caller owns with no live reference into it.
pub unsafe fn mremap(old: *mut c_void, old_len: usize, new_len: usize) -> io::Result<*mut c_void> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: forwarded from the caller.
        Ok(unsafe { rustix::mm::mremap(old, old_len, new_len, rustix::mm::MremapFlags::MAYMOVE) }?)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (old, old_len, new_len);
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }
}

/// `RLIMIT_MEMLOCK` as (soft, hard); `None` means unlimited.
pub fn memlock_limit() -> (Option<u64>, Option<u64>) {
    let l = rustix::process::getrlimit(rustix::process::Resource::Memlock);
    (l.current, l.maximum)
}

/// The huge pages reserved for `MAP_HUGETLB`, from `/proc/sys/vm/nr_hugepages`.
pub fn reserved_huge_pages() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The kind of file behind a descriptor, and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Regular,
    Directory,
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
    Symlink,
    Unknown,
}

/// What mman needs to know of an open file.
#[derive(Clone, Copy, Debug)]
pub struct FileInfo {
    pub kind: FileType,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
}

/// `fstat(2)`, with the size of a block device taken from `lseek(SEEK_END)`.
pub fn file_info(fd: BorrowedFd<'_>) -> io::Result<FileInfo> {
    use rustix::fs::FileType as T;
    let st = rustix::fs::fstat(fd)?;
    let kind = match T::from_raw_mode(st.st_mode as _) {
        T::RegularFile => FileType::Regular,
        T::Directory => FileType::Directory,
        T::BlockDevice => FileType::BlockDevice,
        T::CharacterDevice => FileType::CharDevice,
        T::Fifo => FileType::Fifo,
        T::Socket => FileType::Socket,
        T::Symlink => FileType::Symlink,
        _ => FileType::Unknown,
    };
    let mut size = st.st_size as u64;
    if kind == FileType::BlockDevice {
        let here = rustix::fs::seek(fd, rustix::fs::SeekFrom::Current(0))?;
        size = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))?;
        rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(here))?;
    }
    Ok(FileInfo {
        kind,
        size,
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
    })
}

/// The name of an open descriptor, for error messages (Linux: `/proc/self/fd`).
pub fn fd_path(fd: BorrowedFd<'_>) -> Option<std::path::PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
}

/// The current offset of a descriptor, `None` if it has none (pipes, sockets, terminals).
pub fn offset_of(fd: BorrowedFd<'_>) -> Option<u64> {
    rustix::fs::seek(fd, rustix::fs::SeekFrom::Current(0)).ok()
}

/// Set the offset of a seekable descriptor.
pub fn seek_to(fd: BorrowedFd<'_>, pos: u64) -> io::Result<u64> {
    Ok(rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(pos))?)
}

/// `read(2)`, retried on `EINTR`.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return Ok(r?),
        }
    }
}

/// Wait until `fd` is ready: writable when `write`, else readable.
pub fn wait_ready(fd: BorrowedFd<'_>, write: bool) -> io::Result<()> {
    use rustix::event::{poll, PollFd, PollFlags};
    let flags = if write { PollFlags::OUT } else { PollFlags::IN };
    let mut fds = [PollFd::new(&fd, flags)];
    loop {
        match poll(&mut fds, None) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map(|_| ()).map_err(Into::into),
        }
    }
}

/// `write(2)` of raw memory, retried on `EINTR`; a non-blocking `fd` is waited on.
///
/// # Safety
/// `ptr..ptr+len` must be mapped (the kernel copies it; a hole past a file's end is `EFAULT`,
/// not a signal).
pub unsafe fn write_raw(fd: BorrowedFd<'_>, ptr: *const u8, len: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: the kernel reads `len` bytes at `ptr`, which the caller guarantees mapped;
        // it never creates a Rust reference to them.
        let r = unsafe { libc::write(fd.as_raw_fd(), ptr.cast(), len) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => wait_ready(fd, true)?,
            _ => return Err(e),
        }
    }
}

/// Write all of `buf`, handling short writes, `EINTR` and `EAGAIN`. Returns the syscalls made.
pub fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<u64> {
    let mut calls = 0;
    while !buf.is_empty() {
        // SAFETY: `buf` is a live slice.
        let n = unsafe { write_raw(fd, buf.as_ptr(), buf.len()) }?;
        calls += 1;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        buf = &buf[n..];
    }
    Ok(calls)
}

/// Resource usage of this process: (minor faults, major faults, user seconds, system seconds).
pub fn rusage_self() -> (u64, u64, f64, f64) {
    // SAFETY: getrusage fills the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        ru.ru_minflt as u64,
        ru.ru_majflt as u64,
        secs(ru.ru_utime),
        secs(ru.ru_stime),
    )
}

/// Linux's zero-copy calls: splice, vmsplice, copy_file_range and pipe sizing.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub mod zerocopy {
    use super::*;
    use rustix::pipe::SpliceFlags;

    fn retry<T>(fd: BorrowedFd<'_>, mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
        loop {
            match f() {
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => wait_ready(fd, true)?,
                r => return Ok(r?),
            }
        }
    }

    /// `splice(2)` from `from` (at `*off` when given) into `to`, up to `len` bytes.
    pub fn splice(
        from: BorrowedFd<'_>,
        off: Option<&mut u64>,
        to: BorrowedFd<'_>,
        len: usize,
    ) -> io::Result<usize> {
        let mut off = off;
        retry(to, || {
            rustix::pipe::splice(
                from,
                off.as_deref_mut(),
                to,
                None,
                len,
                SpliceFlags::MOVE | SpliceFlags::MORE,
            )
        })
    }

    /// `vmsplice(2)`: hand the pages at `ptr..ptr+len` to the pipe `to` by reference.
    ///
    /// # Safety
    /// The range must be mapped and readable. The pipe keeps references to the pages, not
    /// copies: the reader sees them as they are when it reads.
    pub unsafe fn vmsplice(to: BorrowedFd<'_>, ptr: *const u8, len: usize) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let iov = libc::iovec {
            iov_base: ptr as *mut c_void,
            iov_len: len,
        };
        loop {
            // SAFETY: `to` is the write end of a pipe, so the kernel only reads the range,
            // which the caller guarantees mapped and readable; no Rust reference is made.
            let r = unsafe { libc::vmsplice(to.as_raw_fd(), &iov, 1, 0) };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => wait_ready(to, true)?,
                _ => return Err(e),
            }
        }
    }

    /// `copy_file_range(2)` at the current offsets of both descriptors.
    pub fn copy_file_range(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        retry(to, || rustix::fs::copy_file_range(from, None, to, None, len))
    }

    /// Grow a pipe's buffer (`F_SETPIPE_SZ`), up to `/proc/sys/fs/pipe-max-size`.
    pub fn grow_pipe(fd: BorrowedFd<'_>, want: usize) -> Option<usize> {
        let now = rustix::pipe::fcntl_getpipe_size(fd).ok()?;
        if now >= want {
            return Some(now);
        }
        rustix::pipe::fcntl_setpipe_size(fd, want).ok()
    }

    /// A new pipe, both ends close-on-exec.
    pub fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
        Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
    }
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
#[cfg(all(any(target_os = "linux", target_os = "android"), feature = "sync"))]
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
#[cfg(all(any(target_os = "linux", target_os = "android"), feature = "sync"))]
pub fn futex_wake(word: &std::sync::atomic::AtomicU64, n: u32) -> usize {
    use rustix::thread::futex;
    // The kernel reads the count as an int: u32::MAX would be -1 and wake just one waiter.
    let n = n.min(i32::MAX as u32);
    // SAFETY: as in futex_wait: handed to the kernel only.
    let half = unsafe { std::sync::atomic::AtomicU32::from_ptr(words::futex_half(word)) };
    // The only failures are EFAULT/EINVAL for a bad address, which a reference rules out.
    futex::wake(half, futex::Flags::empty(), n).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Fault protection of file mappings (see sys/fault.rs); no-ops where it is not built.

/// Register a mapping with the SIGBUS handler. `Ok(None)` where there is no handler (not
/// Linux); an error when it cannot be registered.
pub fn guard_mapping(start: usize, end: usize, prot: Prot) -> io::Result<Option<usize>> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        fault::register(start, end, prot.flags().bits() as i32).map(Some)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (start, end, prot);
        Ok(None)
    }
}

/// Hide a registered mapping from the handler while it moves (before mremap).
pub fn suspend_guard(slot: usize) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fault::suspend(slot);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = slot;
}

/// Follow a registered mapping that moved or changed protection.
pub fn reguard_mapping(slot: usize, start: usize, end: usize, prot: Prot) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fault::update(slot, start, end, prot.flags().bits() as i32);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (slot, start, end, prot);
}

/// Forget a registered mapping; call before unmapping it.
pub fn unguard_mapping(slot: usize) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fault::unregister(slot);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = slot;
}

/// Whether the registered mapping took a fault past the end of its file.
#[inline]
pub fn mapping_poisoned(slot: usize) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        fault::poisoned(slot)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = slot;
        false
    }
}

/// A close-on-exec duplicate of a descriptor.
pub fn dup(fd: BorrowedFd<'_>) -> io::Result<std::os::fd::OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 0)?)
}
