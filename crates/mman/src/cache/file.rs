//! [`CachedFile`]: an open file, its size and identity, and the checks its calls share.

use super::*;

/// An open file whose page-cache residency can be read and changed.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use mman::cache::{CachedFile, DirtyPages, PageRange};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("data");
/// std::fs::write(&path, vec![1u8; 64 * 1024])?;
/// let file = CachedFile::open(&path)?;
/// let touched = file.touch(PageRange::ALL)?; // reads in only what is missing
/// assert_eq!(touched.pages, file.pages());
/// let status = file.status(PageRange::bytes(0, Some(8192)))?;
/// println!("{:?} of {} pages resident", status.resident, status.pages);
/// let evicted = file.evict(PageRange::ALL, DirtyPages::WriteBackFirst)?;
/// println!("{:?} pages left the cache", evicted.evicted());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct CachedFile {
    pub(super) file: File,
    pub(super) path: PathBuf,
    pub(super) size: u64,
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) nlink: u64,
    pub(super) uid: u32,
}

pub(super) const UNKNOWN_REASON: &str = "the kernel withholds the page-cache state of a file this user \
     neither owns nor may write (cachestat: EPERM; mincore would claim every page resident); \
     run as its owner or root";

impl CachedFile {
    /// Open `path` read-only (without updating its access time where allowed).
    ///
    /// # Errors
    /// The error of `open`, with a hint ([`ErrorKind::NotFound`],
    /// [`ErrorKind::PermissionDenied`]), or of `fstat`; [`ErrorKind::InvalidInput`] for
    /// anything but a regular file.
    pub fn open(path: impl AsRef<Path>) -> Result<CachedFile> {
        let path = path.as_ref();
        let fd = sc::open_file_at(None, path, true).map_err(|e| open_error(e, path, true))?;
        CachedFile::from_fd(fd, path.to_path_buf())
    }

    pub(super) fn from_fd(fd: OwnedFd, path: PathBuf) -> Result<CachedFile> {
        let st = sys::file_info(fd.as_fd()).map_err(|e| Error::os("fstat", e).with_path(Some(&path)))?;
        if st.kind != sys::FileType::Regular {
            return Err(not_regular(&path));
        }
        Ok(CachedFile {
            file: File::from(fd),
            path,
            size: st.size,
            dev: st.dev,
            ino: st.ino,
            nlink: st.nlink,
            uid: st.uid,
        })
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Its size in bytes when opened.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Its pages (the last may be partial).
    pub fn pages(&self) -> u64 {
        self.size.div_ceil(sys::page_size() as u64)
    }
    /// (device, inode): the identity of the file, shared by its hard links.
    pub fn identity(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
    /// How many names the file has.
    pub fn links(&self) -> u64 {
        self.nlink
    }
    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// How many pages of `range` the file has.
    pub fn pages_in(&self, range: PageRange) -> u64 {
        let (first, end) = self.span(range);
        end - first
    }

    /// The pages of `range` that exist, as a page interval.
    pub(super) fn span(&self, range: PageRange) -> (u64, u64) {
        let pages = self.pages();
        let end = range.end.unwrap_or(pages).min(pages);
        let first = range.first.min(end);
        (first, end)
    }

    /// `(offset, length)` in bytes for cachestat/fadvise; length 0 means to the end.
    pub(super) fn byte_span(&self, first: u64, end: u64) -> (u64, u64) {
        let ps = sys::page_size() as u64;
        if end == self.pages() {
            (first * ps, 0)
        } else {
            (first * ps, (end - first) * ps)
        }
    }

    /// The error for a fault (`EFAULT` from populating): a truncation if the file shrank;
    /// else a page the file system could not back (a hole of a sparse file on a full tmpfs
    /// needs a page of memory even to be read): [`ErrorKind::StorageFull`], not "Bad
    /// address".
    pub(super) fn fault_error(&self, op: &'static str, e: std::io::Error, addr: usize, len: usize) -> Error {
        if e.raw_os_error() == Some(libc::EFAULT) {
            if let Some(t) = self.truncated(op) {
                return t;
            }
            return Error::new(
                ErrorKind::StorageFull,
                op,
                "a page of the file could not be backed (the file did not shrink, so this is no \
                 truncation): the file system is full or over a quota, or it could not fill a hole \
                 or read the page (ENOSPC, EDQUOT or EIO)",
            )
            .with_path(Some(&self.path))
            .with_addr(addr, len)
            .with_hint(crate::error::STORAGE_HINT);
        }
        Error::os(op, e).with_path(Some(&self.path)).with_addr(addr, len)
    }

    /// `Some(Truncated)` if the file is now shorter than when it was opened.
    pub(super) fn truncated(&self, op: &'static str) -> Option<Error> {
        let now = sys::file_info(self.file.as_fd()).map_or(0, |s| s.size);
        (now < self.size).then(|| {
            Error::truncated(op, Some(&self.path), self.size, now)
                .with_hint("the file was truncated while in use; it was skipped")
        })
    }
}

/// What anything but a regular file gets (a FIFO after `fstat`, a socket, which `open`
/// refuses, before).
pub(super) fn not_regular(path: &Path) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        "page cache",
        "not a regular file: only regular files have page-cache residency to report",
    )
    .with_path(Some(path))
}
