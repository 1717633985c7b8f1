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
//!
//! ```
//! use std::io::{BufRead, Seek, SeekFrom};
//! use mman::map::{Advice, Cursor, ExclusiveMap, FlushMode, MapOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("log");
//! std::fs::write(&path, b"first line\nsecond line\n")?;
//!
//! // A shared file mapping: bytes in and out by copy, msync to make them durable.
//! let map = MapOptions::new().read_write().shared().map_path(&path)?;
//! map.advise(.., Advice::Sequential)?;
//! map.write_at(0, b"FIRST")?;
//! map.flush(.., FlushMode::Sync)?;
//! assert!(std::fs::read(&path)?.starts_with(b"FIRST line"));
//!
//! // The same mapping as a file-like cursor, for code that takes a reader or a writer.
//! let mut cursor = Cursor::new(&map);
//! cursor.seek(SeekFrom::Start(11))?;
//! let mut line = String::new();
//! cursor.read_line(&mut line)?;
//! assert_eq!(line, "second line\n");
//!
//! // Private anonymous memory is this process's alone: a plain slice.
//! let mut scratch = ExclusiveMap::new(4096)?;
//! scratch[..5].copy_from_slice(b"hello");
//! assert_eq!(&scratch[..5], b"hello");
//! # Ok(()) }
//! ```

use std::ffi::c_void;
use std::fs::File;
use std::ops::{Bound, Deref, DerefMut, RangeBounds};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use crate::error::{Error, ErrorKind, Result};
use crate::sys;

mod advice;
mod control;
mod cursor;
mod exclusive;
mod mapping;
mod options;
mod residency;

pub use crate::flags::{FlushMode, LockAll, Protection};
pub use advice::{Advice, DestructiveAdvice};
pub use control::FileEnd;
pub use cursor::Cursor;
pub use exclusive::ExclusiveMap;
pub use mapping::Mapping;
pub use options::MapOptions;
pub use residency::Residency;

use mapping::Backing;

/// Lock the pages of the whole process in memory (`mlockall(2)`).
///
/// # Errors
/// * [`ErrorKind::ResourceLimit`], with a hint giving `RLIMIT_MEMLOCK`, when the process
///   maps more than it may lock, or may lock nothing (`ENOMEM`, `EPERM`).
/// * [`ErrorKind::InvalidInput`] for an empty `how`, or [`LockAll::ON_FAULT`] alone (`EINVAL`).
/// * [`ErrorKind::Unsupported`] for [`LockAll::ON_FAULT`] outside Linux.
pub fn lock_all(how: LockAll) -> Result<()> {
    sys::mlockall(how).map_err(|e| Error::memlock("mlockall", e, None))
}

/// Unlock every page of the process and cancel `MCL_FUTURE` (`munlockall(2)`).
///
/// # Errors
/// The error of `munlockall`, which current kernels never report (Linux 2.6.8 and earlier
/// refused an unprivileged caller: [`ErrorKind::PermissionDenied`]).
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
