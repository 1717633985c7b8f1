//! What the page-cache calls report: ranges, residency, and what touch and evict did.

use super::*;

/// A range of pages of a file: `first..end`, `end` `None` meaning to the end of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRange {
    /// The first page.
    pub first: u64,
    /// One past the last page; `None`: the end of the file.
    pub end: Option<u64>,
}

impl PageRange {
    /// The whole file.
    pub const ALL: PageRange = PageRange { first: 0, end: None };

    /// The pages that hold the bytes `start..end` (`end` `None`: to the end of the file):
    /// the start is rounded down and the end up to a page.
    pub fn bytes(start: u64, end: Option<u64>) -> PageRange {
        let ps = sys::page_size() as u64;
        PageRange {
            first: start / ps,
            end: end.map(|e| e.div_ceil(ps)),
        }
    }
}

/// Who answered a residency question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `cachestat(2)`.
    Cachestat,
    /// `mmap(2)` + `mincore(2)`.
    Mincore,
}

/// The residency of a range of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Pages in the range (the last one may be partial).
    pub pages: u64,
    /// Pages in the page cache; `None` when the kernel will not say (see the `unknown` field).
    pub resident: Option<u64>,
    /// Why `resident` is unknown.
    pub unknown: Option<String>,
    /// Dirty pages (cachestat only).
    pub dirty: Option<u64>,
    /// Pages under writeback (cachestat only).
    pub writeback: Option<u64>,
    /// Pages once cached and since evicted (cachestat only).
    pub evicted: Option<u64>,
    /// Of those, the ones evicted recently enough to signal memory pressure (cachestat only).
    pub recently_evicted: Option<u64>,
    /// Who answered.
    pub source: Source,
}

impl Status {
    pub(super) fn known(pages: u64, resident: u64, source: Source) -> Status {
        Status {
            pages,
            resident: Some(resident),
            unknown: None,
            dirty: None,
            writeback: None,
            evicted: None,
            recently_evicted: None,
            source,
        }
    }
    pub(super) fn unknown(pages: u64, why: String, source: Source) -> Status {
        Status {
            pages,
            resident: None,
            unknown: Some(why),
            dirty: None,
            writeback: None,
            evicted: None,
            recently_evicted: None,
            source,
        }
    }
}

/// What [`CachedFile::touch`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Touched {
    /// Pages in the range.
    pub pages: u64,
    /// Pages read in (or, when residency is unknown, asked for).
    pub touched: u64,
    /// The residency afterwards.
    pub after: Status,
}

impl Touched {
    /// Pages resident afterwards (`None` when unknown).
    pub fn resident_after(&self) -> Option<u64> {
        self.after.resident
    }
}

/// What [`CachedFile::evict`] did: the residency before and after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evicted {
    /// Before.
    pub before: Status,
    /// After: `resident` counts the pages that stayed, `dirty` and `writeback` say why some.
    pub after: Status,
}

impl Evicted {
    /// Pages that left the cache (`None` when unknown).
    pub fn evicted(&self) -> Option<u64> {
        Some(self.before.resident?.saturating_sub(self.after.resident?))
    }
}
