//! [`ExclusiveMap`]: private anonymous memory, a plain slice.

use super::*;

/// Private anonymous memory: no other process can reach it, so it derefs to `[u8]`.
///
/// ```
/// # fn main() -> mman::Result<()> {
/// let mut buf = mman::ExclusiveMap::new(8192)?;
/// buf[..5].copy_from_slice(b"hello");
/// assert_eq!(&buf[..5], b"hello");
/// assert!(buf[5..].iter().all(|&b| b == 0));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ExclusiveMap {
    pub(super) inner: Mapping,
}

impl ExclusiveMap {
    /// `len` zeroed bytes of private anonymous memory.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a `len` over `isize::MAX` (no slice may be longer);
    /// else the error of `mmap`: [`ErrorKind::ResourceLimit`] when memory, address space or
    /// `vm.max_map_count` run out (`ENOMEM`).
    pub fn new(len: usize) -> Result<Self> {
        MapOptions::new().len(len).map_exclusive()
    }
    /// Lock the pages of `range` in memory (`mlock(2)`).
    ///
    /// # Errors
    /// As [`Mapping::lock`].
    pub fn lock(&self, range: impl RangeBounds<usize>) -> Result<()> {
        self.inner.lock(range)
    }
    /// Lock the pages of `range` as they are first touched (`MLOCK_ONFAULT`).
    ///
    /// # Errors
    /// As [`Mapping::lock_on_fault`].
    pub fn lock_on_fault(&self, range: impl RangeBounds<usize>) -> Result<()> {
        self.inner.lock_on_fault(range)
    }
    /// Unlock the pages of `range`.
    ///
    /// # Errors
    /// As [`Mapping::unlock`].
    pub fn unlock(&self, range: impl RangeBounds<usize>) -> Result<()> {
        self.inner.unlock(range)
    }
    /// Which pages of `range` are resident.
    ///
    /// # Errors
    /// As [`Mapping::residency`].
    pub fn residency(&self, range: impl RangeBounds<usize>) -> Result<Residency> {
        self.inner.residency(range)
    }
    /// Advice about `range` that leaves the contents as they are.
    ///
    /// # Errors
    /// As [`Mapping::advise`].
    pub fn advise(&self, range: impl RangeBounds<usize>, advice: Advice) -> Result<()> {
        self.inner.advise(range, advice)
    }
    /// Drop the pages of `range` (`MADV_DONTNEED`): they read back as zeros. It needs
    /// `&mut self`, which proves no slice lives. The other [`DestructiveAdvice`]
    /// (`Free`, `Remove`, `DontFork`, `WipeOnFork`) would let bytes change or vanish under a
    /// slice held across `fork`; use [`into_mapping`](Self::into_mapping) for them.
    ///
    /// # Errors
    /// As [`Mapping::advise`].
    pub fn discard(&mut self, range: impl RangeBounds<usize>) -> Result<()> {
        self.inner.advise_destructive(range, DestructiveAdvice::DontNeed)
    }
    /// Grow or shrink to `new_len` bytes, keeping the contents; new bytes are zero.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a `new_len` of 0 or over `isize::MAX`, or an empty
    /// map; else the error of
    /// `mremap`: [`ErrorKind::ResourceLimit`] when memory or address space run out,
    /// [`ErrorKind::Unsupported`] outside Linux.
    pub fn resize(&mut self, new_len: usize) -> Result<()> {
        self.inner.resize(new_len)
    }
    /// The general mapping, for protection changes and all other operations.
    pub fn into_mapping(self) -> Mapping {
        self.inner
    }
    /// The address of the first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.inner.as_ptr()
    }
}

impl Deref for ExclusiveMap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: private anonymous memory, readable and writable for its whole life (no
        // protect() on this type), reachable by no other process; the `&self` borrow keeps
        // resize and advice away.
        unsafe { std::slice::from_raw_parts(self.inner.start(), self.inner.len) }
    }
}

impl DerefMut for ExclusiveMap {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.inner.start(), self.inner.len) }
    }
}
