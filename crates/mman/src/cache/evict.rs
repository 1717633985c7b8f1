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
    /// maps or locks stay too. When a gibibyte or more of the range is resident, the range is
    /// dropped in 8 parts by 8 threads at once (the kernel frees the pages about a fifth
    /// faster so, even on 2 cores); the call returns when all are done.
    ///
    /// # Errors
    /// Measuring the residency before or after fails (as in [`status`](Self::status)), or
    /// `fdatasync` or `posix_fadvise` fails (with the path).
    pub fn evict(&self, range: PageRange, dirty: DirtyPages) -> Result<Evicted> {
        self.evict_with(range, dirty, 0)
    }

    /// [`evict`](Self::evict) on at most `threads` threads (0: as `evict`, up to 8; 1: one
    /// call on the calling thread, whatever the size).
    ///
    /// # Errors
    /// As [`evict`](Self::evict).
    pub fn evict_with(&self, range: PageRange, dirty: DirtyPages, threads: usize) -> Result<Evicted> {
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
        let resident = before.resident.unwrap_or(end - first);
        let parts = parts_for(resident.saturating_mul(sys::page_size() as u64), threads);
        self.drop_pages(first, end, parts)?;
        let after = self.status(r)?;
        Ok(Evicted { before, after })
    }

    /// `POSIX_FADV_DONTNEED` on the pages `first..end`, in `parts` equal parts at once, one
    /// thread each (the calling thread takes the first; a part whose thread cannot be
    /// started is done by the calling thread too).
    fn drop_pages(&self, first: u64, end: u64, parts: u64) -> Result<()> {
        let pages = end - first;
        let parts = parts.clamp(1, pages.max(1));
        let bound = |i: u64| first + pages * i / parts;
        let part = |i: u64| -> Result<()> {
            let (a, b) = (bound(i), bound(i + 1));
            if b == a {
                return Ok(());
            }
            let (off, len) = self.byte_span(a, b);
            sc::fadvise(self.file.as_fd(), off, len, sc::FileAdvice::DontNeed)
                .map_err(|e| Error::os("posix_fadvise(DONTNEED)", e).with_path(Some(&self.path)))
        };
        if parts == 1 {
            return part(0);
        }
        std::thread::scope(|s| {
            let part = &part;
            let others: Vec<_> = (1..parts)
                .map(|i| {
                    std::thread::Builder::new()
                        .spawn_scoped(s, move || part(i))
                        .map_err(|_| i)
                })
                .collect();
            let mut result = part(0);
            for o in others {
                let r = match o {
                    Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                    Err(i) => part(i),
                };
                result = result.and(r);
            }
            result
        })
    }
}

/// How many parts (threads) to drop `resident` bytes in, with at most `threads` threads (0:
/// no bound but [`PARALLEL_PARTS`]).
fn parts_for(resident: u64, threads: usize) -> u64 {
    if resident < PARALLEL_FROM {
        return 1;
    }
    match threads {
        0 => PARALLEL_PARTS,
        t => PARALLEL_PARTS.min(t as u64),
    }
}

/// Resident bytes from which [`CachedFile::evict`] drops a range in [`PARALLEL_PARTS`] parts
/// at once. The kernel's work of dropping pages (freeing them) runs on several CPUs only
/// partly in parallel (the page allocator's locks are shared): measured on 2 cores, 4 GiB
/// in one call 10.5 ms, in 2 parts 10.5, in 4 parts 8.7, in 8 parts 8.6; 1 GiB 2.9 ms in one
/// call, 2.5 in 4 parts; 256 MiB no faster in 2 parts. Below this, one call.
const PARALLEL_FROM: u64 = 1 << 30;
/// How many parts a large range is dropped in (see [`PARALLEL_FROM`]).
const PARALLEL_PARTS: u64 = 8;

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A gibibyte or more resident goes in 8 parts, or in as many as the caller allows
    /// threads; less, in one call.
    #[test]
    fn parts_follow_the_resident_size_and_the_thread_bound() {
        let gib = 1u64 << 30;
        assert_eq!(parts_for(gib - 1, 0), 1);
        assert_eq!(parts_for(gib, 0), 8);
        assert_eq!(parts_for(4 * gib, 0), 8);
        assert_eq!(parts_for(4 * gib, 1), 1);
        assert_eq!(parts_for(4 * gib, 3), 3);
        assert_eq!(parts_for(4 * gib, 256), 8);
        assert_eq!(parts_for(gib / 2, 256), 1);
    }

    /// Every part of a range dropped in parts leaves the cache, and nothing outside it:
    /// ranges that do not divide evenly, more parts than pages, a range to the end of the file
    /// (where `posix_fadvise` is given length 0) and one that stops short of it.
    #[test]
    fn dropping_in_parts_drops_every_part_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let ps = sys::page_size() as u64;
        for pages in [1u64, 3, 37, 261] {
            let path = dir.path().join(format!("f{pages}"));
            std::fs::write(&path, vec![7u8; (pages * ps) as usize]).unwrap();
            let f = CachedFile::open(&path).unwrap();
            sc::fdatasync(f.file.as_fd()).unwrap();
            for parts in [1u64, 2, 8] {
                for (first, end) in [(0, pages), (pages / 3, pages), (pages / 3, pages - pages / 4)] {
                    assert_eq!(f.touch(PageRange::ALL).unwrap().resident_after(), Some(pages));
                    f.drop_pages(first, end, parts).unwrap();
                    let count = |a: u64, b: u64| {
                        f.status(PageRange {
                            first: a,
                            end: Some(b),
                        })
                        .unwrap()
                        .resident
                        .unwrap()
                    };
                    let what = format!("{pages} pages, {parts} parts, {first}..{end}");
                    assert_eq!(count(first, end), 0, "{what}: pages of the range stayed");
                    assert_eq!(count(0, first), first, "{what}: pages before the range left");
                    assert_eq!(
                        count(end, pages),
                        pages - end,
                        "{what}: pages after the range left"
                    );
                }
            }
        }
    }
}
