//! The Linux (and Android) side of every platform difference in `sys`: the full target.
//!
//! `sys.rs` chooses this file or `unix.rs` (macOS, FreeBSD) once, by path; both expose the
//! same items, so nothing else in the crate asks which platform it is on. Where the other
//! Unix systems lack a call, `unix.rs` answers `ENOSYS`; where they lack a flag, it is empty
//! (an advisory flag) or `None` (advice that cannot be given).

use std::ffi::c_void;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::mm::MapFlags;

use crate::flags::{LockAll, Protection};

// ---------------------------------------------------------------------------------------
// Memory: mmap flags, locking, residency, remapping.

/// `MAP_FIXED_NOREPLACE`: exactly at the address, failing with `EEXIST` if anything is
/// mapped there.
pub const MAP_FIXED_NOREPLACE: MapFlags = MapFlags::FIXED_NOREPLACE;
/// `MAP_POPULATE`: fault the pages in now.
pub const MAP_POPULATE: MapFlags = MapFlags::POPULATE;
/// `MAP_NORESERVE`: no swap reserved for the mapping.
pub const MAP_NORESERVE: MapFlags = MapFlags::NORESERVE;

/// `MAP_HUGETLB`, with the page size in the `MAP_HUGE_SHIFT` bits unless `size` is 0 (the
/// default huge page size). `EINVAL` for a size that is not a power of two.
pub fn map_huge(size: usize) -> io::Result<MapFlags> {
    let mut f = MapFlags::HUGETLB;
    if size != 0 {
        if !size.is_power_of_two() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // MAP_HUGE_SHIFT: the log2 of the page size goes in bits 26..32.
        f |= MapFlags::from_bits_retain(size.trailing_zeros() << 26);
    }
    Ok(f)
}

/// `mlock2(MLOCK_ONFAULT)`: lock the pages as they are first touched.
///
/// # Safety
/// As [`super::mlock`]: `addr..addr+len` is memory the caller owns.
pub unsafe fn mlock_on_fault(addr: *mut c_void, len: usize) -> io::Result<()> {
    // SAFETY: forwarded from the caller; locking changes residency, never contents.
    Ok(unsafe { rustix::mm::mlock_with(addr, len, rustix::mm::MlockFlags::ONFAULT) }?)
}

/// `mlockall(2)`.
pub fn mlockall(how: LockAll) -> io::Result<()> {
    use rustix::mm::MlockAllFlags;
    let mut f = MlockAllFlags::empty();
    if how.contains(LockAll::CURRENT) {
        f |= MlockAllFlags::CURRENT;
    }
    if how.contains(LockAll::FUTURE) {
        f |= MlockAllFlags::FUTURE;
    }
    if how.contains(LockAll::ON_FAULT) {
        f |= MlockAllFlags::ONFAULT;
    }
    Ok(rustix::mm::mlockall(f)?)
}

/// `munlockall(2)`.
pub fn munlockall() -> io::Result<()> {
    Ok(rustix::mm::munlockall()?)
}

/// `mincore(2)` into `out`, one byte a page.
///
/// # Safety
/// `out` holds at least one byte for each page of `addr..addr+len`.
pub unsafe fn mincore(addr: *mut c_void, len: usize, out: &mut [u8]) -> io::Result<()> {
    // SAFETY: mincore only reads the page tables and writes one byte per page into `out`,
    // which is long enough (the caller's contract); an unmapped range is an error, ENOMEM.
    super::check(unsafe { libc::mincore(addr, len, out.as_mut_ptr()) })
}

/// `mremap(2)` with `MREMAP_MAYMOVE`.
///
/// # Safety
/// The old range must be a mapping the caller owns with no live reference into it.
pub unsafe fn mremap(old: *mut c_void, old_len: usize, new_len: usize) -> io::Result<*mut c_void> {
    // SAFETY: forwarded from the caller.
    Ok(unsafe { rustix::mm::mremap(old, old_len, new_len, rustix::mm::MremapFlags::MAYMOVE) }?)
}

/// `madvise(2)` advice numbers; `None` for advice this platform cannot take.
pub mod madv {
    use libc::c_int;

    pub const NORMAL: Option<c_int> = Some(libc::MADV_NORMAL);
    pub const RANDOM: Option<c_int> = Some(libc::MADV_RANDOM);
    pub const SEQUENTIAL: Option<c_int> = Some(libc::MADV_SEQUENTIAL);
    pub const WILLNEED: Option<c_int> = Some(libc::MADV_WILLNEED);
    pub const DONTNEED: Option<c_int> = Some(libc::MADV_DONTNEED);
    pub const DOFORK: Option<c_int> = Some(libc::MADV_DOFORK);
    pub const MERGEABLE: Option<c_int> = Some(libc::MADV_MERGEABLE);
    pub const UNMERGEABLE: Option<c_int> = Some(libc::MADV_UNMERGEABLE);
    pub const HUGEPAGE: Option<c_int> = Some(libc::MADV_HUGEPAGE);
    pub const NOHUGEPAGE: Option<c_int> = Some(libc::MADV_NOHUGEPAGE);
    pub const DONTDUMP: Option<c_int> = Some(libc::MADV_DONTDUMP);
    pub const DODUMP: Option<c_int> = Some(libc::MADV_DODUMP);
    pub const KEEPONFORK: Option<c_int> = Some(libc::MADV_KEEPONFORK);
    pub const COLD: Option<c_int> = Some(libc::MADV_COLD);
    pub const PAGEOUT: Option<c_int> = Some(libc::MADV_PAGEOUT);
    pub const POPULATE_READ: Option<c_int> = Some(libc::MADV_POPULATE_READ);
    pub const POPULATE_WRITE: Option<c_int> = Some(libc::MADV_POPULATE_WRITE);
    pub const FREE: Option<c_int> = Some(libc::MADV_FREE);
    pub const REMOVE: Option<c_int> = Some(libc::MADV_REMOVE);
    pub const DONTFORK: Option<c_int> = Some(libc::MADV_DONTFORK);
    pub const WIPEONFORK: Option<c_int> = Some(libc::MADV_WIPEONFORK);
}

// ---------------------------------------------------------------------------------------
// Truncation protection of file mappings: the SIGBUS handler of `sys/fault.rs`.

/// Register a mapping with the SIGBUS handler; an error when it cannot be registered.
/// `file`: the mapped file's descriptor (open until [`unguard_mapping`]) and the file offset
/// of `start`, which let the handler tell a truncation from a page it could not back.
pub fn guard_mapping(
    start: usize,
    end: usize,
    prot: Protection,
    file: Option<(BorrowedFd<'_>, u64)>,
) -> io::Result<Option<usize>> {
    super::fault::register(start, end, super::prot_bits(prot) as i32, file).map(Some)
}

/// Hide a registered mapping from the handler while it moves (before mremap).
pub fn suspend_guard(slot: usize) {
    super::fault::suspend(slot);
}

/// Follow a registered mapping that moved or changed protection.
pub fn reguard_mapping(
    slot: usize,
    start: usize,
    end: usize,
    prot: Protection,
    file: Option<(BorrowedFd<'_>, u64)>,
) {
    super::fault::update(slot, start, end, super::prot_bits(prot) as i32, file);
}

/// Forget a registered mapping; call before unmapping it.
pub fn unguard_mapping(slot: usize) {
    super::fault::unregister(slot);
}

/// Whether the registered mapping took a fault (past the end of its file, or on a page
/// the file system could not back).
#[inline]
#[cfg(feature = "sync")]
pub fn mapping_poisoned(slot: usize) -> bool {
    super::fault::poisoned(slot)
}

/// The first fault the registered mapping took: the offset of the faulting page from the
/// mapping's first page, and whether that page lay inside the file (it could not be
/// backed) rather than past its end (a truncation).
#[inline]
pub fn mapping_fault(slot: usize) -> Option<(usize, bool)> {
    super::fault::caught(slot)
}

// ---------------------------------------------------------------------------------------
// Files and shared-memory objects.

/// Give the object `len` bytes of real backing store now (`fallocate`), so a full
/// `/dev/shm` is `ENOSPC` here rather than SIGBUS later; `ftruncate` for length 0.
pub fn allocate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    if len > 0 {
        rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::empty(), 0, len)?;
        return Ok(());
    }
    Ok(rustix::fs::ftruncate(fd, len)?)
}

/// Give bytes `offset..offset + len` of a file real backing store now (`fallocate` mode 0,
/// which grows a file that ends before `offset + len` and never shrinks one): blocks on a
/// disk, pages on a tmpfs, so that a full file system or a quota is `ENOSPC` or `EDQUOT`
/// here rather than SIGBUS when a mapping first writes (or, on tmpfs, reads) the range.
/// `Ok(false)` when the file system cannot allocate ahead (`EOPNOTSUPP`: nothing done).
pub fn allocate_range(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    loop {
        match rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::empty(), offset, len) {
            Ok(()) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::OPNOTSUPP) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Flags every `shm_open` adds. Objects are files in `/dev/shm`, a directory every user may
/// write: a name there may be a symbolic link or a FIFO another user planted. `O_NOFOLLOW`
/// refuses the link (`ELOOP`), as glibc's `shm_open` does and rustix's does not; `O_NONBLOCK`
/// keeps an open of a FIFO for reading from waiting for a writer forever (it has no effect
/// on a regular file, and the FIFO is then refused as not one).
pub const SHM_OPEN_FLAGS: rustix::shm::OFlags = rustix::shm::OFlags::from_bits_retain(
    rustix::fs::OFlags::NOFOLLOW.bits() | rustix::fs::OFlags::NONBLOCK.bits(),
);

/// Set a `user.` extended attribute (tmpfs has them since Linux 6.6).
pub fn set_xattr(fd: BorrowedFd<'_>, key: &str, value: &[u8]) -> io::Result<()> {
    rustix::fs::fsetxattr(fd, key, value, rustix::fs::XattrFlags::empty())?;
    Ok(())
}

/// Read an extended attribute of at most 128 bytes.
pub fn xattr(fd: BorrowedFd<'_>, key: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 128];
    let n = rustix::fs::fgetxattr(fd, key, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// The size of a block device (`ioctl(BLKGETSIZE64)`): no seek, so the offset that the
/// descriptor shares with every other holder of its open file description never moves.
pub fn block_device_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    // The kernel's definition: _IOR(0x12, 114, size_t) (the encoding differs by architecture).
    const BLKGETSIZE64: libc::Ioctl = libc::_IOR::<libc::size_t>(0x12, 114);
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 into `size`, which outlives the call.
    super::check(unsafe { libc::ioctl(fd.as_raw_fd(), BLKGETSIZE64, &mut size) })?;
    Ok(size)
}

/// `fdatasync`.
#[cfg(feature = "persist")]
pub fn fdatasync(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::fdatasync(fd)?)
}

/// The `recvmsg` flag that makes received descriptors close-on-exec atomically
/// (`MSG_CMSG_CLOEXEC`); `None` where the receiver must set `FD_CLOEXEC` itself.
pub const RECV_CLOEXEC: Option<rustix::net::RecvFlags> = Some(rustix::net::RecvFlags::CMSG_CLOEXEC);

/// Credentials (pid, uid, gid) of the process at the other end of a Unix socket
/// (`SO_PEERCRED`).
pub fn peer_credentials(sock: BorrowedFd<'_>) -> io::Result<(u32, u32, u32)> {
    let c = rustix::net::sockopt::socket_peercred(sock)?;
    Ok((
        c.pid.as_raw_nonzero().get() as u32,
        c.uid.as_raw(),
        c.gid.as_raw(),
    ))
}

/// memfd objects and their seals (`F_SEAL_*`, as the kernel numbers them).
pub mod seals {
    use super::*;
    use rustix::fs::SealFlags;

    pub const SEAL: u32 = SealFlags::SEAL.bits();
    pub const SHRINK: u32 = SealFlags::SHRINK.bits();
    pub const GROW: u32 = SealFlags::GROW.bits();
    pub const WRITE: u32 = SealFlags::WRITE.bits();
    pub const FUTURE_WRITE: u32 = SealFlags::FUTURE_WRITE.bits();

    /// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)`.
    pub fn memfd(name: &str) -> io::Result<OwnedFd> {
        use rustix::fs::MemfdFlags;
        Ok(rustix::fs::memfd_create(
            name,
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?)
    }

    /// `fcntl(F_GET_SEALS)`.
    pub fn get(fd: BorrowedFd<'_>) -> io::Result<u32> {
        Ok(rustix::fs::fcntl_get_seals(fd)?.bits())
    }

    /// `fcntl(F_ADD_SEALS)`.
    pub fn add(fd: BorrowedFd<'_>, bits: u32) -> io::Result<()> {
        Ok(rustix::fs::fcntl_add_seals(
            fd,
            SealFlags::from_bits_retain(bits),
        )?)
    }

    /// Whether the file lives on hugetlbfs (`fstatfs`): a memfd made with `MFD_HUGETLB`.
    pub fn huge_pages(fd: BorrowedFd<'_>) -> io::Result<bool> {
        #[allow(clippy::unnecessary_cast)]
        Ok(is_hugetlbfs(rustix::fs::fstatfs(fd)?.f_type as u64))
    }

    /// Whether `statfs`'s `f_type` (widened to `u64` whatever its C type) is hugetlbfs's.
    /// File-system magic numbers are 32 bits, and `f_type` is a signed `int` on 32-bit glibc
    /// targets: hugetlbfs's, with its high bit set, reads there as negative, and widened with
    /// its sign it matches no 64-bit constant. So only the low 32 bits are compared.
    pub(crate) fn is_hugetlbfs(f_type: u64) -> bool {
        const HUGETLBFS_MAGIC: u32 = 0x9584_58f6;
        f_type as u32 == HUGETLBFS_MAGIC
    }

    #[cfg(test)]
    #[test]
    fn a_magic_number_read_as_a_negative_int_is_still_hugetlbfs() {
        // f_type as a 32-bit target's statfs holds it (int), widened as huge_pages widens it.
        assert!(is_hugetlbfs(0x9584_58f6_u32 as i32 as u64));
        assert!(is_hugetlbfs(0x9584_58f6));
        assert!(!is_hugetlbfs(0x0102_1994), "tmpfs");
    }
}

// ---------------------------------------------------------------------------------------
// Zero-copy transfers.

/// Linux's zero-copy calls: splice, vmsplice, copy_file_range and pipe sizing.
pub mod zerocopy {
    use super::*;
    use crate::sys::wait_ready;
    use rustix::pipe::SpliceFlags;

    /// Whether this platform has the calls below (elsewhere they answer `ENOSYS`).
    pub const AVAILABLE: bool = true;

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
        crate::sys::retry_write(to, || {
            // SAFETY: `to` is the write end of a pipe, so the kernel only reads the range,
            // which the caller guarantees mapped and readable; no Rust reference is made.
            unsafe { libc::vmsplice(to.as_raw_fd(), &iov, 1, 0) }
        })
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
    pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
        Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
    }
}
