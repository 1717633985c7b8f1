//! How much of a file is resident: `cachestat(2)`, or `mincore(2)` where it tells the truth.

use super::*;

/// The most pages one residency map covers where mman makes maps for its own use (`status`
/// without cachestat, `touch`, `buckets`): a map of 1 MiB, 4 GiB of file. A file's size is
/// anyone's choice (a sparse file of 2^56 bytes costs nothing), and one byte a page of it
/// could not be allocated: the process aborted.
pub(super) const WINDOW: u64 = 1 << 20;

/// `first..end` in windows of at most [`WINDOW`] pages.
pub(super) fn windows(first: u64, end: u64) -> impl Iterator<Item = (u64, u64)> {
    (first..end)
        .step_by(WINDOW as usize)
        .map(move |a| (a, (a + WINDOW).min(end)))
}

impl CachedFile {
    /// How much of `range` is in the page cache.
    ///
    /// # Errors
    /// The error of `cachestat`, but `EPERM`, which gives a residency unknown, with the
    /// reason. Where `cachestat` is absent (before Linux 6.5), as
    /// [`page_map`](Self::page_map).
    pub fn status(&self, range: PageRange) -> Result<Status> {
        let (first, end) = self.span(range);
        let pages = end - first;
        if pages == 0 {
            let source = if sc::cachestat_available() {
                Source::Cachestat
            } else {
                Source::Mincore
            };
            return Ok(Status::known(0, 0, source));
        }
        let (off, len) = self.byte_span(first, end);
        match sc::cachestat(self.file.as_fd(), off, len) {
            Ok(cs) => Ok(Status {
                pages,
                resident: Some(cs.cached.min(pages)),
                unknown: None,
                dirty: Some(cs.dirty),
                writeback: Some(cs.writeback),
                evicted: Some(cs.evicted),
                recently_evicted: Some(cs.recently_evicted),
                source: Source::Cachestat,
            }),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                Ok(Status::unknown(pages, UNKNOWN_REASON.into(), Source::Cachestat))
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)) => {
                match self.count_resident(first, end)? {
                    Some(n) => Ok(Status::known(pages, n, Source::Mincore)),
                    None => Ok(Status::unknown(pages, UNKNOWN_REASON.into(), Source::Mincore)),
                }
            }
            Err(e) => Err(Error::os("cachestat", e).with_path(Some(&self.path))),
        }
    }

    /// Resident pages of `first..end` by `mincore`, a window at a time; `None` when the
    /// kernel would not tell the truth for this file.
    fn count_resident(&self, first: u64, end: u64) -> Result<Option<u64>> {
        let mut n = 0;
        for (a, b) in windows(first, end) {
            match self.page_map(PageRange {
                first: a,
                end: Some(b),
            })? {
                Some(map) => n += count(&map),
                None => return Ok(None),
            }
        }
        Ok(Some(n))
    }

    /// Residency page by page (`mmap` + `mincore`): one byte a page, bit 0 set when
    /// resident; `None` when the kernel would not tell the truth for this file.
    ///
    /// # Errors
    /// [`ErrorKind::ResourceLimit`] when the map (one byte a page of the range) cannot be
    /// allocated: ask for a smaller range. [`ErrorKind::InvalidInput`] when the range is
    /// too large to map; the error of `mmap` or of `mincore` ([`ErrorKind::ResourceLimit`]
    /// for `EAGAIN`).
    pub fn page_map(&self, range: PageRange) -> Result<Option<Vec<u8>>> {
        let (first, end) = self.span(range);
        if !sc::mincore_tells_truth(self.uid, self.file.as_fd(), &self.path) {
            return Ok(None);
        }
        let mut out = residency_map(end - first, "mincore").map_err(|e| e.with_path(Some(&self.path)))?;
        if end == first {
            return Ok(Some(out));
        }
        let view = View::new(self, first, end, "mincore")?;
        // SAFETY: the view is our own mapping of the file; `out` has a byte a page.
        unsafe { sys::mincore(view.addr, view.len, &mut out) }.map_err(|e| {
            Error::os_limited("mincore", e)
                .with_path(Some(&self.path))
                .with_addr(view.addr as usize, view.len)
        })?;
        for b in &mut out {
            *b &= 1;
        }
        Ok(Some(out))
    }

    /// Residency in `n` equal slices of `range` (for a bar like `vmtouch -v`): each slice as
    /// (resident pages, pages); `None` when the kernel will not say. (At most one slice a
    /// page.)
    ///
    /// # Errors
    /// As [`page_map`](Self::page_map) (a range of at most 2^20 pages is measured with
    /// one map), and as [`status`](Self::status) for each slice (a longer range, or where
    /// the map is `None`); [`ErrorKind::ResourceLimit`] when the `n` slices cannot be
    /// allocated.
    pub fn buckets(&self, range: PageRange, n: usize) -> Result<Option<Vec<(u64, u64)>>> {
        let (first, end) = self.span(range);
        let pages = end - first;
        let n = (n as u64).min(pages).max(1);
        let bounds = |i: u64| first + (pages as u128 * i as u128 / n as u128) as u64;
        let mut out = Vec::new();
        out.try_reserve_exact(n as usize).map_err(|_| {
            Error::new(
                ErrorKind::ResourceLimit,
                "buckets",
                format!("{n} slices do not fit in memory"),
            )
            .with_path(Some(&self.path))
        })?;
        let map = if pages <= WINDOW {
            self.page_map(range)?
        } else {
            None
        };
        if let Some(map) = map {
            return Ok(Some(
                (0..n)
                    .map(|i| {
                        let (a, b) = ((bounds(i) - first) as usize, (bounds(i + 1) - first) as usize);
                        (count(&map[a..b]), (b - a) as u64)
                    })
                    .collect(),
            ));
        }
        for i in 0..n {
            let (a, b) = (bounds(i), bounds(i + 1));
            match self
                .status(PageRange {
                    first: a,
                    end: Some(b),
                })?
                .resident
            {
                Some(r) => out.push((r, b - a)),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }
}

/// A zeroed residency map of `pages` bytes, or [`ErrorKind::ResourceLimit`] when it cannot
/// be allocated (never an abort: the size comes from a file's, which anyone may choose).
pub(super) fn residency_map(pages: u64, op: &'static str) -> Result<Vec<u8>> {
    let refuse = || {
        Error::new(
            ErrorKind::ResourceLimit,
            op,
            format!("a residency map of {pages} pages (one byte a page) cannot be allocated"),
        )
        .with_hint("ask for a smaller range of pages")
    };
    let len = usize::try_from(pages).map_err(|_| refuse())?;
    let mut map = Vec::new();
    map.try_reserve_exact(len).map_err(|_| refuse())?;
    map.resize(len, 0);
    Ok(map)
}
