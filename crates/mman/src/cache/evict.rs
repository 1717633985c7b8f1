//! Dropping pages from the page cache, and measuring what stayed.

use super::*;

impl CachedFile {
    /// Drop the pages of `range` from the page cache (`POSIX_FADV_DONTNEED`), after writing
    /// dirty ones back if `flush` (`fdatasync`), and measure what stayed.
    pub fn evict(&self, range: PageRange, flush: bool) -> Result<Evicted> {
        let (first, end) = self.span(range);
        let r = PageRange {
            first,
            end: Some(end),
        };
        let before = self.status(r)?;
        if flush {
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
