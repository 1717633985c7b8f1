//! What a [`Mapping`] asks of the kernel: `mprotect`, `mlock`, `msync`, `madvise`,
//! `mincore`, `mremap`, and its registration with the SIGBUS handler.

use super::*;

/// What [`Mapping::resize_file`] does when the mapping's new end lies past the end of its
/// file.
///
/// ```
/// # fn main() -> mman::Result<()> {
/// use mman::{FileEnd, MapOptions};
/// let file = tempfile::tempfile().expect("a temporary file");
/// file.set_len(4096).expect("set_len");
/// let mut map = MapOptions::new().read_write().shared().map(&file)?;
/// assert!(map.resize_file(&file, 8192, FileEnd::Keep).is_err());
/// map.resize_file(&file, 8192, FileEnd::Extend)?;
/// assert_eq!(file.metadata().expect("metadata").len(), 8192);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileEnd {
    /// Leave the file as it is: a new end past it is an error, since touching a page past
    /// the end of a file raises SIGBUS.
    Keep,
    /// Extend the file to the new end first (`ftruncate`: the new bytes read as zeros).
    /// They are a hole: [`Mapping::allocate`] backs them, so that a full disk is an error
    /// then rather than a fault when they are first written.
    Extend,
}

impl Mapping {
    /// Change the protection of the whole mapping (`mprotect(2)`). Write and execute
    /// together are refused unless the mapping was made with
    /// [`MapOptions::allow_write_exec`].
    ///
    /// # Errors
    /// * [`ErrorKind::InvalidInput`]: write and execute together without
    ///   [`MapOptions::allow_write_exec`].
    /// * The error of `mprotect`: [`ErrorKind::PermissionDenied`] (`EACCES`) for a shared
    ///   file mapping made writable when its file was opened read-only (or is a write-sealed
    ///   memfd), or made executable on a `noexec` mount.
    pub fn protect(&mut self, prot: Protection) -> Result<()> {
        // Only the bits the kernel takes: what `protection()` reports is what it holds.
        let prot = prot & Protection::all();
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
            unsafe { sys::mprotect(p, n, prot) }
                .map_err(|e| self.err(Error::os("mprotect", e).with_addr(p as usize, n)))?;
        }
        self.prot = prot;
        self.follow_fault_guard();
        Ok(())
    }

    /// Lock the pages of `range` in memory (`mlock(2)`); `..` for all.
    ///
    /// # Errors
    /// * [`ErrorKind::InvalidInput`] when `range` lies outside the mapping.
    /// * [`ErrorKind::ResourceLimit`], with a hint giving `RLIMIT_MEMLOCK` and the bytes
    ///   needed, when `mlock` refuses for the limit or for memory (`ENOMEM`, `EAGAIN`,
    ///   `EPERM`).
    pub fn lock(&self, range: impl RangeBounds<usize>) -> Result<()> {
        self.lock_with(range, false)
    }

    /// Lock the pages of `range` as they are first touched (`mlock2(MLOCK_ONFAULT)`, Linux).
    ///
    /// # Errors
    /// As [`lock`](Self::lock); [`ErrorKind::Unsupported`] outside Linux, or on a kernel
    /// older than 4.4 (`ENOSYS`).
    pub fn lock_on_fault(&self, range: impl RangeBounds<usize>) -> Result<()> {
        self.lock_with(range, true)
    }

    fn lock_with(&self, range: impl RangeBounds<usize>, on_fault: bool) -> Result<()> {
        let (p, n) = self.os_span("mlock", range)?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the span of our own mapping.
        unsafe { sys::mlock(p, n, on_fault) }
            .map_err(|e| self.err(Error::memlock("mlock", e, Some(n as u64)).with_addr(p as usize, n)))
    }

    /// Unlock the pages of `range` (`munlock(2)`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `range` lies outside the mapping; else the error of
    /// `munlock`.
    pub fn unlock(&self, range: impl RangeBounds<usize>) -> Result<()> {
        let (p, n) = self.os_span("munlock", range)?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the span of our own mapping.
        unsafe { sys::munlock(p, n) }.map_err(|e| self.err(Error::os("munlock", e).with_addr(p as usize, n)))
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
        // SAFETY: our own range. Invalidate may change a private mapping's bytes, which no
        // safe reference can observe: a Mapping hands out copies only (as_slice's contract
        // forbids this call while a slice lives).
        unsafe { sys::msync(p, n, mode) }
            .map_err(|e| self.err(Error::os("msync", e).with_addr(p as usize, n)))?;
        // A caught fault means writes landed in zero pages, not the file: say so. (Measuring
        // the file here too, with fstat, made durable commits on ext4 40% slower, before or
        // after the msync: strace -c counted 12,000 msyncs in 2 s instead of 19,000.
        // verify_file_size measures.)
        self.check_intact("msync", false)
    }

    /// Give the file's bytes under `range` real backing store now (`fallocate(2)`): blocks
    /// on a disk, pages of memory on a tmpfs such as `/dev/shm`. Then a full file system or
    /// a used-up quota is an error here, [`ErrorKind::StorageFull`], rather than a page that
    /// cannot be backed when it is first touched: mman turns that SIGBUS into the same
    /// error, but only after the write that touched the page landed in a zero page instead
    /// of the file (and a sparse file on a full tmpfs faults even on a read).
    ///
    /// mman does this itself for the memory it places synchronisation objects
    /// ([`sync::place`](crate::sync) and the types' `open`), channels and persistent values
    /// in. Call it before placing anything of your own (an [`atomic_u64`](Self::atomic_u64)
    /// word, a table) in a file that may be sparse: one made with `ftruncate` or
    /// [`FileEnd::Extend`], or a hole punched in it.
    ///
    /// The range is widened to whole pages and never reaches past the file's end: the file
    /// is not grown. Anonymous memory and devices have nothing to allocate, and a file system
    /// that cannot allocate ahead (`EOPNOTSUPP`) is left to back the pages when they are
    /// touched: all are `Ok`.
    ///
    /// # Errors
    /// * [`ErrorKind::InvalidInput`] when `range` lies outside the mapping.
    /// * [`ErrorKind::StorageFull`] when the file system is full or over a quota (`ENOSPC`,
    ///   `EDQUOT`); [`ErrorKind::PermissionDenied`] when the file is not open for writing
    ///   (`EBADF`) or is a write-sealed memfd (`EPERM`); else the error of `fstat` or
    ///   `fallocate`.
    pub fn allocate(&self, range: impl RangeBounds<usize>) -> Result<()> {
        let (a, b) = resolve(range, self.len).ok_or_else(|| {
            self.err(
                Error::new(ErrorKind::InvalidInput, "fallocate", "range outside the mapping")
                    .with_addr(self.addr(), self.len),
            )
        })?;
        let Some(fd) = self.file.as_ref().map(AsFd::as_fd) else {
            return Ok(());
        };
        if a == b {
            return Ok(());
        }
        let page = sys::page_size() as u64;
        let info = sys::file_info(fd).map_err(|e| self.err(Error::os("fstat", e)))?;
        if info.kind != sys::FileType::Regular {
            // A device has no blocks to allocate: its pages are its driver's.
            return Ok(());
        }
        let size = info.size;
        let from = (self.file_offset + a as u64) / page * page;
        let to = (self.file_offset + b as u64).next_multiple_of(page).min(size);
        if from >= to {
            return Ok(());
        }
        sys::allocate_range(fd, from, to - from).map(drop).map_err(|e| {
            let err = self.err(Error::os("fallocate", e).with_range(from, Some((to - from) as usize)));
            match err.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => err.with_hint(crate::error::STORAGE_HINT),
                Some(libc::EBADF) => err
                    .with_kind(ErrorKind::PermissionDenied)
                    .with_hint("the file is not open for writing, and only a writer can allocate its blocks"),
                _ => err,
            }
        })
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
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `range` lies outside the mapping;
    /// [`ErrorKind::ResourceLimit`] when `mincore` is short of kernel memory (`EAGAIN`).
    pub fn residency(&self, range: impl RangeBounds<usize>) -> Result<Residency> {
        let (p, n) = self.os_span("mincore", range)?;
        let ps = sys::page_size();
        let mut pages = vec![0u8; n.div_ceil(ps)];
        if n != 0 {
            // SAFETY: the span of our own mapping; `pages` has a byte a page.
            unsafe { sys::mincore(p, n, &mut pages) }
                .map_err(|e| self.err(Error::os_limited("mincore", e).with_addr(p as usize, n)))?;
        }
        Ok(Residency { pages, page_size: ps })
    }

    /// Grow or shrink anonymous memory to `new_len` bytes, keeping the contents (`mremap(2)`,
    /// Linux; the mapping may move). File mappings use [`resize_file`](Self::resize_file).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`]: a file mapping, an empty mapping or a `new_len` of 0 or
    /// over `isize::MAX`, or shared anonymous memory asked to grow (the object behind it
    /// keeps its size). Else the error of `mremap`.
    pub fn resize(&mut self, new_len: usize) -> Result<()> {
        if self.backing != Backing::Anonymous {
            return Err(self.err(
                Error::new(
                    ErrorKind::InvalidInput,
                    "mremap",
                    "a file mapping needs its file to resize",
                )
                .with_addr(self.addr(), self.len)
                .with_hint("use resize_file(file, new_len, FileEnd::Keep or FileEnd::Extend)"),
            ));
        }
        self.remap(new_len)
    }

    /// Resize a file mapping to `new_len` bytes, keeping the contents (`mremap(2)`, Linux;
    /// the mapping may move). `file` must be the file that is mapped. When the new end lies
    /// past the end of `file`, `file_end` decides: [`FileEnd::Extend`] extends the file to
    /// it first, [`FileEnd::Keep`] refuses. The file is never shrunk.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`]: not a file mapping, `file` is another file, the new end
    /// overflows, or lies past the end of the file with [`FileEnd::Keep`], or the mapping or
    /// `new_len` is empty, or `new_len` is over `isize::MAX`. Else the error of `fstat`, `ftruncate` or `mremap`.
    pub fn resize_file(&mut self, file: &File, new_len: usize, file_end: FileEnd) -> Result<()> {
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
            if file_end == FileEnd::Keep {
                return Err(self.err(
                    Error::new(
                        ErrorKind::InvalidInput,
                        "mremap",
                        format!(
                            "the new end {end} is past the end of the file ({} bytes)",
                            info.size
                        ),
                    )
                    .with_hint("pass FileEnd::Extend to extend the file first"),
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
        let new_os = super::options::addressable("mremap", self.delta, new_len)
            .map_err(|e| self.err(e.with_addr(self.addr(), self.len)))?;
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
            Err(e) => Err(Error::os_limited("mremap", e)),
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
    pub(super) fn fault_range(&self) -> (usize, usize) {
        let start = self.ptr.as_ptr() as usize;
        (start, start + self.os_len.next_multiple_of(sys::page_size()))
    }

    /// The file behind the mapping, as the SIGBUS handler is told it: the descriptor the
    /// mapping keeps, and the file offset of its first page.
    fn fault_file(&self) -> Option<(BorrowedFd<'_>, u64)> {
        let fd = self.file.as_ref()?.as_fd();
        Some((fd, self.file_offset - self.delta as u64))
    }

    /// Register a file mapping with the SIGBUS handler.
    pub(super) fn register_fault_guard(&self) -> Result<Option<usize>> {
        let (a, b) = self.fault_range();
        sys::guard_mapping(a, b, self.prot, self.fault_file()).map_err(|e| {
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
    pub(super) fn follow_fault_guard(&self) {
        if let Some(slot) = self.guard {
            let (a, b) = self.fault_range();
            sys::reguard_mapping(slot, a, b, self.prot, self.fault_file());
        }
    }
}
