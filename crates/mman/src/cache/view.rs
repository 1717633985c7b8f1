//! Residency bitmaps and the never-dereferenced mappings mincore and mlock work on.

use super::*;

pub(super) fn count(map: &[u8]) -> u64 {
    map.iter().filter(|&&b| b & 1 != 0).count() as u64
}

/// Runs of non-resident pages `(start, end)`; everything when the map is unknown.
pub(super) fn missing_runs(map: Option<&[u8]>, pages: u64) -> Vec<(u64, u64)> {
    let Some(map) = map else {
        return vec![(0, pages)];
    };
    let mut runs = Vec::new();
    let mut start = None;
    for (i, &b) in map.iter().enumerate() {
        match (b & 1 == 0, start) {
            (true, None) => start = Some(i as u64),
            (false, Some(s)) => {
                runs.push((s, i as u64));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, map.len() as u64));
    }
    runs
}

/// A read-only shared mapping of some pages of a file that mman never dereferences: it is
/// only handed to mincore, madvise and mlock, so a concurrent truncation cannot fault here.
#[derive(Debug)]
pub(super) struct View {
    pub(super) addr: *mut c_void,
    pub(super) len: usize,
}

// SAFETY: the view is an address range, never dereferenced; unmapping it from any thread is
// fine.
unsafe impl Send for View {}
// SAFETY: as above: shared use only passes the range to system calls.
unsafe impl Sync for View {}

impl View {
    pub(super) fn new(f: &CachedFile, first: u64, end: u64, op: &'static str) -> Result<View> {
        let ps = sys::page_size() as u64;
        let len = usize::try_from((end - first) * ps).map_err(|_| {
            Error::new(ErrorKind::InvalidInput, op, "range too large to map").with_path(Some(&f.path))
        })?;
        let req = sys::MapRequest::SHARED;
        let prot = crate::Protection::READ;
        // SAFETY: the kernel chooses the address; nothing is replaced.
        let addr = unsafe {
            sys::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                &req,
                Some(f.file.as_fd()),
                first * ps,
            )
        }
        .map_err(|e| {
            Error::os_limited("mmap", e)
                .with_path(Some(&f.path))
                .with_range(first * ps, Some(len))
        })?;
        Ok(View { addr, len })
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: our own mapping, never dereferenced, so no reference into it exists.
        let _ = unsafe { sys::munmap(self.addr, self.len) };
    }
}
