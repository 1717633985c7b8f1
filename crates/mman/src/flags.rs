//! The words of the mapping API that both the public modules and `sys` speak: page
//! protection (`PROT_*`), flush modes (`MS_*`) and `mlockall` flags (`MCL_*`). A leaf: it
//! depends on nothing else in the crate, so `sys` can take these types without reaching
//! up into `map` (which re-exports them).

bitflags::bitflags! {
    /// Access permitted to a mapping's pages: any union of [`READ`](Self::READ),
    /// [`WRITE`](Self::WRITE) and [`EXEC`](Self::EXEC), or [`NONE`](Self::NONE). The bits
    /// are the kernel's `PROT_*`.
    ///
    /// ```
    /// use mman::Protection;
    /// let rw = Protection::READ | Protection::WRITE;
    /// assert_eq!(rw, Protection::READ_WRITE);
    /// assert!(rw.contains(Protection::READ) && !rw.executable());
    /// assert_eq!(rw.to_string(), "rw-");
    /// ```
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Protection: u32 {
        /// `PROT_READ`.
        const READ = libc::PROT_READ as u32;
        /// `PROT_WRITE`.
        const WRITE = libc::PROT_WRITE as u32;
        /// `PROT_EXEC`.
        const EXEC = libc::PROT_EXEC as u32;
        /// `PROT_READ | PROT_WRITE`.
        const READ_WRITE = Self::READ.bits() | Self::WRITE.bits();
    }
}

impl Protection {
    /// No access (`PROT_NONE`): any touch faults. Guard pages are made of this.
    pub const NONE: Protection = Protection::empty();

    /// Whether pages may be read.
    pub const fn readable(self) -> bool {
        self.contains(Self::READ)
    }
    /// Whether pages may be written.
    pub const fn writable(self) -> bool {
        self.contains(Self::WRITE)
    }
    /// Whether pages may be executed.
    pub const fn executable(self) -> bool {
        self.contains(Self::EXEC)
    }
}

impl std::fmt::Display for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = |on: bool, ch: char| if on { ch } else { '-' };
        write!(
            f,
            "{}{}{}",
            c(self.readable(), 'r'),
            c(self.writable(), 'w'),
            c(self.executable(), 'x')
        )
    }
}

/// How [`Mapping::flush`](crate::Mapping::flush) synchronises a mapping with its file (`msync(2)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushMode {
    /// `MS_SYNC`: write dirty pages and wait until they are on storage.
    Sync,
    /// `MS_ASYNC`: schedule the write-back and return. On Linux since 2.6.19 this does
    /// nothing at all: the kernel already tracks dirty shared pages and writes them back.
    Async,
    /// `MS_INVALIDATE`: drop cached copies so later reads see the file as it is now.
    Invalidate,
}

bitflags::bitflags! {
    /// Which pages [`lock_all`](crate::lock_all) locks (`mlockall(2)`): any union of
    /// [`CURRENT`](Self::CURRENT), [`FUTURE`](Self::FUTURE) and [`ON_FAULT`](Self::ON_FAULT).
    ///
    /// ```
    /// use mman::LockAll;
    /// let how = LockAll::CURRENT | LockAll::ON_FAULT;
    /// assert!(how.contains(LockAll::CURRENT) && !how.contains(LockAll::FUTURE));
    /// ```
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct LockAll: u8 {
        /// `MCL_CURRENT`: every page mapped now.
        const CURRENT = 1;
        /// `MCL_FUTURE`: every page mapped from now on.
        const FUTURE = 1 << 1;
        /// `MCL_ONFAULT`: lock pages as they are first touched instead of faulting all in
        /// now (Linux 4.4 and later).
        const ON_FAULT = 1 << 2;
    }
}
