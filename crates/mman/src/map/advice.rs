//! `madvise(2)` advice: what leaves the contents alone, and what does not.

use super::*;

/// Advice to the kernel about a range (`madvise(2)`) that leaves what the range holds, here
/// and in children, as it is: safe on a shared borrow ([`Mapping::advise`]).
///
/// Advice that changes the contents, or whether a child has the range, is
/// [`DestructiveAdvice`], taken only by [`Mapping::advise_destructive`] on `&mut self`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Advice {
    /// `MADV_NORMAL`: default read-ahead.
    Normal,
    /// `MADV_RANDOM`: expect random access; read ahead less.
    Random,
    /// `MADV_SEQUENTIAL`: expect sequential access; read ahead more, free behind.
    Sequential,
    /// `MADV_WILLNEED`: start reading the range in now.
    WillNeed,
    /// `MADV_DOFORK`: undo [`DestructiveAdvice::DontFork`].
    DoFork,
    /// `MADV_MERGEABLE`: allow kernel same-page merging (KSM).
    Mergeable,
    /// `MADV_UNMERGEABLE`: undo [`Advice::Mergeable`].
    Unmergeable,
    /// `MADV_HUGEPAGE`: back the range with transparent huge pages when possible.
    HugePage,
    /// `MADV_NOHUGEPAGE`: never use transparent huge pages here.
    NoHugePage,
    /// `MADV_DONTDUMP`: leave the range out of core dumps.
    DontDump,
    /// `MADV_DODUMP`: undo [`Advice::DontDump`].
    DoDump,
    /// `MADV_KEEPONFORK`: undo [`DestructiveAdvice::WipeOnFork`].
    KeepOnFork,
    /// `MADV_COLD`: deactivate the pages (reclaim them first under pressure).
    Cold,
    /// `MADV_PAGEOUT`: reclaim the pages now (their contents come back on the next touch).
    PageOut,
    /// `MADV_POPULATE_READ`: fault the pages in readable now, without a signal on failure.
    PopulateRead,
    /// `MADV_POPULATE_WRITE`: fault the pages in writable now.
    PopulateWrite,
}

/// Advice that changes what a range holds, or whether a child created by `fork` has it:
/// taken only on `&mut` ([`Mapping::advise_destructive`]), which proves that no reference
/// into the mapping (an atomic, a placed object) lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DestructiveAdvice {
    /// `MADV_DONTNEED`: drop the pages. Private anonymous memory reads back as zeros, a
    /// private file mapping loses its copy-on-write changes, shared mappings re-read the file.
    DontNeed,
    /// `MADV_FREE`: the kernel may free the pages lazily; contents become undefined (old
    /// data or zeros) until written again.
    Free,
    /// `MADV_REMOVE`: free the range and its backing store (punches a hole in shmem/tmpfs).
    Remove,
    /// `MADV_DONTFORK`: a child created by `fork` does not get the range.
    DontFork,
    /// `MADV_WIPEONFORK`: a child sees the range zero-filled.
    WipeOnFork,
}

/// The error for advice the platform cannot take (`sys::madv` has no number for it).
fn linux_only(what: impl std::fmt::Debug) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "madvise",
        format!("{what:?} is Linux-only"),
    )
}

impl Advice {
    pub(super) fn raw(self) -> Result<i32> {
        use sys::madv;
        let v = match self {
            Advice::Normal => madv::NORMAL,
            Advice::Random => madv::RANDOM,
            Advice::Sequential => madv::SEQUENTIAL,
            Advice::WillNeed => madv::WILLNEED,
            Advice::DoFork => madv::DOFORK,
            Advice::Mergeable => madv::MERGEABLE,
            Advice::Unmergeable => madv::UNMERGEABLE,
            Advice::HugePage => madv::HUGEPAGE,
            Advice::NoHugePage => madv::NOHUGEPAGE,
            Advice::DontDump => madv::DONTDUMP,
            Advice::DoDump => madv::DODUMP,
            Advice::KeepOnFork => madv::KEEPONFORK,
            Advice::Cold => madv::COLD,
            Advice::PageOut => madv::PAGEOUT,
            Advice::PopulateRead => madv::POPULATE_READ,
            Advice::PopulateWrite => madv::POPULATE_WRITE,
        };
        v.ok_or_else(|| linux_only(self))
    }
}

impl DestructiveAdvice {
    pub(super) fn raw(self) -> Result<i32> {
        use sys::madv;
        let v = match self {
            DestructiveAdvice::DontNeed => madv::DONTNEED,
            DestructiveAdvice::Free => madv::FREE,
            DestructiveAdvice::Remove => madv::REMOVE,
            DestructiveAdvice::DontFork => madv::DONTFORK,
            DestructiveAdvice::WipeOnFork => madv::WIPEONFORK,
        };
        v.ok_or_else(|| linux_only(self))
    }
}
