//! How much of a file is resident: `cachestat(2)`, or `mincore(2)` where it tells the truth.

use super::*;

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
                match self.page_map(PageRange {
                    first,
                    end: Some(end),
                })? {
                    Some(map) => Ok(Status::known(pages, count(&map), Source::Mincore)),
                    None => Ok(Status::unknown(pages, UNKNOWN_REASON.into(), Source::Mincore)),
                }
            }
            Err(e) => Err(Error::os("cachestat", e).with_path(Some(&self.path))),
        }
    }

    /// Residency page by page (`mmap` + `mincore`): one byte a page, bit 0 set when
    /// resident; `None` when the kernel would not tell the truth for this file.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the range is too large to map; the error of `mmap`
    /// or of `mincore` ([`ErrorKind::ResourceLimit`] for `EAGAIN`).
    pub fn page_map(&self, range: PageRange) -> Result<Option<Vec<u8>>> {
        let (first, end) = self.span(range);
        if !sc::mincore_tells_truth(self.uid, &self.path) {
            return Ok(None);
        }
        let mut out = vec![0u8; (end - first) as usize];
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
    /// (resident pages, pages); `None` when the kernel will not say.
    ///
    /// # Errors
    /// As [`page_map`](Self::page_map), and where that gives `None`, as
    /// [`status`](Self::status) for each slice.
    pub fn buckets(&self, range: PageRange, n: usize) -> Result<Option<Vec<(u64, u64)>>> {
        let (first, end) = self.span(range);
        let pages = end - first;
        let n = (n as u64).min(pages).max(1);
        let bounds = |i: u64| first + pages * i / n;
        if let Some(map) = self.page_map(range)? {
            return Ok(Some(
                (0..n)
                    .map(|i| {
                        let (a, b) = ((bounds(i) - first) as usize, (bounds(i + 1) - first) as usize);
                        (count(&map[a..b]), (b - a) as u64)
                    })
                    .collect(),
            ));
        }
        let mut out = Vec::with_capacity(n as usize);
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
