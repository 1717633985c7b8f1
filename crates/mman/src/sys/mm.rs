//! The memory-management calls: mmap, munmap, mprotect, mlock, msync, madvise, mincore,
//! mremap, and the flags they take.

use super::*;

use crate::flags::{FlushMode, Protection};

/// The `PROT_*` bits of `prot`, less any bit that is none of read, write and execute (which
/// `Protection::from_bits_retain` could let in): mman tracks those three only, so the
/// kernel is given no other.
pub(super) fn prot_bits(prot: Protection) -> u32 {
    prot.intersection(Protection::all()).bits()
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

/// The `mmap` flags of a request. The platform's flags (`super::os`) are empty where it lacks
/// an advisory one (populate, no-reserve) and where it has no atomic no-replace placement,
/// which the caller then emulates with a hint and a check of the address obtained.
fn map_flags(r: &MapRequest) -> io::Result<MapFlags> {
    let mut f = if r.shared {
        MapFlags::SHARED
    } else {
        MapFlags::PRIVATE
    };
    match r.placement {
        Placement::Anywhere => {}
        Placement::FixedNoReplace => f |= os::MAP_FIXED_NOREPLACE,
        Placement::FixedReplace => f |= MapFlags::FIXED,
    }
    if r.populate {
        f |= os::MAP_POPULATE;
    }
    if r.no_reserve {
        f |= os::MAP_NORESERVE;
    }
    if let Some(size) = r.huge_page_size {
        f |= os::map_huge(size)?;
    }
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
    prot: Protection,
    req: &MapRequest,
    fd: Option<BorrowedFd<'_>>,
    offset: u64,
) -> io::Result<*mut c_void> {
    let flags = map_flags(req)?;
    let prot = ProtFlags::from_bits_retain(prot_bits(prot));
    // SAFETY: forwarded from the caller for fixed placements; otherwise the kernel picks a
    // free range and replaces nothing.
    let r = unsafe {
        match fd {
            Some(fd) => rustix::mm::mmap(addr, len, prot, flags, fd, offset),
            None => rustix::mm::mmap_anonymous(addr, len, prot, flags),
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
pub unsafe fn mprotect(addr: *mut c_void, len: usize, prot: Protection) -> io::Result<()> {
    let prot = MprotectFlags::from_bits_retain(prot_bits(prot));
    // SAFETY: forwarded from the caller.
    Ok(unsafe { rustix::mm::mprotect(addr, len, prot) }?)
}

/// `mlock(2)`, or `mlock2(MLOCK_ONFAULT)` where asked (Linux).
///
/// # Safety
/// `addr..addr+len` is memory the caller owns (as rustix asks: the pages are faulted in and
/// pinned, which the owner of the range must expect).
pub unsafe fn mlock(addr: *mut c_void, len: usize, on_fault: bool) -> io::Result<()> {
    if on_fault {
        // SAFETY: forwarded from the caller.
        return unsafe { os::mlock_on_fault(addr, len) };
    }
    // SAFETY: forwarded from the caller; locking changes residency, never contents.
    Ok(unsafe { rustix::mm::mlock(addr, len) }?)
}

/// `munlock(2)`.
///
/// # Safety
/// As [`mlock`].
pub unsafe fn munlock(addr: *mut c_void, len: usize) -> io::Result<()> {
    // SAFETY: forwarded from the caller; unlocking changes residency only.
    Ok(unsafe { rustix::mm::munlock(addr, len) }?)
}

pub use super::os::{mlockall, mremap, munlockall};

/// `msync(2)`.
///
/// # Safety
/// `MS_INVALIDATE` may replace the contents of a private mapping's pages with the file's:
/// no reference may assume the old contents.
pub unsafe fn msync(addr: *mut c_void, len: usize, how: FlushMode) -> io::Result<()> {
    let f = match how {
        FlushMode::Sync => MsyncFlags::SYNC,
        FlushMode::Async => MsyncFlags::ASYNC,
        FlushMode::Invalidate => MsyncFlags::INVALIDATE,
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
    super::check(unsafe { libc::madvise(addr, len, advice) })
}

/// `mincore(2)`: one byte a page, bit 0 set when resident.
///
/// # Safety
/// `addr..addr+len` is a mapping the caller owns (mincore only reads page tables, but the
/// range must be one the caller may ask about).
pub unsafe fn mincore(addr: *mut c_void, len: usize, out: &mut [u8]) -> io::Result<()> {
    let ps = page_size();
    assert!(out.len() >= len.div_ceil(ps));
    // SAFETY: `out` has a byte for each page of the range (checked above).
    unsafe { os::mincore(addr, len, out) }
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
