//! `Persistent<T>`: a value whose bytes are a file, read and written by copy; and the
//! notes' MAP_FIXED form, `persist_fixed`.

use std::fs::File;
use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::path::Path;

use super::{back, check_format, create_atomically, open_existing, open_locked, page, value_file_lens};
use crate::error::{Error, ErrorKind, Result};
use crate::map::{FlushMode, MapOptions, Mapping};

/// A `T` whose bytes are a file (see the [module docs](super)).
///
/// ```
/// # fn main() -> mman::Result<()> {
/// use mman::persist::Persistent;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("counter");
/// {
///     let counter = Persistent::<u64>::open(&path)?; // created zero-filled
///     assert!(Persistent::<u64>::open(&path).is_err()); // one handle at a time
///     counter.set(&41)?;
///     counter.update(|n| *n += 1)?;
/// }
/// assert_eq!(Persistent::<u64>::open(&path)?.get()?, 42); // the file kept it
/// # Ok(()) }
/// ```
pub struct Persistent<T: bytemuck::Pod> {
    map: Mapping,
    _lock: File,
    _t: PhantomData<T>,
}

impl<T: bytemuck::Pod> std::fmt::Debug for Persistent<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistent")
            .field("path", &self.map.path())
            .finish()
    }
}

impl<T: bytemuck::Pod> Persistent<T> {
    /// Open `path`, creating it zero-filled (mode 0600) if missing; fail at once if another
    /// handle holds it.
    ///
    /// # Errors
    /// As [`open_with`](Self::open_with) without waiting: [`ErrorKind::PermissionDenied`]
    /// when another handle holds the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), 0o600, false)
    }

    /// [`open`](Self::open), waiting for another holder to let go.
    ///
    /// # Errors
    /// As [`open_with`](Self::open_with) with waiting: a held lock is waited for, not an
    /// error.
    pub fn open_wait(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), 0o600, true)
    }

    /// [`open`](Self::open) with the mode for a new file, and whether to wait for the lock.
    ///
    /// # Errors
    /// * [`ErrorKind::InvalidInput`]: `T` is aligned beyond a page, or the file is not a
    ///   regular file of exactly `size_of::<T>()` rounded up to whole pages (of this system,
    ///   the format `open` makes, or of 4, 16 or 64 KiB, as `open` makes it elsewhere), or of
    ///   exactly `size_of::<T>()` bytes (as a C program writing the value makes it). Such a
    ///   file was made for another type or by another program, or truncated; it is not
    ///   written.
    /// * [`ErrorKind::PermissionDenied`]: without `wait`, another handle holds the file's
    ///   `flock`; or this user may not write the file (or, to create it, its directory).
    /// * The errors of creating a missing file atomically (a temporary file, `write`,
    ///   `fsync`, `link`, `fsync` of the directory: [`ErrorKind::NotFound`] for a missing
    ///   directory), of `open`, `flock` and `fstat`, and as [`MapOptions::map`].
    /// * [`ErrorKind::StorageFull`]: an existing file with holes (made by `ftruncate`) whose
    ///   file system has no room to back the value (`fallocate`): the value's pages are
    ///   backed before it is mapped, so a full disk is an error here, never a lost write.
    pub fn open_with(path: &Path, mode: u32, wait: bool) -> Result<Self> {
        let size = std::mem::size_of::<T>().max(1) as u64;
        if std::mem::align_of::<T>() as u64 > page() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "persist",
                "the type is aligned beyond a page",
            )
            .with_path(Some(path)));
        }
        let file_len = size.next_multiple_of(page());
        if !path.exists() {
            create_atomically(path, &vec![0u8; file_len as usize], mode)?;
        }
        let f = open_locked(path, wait)?;
        check_format(
            &f,
            path,
            &value_file_lens(size),
            "a persistent value of this type",
        )?;
        back(&f, path, size)?;
        let map = MapOptions::new()
            .read_write()
            .shared()
            .len(size as usize)
            .map(&f)
            .map_err(|e| e.with_path(Some(path)))?;
        Ok(Persistent {
            map,
            _lock: f,
            _t: PhantomData,
        })
    }

    /// Make the value durable: `msync(MS_SYNC)` of its pages.
    ///
    /// # Errors
    /// `msync` fails, or the file is now shorter than the value
    /// ([`ErrorKind::Truncated`]): writes past its end were lost.
    pub fn flush(&self) -> Result<()> {
        self.map.flush(.., FlushMode::Sync)?;
        // The file measured too (one fstat): a truncation inside the value's page raises no
        // fault, and what was written past the new end is lost.
        self.verify()
    }

    /// The value, by copy (aligned 8-byte atomic loads: a concurrent writer elsewhere yields
    /// some mix of old and new words, never undefined behaviour).
    ///
    /// # Errors
    /// [`ErrorKind::Truncated`] when the file shrank and a vanished page was touched. A
    /// truncation that ends inside the value's last page reads as zeros there without a
    /// fault; [`flush`](Self::flush) and [`verify`](Self::verify) measure the file and
    /// report it.
    pub fn get(&self) -> Result<T> {
        self.map.load(0)
    }

    /// Replace the value, by copy.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn set(&self, value: &T) -> Result<()> {
        self.map.store(0, value)
    }

    /// Copy the value out, let `f` change the copy, write it back; returns what `f`
    /// returns. Another process writing the file at the same time can interleave with
    /// this; cooperating mman handles are kept apart by the handle's `flock`.
    ///
    /// # Errors
    /// As [`get`](Self::get); `f` is not called if the value cannot be read.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        let mut v = self.get()?;
        let r = f(&mut v);
        self.set(&v)?;
        Ok(r)
    }

    /// Check that the file still holds the whole value (one `fstat`).
    ///
    /// # Errors
    /// [`ErrorKind::Truncated`] with the sizes.
    pub fn verify(&self) -> Result<()> {
        self.map.verify_file_size()
    }

    /// The value in place, as a reference: no copy.
    ///
    /// # Safety
    /// While the reference lives, nobody may write or truncate the file: no other process,
    /// no `std::fs` call or other mapping in this one, no other handle. (The handle's
    /// `flock` keeps out only those who ask for it.)
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub unsafe fn as_ref(&self) -> Result<&T> {
        // SAFETY: the caller vouches nobody changes the bytes while the reference lives.
        let bytes = unsafe { self.map.as_slice() }?;
        // SAFETY: the mapping is page-aligned (T's alignment is at most a page, checked at
        // open) and at least size_of::<T>() bytes long; T is Pod, so any bytes are a T.
        Ok(unsafe { &*bytes.as_ptr().cast::<T>() })
    }

    /// The value in place, as a mutable reference: no copy.
    ///
    /// # Safety
    /// As [`as_ref`](Self::as_ref), and nobody else may read the file either while the
    /// reference lives.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub unsafe fn as_mut(&mut self) -> Result<&mut T> {
        // SAFETY: forwarded from the caller's contract.
        let bytes = unsafe { self.map.as_mut_slice() }?;
        // SAFETY: as in as_ref; the slice is unique for the borrow of `self`.
        Ok(unsafe { &mut *bytes.as_mut_ptr().cast::<T>() })
    }
}

/// The course notes' `persist()`: map `path` MAP_SHARED | MAP_FIXED over `len` bytes at
/// `addr`, so the variable there *becomes* the file's contents (created zero-filled if
/// missing; an existing file must be a regular file of exactly `len` bytes, as this makes
/// it, where the notes would grow any file they were given). Returns the mapping; keep it (or `forget` it) for as long as the
/// variable is used.
///
/// # Safety
/// `addr` must be page-aligned, `len` a multiple of the page size, and `addr..addr + len`
/// memory the caller owns that nothing else uses: whatever was there is replaced without
/// asking (a page-aligned `static mut` array, as in the notes, qualifies when no reference
/// to it lives across this call). Another process writing the file changes the variable
/// under any reference to it, so a reference to it needs what [`Mapping::as_slice`] asks.
/// Dropping the returned mapping unmaps the range and leaves nothing there: the variable
/// must not be touched after that (keep the mapping, or `forget` it, while it is used).
///
/// # Errors
/// * The errors of creating a missing file atomically (zero-filled, mode 0600: a temporary
///   file, `write`, `fsync`, `link`, `fsync` of the directory: [`ErrorKind::NotFound`] for a
///   missing directory, [`ErrorKind::PermissionDenied`]), or of `open` and `fstat`.
/// * [`ErrorKind::InvalidInput`]: an existing file that is not a regular file of exactly
///   `len` bytes, the format this function makes. Such a file was made by something else,
///   and is neither grown nor written.
/// * [`ErrorKind::StorageFull`]: the file system has no room to back an existing file's
///   holes (`fallocate`, made before `addr` is touched).
/// * As [`MapOptions::map_fixed_replace`]: [`ErrorKind::InvalidInput`] for an `addr` not
///   page-aligned; the errors of `mmap`.
pub unsafe fn persist_fixed(path: impl AsRef<Path>, addr: *mut u8, len: usize) -> Result<Mapping> {
    let path = path.as_ref();
    if !path.exists() {
        create_atomically(path, &vec![0u8; len], 0o600)?;
    }
    let f = open_existing(path)?;
    check_format(&f, path, &[len as u64], "a persistent variable of this length")?;
    // Backed before the caller's memory is replaced: a full disk leaves it as it was.
    back(&f, path, len as u64)?;
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        MapOptions::new()
            .read_write()
            .shared()
            .len(len)
            .map_fixed_replace(addr as usize, Some(f.as_fd()))
    }
    .map_err(|e| e.with_path(Some(path)))
}
