//! [`Mapping`]: the type, its invariants, and access to its bytes by copy or atomics.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Backing {
    Anonymous,
    File { dev: u64, ino: u64 },
}

/// A mapping of a file or of memory other processes may reach.
///
/// Dropping it unmaps it. Its bytes are reached through copies, never references, unless the
/// caller takes on [`as_slice`](Self::as_slice)'s contract: another process may write or
/// truncate the file at any moment, which a `&[u8]` may not observe.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use mman::{FlushMode, MapOptions};
/// use std::sync::atomic::Ordering;
/// let file = tempfile::tempfile()?;
/// file.set_len(4096)?;
/// let map = MapOptions::new().read_write().shared().map(&file)?;
/// map.store(0, &42u64)?; // copies in and out, with 8-byte atomics
/// assert_eq!(map.load::<u64>(0)?, 42);
/// map.atomic_u64(8)?.fetch_add(1, Ordering::SeqCst); // an atomic in place
/// map.flush(.., FlushMode::Sync)?; // msync: the file holds both
/// let mut word = [0u8; 8];
/// std::os::unix::fs::FileExt::read_exact_at(&file, &mut word, 8)?;
/// assert_eq!(u64::from_ne_bytes(word), 1);
/// assert!(map.read_at(4090, &mut [0u8; 8]).is_err()); // past the end: an error, not UB
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Mapping {
    /// The start of the kernel's mapping, aligned to `align`; dangling when `os_len` is 0.
    pub(super) ptr: NonNull<u8>,
    /// The bytes the kernel mapped from `ptr` (`delta + len`; 0 for an empty mapping). The
    /// pages up to `os_len` rounded up to the page are ours.
    pub(super) os_len: usize,
    /// How far the caller's first byte lies past `ptr`: the file offset's remainder modulo
    /// `align` (`delta < align`; 0 for anonymous memory).
    pub(super) delta: usize,
    /// The caller's length, exactly as asked.
    pub(super) len: usize,
    /// The protection now (kept in step with mprotect).
    pub(super) prot: Protection,
    /// MAP_SHARED rather than MAP_PRIVATE.
    pub(super) shared: bool,
    /// Anonymous memory, or the file (device and inode) that is mapped.
    pub(super) backing: Backing,
    /// The path the file was opened by, for messages.
    pub(super) path: Option<PathBuf>,
    /// The granule: the page size, or the huge page size.
    pub(super) align: usize,
    /// Whether write and execute together were permitted at map time.
    pub(super) allow_write_exec: bool,
    /// The file offset of the caller's first byte.
    pub(super) file_offset: u64,
    /// A duplicate of the file's descriptor, to measure the file when it shrinks.
    pub(super) file: Option<std::os::fd::OwnedFd>,
    /// The slot of this mapping in the SIGBUS handler's registry (file mappings on Linux).
    pub(super) guard: Option<usize>,
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
    pub(super) fn start(&self) -> *mut u8 {
        if self.os_len == 0 {
            return self.ptr.as_ptr();
        }
        // SAFETY: `delta < os_len`, inside the mapping.
        unsafe { self.ptr.as_ptr().add(self.delta) }
    }

    pub(super) fn addr(&self) -> usize {
        self.start() as usize
    }

    pub(super) fn err(&self, e: Error) -> Error {
        e.with_path(self.path.as_deref())
    }

    #[inline]
    pub(super) fn check_span(&self, op: &'static str, offset: usize, n: usize) -> Result<()> {
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
        self.guard
            .and_then(sys::mapping_fault)
            .is_some_and(|(_, unbacked)| !unbacked)
    }

    /// Whether a touch of a page inside the file was caught that the file system could not
    /// back (a full disk or tmpfs, a quota, a read error): that page now reads as zeros, and
    /// what was written to it did not reach the file.
    #[inline]
    pub fn is_unbacked(&self) -> bool {
        self.guard
            .and_then(sys::mapping_fault)
            .is_some_and(|(_, unbacked)| unbacked)
    }

    /// `Err(`[`ErrorKind::Truncated`]`)` if the file shrank under the mapping: a caught
    /// fault, or (when `measure` is set) a file now shorter than the mapped range.
    /// `Err(`[`ErrorKind::StorageFull`]`)` if a caught fault was on a page inside the file
    /// that could not be backed.
    #[inline]
    pub(super) fn check_intact(&self, op: &'static str, measure: bool) -> Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        let caught = self.guard.and_then(sys::mapping_fault);
        let needed = self.file_offset + self.len as u64;
        if let (true, Some(f)) = (caught.is_some() || measure, self.file.as_ref()) {
            // A failed fstat is its own error, not an empty file.
            let now = sys::file_info(std::os::fd::AsFd::as_fd(f))
                .map_err(|e| self.err(Error::os("fstat", e)))?
                .size;
            if let Some((page, true)) = caught {
                // `page` counts from the mapping's first page, `delta` bytes before ours.
                let offset = (self.file_offset - self.delta as u64) + page as u64;
                return Err(Error::unbacked(op, self.path.as_deref(), offset, now, true));
            }
            if caught.is_some() || now < needed {
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
    ///
    /// # Errors
    /// [`ErrorKind::Truncated`] when the file now ends before the mapping's last byte, or a
    /// touch of a vanished page was caught earlier; [`Error::truncation`] gives the sizes.
    /// The error of `fstat` if it fails. Anonymous memory never fails.
    pub fn verify_file_size(&self) -> Result<()> {
        self.check_intact("verify", true)
    }

    #[inline]
    pub(super) fn need(&self, op: &'static str, p: Protection) -> Result<()> {
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
    pub(super) fn os_span(
        &self,
        op: &'static str,
        range: impl RangeBounds<usize>,
    ) -> Result<(*mut c_void, usize)> {
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
    ///
    /// # Errors
    /// As [`read_at`](Self::read_at): the mapping is not readable
    /// ([`ErrorKind::PermissionDenied`]), or the file was found truncated.
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        let mut v = vec![0u8; self.len];
        self.read_at(0, &mut v)?;
        Ok(v)
    }

    /// Read a plain-old-data value at `offset` (any alignment) by copy.
    ///
    /// # Errors
    /// As [`read_at`](Self::read_at): `offset + size_of::<T>()` lies past the end
    /// ([`ErrorKind::InvalidInput`]), the mapping is not readable, or the file was found
    /// truncated.
    #[inline]
    pub fn load<T: bytemuck::Pod>(&self, offset: usize) -> Result<T> {
        let mut v = T::zeroed();
        self.read_at(offset, bytemuck::bytes_of_mut(&mut v))?;
        Ok(v)
    }

    /// Write a plain-old-data value at `offset` (any alignment) by copy.
    ///
    /// # Errors
    /// As [`write_at`](Self::write_at): `offset + size_of::<T>()` lies past the end
    /// ([`ErrorKind::InvalidInput`]), the mapping is not readable and writable, or the file
    /// was found truncated.
    #[inline]
    pub fn store<T: bytemuck::NoUninit>(&self, offset: usize, value: &T) -> Result<()> {
        self.write_at(offset, bytemuck::bytes_of(value))
    }

    pub(super) fn atomic_ptr(&self, op: &'static str, offset: usize, size: usize) -> Result<*mut u8> {
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
    ///
    /// # Errors
    /// * [`ErrorKind::InvalidInput`] when `range` lies outside the mapping;
    ///   [`ErrorKind::PermissionDenied`] when the mapping is not readable.
    /// * The error of `write(2)` on `fd` (or of `poll(2)` while waiting on a non-blocking
    ///   one), or a write of 0 bytes.
    /// * [`ErrorKind::Truncated`] when the kernel's copy met a page past the file's end
    ///   (`EFAULT`) because the file shrank.
    /// * [`ErrorKind::StorageFull`] when it met a page inside the file that the file system
    ///   could not back (`EFAULT` with the file whole: a hole on a full tmpfs, say, or a
    ///   read error); [`Error::unbacked_offset`] gives the first byte not written, and
    ///   everything before it was. `read(2)` of the file may still work there.
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
                    // The kernel's copy met a page past the file's end (it shrank), or one
                    // inside it that the file system could not back (a hole on a full
                    // tmpfs faults even on a read).
                    self.check_intact("write", true)?;
                    if let (Some(f), false) = (self.file.as_ref(), self.is_anonymous()) {
                        let size = sys::file_info(f.as_fd())
                            .map_err(|e| self.err(Error::os("fstat", e)))?
                            .size;
                        let at = self.file_offset + done as u64;
                        return Err(Error::unbacked("write", self.path.as_deref(), at, size, false));
                    }
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
    /// made.
    ///
    /// # Errors
    /// [`ErrorKind::PermissionDenied`] when the mapping is not readable;
    /// [`ErrorKind::Truncated`] when a touch of a page past the file's end was caught
    /// earlier.
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
    /// write those bytes while the slice lives.
    ///
    /// # Errors
    /// [`ErrorKind::PermissionDenied`] when the mapping is not readable and writable;
    /// [`ErrorKind::Truncated`] as for [`as_slice`](Self::as_slice).
    #[inline]
    pub unsafe fn as_mut_slice(&mut self) -> Result<&mut [u8]> {
        self.need("as_mut_slice", Protection::READ_WRITE)?;
        self.check_intact("as_mut_slice", false)?;
        // SAFETY: in bounds, readable and writable; exclusivity is the caller's contract.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.start(), self.len) })
    }
}
