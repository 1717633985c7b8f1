//! The other Unix systems' side (macOS, FreeBSD) of every platform difference in `sys`:
//! the same items as `linux.rs`, where the Linux-only calls answer `ENOSYS` (shown to users
//! as [`ErrorKind::Unsupported`]), advisory flags are empty, and advice that cannot be given
//! is `None`.
//!
//! [`ErrorKind::Unsupported`]: crate::ErrorKind::Unsupported

use std::ffi::c_void;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::mm::MapFlags;

use crate::flags::{LockAll, Protection};

fn unsupported<T>() -> io::Result<T> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

// ---------------------------------------------------------------------------------------
// Memory: mmap flags, locking, residency, remapping.

/// No atomic no-replace placement here: the address is a hint, and the caller checks the
/// address obtained (see `MapOptions`).
pub const MAP_FIXED_NOREPLACE: MapFlags = MapFlags::empty();
/// No `MAP_POPULATE` here; it is advisory, so it is dropped.
pub const MAP_POPULATE: MapFlags = MapFlags::empty();
/// No portable `MAP_NORESERVE`; it is advisory, so it is dropped.
pub const MAP_NORESERVE: MapFlags = MapFlags::empty();

/// No `MAP_HUGETLB` here.
pub fn map_huge(size: usize) -> io::Result<MapFlags> {
    let _ = size;
    unsupported()
}

/// No `mlock2(MLOCK_ONFAULT)` here.
///
/// # Safety
/// As [`super::mlock`] (nothing is done).
pub unsafe fn mlock_on_fault(addr: *mut c_void, len: usize) -> io::Result<()> {
    let _ = (addr, len);
    unsupported()
}

/// `mlockall(2)` (no `MCL_ONFAULT` here).
pub fn mlockall(how: LockAll) -> io::Result<()> {
    if how.contains(LockAll::ON_FAULT) {
        return unsupported();
    }
    let mut f = 0;
    if how.contains(LockAll::CURRENT) {
        f |= libc::MCL_CURRENT;
    }
    if how.contains(LockAll::FUTURE) {
        f |= libc::MCL_FUTURE;
    }
    // SAFETY: mlockall changes residency only.
    super::check(unsafe { libc::mlockall(f) })
}

/// `munlockall(2)`.
pub fn munlockall() -> io::Result<()> {
    // SAFETY: munlockall changes residency only.
    super::check(unsafe { libc::munlockall() })
}

/// `mincore(2)` into `out`, one byte a page.
///
/// # Safety
/// `out` holds at least one byte for each page of `addr..addr+len`.
pub unsafe fn mincore(addr: *mut c_void, len: usize, out: &mut [u8]) -> io::Result<()> {
    // SAFETY: mincore only reads the page tables and writes one byte per page into `out`,
    // which is long enough (the caller's contract); an unmapped range is an error, ENOMEM.
    super::check(unsafe { libc::mincore(addr as *const c_void, len, out.as_mut_ptr().cast()) })
}

/// No `mremap(2)` here.
///
/// # Safety
/// As on Linux (nothing is done).
pub unsafe fn mremap(old: *mut c_void, old_len: usize, new_len: usize) -> io::Result<*mut c_void> {
    let _ = (old, old_len, new_len);
    unsupported()
}

/// `madvise(2)` advice numbers; `None` for advice this platform cannot take (the Linux-only
/// advice: only the POSIX four and `MADV_DONTNEED` are given here).
pub mod madv {
    use libc::c_int;

    pub const NORMAL: Option<c_int> = Some(libc::MADV_NORMAL);
    pub const RANDOM: Option<c_int> = Some(libc::MADV_RANDOM);
    pub const SEQUENTIAL: Option<c_int> = Some(libc::MADV_SEQUENTIAL);
    pub const WILLNEED: Option<c_int> = Some(libc::MADV_WILLNEED);
    pub const DONTNEED: Option<c_int> = Some(libc::MADV_DONTNEED);
    pub const DOFORK: Option<c_int> = None;
    pub const MERGEABLE: Option<c_int> = None;
    pub const UNMERGEABLE: Option<c_int> = None;
    pub const HUGEPAGE: Option<c_int> = None;
    pub const NOHUGEPAGE: Option<c_int> = None;
    pub const DONTDUMP: Option<c_int> = None;
    pub const DODUMP: Option<c_int> = None;
    pub const KEEPONFORK: Option<c_int> = None;
    pub const COLD: Option<c_int> = None;
    pub const PAGEOUT: Option<c_int> = None;
    pub const POPULATE_READ: Option<c_int> = None;
    pub const POPULATE_WRITE: Option<c_int> = None;
    pub const FREE: Option<c_int> = None;
    pub const REMOVE: Option<c_int> = None;
    pub const DONTFORK: Option<c_int> = None;
    pub const WIPEONFORK: Option<c_int> = None;
}

// ---------------------------------------------------------------------------------------
// Truncation protection of file mappings: there is no SIGBUS handler here.

/// No handler to register with: `Ok(None)`.
pub fn guard_mapping(
    start: usize,
    end: usize,
    prot: Protection,
    file: Option<(BorrowedFd<'_>, u64)>,
) -> io::Result<Option<usize>> {
    let _ = (start, end, prot, file);
    Ok(None)
}

/// Nothing registered, nothing to suspend.
pub fn suspend_guard(slot: usize) {
    let _ = slot;
}

/// Nothing registered, nothing to follow.
pub fn reguard_mapping(
    slot: usize,
    start: usize,
    end: usize,
    prot: Protection,
    file: Option<(BorrowedFd<'_>, u64)>,
) {
    let _ = (slot, start, end, prot, file);
}

/// Nothing registered, nothing to forget.
pub fn unguard_mapping(slot: usize) {
    let _ = slot;
}

/// Never: no mapping is registered.
#[inline]
pub fn mapping_fault(slot: usize) -> Option<(usize, bool)> {
    let _ = slot;
    None
}

// ---------------------------------------------------------------------------------------
// Files and shared-memory objects.

/// Give the object its size (`ftruncate`; there is no portable `fallocate`).
pub fn allocate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    Ok(rustix::fs::ftruncate(fd, len)?)
}

/// No portable `fallocate` here: `Ok(false)`, nothing done.
pub fn allocate_range(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<bool> {
    let _ = (fd, offset, len);
    Ok(false)
}

/// No extended attributes here: `ENOTSUP`.
pub fn set_xattr(fd: BorrowedFd<'_>, key: &str, value: &[u8]) -> io::Result<()> {
    let _ = (fd, key, value);
    Err(io::Error::from_raw_os_error(libc::ENOTSUP))
}

/// No extended attributes here.
pub fn xattr(fd: BorrowedFd<'_>, key: &str) -> Option<Vec<u8>> {
    let _ = (fd, key);
    None
}

/// `fdatasync` where the platform has it (FreeBSD), `fsync` elsewhere (macOS).
#[cfg(feature = "persist")]
pub fn fdatasync(fd: BorrowedFd<'_>) -> io::Result<()> {
    #[cfg(target_os = "freebsd")]
    let r = rustix::fs::fdatasync(fd);
    #[cfg(not(target_os = "freebsd"))]
    let r = rustix::fs::fsync(fd);
    Ok(r?)
}

/// The `recvmsg` flag that makes received descriptors close-on-exec atomically
/// (`MSG_CMSG_CLOEXEC`, FreeBSD); `None` where the receiver must set `FD_CLOEXEC` itself.
#[cfg(target_os = "freebsd")]
pub const RECV_CLOEXEC: Option<rustix::net::RecvFlags> = Some(rustix::net::RecvFlags::CMSG_CLOEXEC);
/// The `recvmsg` flag that makes received descriptors close-on-exec atomically; `None`
/// here: the receiver sets `FD_CLOEXEC` itself.
#[cfg(not(target_os = "freebsd"))]
pub const RECV_CLOEXEC: Option<rustix::net::RecvFlags> = None;

/// Flags every `shm_open` adds: none here, where objects are not files in a directory
/// others may write (macOS), or `shm_open` takes no flags beyond the standard ones (FreeBSD).
pub const SHM_OPEN_FLAGS: rustix::shm::OFlags = rustix::shm::OFlags::empty();

/// No `SO_PEERCRED` here.
pub fn peer_credentials(sock: BorrowedFd<'_>) -> io::Result<(u32, u32, u32)> {
    let _ = sock;
    unsupported()
}

/// The size of a block device: its end, found by seeking there and back (other systems have
/// no common ioctl for it).
pub fn block_device_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let here = rustix::fs::seek(fd, rustix::fs::SeekFrom::Current(0))?;
    let end = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))?;
    rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(here))?;
    Ok(end)
}

/// No memfd seals here: the calls answer `ENOSYS`, and the seal bits keep Linux's numbers
/// only so that `shm::Seals` has distinct bits to name.
pub mod seals {
    use super::*;

    pub const SEAL: u32 = 0x1;
    pub const SHRINK: u32 = 0x2;
    pub const GROW: u32 = 0x4;
    pub const WRITE: u32 = 0x8;
    pub const FUTURE_WRITE: u32 = 0x10;

    /// No `memfd_create` here.
    pub fn memfd(name: &str) -> io::Result<OwnedFd> {
        let _ = name;
        unsupported()
    }

    /// No `F_GET_SEALS` here.
    pub fn get(fd: BorrowedFd<'_>) -> io::Result<u32> {
        let _ = fd;
        unsupported()
    }

    /// No `F_ADD_SEALS` here.
    pub fn add(fd: BorrowedFd<'_>, bits: u32) -> io::Result<()> {
        let _ = (fd, bits);
        unsupported()
    }

    /// No hugetlbfs here.
    pub fn huge_pages(fd: BorrowedFd<'_>) -> io::Result<bool> {
        let _ = fd;
        Ok(false)
    }
}

// ---------------------------------------------------------------------------------------
// Zero-copy transfers.

/// No splice, vmsplice or copy_file_range here: every call answers `ENOSYS`, and
/// [`AVAILABLE`](zerocopy::AVAILABLE) tells callers not to try.
pub mod zerocopy {
    use super::*;

    /// Whether this platform has the calls below.
    pub const AVAILABLE: bool = false;

    /// No `splice(2)` here.
    pub fn splice(
        from: BorrowedFd<'_>,
        off: Option<&mut u64>,
        to: BorrowedFd<'_>,
        len: usize,
    ) -> io::Result<usize> {
        let _ = (from, off, to, len);
        unsupported()
    }

    /// No `vmsplice(2)` here.
    ///
    /// # Safety
    /// As on Linux (nothing is done).
    pub unsafe fn vmsplice(to: BorrowedFd<'_>, ptr: *const u8, len: usize) -> io::Result<usize> {
        let _ = (to, ptr, len);
        unsupported()
    }

    /// No `copy_file_range(2)` here.
    pub fn copy_file_range(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        let _ = (from, to, len);
        unsupported()
    }

    /// No `F_SETPIPE_SZ` here: the pipe keeps its size.
    pub fn grow_pipe(fd: BorrowedFd<'_>, want: usize) -> Option<usize> {
        let _ = (fd, want);
        None
    }

    /// The relay pipe of the splice method, which does not exist here.
    pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
        unsupported()
    }
}
