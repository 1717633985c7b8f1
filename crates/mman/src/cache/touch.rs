//! Reading in exactly the missing pages.

use super::*;

impl CachedFile {
    /// Read into the page cache the pages of `range` that are not there, and only those:
    /// the reads cover exactly the missing pages (no read-ahead past the range).
    ///
    /// # Errors
    /// * As [`status`](Self::status) and [`page_map`](Self::page_map), which measure first
    ///   (and `status` after).
    /// * The error of `posix_fadvise` or `pread`, or of mapping and populating a long run to
    ///   the end of the file (`mmap`; `MADV_POPULATE_READ`, [`ErrorKind::InvalidInput`]
    ///   before Linux 5.14).
    /// * [`ErrorKind::Truncated`] when the file shrank while being read in
    ///   ([`ErrorKind::Os`] when a read came up short and the file is no shorter now).
    pub fn touch(&self, range: PageRange) -> Result<Touched> {
        let (first, end) = self.span(range);
        let r = PageRange {
            first,
            end: Some(end),
        };
        let pages = end - first;
        let before = self.status(r)?;
        if pages == 0 || before.resident == Some(pages) {
            return Ok(Touched {
                pages,
                touched: 0,
                after: before,
            });
        }
        // A run that reaches the end of the file is faulted in through a mapping with the
        // kernel's read-ahead (large folios, no copy). A run that ends before it is read with
        // pread in random mode, which reads exactly the bytes asked for: read-ahead would run
        // past its end, and even switching modes near the end does not stop it (read-ahead
        // marks already planted in the page cache fire regardless of the mode). Neither way
        // raises SIGBUS if the file is truncated meanwhile: EFAULT or a short read.
        let ps = sys::page_size() as u64;
        const CHUNK: u64 = 512; // pages: 2 MiB
        let mut buf = Vec::new();
        let mut touched = 0;
        let advise = |a: sc::FileAdvice| {
            sc::fadvise(self.file.as_fd(), 0, 0, a)
                .map_err(|e| Error::os("posix_fadvise", e).with_path(Some(&self.path)))
        };
        let mut random = false;
        let mut read_in = |a: u64, b: u64| -> Result<()> {
            let bounded = first + b < self.pages();
            if bounded != random {
                advise(if bounded {
                    sc::FileAdvice::Random
                } else {
                    sc::FileAdvice::Normal
                })?;
                random = bounded;
            }
            if !bounded && b - a >= CHUNK {
                // A long run to the end of the file: fault it in through a mapping, with the
                // kernel's read-ahead and no copy; a truncation is EFAULT, not SIGBUS. (Short
                // ones are cheaper to read than to map.)
                let view = View::new(self, first + a, first + b, "touch")?;
                sc::populate_read(view.addr, view.len)
                    .map_err(|e| self.fault_error("touch", e, view.addr as usize, view.len))?;
                touched += b - a;
                return Ok(());
            }
            buf.resize((((b - a).min(CHUNK)) * ps) as usize, 0);
            let mut at = a;
            while at < b {
                let to = (at + CHUNK).min(b);
                let off = (first + at) * ps;
                let want = ((to - at) * ps).min(self.size.saturating_sub(off)) as usize;
                let got = sc::pread_full(self.file.as_fd(), &mut buf[..want], off).map_err(|e| {
                    Error::os("read", e)
                        .with_path(Some(&self.path))
                        .with_range(off, Some(want))
                })?;
                if got < want {
                    return Err(self.truncated("touch").unwrap_or_else(|| {
                        Error::new(ErrorKind::Os, "touch", "the file changed size while being read")
                            .with_path(Some(&self.path))
                    }));
                }
                touched += to - at;
                at = to;
            }
            Ok(())
        };
        if before.resident == Some(0) {
            read_in(0, pages)?;
        } else {
            // The residency map a window at a time (one byte a page of the whole range could
            // not be allocated for a huge file), runs that meet at a window's edge joined.
            let mut pending: Option<(u64, u64)> = None;
            for (wa, wb) in super::status::windows(first, end) {
                let map = self.page_map(PageRange {
                    first: wa,
                    end: Some(wb),
                })?;
                for (a, b) in missing_runs(map.as_deref(), wb - wa) {
                    let (a, b) = (wa - first + a, wa - first + b);
                    match pending {
                        Some((pa, pb)) if pb == a => pending = Some((pa, b)),
                        Some((pa, pb)) => {
                            read_in(pa, pb)?;
                            pending = Some((a, b));
                        }
                        None => pending = Some((a, b)),
                    }
                }
            }
            if let Some((a, b)) = pending {
                read_in(a, b)?;
            }
        }
        Ok(Touched {
            pages,
            touched,
            after: self.status(r)?,
        })
    }
}
