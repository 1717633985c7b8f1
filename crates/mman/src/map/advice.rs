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

#[cfg(not(linux_like))]
fn linux_only(what: impl std::fmt::Debug) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "madvise",
        format!("{what:?} is Linux-only"),
    )
}

impl Advice {
    pub(super) fn raw(self) -> Result<i32> {
        #[cfg(linux_like)]
        let v = match self {
            Advice::Normal => libc::MADV_NORMAL,
            Advice::Random => libc::MADV_RANDOM,
            Advice::Sequential => libc::MADV_SEQUENTIAL,
            Advice::WillNeed => libc::MADV_WILLNEED,
            Advice::DoFork => libc::MADV_DOFORK,
            Advice::Mergeable => libc::MADV_MERGEABLE,
            Advice::Unmergeable => libc::MADV_UNMERGEABLE,
            Advice::HugePage => libc::MADV_HUGEPAGE,
            Advice::NoHugePage => libc::MADV_NOHUGEPAGE,
            Advice::DontDump => libc::MADV_DONTDUMP,
            Advice::DoDump => libc::MADV_DODUMP,
            Advice::KeepOnFork => libc::MADV_KEEPONFORK,
            Advice::Cold => 20,          // MADV_COLD
            Advice::PageOut => 21,       // MADV_PAGEOUT
            Advice::PopulateRead => 22,  // MADV_POPULATE_READ
            Advice::PopulateWrite => 23, // MADV_POPULATE_WRITE
        };
        #[cfg(not(linux_like))]
        let v = match self {
            Advice::Normal => libc::MADV_NORMAL,
            Advice::Random => libc::MADV_RANDOM,
            Advice::Sequential => libc::MADV_SEQUENTIAL,
            Advice::WillNeed => libc::MADV_WILLNEED,
            _ => return Err(linux_only(self)),
        };
        Ok(v)
    }
}

impl DestructiveAdvice {
    pub(super) fn raw(self) -> Result<i32> {
        #[cfg(linux_like)]
        let v = match self {
            DestructiveAdvice::DontNeed => libc::MADV_DONTNEED,
            DestructiveAdvice::Free => libc::MADV_FREE,
            DestructiveAdvice::Remove => libc::MADV_REMOVE,
            DestructiveAdvice::DontFork => libc::MADV_DONTFORK,
            DestructiveAdvice::WipeOnFork => libc::MADV_WIPEONFORK,
        };
        #[cfg(not(linux_like))]
        let v = match self {
            DestructiveAdvice::DontNeed => libc::MADV_DONTNEED,
            _ => return Err(linux_only(self)),
        };
        Ok(v)
    }
}
