//! Process-shared synchronization: `#[repr(C)]` types that live inside shared memory and
//! work across processes, futex-based on Linux.
//!
//! A value of a [`ProcessShared`] type is placed in a [`Mapping`] with [`place`]; every
//! process that maps the same memory gets a `&T` to the same object. All-zero bytes are a
//! valid initial state of each such type (a fresh shared mapping is zero-filled), so placing
//! is all it takes; a type that needs another initial value says how to get it.
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

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::map::{Mapping, Protection};
use crate::sys;

mod locks;
mod posix;

pub use locks::{Barrier, Condvar, Mutex, MutexGuard};
pub use posix::{NamedSemaphore, PosixSemaphore};

/// Types that may live in memory shared between processes and be used through `&T`.
///
/// # Safety
/// An implementor is `#[repr(C)]`, holds no pointers or references (addresses mean nothing
/// in another process, and a peer could rewrite them), and keeps all its state in
/// [`AtomicU64`]s: the crate's one access scheme for shared
/// memory, so no access of another size races with a copy of the same bytes. Any bytes a
/// peer leaves there are a valid value (atomics hold any bits), all-zero bytes are a valid
/// initial state, and no operation on garbage may crash, loop forever or touch memory
/// outside the object.
pub unsafe trait ProcessShared: Sync {}

/// A `&T` to the object at `offset` of a readable and writable mapping.
///
/// Fails if the object would not fit, `offset` is not aligned for `T`, or the mapping is not
/// readable and writable.
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
    Ok(addr as *mut T)
}

/// A counting semaphore with `sem_post`/`sem_wait` semantics, for threads or processes.
///
/// Adaptive: a waiter first spins briefly, so a hand-off from a peer running on another core
/// costs about one cache-line transfer; then it sleeps in the kernel (a futex), burning no
/// CPU while its peer is idle. Eight bytes, one atomic word; all-zero is a semaphore with
/// count 0.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Semaphore {
    /// The count in the low 32 bits (the futex word waiters sleep on), the number of
    /// sleeping waiters in the high 32. One word: a post learns from its one atomic add
    /// whether anyone sleeps, and a waiter's registration and a post are ordered on it.
    state: AtomicU64,
}

// SAFETY: repr(C), one AtomicU64, no pointers; zero is count 0 with no sleepers. Garbage is
// some count and some number of sleepers: at worst a spurious wake-up.
unsafe impl ProcessShared for Semaphore {}

/// One sleeper, in the high half of a semaphore's word.
const SLEEPER: u64 = 1 << 32;

fn count(state: u64) -> u32 {
    state as u32
}

/// How long a waiter spins before it sleeps: long enough to cover a peer's hand-off on
/// another core (a few microseconds), short enough not to matter when it sleeps after all.
const SPIN: u32 = 200;

impl Semaphore {
    /// A semaphore with `count` permits, to be written into shared memory before peers use it.
    pub const fn new(count: u32) -> Self {
        Semaphore {
            state: AtomicU64::new(count as u64),
        }
    }

    /// The number of permits now (a snapshot).
    pub fn value(&self) -> u32 {
        count(self.state.load(Ordering::Relaxed))
    }

    /// Release a permit, waking a sleeping waiter if there is one (`sem_post`).
    ///
    /// # Errors
    /// Only on overflow (`u32::MAX` permits), like `sem_post`'s `EOVERFLOW`; the count is
    /// then unchanged.
    pub fn post(&self) -> Result<()> {
        // One atomic add, like glibc's sem_post (a compare-and-swap loop measured 20% fewer
        // meals in the contended dining philosophers). Release: what the poster wrote before
        // is visible to the waiter that takes the permit (Acquire in try_wait). The sleeper
        // count comes back from the same add: a waiter's registration and this add are
        // ordered on the one word, so either we see the sleeper, or its futex_wait sees the
        // new count and does not sleep.
        let before = self.state.fetch_add(1, Ordering::Release);
        if count(before) == u32::MAX {
            // The add carried into the sleeper half: undo it, and fail as sem_post does.
            self.state.fetch_sub(1, Ordering::Relaxed);
            return Err(
                Error::os("sem_post", std::io::Error::from_raw_os_error(libc::EOVERFLOW))
                    .with_addr(self as *const Self as usize, 8),
            );
        }
        if before >= SLEEPER {
            sys::futex_wake(&self.state, 1);
        }
        Ok(())
    }

    /// Take a permit if one is available now (`sem_trywait`).
    pub fn try_wait(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        while count(s) > 0 {
            // The low half is the count, and only it is decremented (it is > 0 here).
            match self
                .state
                .compare_exchange_weak(s, s - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
        false
    }

    /// Take a permit, waiting as long as it takes (`sem_wait`).
    pub fn wait(&self) {
        if !self.try_wait() {
            self.wait_until(None);
        }
    }

    /// Take a permit, waiting at most `timeout` (on the monotonic clock). Returns whether a
    /// permit was taken.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        // The uncontended path reads no clock.
        self.try_wait() || self.wait_until(Instant::now().checked_add(timeout))
    }

    #[inline(never)]
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        for _ in 0..SPIN {
            std::hint::spin_loop();
            if count(self.state.load(Ordering::Relaxed)) > 0 && self.try_wait() {
                return true;
            }
        }
        // Register as a sleeper (wrapping: a peer's garbage cannot make this panic).
        self.state.fetch_add(SLEEPER, Ordering::Relaxed);
        let got = loop {
            if self.try_wait() {
                break true;
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break false,
                },
            };
            // Sleeps only while the count is still 0; a post in between makes it return.
            if sys::futex_wait(&self.state, 0, left).is_err() {
                std::thread::yield_now();
            }
        };
        self.state.fetch_sub(SLEEPER, Ordering::Relaxed);
        got
    }
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

    #[test]
    fn semaphore_counts_and_times_out() {
        let s = Semaphore::new(2);
        assert!(s.try_wait());
        s.wait();
        assert!(!s.try_wait());
        let t = Instant::now();
        assert!(!s.wait_timeout(Duration::from_millis(30)));
        assert!(t.elapsed() >= Duration::from_millis(30));
        s.post().unwrap();
        assert!(s.wait_timeout(Duration::from_secs(5)));
        let full = Semaphore::new(u32::MAX);
        assert!(full.post().is_err());
        assert_eq!(full.value(), u32::MAX);
    }

    #[test]
    fn threads_ping_pong_without_lost_wakeups() {
        let ping = Semaphore::new(0);
        let pong = Semaphore::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..20_000 {
                    ping.wait();
                    pong.post().unwrap();
                }
            });
            for _ in 0..20_000 {
                ping.post().unwrap();
                pong.wait();
            }
        });
        assert_eq!(ping.value() + pong.value(), 0);
    }
}
