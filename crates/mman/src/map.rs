//! Mappings and their operations: `mmap`, `munmap`, `mprotect`, `mlock`, `msync`,
//! `madvise`, `mincore` and `mremap`, behind a builder and two owning types.
//!
//! * [`Mapping`] is any mapping: a file (shared or private), shared anonymous memory, or
//!   anything another process may change or shrink. Its bytes are reached through copies:
//!   [`Mapping::read_at`], [`Mapping::write_at`], [`Mapping::load`], [`Mapping::store`],
//!   [`Mapping::write_to`] (the kernel copies), or atomics ([`Mapping::atomic_u64`]). Slices
//!   come only from the `unsafe` [`Mapping::as_slice`], whose contract says what the caller
//!   must guarantee.
//! * [`ExclusiveMap`] is private anonymous memory, which only this process can reach: it
//!   derefs to `[u8]` safely.

use std::ffi::c_void;
use std::fs::File;
use std::ops::{Bound, Deref, DerefMut, RangeBounds};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use crate::error::{Error, ErrorKind, Result};
use crate::sys;

mod cursor;
pub use cursor::Cursor;

/// Access permitted to a mapping's pages: any union of [`READ`](Self::READ),
/// [`WRITE`](Self::WRITE) and [`EXEC`](Self::EXEC), or [`NONE`](Self::NONE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Protection(u8);

impl Protection {
    /// No access (`PROT_NONE`): any touch faults. Guard pages are made of this.
    pub const NONE: Protection = Protection(0);
    /// `PROT_READ`.
    pub const READ: Protection = Protection(1);
    /// `PROT_WRITE`.
    pub const WRITE: Protection = Protection(2);
    /// `PROT_EXEC`.
    pub const EXEC: Protection = Protection(4);
    /// `PROT_READ | PROT_WRITE`.
    pub const READ_WRITE: Protection = Protection(3);

    /// Whether every permission in `other` is in `self`.
    pub const fn contains(self, other: Protection) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether pages may be read.
    pub const fn readable(self) -> bool {
        self.contains(Self::READ)
    }
    /// Whether pages may be written.
    pub const fn writable(self) -> bool {
        self.contains(Self::WRITE)
    }
    /// Whether pages may be executed.
    pub const fn executable(self) -> bool {
        self.contains(Self::EXEC)
    }
    fn sys(self) -> sys::Prot {
        sys::Prot {
            read: self.readable(),
            write: self.writable(),
            exec: self.executable(),
        }
    }
}

impl std::ops::BitOr for Protection {
    type Output = Protection;
    fn bitor(self, rhs: Protection) -> Protection {
        Protection(self.0 | rhs.0)
    }
}

impl std::fmt::Display for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = |on: bool, ch: char| if on { ch } else { '-' };
        write!(
            f,
            "{}{}{}",
            c(self.readable(), 'r'),
            c(self.writable(), 'w'),
            c(self.executable(), 'x')
        )
    }
}

/// How [`Mapping::flush`] synchronises a mapping with its file (`msync(2)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushMode {
    /// `MS_SYNC`: write dirty pages and wait until they are on storage.
    Sync,
    /// `MS_ASYNC`: schedule the write-back and return. On Linux since 2.6.19 this does
    /// nothing at all: the kernel already tracks dirty shared pages and writes them back.
    Async,
    /// `MS_INVALIDATE`: drop cached copies so later reads see the file as it is now.
    Invalidate,
}

/// Advice to the kernel about a range (`madvise(2)`) that leaves what the range holds, here
/// and in children, as it is: safe on a shared borrow ([`Mapping::advise`]).
///
/// Advice that changes the contents, or whether a child has the range, is
/// [`DestructiveAdvice`], taken only by [`Mapping::advise_destructive`] on `&mut self`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Advice {
    /// `MADV_NORMAL`: default read-ahead.
    Normal,
    /// `MADV_RANDOM`: expect random access; read ahead less.
    Random,
    /// `MADV_SEQUENTIAL`: expect sequential access; read ahead more, free behind.
    Sequential,
    /// `MADV_WILLNEED`: start reading the range in now.
    WillNeed,
    /// `MADV_DOFORK`: undo [`DestructiveAdvice::DontFork`].
    DoFork,
    /// `MADV_MERGEABLE`: allow kernel same-page merging (KSM).
    Mergeable,
    /// `MADV_UNMERGEABLE`: undo [`Advice::Mergeable`].
    Unmergeable,
    /// `MADV_HUGEPAGE`: back the range with transparent huge pages when possible.
    HugePage,
    /// `MADV_NOHUGEPAGE`: never use transparent huge pages here.
    NoHugePage,
    /// `MADV_DONTDUMP`: leave the range out of core dumps.
    DontDump,
    /// `MADV_DODUMP`: undo [`Advice::DontDump`].
    DoDump,
    /// `MADV_KEEPONFORK`: undo [`DestructiveAdvice::WipeOnFork`].
    KeepOnFork,
    /// `MADV_COLD`: deactivate the pages (reclaim them first under pressure).
    Cold,
    /// `MADV_PAGEOUT`: reclaim the pages now (their contents come back on the next touch).
    PageOut,
    /// `MADV_POPULATE_READ`: fault the pages in readable now, without a signal on failure.
    PopulateRead,
    /// `MADV_POPULATE_WRITE`: fault the pages in writable now.
    PopulateWrite,
}

/// Advice that changes what a range holds, or whether a child created by `fork` has it:
/// taken only on `&mut` ([`Mapping::advise_destructive`]), which proves that no reference
/// into the mapping (an atomic, a placed object) lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DestructiveAdvice {
    /// `MADV_DONTNEED`: drop the pages. Private anonymous memory reads back as zeros, a
    /// private file mapping loses its copy-on-write changes, shared mappings re-read the file.
    DontNeed,
    /// `MADV_FREE`: the kernel may free the pages lazily; contents become undefined (old
    /// data or zeros) until written again.
    Free,
    /// `MADV_REMOVE`: free the range and its backing store (punches a hole in shmem/tmpfs).
    Remove,
    /// `MADV_DONTFORK`: a child created by `fork` does not get the range.
    DontFork,
    /// `MADV_WIPEONFORK`: a child sees the range zero-filled.
    WipeOnFork,
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn linux_only(what: impl std::fmt::Debug) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "madvise",
        format!("{what:?} is Linux-only"),
    )
}

impl Advice {
    fn raw(self) -> Result<i32> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let v = match self {
            Advice::Normal => libc::MADV_NORMAL,
            Advice::Random => libc::MADV_RANDOM,
            Advice::Sequential => libc::MADV_SEQUENTIAL,
            Advice::WillNeed => libc::MADV_WILLNEED,
            Advice::DoFork => libc::MADV_DOFORK,
            Advice::Mergeable => libc::MADV_MERGEABLE,
            Advice::Unmergeable => libc::MADV_UNMERGEABLE,
            Advice::HugePage => libc::MADV_HUGEPAGE,
            Advice::NoHugePage => libc::MADV_NOHUGEPAGE,
            Advice::DontDump => libc::MADV_DONTDUMP,
            Advice::DoDump => libc::MADV_DODUMP,
            Advice::KeepOnFork => libc::MADV_KEEPONFORK,
            Advice::Cold => 20,          // MADV_COLD
            Advice::PageOut => 21,       // MADV_PAGEOUT
            Advice::PopulateRead => 22,  // MADV_POPULATE_READ
            Advice::PopulateWrite => 23, // MADV_POPULATE_WRITE
        };
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let v = match self {
            Advice::Normal => libc::MADV_NORMAL,
            Advice::Random => libc::MADV_RANDOM,
            Advice::Sequential => libc::MADV_SEQUENTIAL,
            Advice::WillNeed => libc::MADV_WILLNEED,
            _ => return Err(linux_only(self)),
        };
        Ok(v)
    }
}

impl DestructiveAdvice {
    fn raw(self) -> Result<i32> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let v = match self {
            DestructiveAdvice::DontNeed => libc::MADV_DONTNEED,
            DestructiveAdvice::Free => libc::MADV_FREE,
            DestructiveAdvice::Remove => libc::MADV_REMOVE,
            DestructiveAdvice::DontFork => libc::MADV_DONTFORK,
            DestructiveAdvice::WipeOnFork => libc::MADV_WIPEONFORK,
        };
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let v = match self {
            DestructiveAdvice::DontNeed => libc::MADV_DONTNEED,
            _ => return Err(linux_only(self)),
        };
        Ok(v)
    }
}

/// Which pages [`lock_all`] locks (`mlockall(2)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockAll {
    /// `MCL_CURRENT`: every page mapped now.
    pub current: bool,
    /// `MCL_FUTURE`: every page mapped from now on.
    pub future: bool,
    /// `MCL_ONFAULT`: lock pages as they are first touched instead of faulting all in now.
    pub on_fault: bool,
}

/// Lock the pages of the whole process in memory (`mlockall(2)`).
///
/// Fails with [`ErrorKind::ResourceLimit`] and a hint giving `RLIMIT_MEMLOCK` when the process
/// maps more than it may lock.
pub fn lock_all(how: LockAll) -> Result<()> {
    sys::mlockall(sys::LockAll {
        current: how.current,
        future: how.future,
        on_fault: how.on_fault,
    })
    .map_err(|e| Error::memlock("mlockall", e, None))
}

/// Unlock every page of the process and cancel `MCL_FUTURE` (`munlockall(2)`).
pub fn unlock_all() -> Result<()> {
    sys::munlockall().map_err(|e| Error::os("munlockall", e))
}

/// The base page size of this system, in bytes.
pub fn page_size() -> usize {
    sys::page_size()
}

/// `RLIMIT_MEMLOCK` as (soft, hard) in bytes; `None` means unlimited.
pub fn memlock_limit() -> (Option<u64>, Option<u64>) {
    sys::memlock_limit()
}

/// Where a new mapping goes in the address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Anywhere,
    Hint(usize),
    Fixed(usize),
}

/// Builder for mappings: every knob of `mmap(2)`.
///
/// ```
/// # fn main() -> mman::Result<()> {
/// let file = tempfile::tempfile().unwrap();
/// file.set_len(10_000).unwrap();
/// // 100 bytes at byte offset 5000: mman aligns the offset down internally.
/// let map = mman::MapOptions::new().offset(5000).len(100).read_write().map(&file)?;
/// map.write_at(0, b"hello")?;
/// let mut back = [0u8; 5];
/// map.read_at(0, &mut back)?;
/// assert_eq!(&back, b"hello");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MapOptions {
    len: Option<usize>,
    offset: u64,
    prot: Option<Protection>,
    shared: Option<bool>,
    populate: bool,
    no_reserve: bool,
    huge_page_size: Option<usize>,
    transparent_huge_pages: bool,
    place: Place,
    allow_write_exec: bool,
}

impl Default for MapOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl MapOptions {
    /// Defaults: the whole file from offset 0, read-only, shared for files; read-write and
    /// private for anonymous memory.
    pub fn new() -> Self {
        MapOptions {
            len: None,
            offset: 0,
            prot: None,
            shared: None,
            populate: false,
            no_reserve: false,
            huge_page_size: None,
            transparent_huge_pages: false,
            place: Place::Anywhere,
            allow_write_exec: false,
        }
    }

    /// Length in bytes. Files default to everything from the offset to the end.
    pub fn len(&mut self, len: usize) -> &mut Self {
        self.len = Some(len);
        self
    }
    /// Byte offset into the file: any value; mman aligns to the page internally and the
    /// mapping starts exactly at this byte.
    pub fn offset(&mut self, offset: u64) -> &mut Self {
        self.offset = offset;
        self
    }
    /// The protection of the pages (`PROT_*`).
    pub fn protection(&mut self, prot: Protection) -> &mut Self {
        self.prot = Some(prot);
        self
    }
    /// Shorthand for `protection(Protection::READ_WRITE)`.
    pub fn read_write(&mut self) -> &mut Self {
        self.protection(Protection::READ_WRITE)
    }
    /// `MAP_SHARED`: writes reach the file and every other mapping of it.
    pub fn shared(&mut self) -> &mut Self {
        self.shared = Some(true);
        self
    }
    /// `MAP_PRIVATE`: copy-on-write; writes stay in this process.
    pub fn private(&mut self) -> &mut Self {
        self.shared = Some(false);
        self
    }
    /// `MAP_POPULATE`: fault every page in at map time (read-ahead for files).
    pub fn populate(&mut self, yes: bool) -> &mut Self {
        self.populate = yes;
        self
    }
    /// `MAP_NORESERVE`: reserve no swap space for the mapping.
    pub fn no_reserve(&mut self, yes: bool) -> &mut Self {
        self.no_reserve = yes;
        self
    }
    /// `MAP_HUGETLB` with pages of `size` bytes (`None`: the system's default huge page
    /// size). Needs huge pages reserved in `/proc/sys/vm/nr_hugepages`.
    pub fn huge_pages(&mut self, size: Option<usize>) -> &mut Self {
        self.huge_page_size = Some(size.unwrap_or(0));
        self
    }
    /// Ask for transparent huge pages (`madvise(MADV_HUGEPAGE)` right after mapping).
    pub fn transparent_huge_pages(&mut self, yes: bool) -> &mut Self {
        self.transparent_huge_pages = yes;
        self
    }
    /// A preferred address; the kernel may place the mapping elsewhere.
    pub fn address_hint(&mut self, addr: usize) -> &mut Self {
        self.place = Place::Hint(addr);
        self
    }
    /// Place the mapping exactly at `addr` (page-aligned) or fail with
    /// [`ErrorKind::AddressInUse`]: never replaces an existing mapping
    /// (`MAP_FIXED_NOREPLACE`). The offset must then be page-aligned too.
    pub fn fixed_address(&mut self, addr: usize) -> &mut Self {
        self.place = Place::Fixed(addr);
        self
    }
    /// Permit write and execute together, at map time and in [`Mapping::protect`]. Off by
    /// default (W^X): memory that is both is what exploits look for.
    pub fn allow_write_exec(&mut self, yes: bool) -> &mut Self {
        self.allow_write_exec = yes;
        self
    }

    /// Map an open file (or block device). Errors name the file's path.
    pub fn map<F: AsFd>(&self, file: F) -> Result<Mapping> {
        let fd = file.as_fd();
        self.map_fd(fd, None, sys::Placement::Anywhere)
    }

    /// Open `path` (read-write when mapping it shared and writable, read-only otherwise) and
    /// map it.
    pub fn map_path(&self, path: impl AsRef<Path>) -> Result<Mapping> {
        let path = path.as_ref();
        let prot = self.prot.unwrap_or(Protection::READ);
        let shared = self.shared.unwrap_or(true);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(prot.writable() && shared)
            .open(path)
            .map_err(|e| Error::os("open", e).with_path(Some(path)))?;
        self.map_fd(file.as_fd(), Some(path), sys::Placement::Anywhere)
    }

    /// Map anonymous memory (zero-filled): private by default, or shared with children
    /// created by `fork` after [`shared`](Self::shared).
    pub fn map_anonymous(&self) -> Result<Mapping> {
        self.map_anon(sys::Placement::Anywhere)
    }

    /// Map private anonymous memory that only this process can reach, readable and
    /// writable, as an [`ExclusiveMap`] that derefs to `[u8]`.
    pub fn map_exclusive(&self) -> Result<ExclusiveMap> {
        let mut o = self.clone();
        o.prot = Some(Protection::READ_WRITE);
        o.shared = Some(false);
        Ok(ExclusiveMap {
            inner: o.map_anon(sys::Placement::Anywhere)?,
        })
    }

    /// Map at exactly `addr`, replacing whatever is mapped there (raw `MAP_FIXED`), from
    /// `file` or, with `None`, anonymous memory.
    ///
    /// # Safety
    /// Everything in `addr .. addr + len` (rounded up to the page) is unmapped first, without
    /// asking its owner. The caller guarantees that range is its own to replace: no Rust
    /// value, reference, allocator arena, stack or other [`Mapping`] lives there, and nothing
    /// will use the old contents. This is the seed's `persist()` idiom; prefer
    /// [`fixed_address`](Self::fixed_address), which fails instead of clobbering.
    pub unsafe fn map_fixed_replace(&self, addr: usize, file: Option<BorrowedFd<'_>>) -> Result<Mapping> {
        let mut o = self.clone();
        o.place = Place::Fixed(addr);
        match file {
            Some(fd) => o.map_fd(fd, None, sys::Placement::FixedReplace),
            None => o.map_anon(sys::Placement::FixedReplace),
        }
    }

    fn placement(&self, fixed: sys::Placement) -> sys::Placement {
        match self.place {
            Place::Fixed(_) if fixed == sys::Placement::FixedReplace => fixed,
            Place::Fixed(_) => sys::Placement::FixedNoReplace,
            _ => sys::Placement::Anywhere,
        }
    }

    fn check_prot(&self, prot: Protection, op: &'static str) -> Result<()> {
        if prot.writable() && prot.executable() && !self.allow_write_exec {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                op,
                "write and execute together are refused (W^X)",
            )
            .with_hint("map writable, fill, then protect() as read+exec; or allow_write_exec(true)"));
        }
        Ok(())
    }

    fn alignment(&self) -> usize {
        match self.huge_page_size {
            Some(0) => sys::default_huge_page_size().unwrap_or(2 << 20),
            Some(n) => n,
            None => sys::page_size(),
        }
    }

    fn map_anon(&self, fixed: sys::Placement) -> Result<Mapping> {
        let prot = self.prot.unwrap_or(Protection::READ_WRITE);
        let shared = self.shared.unwrap_or(false);
        self.check_prot(prot, "mmap")?;
        if self.offset != 0 {
            return Err(
                Error::new(ErrorKind::InvalidInput, "mmap", "anonymous memory has no offset")
                    .with_range(self.offset, self.len),
            );
        }
        let len = self.len.unwrap_or(0);
        let backing = Backing::Anonymous;
        self.finish_map(None, None, 0, len, prot, shared, backing, fixed)
    }

    fn map_fd(&self, fd: BorrowedFd<'_>, path: Option<&Path>, fixed: sys::Placement) -> Result<Mapping> {
        let prot = self.prot.unwrap_or(Protection::READ);
        let shared = self.shared.unwrap_or(true);
        self.check_prot(prot, "mmap")?;
        let name = || path.map(Path::to_path_buf).or_else(|| sys::fd_path(fd));
        let info = sys::file_info(fd).map_err(|e| Error::os("fstat", e).with_path(name().as_deref()))?;
        let what = match info.kind {
            sys::FileType::Regular | sys::FileType::BlockDevice => None,
            sys::FileType::Directory => Some("is a directory"),
            sys::FileType::Fifo => Some("is a FIFO or pipe"),
            sys::FileType::Socket => Some("is a socket"),
            sys::FileType::CharDevice => Some("is a character device"),
            sys::FileType::Symlink | sys::FileType::Unknown => Some("is not a regular file"),
        };
        if let Some(what) = what {
            return Err(Error::new(ErrorKind::NotMappable, "mmap", what)
                .with_path(name().as_deref())
                .with_hint("read it with read() instead"));
        }
        if self.offset > info.size {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "mmap",
                format!("offset is past the end of the file ({} bytes)", info.size),
            )
            .with_path(name().as_deref())
            .with_range(self.offset, self.len)
            .with_hint("map at most up to the file's size"));
        }
        let len = match self.len {
            Some(l) => l,
            None => usize::try_from(info.size - self.offset).map_err(|_| {
                Error::new(
                    ErrorKind::InvalidInput,
                    "mmap",
                    "the file is larger than the address space",
                )
                .with_path(name().as_deref())
            })?,
        };
        let end = (len as u64)
            .checked_add(self.offset)
            .filter(|_| len <= isize::MAX as usize);
        match end {
            None => {
                return Err(
                    Error::new(ErrorKind::InvalidInput, "mmap", "offset + length overflows")
                        .with_path(name().as_deref())
                        .with_range(self.offset, Some(len)),
                )
            }
            Some(end) if end > info.size => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "mmap",
                    format!("the range ends past the end of the file ({} bytes)", info.size),
                )
                .with_path(name().as_deref())
                .with_range(self.offset, Some(len))
                .with_hint(
                    "grow the file first (File::set_len); a touch of a page past the end would raise SIGBUS",
                ))
            }
            Some(_) => {}
        }
        if len == 0 && info.kind == sys::FileType::Regular && info.size == 0 {
            // /proc and /sys files report size 0 but are not mappable: probe with one page so
            // they are told apart from a truly empty file.
            probe_mappable(fd).map_err(|e| {
                Error::os("mmap", e)
                    .with_kind(ErrorKind::NotMappable)
                    .with_path(name().as_deref())
                    .with_hint("this file cannot be memory-mapped; read it with read() instead")
            })?;
        }
        let backing = Backing::File {
            dev: info.dev,
            ino: info.ino,
        };
        self.finish_map(Some(fd), path, self.offset, len, prot, shared, backing, fixed)
            .map_err(|e| {
                if e.path().is_none() {
                    e.with_path(name().as_deref())
                } else {
                    e
                }
            })
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_map(
        &self,
        fd: Option<BorrowedFd<'_>>,
        path: Option<&Path>,
        offset: u64,
        len: usize,
        prot: Protection,
        shared: bool,
        backing: Backing,
        fixed: sys::Placement,
    ) -> Result<Mapping> {
        let align = self.alignment();
        let delta = (offset % align as u64) as usize;
        let aligned_offset = offset - delta as u64;
        let placement = self.placement(fixed);
        let addr = match self.place {
            Place::Anywhere => 0,
            Place::Hint(a) | Place::Fixed(a) => a,
        };
        if placement != sys::Placement::Anywhere && (addr % align != 0 || delta != 0) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "mmap",
                "a fixed address and its file offset must be multiples of the page size",
            )
            .with_addr(addr, len)
            .with_hint(format!("the page size is {align} bytes")));
        }
        // The one way a Mapping is built: `ptr .. ptr + os_len` is the kernel's mapping (none
        // when `os_len` is 0), and the caller's first byte is `delta` bytes in.
        let build = |ptr: NonNull<u8>, os_len: usize, delta: usize, len: usize| Mapping {
            ptr,
            os_len,
            delta,
            len,
            prot,
            shared,
            backing,
            path: path.map(Path::to_path_buf),
            align,
            allow_write_exec: self.allow_write_exec,
            file_offset: offset,
            file: None,
            guard: None,
        };
        if len == 0 {
            return Ok(build(NonNull::dangling(), 0, 0, 0));
        }
        let os_len = delta.checked_add(len).ok_or_else(|| {
            Error::new(ErrorKind::InvalidInput, "mmap", "length overflows").with_range(offset, Some(len))
        })?;
        let req = sys::MapRequest {
            shared,
            placement,
            populate: self.populate,
            no_reserve: self.no_reserve,
            huge_page_size: self.huge_page_size,
        };
        // SAFETY: with Anywhere/NoReplace the kernel replaces nothing; with FixedReplace the
        // caller of `map_fixed_replace` took on that contract.
        let p = unsafe { sys::mmap(addr as *mut c_void, os_len, prot.sys(), &req, fd, aligned_offset) }
            .map_err(|e| self.mmap_error(e, addr, offset, len))?;
        let Some(ptr) = NonNull::new(p.cast::<u8>()) else {
            // Only a fixed placement at 0 (as root, with vm.mmap_min_addr 0) gets here: no
            // Rust value may live at address 0, so the pages are given back at once.
            // SAFETY: the range was mapped just now by this call and nothing refers to it.
            let _ = unsafe { sys::munmap(p, os_len) };
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "mmap",
                "address 0 cannot hold a mapping usable from Rust",
            )
            .with_range(offset, Some(len))
            .with_hint("choose a fixed address above 0 (and above /proc/sys/vm/mmap_min_addr)"));
        };
        // From here on the mapping is owned by `map`: an error below unmaps it on drop.
        let mut map = build(ptr, os_len, delta, len);
        if placement != sys::Placement::Anywhere && p as usize != addr {
            // A kernel older than 4.17 treats MAP_FIXED_NOREPLACE as a hint.
            return Err(Error::new(
                ErrorKind::AddressInUse,
                "mmap",
                "the range is already mapped (placed elsewhere by the kernel)",
            )
            .with_addr(addr, len));
        }
        if let Some(fd) = fd {
            // Only file mappings can lose pages to truncation; register them with the SIGBUS
            // handler so such a fault becomes an error instead of killing the process. A
            // mapping that cannot be registered is refused, never left unprotected.
            map.file = Some(sys::dup(fd).map_err(|e| Error::os("dup", e))?);
            map.guard = map.register_fault_guard()?;
        } else if self.huge_page_size.is_some() && self.no_reserve {
            // Huge pages taken lazily from a pool that may be empty: the first touch of a
            // page the pool cannot supply raises SIGBUS. Take them all now, where failing is
            // an error (MADV_POPULATE_WRITE, Linux 5.14).
            map.advise(.., Advice::PopulateWrite).map_err(|e| {
                e.with_kind(ErrorKind::ResourceLimit).with_hint(format!(
                    "huge pages mapped without a reservation must all be taken at once, and the pool \
                     could not supply them: /proc/sys/vm/nr_hugepages is {}",
                    sys::reserved_huge_pages().map_or("unknown".into(), |n| n.to_string())
                ))
            })?;
        }
        if self.transparent_huge_pages {
            map.advise(.., Advice::HugePage)?;
        }
        Ok(map)
    }

    fn mmap_error(&self, e: std::io::Error, addr: usize, offset: u64, len: usize) -> Error {
        let err = Error::os("mmap", e).with_range(offset, Some(len));
        match err.raw_os_error() {
            Some(libc::ENOMEM) if self.huge_page_size.is_some() => err.with_hint(format!(
                "not enough huge pages reserved: /proc/sys/vm/nr_hugepages is {}; \
                 reserve some with `echo 64 > /proc/sys/vm/nr_hugepages` as root",
                sys::reserved_huge_pages().map_or("unknown".into(), |n| n.to_string())
            )),
            Some(libc::ENOMEM) => err.with_hint(
                "out of address space or memory, or vm.max_map_count reached (/proc/sys/vm/max_map_count)",
            ),
            Some(libc::EEXIST) => err
                .with_addr(addr, len)
                .with_hint("something is already mapped there; choose another address or use address_hint()"),
            Some(libc::EACCES) => err.with_hint(
                "the file must be open for reading, and for writing to be mapped shared and writable; \
                 a noexec mount refuses PROT_EXEC",
            ),
            Some(libc::ENODEV) => err
                .with_kind(ErrorKind::NotMappable)
                .with_hint("this file cannot be memory-mapped; read it with read() instead"),
            Some(libc::EINVAL) if self.huge_page_size.is_some() => err.with_hint(
                "huge page mappings need a length and offset that are multiples of the huge page size",
            ),
            _ => err,
        }
    }
}

fn probe_mappable(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let ps = sys::page_size();
    let req = sys::MapRequest {
        no_reserve: true,
        ..sys::MapRequest::PRIVATE
    };
    let prot = sys::Prot::READ;
    // SAFETY: the kernel picks the address; nothing is replaced, and the probe mapping is
    // never touched before it is unmapped below.
    let p = unsafe { sys::mmap(std::ptr::null_mut(), ps, prot, &req, Some(fd), 0) }?;
    // SAFETY: `p` is the page just mapped, owned here and referenced by nothing.
    unsafe { sys::munmap(p, ps) }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backing {
    Anonymous,
    File { dev: u64, ino: u64 },
}

/// A mapping of a file or of memory other processes may reach.
///
/// Dropping it unmaps it. Its bytes are reached through copies, never references, unless the
/// caller takes on [`as_slice`](Self::as_slice)'s contract: another process may write or
/// truncate the file at any moment, which a `&[u8]` may not observe.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    os_len: usize,
    delta: usize,
    len: usize,
    prot: Protection,
    shared: bool,
    backing: Backing,
    path: Option<PathBuf>,
    align: usize,
    allow_write_exec: bool,
    file_offset: u64,
    /// A duplicate of the file's descriptor, to measure the file when it shrinks.
    file: Option<std::os::fd::OwnedFd>,
    /// The slot of this mapping in the SIGBUS handler's registry (file mappings on Linux).
    guard: Option<usize>,
}

// SAFETY: a Mapping owns its address range; its accessors use atomic or kernel copies, so
// using it from several threads is no different from several processes sharing the pages.
unsafe impl Send for Mapping {}
// SAFETY: as above; every `&self` method is a copy, an atomic access or a system call.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Some(slot) = self.guard.take() {
            sys::unguard_mapping(slot);
        }
        if self.os_len != 0 {
            // SAFETY: the range is this mapping's own; `&mut self` proves no borrow of it
            // lives. An error here cannot be reported and leaves only an address range.
            let _ = unsafe { sys::munmap(self.ptr.as_ptr().cast(), self.os_len) };
        }
    }
}

impl Mapping {
    /// Length in bytes, exactly as asked (not rounded to the page).
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the mapping is empty (an empty file or a zero length).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The address of the first byte. Dereferencing it is the caller's business.
    pub fn as_ptr(&self) -> *const u8 {
        self.start()
    }
    /// The address of the first byte, for writing through raw pointers.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.start()
    }
    /// The current protection.
    pub fn protection(&self) -> Protection {
        self.prot
    }
    /// Whether writes are shared (`MAP_SHARED`) rather than private.
    pub fn is_shared(&self) -> bool {
        self.shared
    }
    /// Whether the mapping is anonymous memory rather than a file.
    pub fn is_anonymous(&self) -> bool {
        self.backing == Backing::Anonymous
    }
    /// The file's path, when it was mapped through [`MapOptions::map_path`].
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
    /// The granule of the mapping: the page size, or the huge page size.
    pub fn page_size(&self) -> usize {
        self.align
    }

    #[inline]
    fn start(&self) -> *mut u8 {
        if self.os_len == 0 {
            return self.ptr.as_ptr();
        }
        // SAFETY: `delta < os_len`, inside the mapping.
        unsafe { self.ptr.as_ptr().add(self.delta) }
    }

    fn addr(&self) -> usize {
        self.start() as usize
    }

    fn err(&self, e: Error) -> Error {
        e.with_path(self.path.as_deref())
    }

    #[inline]
    fn check_span(&self, op: &'static str, offset: usize, n: usize) -> Result<()> {
        match offset.checked_add(n) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(self.err(
                Error::new(
                    ErrorKind::InvalidInput,
                    op,
                    format!(
                        "bytes {offset}..{} are outside the mapping of {} bytes",
                        offset.saturating_add(n),
                        self.len
                    ),
                )
                .with_addr(self.addr(), self.len),
            )),
        }
    }

    /// Whether the file shrank under this mapping and a touch of a vanished page was caught
    /// (the pages past the new end now read as zeros).
    #[inline]
    pub fn is_truncated(&self) -> bool {
        self.guard.is_some_and(sys::mapping_poisoned)
    }

    /// `Err(`[`ErrorKind::Truncated`]`)` if the file shrank under the mapping: a caught
    /// fault, or (when `measure` is set) a file now shorter than the mapped range.
    #[inline]
    fn check_intact(&self, op: &'static str, measure: bool) -> Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        let needed = self.file_offset + self.len as u64;
        if self.is_truncated() || measure {
            let now = self
                .file
                .as_ref()
                .and_then(|f| sys::file_info(std::os::fd::AsFd::as_fd(f)).ok())
                .map_or(0, |i| i.size);
            if self.is_truncated() || now < needed {
                return Err(Error::truncated(
                    op,
                    self.path.as_deref(),
                    needed,
                    now.min(needed),
                ));
            }
        }
        Ok(())
    }

    /// Check that the file still covers the whole mapping (one `fstat`): what to call after
    /// using [`as_slice`](Self::as_slice) or raw pointers, or when a copy failed with
    /// `EFAULT`.
    pub fn verify_file_size(&self) -> Result<()> {
        self.check_intact("verify", true)
    }

    #[inline]
    fn need(&self, op: &'static str, p: Protection) -> Result<()> {
        if self.prot.contains(p) {
            return Ok(());
        }
        Err(self.err(
            Error::new(
                ErrorKind::PermissionDenied,
                op,
                format!("the mapping is {} and the access needs {}", self.prot, p),
            )
            .with_addr(self.addr(), self.len)
            .with_hint("change it with protect()"),
        ))
    }

    /// Page-aligned span covering the byte range, clamped to the mapping.
    fn os_span(&self, op: &'static str, range: impl RangeBounds<usize>) -> Result<(*mut c_void, usize)> {
        let (a, b) = resolve(range, self.len).ok_or_else(|| {
            self.err(
                Error::new(ErrorKind::InvalidInput, op, "range outside the mapping")
                    .with_addr(self.addr(), self.len),
            )
        })?;
        if a == b {
            return Ok((self.ptr.as_ptr().cast(), 0));
        }
        let s = (self.addr() + a) & !(self.align - 1);
        let e = (self.addr() + b).next_multiple_of(self.align);
        Ok((s as *mut c_void, e - s))
    }

    /// Copy `buf.len()` bytes at `offset` into `buf`.
    ///
    /// The copy is made with aligned 8-byte atomic loads (the crate's one access scheme for
    /// shared memory), so a concurrent writer in another process yields some mix of old and
    /// new words, never undefined behaviour.
    ///
    /// # Errors
    /// The span lies outside the mapping or is not readable; or the file shrank under the
    /// mapping and a page past its new end was touched (here or earlier):
    /// [`ErrorKind::Truncated`]. A truncation that ends *inside* a page raises no fault:
    /// the kernel zeroes the rest of that page, and a read of those bytes returns zeros
    /// without an error. [`verify_file_size`](Self::verify_file_size) (one `fstat`) tells
    /// that case apart when it matters.
    #[inline]
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_span("read", offset, buf.len())?;
        self.need("read", Protection::READ)?;
        if buf.is_empty() {
            return Ok(());
        }
        // SAFETY: the span is inside the mapping (checked) and readable (checked); the copy
        // follows the crate's one atomic scheme (aligned 8-byte words).
        unsafe { sys::words::copy_out(self.start().add(offset), buf) };
        self.check_intact("read", false)
    }

    /// Copy `data` into the mapping at `offset`, with atomic stores (aligned 8-byte words;
    /// a word only partly written is updated with a compare-and-swap that keeps its other
    /// bytes, so the mapping must be readable as well as writable).
    ///
    /// # Errors
    /// The span lies outside the mapping, the mapping is not readable and writable, or the
    /// file was found truncated ([`ErrorKind::Truncated`]; see [`read_at`](Self::read_at)).
    #[inline]
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_span("write", offset, data.len())?;
        self.need("write", Protection::READ_WRITE)?;
        if data.is_empty() {
            return Ok(());
        }
        // SAFETY: inside the mapping, readable and writable (checked); the crate's one
        // atomic scheme.
        unsafe { sys::words::copy_in(data, self.start().add(offset)) };
        self.check_intact("write", false)
    }

    /// All the bytes, copied into a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        let mut v = vec![0u8; self.len];
        self.read_at(0, &mut v)?;
        Ok(v)
    }

    /// Read a plain-old-data value at `offset` (any alignment) by copy.
    #[inline]
    pub fn load<T: bytemuck::Pod>(&self, offset: usize) -> Result<T> {
        let mut v = T::zeroed();
        self.read_at(offset, bytemuck::bytes_of_mut(&mut v))?;
        Ok(v)
    }

    /// Write a plain-old-data value at `offset` (any alignment) by copy.
    #[inline]
    pub fn store<T: bytemuck::NoUninit>(&self, offset: usize, value: &T) -> Result<()> {
        self.write_at(offset, bytemuck::bytes_of(value))
    }

    fn atomic_ptr(&self, op: &'static str, offset: usize, size: usize) -> Result<*mut u8> {
        self.check_span(op, offset, size)?;
        self.need(op, Protection::READ_WRITE)?;
        self.check_intact(op, false)?;
        let p = self.start().wrapping_add(offset);
        if !(p as usize).is_multiple_of(size) {
            return Err(self.err(
                Error::new(
                    ErrorKind::InvalidInput,
                    op,
                    format!("offset {offset} is not {size}-byte aligned"),
                )
                .with_addr(p as usize, size),
            ));
        }
        Ok(p)
    }

    /// A shared atomic `u64` living in the mapping at `offset` (8-byte aligned).
    ///
    /// 8-byte atomics are the crate's one access scheme for shared memory: copies
    /// ([`read_at`](Self::read_at), [`write_at`](Self::write_at)) and every object placed in
    /// a mapping use the same aligned words, so no access of another size ever races with
    /// this one. (There is no `atomic_u32`: a 4-byte atomic racing with an 8-byte copy of
    /// the same bytes would be undefined behaviour.)
    ///
    /// # Errors
    /// `offset` is out of bounds or not 8-byte aligned, or the mapping is not readable and
    /// writable.
    pub fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64> {
        let p = self.atomic_ptr("atomic_u64", offset, 8)?;
        // SAFETY: aligned, in bounds, readable and writable (checked), and alive as long as
        // `&self` (protect, resize and destructive advice need `&mut self`). Atomics tolerate
        // concurrent change.
        Ok(unsafe { AtomicU64::from_ptr(p.cast()) })
    }

    /// Write the bytes `range` of the mapping to `fd` with `write(2)`: the kernel makes the
    /// copy. Returns the bytes written; short writes, `EINTR` and a non-blocking `fd`
    /// (`EAGAIN`) are handled.
    pub fn write_to(&self, fd: impl AsFd, range: impl RangeBounds<usize>) -> Result<u64> {
        let (a, b) = resolve(range, self.len).ok_or_else(|| {
            self.err(Error::new(
                ErrorKind::InvalidInput,
                "write",
                "range outside the mapping",
            ))
        })?;
        self.need("write", Protection::READ)?;
        let fd = fd.as_fd();
        let mut done = a;
        while done < b {
            // SAFETY: `done..b` is inside the mapping and readable; the kernel copies it.
            let n = match unsafe { sys::write_raw(fd, self.start().add(done), b - done) } {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::EFAULT) => {
                    // The kernel's copy met a page past the file's end: it shrank.
                    self.check_intact("write", true)?;
                    return Err(self.err(Error::os("write", e)));
                }
                Err(e) => return Err(self.err(Error::os("write", e))),
            };
            if n == 0 {
                return Err(self.err(Error::os("write", std::io::ErrorKind::WriteZero.into())));
            }
            done += n;
        }
        Ok((b - a) as u64)
    }

    /// The bytes as a slice.
    ///
    /// # Safety
    /// While the slice lives, no process or thread may modify those bytes (through this or
    /// any other mapping of the same file or object, or by `write(2)` to the file), nor
    /// truncate the file below the mapped range (touching a page past the end raises
    /// SIGBUS); and no `flush(.., Invalidate)` or `advise` that changes contents may be
    /// made. Errors if the mapping is not readable.
    #[inline]
    pub unsafe fn as_slice(&self) -> Result<&[u8]> {
        self.need("as_slice", Protection::READ)?;
        self.check_intact("as_slice", false)?;
        // SAFETY: in bounds and readable; the caller guarantees nothing changes the bytes
        // while the slice lives.
        Ok(unsafe { std::slice::from_raw_parts(self.start(), self.len) })
    }

    /// The bytes as a mutable slice.
    ///
    /// # Safety
    /// As [`as_slice`](Self::as_slice), and moreover no other process or thread may read or
    /// write those bytes while the slice lives. Errors if the mapping is not writable.
    #[inline]
    pub unsafe fn as_mut_slice(&mut self) -> Result<&mut [u8]> {
        self.need("as_mut_slice", Protection::READ_WRITE)?;
        self.check_intact("as_mut_slice", false)?;
        // SAFETY: in bounds, readable and writable; exclusivity is the caller's contract.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.start(), self.len) })
    }

    /// Change the protection of the whole mapping (`mprotect(2)`). Write and execute
    /// together are refused unless the mapping was made with
    /// [`MapOptions::allow_write_exec`].
    pub fn protect(&mut self, prot: Protection) -> Result<()> {
        if prot.writable() && prot.executable() && !self.allow_write_exec {
            return Err(self.err(
                Error::new(
                    ErrorKind::InvalidInput,
                    "mprotect",
                    "write and execute together are refused (W^X)",
                )
                .with_addr(self.addr(), self.len)
                .with_hint(
                    "make it writable, fill it, then make it read+exec; or map with allow_write_exec(true)",
                ),
            ));
        }
        let (p, n) = self.os_span("mprotect", ..)?;
        if n != 0 {
            // SAFETY: our own range; `&mut self` proves no slice or atomic into it lives.
            unsafe { sys::mprotect(p, n, prot.sys()) }
                .map_err(|e| self.err(Error::os("mprotect", e).with_addr(p as usize, n)))?;
        }
        self.prot = prot;
        self.follow_fault_guard();
        Ok(())
    }

    /// Lock the pages of `range` in memory (`mlock(2)`); `..` for all.
    pub fn lock(&self, range: impl RangeBounds<usize>) -> Result<()> {
        self.lock_with(range, false)
    }

    /// Lock the pages of `range` as they are first touched (`mlock2(MLOCK_ONFAULT)`, Linux).
    pub fn lock_on_fault(&self, range: impl RangeBounds<usize>) -> Result<()> {
        self.lock_with(range, true)
    }

    fn lock_with(&self, range: impl RangeBounds<usize>, on_fault: bool) -> Result<()> {
        let (p, n) = self.os_span("mlock", range)?;
        if n == 0 {
            return Ok(());
        }
        sys::mlock(p, n, on_fault)
            .map_err(|e| self.err(Error::memlock("mlock", e, Some(n as u64)).with_addr(p as usize, n)))
    }

    /// Unlock the pages of `range` (`munlock(2)`).
    pub fn unlock(&self, range: impl RangeBounds<usize>) -> Result<()> {
        let (p, n) = self.os_span("munlock", range)?;
        if n == 0 {
            return Ok(());
        }
        sys::munlock(p, n).map_err(|e| self.err(Error::os("munlock", e).with_addr(p as usize, n)))
    }

    /// Synchronise `range` with the file (`msync(2)`); the range is aligned to pages for you.
    ///
    /// # Errors
    /// The range lies outside the mapping, `msync` fails, or the file was found truncated
    /// ([`ErrorKind::Truncated`]: a page past its new end was touched, so writes there went
    /// to zero pages, not the file). A truncation ending inside a page is reported by
    /// [`verify_file_size`](Self::verify_file_size).
    pub fn flush(&self, range: impl RangeBounds<usize>, mode: FlushMode) -> Result<()> {
        let (p, n) = self.os_span("msync", range)?;
        if n == 0 {
            return Ok(());
        }
        let how = match mode {
            FlushMode::Sync => sys::MsyncMode::Sync,
            FlushMode::Async => sys::MsyncMode::Async,
            FlushMode::Invalidate => sys::MsyncMode::Invalidate,
        };
        // SAFETY: our own range. Invalidate may change a private mapping's bytes, which no
        // safe reference can observe: a Mapping hands out copies only (as_slice's contract
        // forbids this call while a slice lives).
        unsafe { sys::msync(p, n, how) }
            .map_err(|e| self.err(Error::os("msync", e).with_addr(p as usize, n)))?;
        // A caught fault means writes landed in zero pages, not the file: say so. (Measuring
        // the file here too, with fstat, made durable commits on ext4 40% slower, before or
        // after the msync: strace -c counted 12,000 msyncs in 2 s instead of 19,000.
        // verify_file_size measures.)
        self.check_intact("msync", false)
    }

    /// Give the kernel advice about `range` (`madvise(2)`) that leaves the contents as they
    /// are.
    ///
    /// # Errors
    /// The range lies outside the mapping, the advice is not supported here
    /// ([`ErrorKind::Unsupported`]), or the kernel refuses it.
    pub fn advise(&self, range: impl RangeBounds<usize>, advice: Advice) -> Result<()> {
        let raw = advice.raw().map_err(|e| self.err(e))?;
        // SAFETY: this advice changes neither the bytes nor what a child gets.
        unsafe { self.madvise(range, raw, &advice) }
    }

    /// Advice that changes the contents or what a child gets ([`DestructiveAdvice`]). It
    /// takes `&mut self`: no atomic or object placed in the mapping can be borrowed while
    /// its bytes are zeroed or dropped.
    ///
    /// # Errors
    /// As [`advise`](Self::advise).
    pub fn advise_destructive(
        &mut self,
        range: impl RangeBounds<usize>,
        advice: DestructiveAdvice,
    ) -> Result<()> {
        let raw = advice.raw().map_err(|e| self.err(e))?;
        // SAFETY: `&mut self` proves that no reference into the mapping lives.
        unsafe { self.madvise(range, raw, &advice) }
    }

    /// # Safety
    /// Advice `raw` that changes contents needs the caller to hold `&mut self`.
    unsafe fn madvise(
        &self,
        range: impl RangeBounds<usize>,
        raw: i32,
        name: &dyn std::fmt::Debug,
    ) -> Result<()> {
        let (p, n) = self.os_span("madvise", range)?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: our own range; the caller vouches for advice that changes contents.
        unsafe { sys::madvise(p, n, raw) }.map_err(|e| {
            self.err(Error::os("madvise", e).with_addr(p as usize, n))
                .with_hint(format!("advice {name:?}"))
        })
    }

    /// Which pages of `range` are resident in memory (`mincore(2)`).
    pub fn residency(&self, range: impl RangeBounds<usize>) -> Result<Residency> {
        let (p, n) = self.os_span("mincore", range)?;
        let ps = sys::page_size();
        let mut pages = vec![0u8; n.div_ceil(ps)];
        if n != 0 {
            sys::mincore(p, n, &mut pages)
                .map_err(|e| self.err(Error::os("mincore", e).with_addr(p as usize, n)))?;
        }
        Ok(Residency { pages, page_size: ps })
    }

    /// Grow or shrink anonymous memory to `new_len` bytes, keeping the contents (`mremap(2)`,
    /// Linux; the mapping may move). File mappings use [`resize_file`](Self::resize_file).
    pub fn resize(&mut self, new_len: usize) -> Result<()> {
        if self.backing != Backing::Anonymous {
            return Err(self.err(
                Error::new(
                    ErrorKind::InvalidInput,
                    "mremap",
                    "a file mapping needs its file to resize",
                )
                .with_addr(self.addr(), self.len)
                .with_hint("use resize_file(file, new_len, grow)"),
            ));
        }
        self.remap(new_len)
    }

    /// Resize a file mapping to `new_len` bytes (`mremap(2)`, Linux). If the new end lies
    /// past the end of `file` and `grow` is true, the file is extended first
    /// (`ftruncate`); otherwise that is an error, since pages past the end raise SIGBUS.
    /// `file` must be the file that is mapped.
    pub fn resize_file(&mut self, file: &File, new_len: usize, grow: bool) -> Result<()> {
        let Backing::File { dev, ino } = self.backing else {
            return Err(self.err(Error::new(
                ErrorKind::InvalidInput,
                "mremap",
                "not a file mapping",
            )));
        };
        let info = sys::file_info(file.as_fd()).map_err(|e| self.err(Error::os("fstat", e)))?;
        if (info.dev, info.ino) != (dev, ino) {
            return Err(self.err(Error::new(
                ErrorKind::InvalidInput,
                "mremap",
                "the file given is not the file that is mapped",
            )));
        }
        let file_offset = self.file_offset;
        let end = file_offset
            .checked_add(new_len as u64)
            .ok_or_else(|| self.err(Error::new(ErrorKind::InvalidInput, "mremap", "length overflows")))?;
        if end > info.size {
            if !grow {
                return Err(self.err(
                    Error::new(
                        ErrorKind::InvalidInput,
                        "mremap",
                        format!(
                            "the new end {end} is past the end of the file ({} bytes)",
                            info.size
                        ),
                    )
                    .with_hint("pass grow = true to extend the file"),
                ));
            }
            file.set_len(end)
                .map_err(|e| self.err(Error::os("ftruncate", e)))?;
        }
        self.remap(new_len)
    }

    fn remap(&mut self, new_len: usize) -> Result<()> {
        if self.os_len == 0 || new_len == 0 {
            return Err(self.err(
                Error::new(
                    ErrorKind::InvalidInput,
                    "mremap",
                    "an empty mapping cannot be resized, nor made empty",
                )
                .with_addr(self.addr(), self.len)
                .with_hint("drop it and map anew"),
            ));
        }
        if self.shared && self.backing == Backing::Anonymous && new_len > self.len {
            // The shared memory object behind MAP_SHARED | MAP_ANONYMOUS keeps the size it was
            // created with: pages mremap adds past it raise SIGBUS on the first touch.
            return Err(self.err(
                Error::new(
                    ErrorKind::InvalidInput,
                    "mremap",
                    "shared anonymous memory cannot grow: the object behind it keeps its size",
                )
                .with_addr(self.addr(), self.len)
                .with_hint("map a new region of the size needed, or share a memfd and grow it with set_len"),
            ));
        }
        let new_os = self.delta + new_len;
        if let Some(slot) = self.guard {
            // While the pages move, no fault may be matched against the old range.
            sys::suspend_guard(slot);
        }
        // SAFETY: our own range; `&mut self` proves no borrow of it lives. MAYMOVE keeps the
        // contents and may move them.
        let r = unsafe { sys::mremap(self.ptr.as_ptr().cast(), self.os_len, new_os) };
        let moved = match r {
            Ok(p) => match NonNull::new(p.cast::<u8>()) {
                Some(ptr) => {
                    self.ptr = ptr;
                    self.os_len = new_os;
                    self.len = new_len;
                    Ok(())
                }
                None => {
                    // Moved to address 0 (only possible with vm.mmap_min_addr 0): the old range
                    // is gone and no Rust value may live at 0. Give the pages back; the mapping
                    // is now empty.
                    // SAFETY: the range the kernel just moved our pages to, ours alone.
                    let _ = unsafe { sys::munmap(p, new_os) };
                    self.os_len = 0;
                    self.len = 0;
                    Err(Error::new(
                        ErrorKind::Os,
                        "mremap",
                        "the kernel moved the mapping to address 0; it was unmapped",
                    ))
                }
            },
            Err(e) => Err(Error::os("mremap", e)),
        };
        if self.os_len == 0 {
            if let Some(slot) = self.guard.take() {
                sys::unguard_mapping(slot);
            }
        }
        self.follow_fault_guard();
        moved.map_err(|e| self.err(e.with_addr(self.addr(), new_len)))
    }

    /// The page range the SIGBUS handler knows this mapping by.
    fn fault_range(&self) -> (usize, usize) {
        let start = self.ptr.as_ptr() as usize;
        (start, start + self.os_len.next_multiple_of(sys::page_size()))
    }

    /// Register a file mapping with the SIGBUS handler.
    fn register_fault_guard(&self) -> Result<Option<usize>> {
        let (a, b) = self.fault_range();
        sys::guard_mapping(a, b, self.prot.sys()).map_err(|e| {
            // The registry answers `Other` when its table is full; anything else is sigaction.
            let full = e.kind() == std::io::ErrorKind::Other;
            let err = self.err(Error::os("register with the SIGBUS handler", e).with_addr(a, b - a));
            if full {
                err.with_kind(ErrorKind::ResourceLimit).with_hint(
                    "drop some file mappings first: mman protects every one of them from truncation",
                )
            } else {
                err.with_hint("the SIGBUS handler could not be installed (sigaction failed)")
            }
        })
    }

    /// Tell the SIGBUS handler where the mapping is now, and with which protection.
    fn follow_fault_guard(&self) {
        if let Some(slot) = self.guard {
            let (a, b) = self.fault_range();
            sys::reguard_mapping(slot, a, b, self.prot.sys());
        }
    }
}

/// Per-page residency of a range, from `mincore(2)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Residency {
    pages: Vec<u8>,
    page_size: usize,
}

impl Residency {
    /// Number of pages in the range.
    pub fn pages(&self) -> usize {
        self.pages.len()
    }
    /// Number of resident pages.
    pub fn resident(&self) -> usize {
        self.pages.iter().filter(|b| *b & 1 != 0).count()
    }
    /// Whether page `i` (from the start of the range) is resident.
    pub fn is_resident(&self, i: usize) -> bool {
        self.pages.get(i).is_some_and(|b| b & 1 != 0)
    }
    /// One bool a page, in order.
    pub fn iter(&self) -> impl Iterator<Item = bool> + '_ {
        self.pages.iter().map(|b| b & 1 != 0)
    }
    /// A packed bitmap: bit `i % 64` of word `i / 64` is page `i`.
    pub fn bitmap(&self) -> Vec<u64> {
        let mut words = vec![0u64; self.pages.len().div_ceil(64)];
        for (i, r) in self.iter().enumerate() {
            if r {
                words[i / 64] |= 1 << (i % 64);
            }
        }
        words
    }
    /// The page size the counts are in.
    pub fn page_size(&self) -> usize {
        self.page_size
    }
}

/// Private anonymous memory: no other process can reach it, so it derefs to `[u8]`.
///
/// ```
/// # fn main() -> mman::Result<()> {
/// let mut buf = mman::ExclusiveMap::new(8192)?;
/// buf[..5].copy_from_slice(b"hello");
/// assert_eq!(&buf[..5], b"hello");
/// assert!(buf[5..].iter().all(|&b| b == 0));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ExclusiveMap {
    inner: Mapping,
}

impl ExclusiveMap {
    /// `len` zeroed bytes of private anonymous memory.
    pub fn new(len: usize) -> Result<Self> {
        MapOptions::new().len(len).map_exclusive()
    }
    /// Lock the pages of `range` in memory (`mlock(2)`).
    pub fn lock(&self, range: impl RangeBounds<usize>) -> Result<()> {
        self.inner.lock(range)
    }
    /// Lock the pages of `range` as they are first touched (`MLOCK_ONFAULT`).
    pub fn lock_on_fault(&self, range: impl RangeBounds<usize>) -> Result<()> {
        self.inner.lock_on_fault(range)
    }
    /// Unlock the pages of `range`.
    pub fn unlock(&self, range: impl RangeBounds<usize>) -> Result<()> {
        self.inner.unlock(range)
    }
    /// Which pages of `range` are resident.
    pub fn residency(&self, range: impl RangeBounds<usize>) -> Result<Residency> {
        self.inner.residency(range)
    }
    /// Advice about `range` that leaves the contents as they are.
    ///
    /// # Errors
    /// As [`Mapping::advise`].
    pub fn advise(&self, range: impl RangeBounds<usize>, advice: Advice) -> Result<()> {
        self.inner.advise(range, advice)
    }
    /// Drop the pages of `range` (`MADV_DONTNEED`): they read back as zeros. It needs
    /// `&mut self`, which proves no slice lives. The other [`DestructiveAdvice`]
    /// (`Free`, `Remove`, `DontFork`, `WipeOnFork`) would let bytes change or vanish under a
    /// slice held across `fork`; use [`into_mapping`](Self::into_mapping) for them.
    ///
    /// # Errors
    /// As [`Mapping::advise`].
    pub fn discard(&mut self, range: impl RangeBounds<usize>) -> Result<()> {
        self.inner.advise_destructive(range, DestructiveAdvice::DontNeed)
    }
    /// Grow or shrink to `new_len` bytes, keeping the contents; new bytes are zero.
    pub fn resize(&mut self, new_len: usize) -> Result<()> {
        self.inner.resize(new_len)
    }
    /// The general mapping, for protection changes and all other operations.
    pub fn into_mapping(self) -> Mapping {
        self.inner
    }
    /// The address of the first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.inner.as_ptr()
    }
}

impl Deref for ExclusiveMap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: private anonymous memory, readable and writable for its whole life (no
        // protect() on this type), reachable by no other process; the `&self` borrow keeps
        // resize and advice away.
        unsafe { std::slice::from_raw_parts(self.inner.start(), self.inner.len) }
    }
}

impl DerefMut for ExclusiveMap {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.inner.start(), self.inner.len) }
    }
}

fn resolve(range: impl RangeBounds<usize>, len: usize) -> Option<(usize, usize)> {
    let a = match range.start_bound() {
        Bound::Included(&a) => a,
        Bound::Excluded(&a) => a.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let b = match range.end_bound() {
        Bound::Included(&b) => b.checked_add(1)?,
        Bound::Excluded(&b) => b,
        Bound::Unbounded => len,
    };
    (a <= b && b <= len).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_ranges() {
        assert_eq!(resolve(.., 10), Some((0, 10)));
        assert_eq!(resolve(2..5, 10), Some((2, 5)));
        assert_eq!(resolve(2..=5, 10), Some((2, 6)));
        assert_eq!(resolve(5..11, 10), None);
        assert_eq!(resolve(std::ops::Range { start: 6, end: 5 }, 10), None);
        assert_eq!(resolve(..=usize::MAX, 10), None);
    }

    #[test]
    fn atomic_copies_round_trip_at_every_alignment() {
        let mut m = MapOptions::new().len(100).map_anonymous().unwrap();
        let data: Vec<u8> = (0..64u8).collect();
        for off in 0..9 {
            m.write_at(off, &data).unwrap();
            let mut back = vec![0u8; 64];
            m.read_at(off, &mut back).unwrap();
            assert_eq!(back, data);
        }
        assert!(m.read_at(90, &mut [0u8; 11]).is_err());
        m.protect(Protection::READ).unwrap();
        assert_eq!(
            m.write_at(0, b"x").unwrap_err().kind(),
            ErrorKind::PermissionDenied
        );
    }
}
