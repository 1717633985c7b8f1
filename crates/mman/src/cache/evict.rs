//! Dropping pages from the page cache, and measuring what stayed.

use super::*;

/// What [`CachedFile::evict`] does with dirty pages, which the kernel cannot drop until
/// they are written back.
///
/// ```no_run
/// # fn main() -> mman::Result<()> {
/// use mman::cache::{CachedFile, DirtyPages, PageRange};
/// let f = CachedFile::open("/srv/cold/archive")?;
/// let evicted = f.evict(PageRange::ALL, DirtyPages::WriteBackFirst)?;
/// println!("{} pages stayed", evicted.after.resident.unwrap_or(0));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirtyPages {
    /// Leave them: they stay in the cache (counted in [`Evicted::after`] as dirty) and the
    /// call does no I/O.
    Stay,
    /// Write them back first (`fdatasync`: the dirty data of the whole file, not only of the
    /// range, waiting until it is on the disk), so they can be dropped too.
    WriteBackFirst,
}

impl CachedFile {
    /// Drop the pages of `range` from the page cache (`POSIX_FADV_DONTNEED`) and measure
    /// what stayed; `dirty` says whether dirty pages are written back first
    /// ([`DirtyPages::WriteBackFirst`]) or stay ([`DirtyPages::Stay`]). Pages that a process
    /// maps or locks stay too.
    ///
    /// # Errors
    /// Measuring the residency before or after fails (as in [`status`](Self::status)), or
    /// `fdatasync` or `posix_fadvise` fails (with the path).
    pub fn evict(&self, range: PageRange, dirty: DirtyPages) -> Result<Evicted> {
        let (first, end) = self.span(range);
        let r = PageRange {
            first,
            end: Some(end),
        };
        let before = self.status(r)?;
        if dirty == DirtyPages::WriteBackFirst {
            sc::fdatasync(self.file.as_fd())
                .map_err(|e| Error::os("fdatasync", e).with_path(Some(&self.path)))?;
        }
        if end > first {
            let (off, len) = self.byte_span(first, end);
            sc::fadvise(self.file.as_fd(), off, len, sc::FileAdvice::DontNeed)
                .map_err(|e| Error::os("posix_fadvise(DONTNEED)", e).with_path(Some(&self.path)))?;
        }
        let after = self.status(r)?;
        Ok(Evicted { before, after })
    }
}
