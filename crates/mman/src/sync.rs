//! Process-shared synchronization: `#[repr(C)]` types that live inside shared memory and
//! work across processes, futex-based on Linux.
//!
//! A value of a [`ProcessShared`] type is placed in a [`Mapping`] with [`place`]; every
//! process that maps the same memory gets a `&T` to the same object. All-zero bytes are a
//! valid initial state of each such type (a fresh shared mapping is zero-filled), so placing
//! is all it takes; a type that needs another initial value says how to get it. In a shared
//! file mapping, placing first gives the object's pages real backing store in the file
//! ([`Mapping::allocate`]): a full disk or tmpfs is an error when the object is placed, never
//! a wait or a post that faults later.
//!
//! Nothing here stores a pointer in shared memory, and every word is an `AtomicU64` (the
//! crate's one access scheme for shared memory): a peer that writes garbage over an object
//! can make its operations fail or report a dead owner, never crash this process or make it
//! touch memory outside the object. [`Mutex`] hands out a *copy* of its data, written back
//! when the guard drops: a peer that ignores the lock can change the bytes in shared memory,
//! but never under a reference this process holds.
//!
//! ```
//! use mman::{sync::{place, Semaphore}, MapOptions};
//! # fn main() -> mman::Result<()> {
//! let shared = MapOptions::new().len(4096).shared().map_anonymous()?;
//! let sem: &Semaphore = place(&shared, 0)?;
//! sem.post()?;            // a child created by fork() after this would see the same count
//! assert!(sem.try_wait());
//! assert!(!sem.try_wait());
//! # Ok(()) }
//! ```

use crate::error::{Error, ErrorKind, Result};
use crate::map::{Mapping, Protection};

mod barrier;
mod locks;
mod posix;
mod semaphore;
pub mod wait;

pub use barrier::Barrier;
pub use locks::{Condvar, Mutex, MutexGuard};
pub use posix::{NamedSemaphore, PosixSemaphore};
pub use semaphore::{Semaphore, SEMAPHORE_MAX};
pub use wait::{Wait, DEFAULT_SPIN};

/// How many CPUs this process can use at once: the CPUs the calling thread's affinity mask
/// allows (`sched_getaffinity`; threads inherit the mask, and `taskset -c 0` makes it 1),
/// bounded by the CPU bandwidth limit of
/// its cgroup and of every cgroup above it (cgroup v2 `cpu.max`, quota / period, rounded
/// down: a container limited to 1.5 CPUs counts as 1). Always at least 1.
///
/// The answer to "may a waiter spin?": spinning for a peer pays only when the peer runs on
/// another CPU at the same time. With one usable CPU, a spinning waiter only delays the
/// peer it waits for, by up to a time slice (`mman bench ipc` skips its spin floors there).
///
/// Read afresh at each call (affinity and limits can change while the process runs; a call
/// reads a few small `/proc` and cgroup files, tens of microseconds): callers on a hot path
/// keep the answer. Where the cgroup files cannot be read (no cgroup v2, a sandbox), only
/// the affinity mask counts; cgroup v1 quotas are not read.
///
/// ```
/// let cpus = mman::sync::usable_cpus();
/// assert!(cpus >= 1);
/// let spin = cpus > 1; // spinning can only help when the peer has a CPU of its own
/// # let _ = spin;
/// ```
pub fn usable_cpus() -> usize {
    crate::sys::cpus::usable()
}

/// Types that may live in memory shared between processes and be used through `&T`.
///
/// # Safety
/// An implementor is `#[repr(C)]`, holds no pointers or references (addresses mean nothing
/// in another process, and a peer could rewrite them), and keeps all its state in
/// [`AtomicU64`](std::sync::atomic::AtomicU64)s: the crate's one access scheme for shared
/// memory, so no access of another size races with a copy of the same bytes. Any bytes a
/// peer leaves there are a valid value (atomics hold any bits), all-zero bytes are a valid
/// initial state, and no operation on garbage may crash, loop forever or touch memory
/// outside the object.
pub unsafe trait ProcessShared: Sync {}

/// A `&T` to the object at `offset` of a readable and writable mapping.
///
/// # Errors
/// - [`ErrorKind::InvalidInput`]: the object would not fit in the mapping, or `offset` is
///   not aligned for `T`.
/// - [`ErrorKind::PermissionDenied`]: the mapping is not readable and writable.
/// - [`ErrorKind::StorageFull`]: the object lies in a shared file mapping whose file system
///   has no room for its pages (see [`Mapping::allocate`], which `place` calls: the pages
///   that hold a placed object are backed before it is used).
pub fn place<T: ProcessShared>(map: &Mapping, offset: usize) -> Result<&T> {
    let p = slot::<T>(map, offset, "place")?;
    // SAFETY: in bounds, aligned, readable and writable (checked by `slot`); `T:
    // ProcessShared` makes any bytes a peer can leave there a valid `T` usable through `&T`;
    // the borrow of `map` keeps the mapping (and its protection, which needs `&mut`) alive
    // and unchanged.
    Ok(unsafe { &*p })
}

/// The address of a `T` at `offset` of `map`, checked: it fits, is aligned, and the mapping
/// is readable and writable.
fn slot<T>(map: &Mapping, offset: usize, op: &'static str) -> Result<*mut T> {
    let size = std::mem::size_of::<T>();
    let fits = offset.checked_add(size).is_some_and(|end| end <= map.len());
    if !fits {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            op,
            format!(
                "a {size}-byte object at offset {offset} does not fit in the mapping of {} bytes",
                map.len()
            ),
        ));
    }
    let addr = map.as_ptr() as usize + offset;
    if !addr.is_multiple_of(std::mem::align_of::<T>()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            op,
            format!(
                "offset {offset} is not {}-byte aligned",
                std::mem::align_of::<T>()
            ),
        ));
    }
    if !map.protection().contains(Protection::READ_WRITE) {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            op,
            format!("the mapping is {} and shared objects need rw-", map.protection()),
        ));
    }
    // The object's pages backed in the file now: a full disk or tmpfs is an error here,
    // not a post or a wait that faults later and lands in a private zero page.
    if map.is_shared() {
        map.allocate(offset..offset + size)?;
    }
    Ok(addr as *mut T)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MapOptions;

    #[test]
    fn place_checks_bounds_alignment_and_protection() {
        let mut m = MapOptions::new().len(16).shared().map_anonymous().unwrap();
        assert!(place::<Semaphore>(&m, 8).is_ok());
        assert_eq!(
            place::<Semaphore>(&m, 12).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            place::<Semaphore>(&m, 2).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        m.protect(Protection::READ).unwrap();
        assert_eq!(
            place::<Semaphore>(&m, 0).unwrap_err().kind(),
            ErrorKind::PermissionDenied
        );
    }
}
