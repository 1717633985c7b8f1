//! [`MapOptions`]: every knob of `mmap(2)`, and the one place a [`Mapping`] is built.

use super::*;

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
    /// The protection of the pages (`PROT_*`; bits other than read, write and execute are
    /// dropped).
    pub fn protection(&mut self, prot: Protection) -> &mut Self {
        self.prot = Some(prot & Protection::all());
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
    ///
    /// # Errors
    /// * [`ErrorKind::InvalidInput`]: write and execute together without
    ///   [`allow_write_exec`](Self::allow_write_exec); an offset or range past the end of the
    ///   file, or a length that overflows; with a [`fixed_address`](Self::fixed_address), an
    ///   address or offset not page-aligned; a huge page size not a power of two.
    /// * [`ErrorKind::NotMappable`]: a directory, FIFO, socket, character device, or a
    ///   `/proc` or `/sys` file (read it with `read()` instead).
    /// * The errors of `fstat` and `mmap`: [`ErrorKind::PermissionDenied`] for a file not open
    ///   for reading, or not for writing when mapped shared and writable, a write-sealed memfd,
    ///   `PROT_EXEC` on a `noexec` mount; [`ErrorKind::ResourceLimit`] when memory, address
    ///   space or reserved huge pages run out; [`ErrorKind::AddressInUse`] for a fixed address
    ///   already mapped; [`ErrorKind::Unsupported`] for huge pages outside Linux.
    /// * [`ErrorKind::ResourceLimit`] when 65,536 file mappings are already protected from
    ///   truncation (Linux); with [`transparent_huge_pages`](Self::transparent_huge_pages),
    ///   the error of `madvise(MADV_HUGEPAGE)`.
    pub fn map<F: AsFd>(&self, file: F) -> Result<Mapping> {
        let fd = file.as_fd();
        self.map_fd(fd, None, sys::Placement::Anywhere)
    }

    /// Open `path` (read-write when mapping it shared and writable, read-only otherwise) and
    /// map it.
    ///
    /// # Errors
    /// As [`map`](Self::map), and those of `open(2)`: [`ErrorKind::NotFound`], or
    /// [`ErrorKind::PermissionDenied`] (as for a shared writable mapping of a file this user
    /// may only read). Every error names the path.
    pub fn map_path(&self, path: impl AsRef<Path>) -> Result<Mapping> {
        let path = path.as_ref();
        let prot = self.prot.unwrap_or(Protection::READ);
        let shared = self.shared.unwrap_or(true);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(prot.writable() && shared)
            .open(path)
            .map_err(|e| {
                if sys::opened_a_socket(&e, path) {
                    // As mmap refuses a FIFO (ENODEV).
                    Error::new(
                        ErrorKind::NotMappable,
                        "open",
                        "not a regular file: a socket cannot be mapped",
                    )
                    .with_path(Some(path))
                } else {
                    Error::os("open", e).with_path(Some(path))
                }
            })?;
        self.map_fd(file.as_fd(), Some(path), sys::Placement::Anywhere)
    }

    /// Map anonymous memory (zero-filled): private by default, or shared with children
    /// created by `fork` after [`shared`](Self::shared).
    ///
    /// # Errors
    /// * [`ErrorKind::InvalidInput`]: write and execute together without
    ///   [`allow_write_exec`](Self::allow_write_exec); an [`offset`](Self::offset) other than
    ///   0; a [`fixed_address`](Self::fixed_address) not page-aligned; a huge page size not a
    ///   power of two; a length over `isize::MAX`.
    /// * The errors of `mmap`: [`ErrorKind::ResourceLimit`] when memory, address space or
    ///   reserved huge pages run out; [`ErrorKind::AddressInUse`] for a fixed address already
    ///   mapped; [`ErrorKind::Unsupported`] for huge pages outside Linux.
    /// * [`ErrorKind::ResourceLimit`] when huge pages mapped with
    ///   [`no_reserve`](Self::no_reserve) cannot all be taken at once; with
    ///   [`transparent_huge_pages`](Self::transparent_huge_pages), the error of
    ///   `madvise(MADV_HUGEPAGE)`.
    pub fn map_anonymous(&self) -> Result<Mapping> {
        self.map_anon(sys::Placement::Anywhere)
    }

    /// Map private anonymous memory that only this process can reach, readable and
    /// writable, as an [`ExclusiveMap`] that derefs to `[u8]`.
    ///
    /// # Errors
    /// As [`map_anonymous`](Self::map_anonymous), less the write-and-execute refusal: the
    /// protection is read-write here, whatever was set.
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
    /// will use the old contents. Dropping the returned [`Mapping`] unmaps the range and
    /// leaves *nothing* there: memory the program still names (a `static mut` the caller
    /// mapped over) must not be touched after that, so keep the mapping, or
    /// `std::mem::forget` it, for as long as anything may. This is the seed's `persist()`
    /// idiom; prefer [`fixed_address`](Self::fixed_address), which fails instead of
    /// clobbering.
    ///
    /// # Errors
    /// As [`map`](Self::map) with a file, as [`map_anonymous`](Self::map_anonymous) without,
    /// but never [`ErrorKind::AddressInUse`]: whatever is mapped there is replaced. An `addr`
    /// or file offset not page-aligned is [`ErrorKind::InvalidInput`].
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
                Error::os_limited("mmap", e)
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
        let build = |ptr: NonNull<u8>, os_len: usize, delta: usize, len: usize| {
            // The invariants documented at Mapping's fields.
            debug_assert!(delta < align && (os_len == 0 || os_len == delta + len));
            debug_assert!(os_len == 0 || (ptr.as_ptr() as usize).is_multiple_of(align.min(sys::page_size())));
            Mapping {
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
            }
        };
        if len == 0 {
            return Ok(build(NonNull::dangling(), 0, 0, 0));
        }
        let os_len = addressable("mmap", delta, len).map_err(|e| e.with_range(offset, Some(len)))?;
        let req = sys::MapRequest {
            shared,
            placement,
            populate: self.populate,
            no_reserve: self.no_reserve,
            huge_page_size: self.huge_page_size,
        };
        // SAFETY: with Anywhere/NoReplace the kernel replaces nothing; with FixedReplace the
        // caller of `map_fixed_replace` took on that contract.
        let p = unsafe { sys::mmap(addr as *mut c_void, os_len, prot, &req, fd, aligned_offset) }
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
        let err = Error::os_limited("mmap", e).with_range(offset, Some(len));
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

/// `delta + len`, the bytes the kernel maps for a caller's `len` bytes `delta` bytes into
/// the first page, if no slice or offset of the mapping can exceed `isize::MAX` bytes (what
/// `slice::from_raw_parts` and pointer offsets require): on 32-bit targets the kernel could
/// grant more, and a sum that wrapped would leave `len` larger than what is mapped.
pub(super) fn addressable(op: &'static str, delta: usize, len: usize) -> Result<usize> {
    delta
        .checked_add(len)
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                op,
                format!("{len} bytes: a mapping may span at most isize::MAX bytes"),
            )
        })
}

pub(super) fn probe_mappable(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let ps = sys::page_size();
    let req = sys::MapRequest {
        no_reserve: true,
        ..sys::MapRequest::PRIVATE
    };
    let prot = Protection::READ;
    // SAFETY: the kernel picks the address; nothing is replaced, and the probe mapping is
    // never touched before it is unmapped below.
    let p = unsafe { sys::mmap(std::ptr::null_mut(), ps, prot, &req, Some(fd), 0) }?;
    // SAFETY: `p` is the page just mapped, owned here and referenced by nothing.
    unsafe { sys::munmap(p, ps) }
}
