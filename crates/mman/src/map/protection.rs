//! Page protection (`PROT_*`) and flush modes (`MS_*`).

use super::*;

/// Access permitted to a mapping's pages: any union of [`READ`](Self::READ),
/// [`WRITE`](Self::WRITE) and [`EXEC`](Self::EXEC), or [`NONE`](Self::NONE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Protection(u8);

impl Protection {
    /// No access (`PROT_NONE`): any touch faults. Guard pages are made of this.
    pub const NONE: Protection = Protection(0);
    /// `PROT_READ`.
    pub const READ: Protection = Protection(1);
    /// `PROT_WRITE`.
    pub const WRITE: Protection = Protection(2);
    /// `PROT_EXEC`.
    pub const EXEC: Protection = Protection(4);
    /// `PROT_READ | PROT_WRITE`.
    pub const READ_WRITE: Protection = Protection(3);

    /// Whether every permission in `other` is in `self`.
    pub const fn contains(self, other: Protection) -> bool {
        self.0 & other.0 == other.0
    }
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
    pub(super) fn sys(self) -> sys::Prot {
        sys::Prot {
            read: self.readable(),
            write: self.writable(),
            exec: self.executable(),
        }
    }
}

impl std::ops::BitOr for Protection {
    type Output = Protection;
    fn bitor(self, rhs: Protection) -> Protection {
        Protection(self.0 | rhs.0)
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

/// How [`Mapping::flush`] synchronises a mapping with its file (`msync(2)`).
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
