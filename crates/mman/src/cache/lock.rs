//! Locking a file's pages in memory, and the limits that allow it.

use super::*;

impl CachedFile {
    /// Lock the pages of `range` in memory until the returned guard is dropped: the range is
    /// mapped, locked as it faults in (`MLOCK_ONFAULT`), then faulted in, so no page can be
    /// evicted between being read and being locked. Needs `RLIMIT_MEMLOCK` room for the
    /// whole range, or `CAP_IPC_LOCK` (see [`check_lock_limits`]).
    ///
    /// # Errors
    /// * [`ErrorKind::InvalidInput`] when the range is too large to map; the error of `mmap`.
    /// * [`ErrorKind::ResourceLimit`], with a hint giving `RLIMIT_MEMLOCK` and the bytes
    ///   needed, when `mlock2` refuses (`ENOMEM`, `EAGAIN`, `EPERM`).
    /// * [`ErrorKind::Truncated`] when the file shrank while its pages were read in
    ///   (`MADV_POPULATE_READ` met `EFAULT`); [`ErrorKind::StorageFull`] when it met a page
    ///   that could not be backed with the file whole (a hole of a sparse file on a full
    ///   tmpfs); [`ErrorKind::InvalidInput`] before Linux 5.14, which lacks that advice.
    pub fn lock(&self, range: PageRange) -> Result<LockedFile> {
        let (first, end) = self.span(range);
        if end == first {
            return Ok(LockedFile {
                _view: None,
                path: self.path.clone(),
                pages: 0,
            });
        }
        let view = View::new(self, first, end, "lock")?;
        // SAFETY: the view is our own mapping of the file, never dereferenced.
        unsafe { sys::mlock(view.addr, view.len, true) }.map_err(|e| {
            Error::memlock("mlock", e, Some(view.len as u64))
                .with_path(Some(&self.path))
                .with_addr(view.addr as usize, view.len)
        })?;
        sc::populate_read(view.addr, view.len)
            .map_err(|e| self.fault_error("lock", e, view.addr as usize, view.len))?;
        Ok(LockedFile {
            _view: Some(view),
            path: self.path.clone(),
            pages: end - first,
        })
    }
}

/// Pages locked by [`CachedFile::lock`]; dropping it unlocks them (unmapping the locked
/// view releases its lock).
#[derive(Debug)]
pub struct LockedFile {
    _view: Option<View>,
    path: PathBuf,
    pages: u64,
}

impl LockedFile {
    /// The pages locked.
    pub fn pages(&self) -> u64 {
        self.pages
    }
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether locking `bytes` in `mappings` more mappings fits this process's limits
/// (`RLIMIT_MEMLOCK` unless it has `CAP_IPC_LOCK`, and `vm.max_map_count`); the error says
/// how much is needed and how to raise the limit.
///
/// # Errors
/// [`ErrorKind::ResourceLimit`] when `bytes` exceed the soft `RLIMIT_MEMLOCK` (without
/// `CAP_IPC_LOCK`), or `mappings` more mappings would pass `vm.max_map_count`.
pub fn check_lock_limits(bytes: u64, mappings: u64) -> Result<()> {
    if !sc::may_lock_unlimited() {
        if let (Some(soft), _) = sys::memlock_limit() {
            if bytes > soft {
                return Err(Error::new(
                    ErrorKind::ResourceLimit,
                    "lock",
                    format!(
                        "locking needs {} but RLIMIT_MEMLOCK allows {} (all locks of this process count)",
                        exact_size(bytes),
                        exact_size(soft)
                    ),
                )
                .with_hint(crate::error::memlock_hint(Some(bytes))));
            }
        }
    }
    if let (Some(max), Some(now)) = sc::map_count() {
        if now.saturating_add(mappings) > max {
            return Err(Error::new(
                ErrorKind::ResourceLimit,
                "lock",
                format!("locking needs one mapping a file: {mappings} more, but vm.max_map_count is {max} and {now} are in use"),
            )
            .with_hint(format!("raise it: sysctl -w vm.max_map_count={}", now.saturating_add(mappings).saturating_add(1024))));
        }
    }
    Ok(())
}

/// A size in an error message, exactly: `1048576 bytes (1024 KiB)`; the KiB, the unit of
/// `ulimit -l`, only when they are whole.
fn exact_size(bytes: u64) -> String {
    if bytes.is_multiple_of(1024) {
        format!("{bytes} bytes ({} KiB)", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}
