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
/// # Errors
/// - [`ErrorKind::InvalidInput`]: the object would not fit in the mapping, or `offset` is
///   not aligned for `T`.
/// - [`ErrorKind::PermissionDenied`]: the mapping is not readable and writable.
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
/// CPU while its peer is idle. A post makes a system call only when a waiter may be asleep
/// and none has been woken since (see [`Semaphore::post`]). Eight bytes, one atomic word;
/// all-zero is a semaphore with count 0.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Semaphore {
    /// The low 32 bits are the futex word waiters sleep on: the count in bits 0 to 30,
    /// and bit 31, [`CONTENDED`]: a waiter may be asleep. Bits 32 to 62 count the waiters
    /// that starve ([`STARVER`]); bit 63 is unused. One word: a post
    /// learns from its one atomic update whether to wake anyone, and a waiter's announcement
    /// and a post are ordered on it. The flag is in the futex word so that clearing it makes a waiter
    /// about to sleep on the old value return and look again.
    state: AtomicU64,
}

// SAFETY: repr(C), one AtomicU64, no pointers; zero is count 0 with no sleepers. Garbage is
// some count, maybe the contended flag, some number of starving waiters: at worst a
// spurious wake-up, a try_wait that leaves a permit, a wait that gives way for GIVE_WAY, a
// sleeper whose flag was cleared that finds a permit only after RECHECK.
unsafe impl ProcessShared for Semaphore {}

/// "A waiter may be asleep": set by every waiter before it sleeps and by every waiter that
/// takes a permit after sleeping (others may still sleep, as in std's futex mutex); cleared
/// by the post that wakes one. While a woken waiter has not run yet, posts find the flag
/// clear and make no system call: a running peer that takes and posts the same permit again
/// and again (a philosopher's fork) pays for one wake-up per sleeper, not one per post.
const CONTENDED: u64 = 1 << 31;

/// One starving waiter, in bits 32 to 62: a waiter that has waited longer than
/// [`PATIENCE`] counts itself here until it takes a permit or gives up. While any waiter
/// starves, newcomers give way to sleepers (for at most [`GIVE_WAY`]). Without it, a peer
/// that keeps posting and taking again can starve a sleeper for as long as it runs (the
/// starvation mode of Go's `sync.Mutex`, for the same reason). Outside the futex word:
/// changing it never needs to wake anyone.
const STARVER: u64 = 1 << 32;

fn starvers(state: u64) -> u32 {
    (state >> 32) as u32 & 0x7FFF_FFFF
}

/// How long a waiter lets newcomers take permits before it counts as starving.
const PATIENCE: Duration = Duration::from_millis(1);

/// The longest a newcomer gives way to a starving waiter before it takes a permit that is
/// there anyway.
const GIVE_WAY: Duration = Duration::from_millis(1);

/// The longest a waiter sleeps without looking at the word again. A post wakes a sleeper
/// only if it finds the flag set; a peer that died between a post's add and its wake-up, or
/// garbage written over the word, can leave a sleeper with no wake-up coming while a permit
/// is there (and clear the flag, so later posts wake nobody either). Rechecking bounds that
/// to RECHECK, and a waiter that finds the flag clear sets it again; an idle sleeper pays one
/// system call per RECHECK. Well above any hand-off, so that the tests, which time waits
/// against a bound below it, still see a lost wake-up.
const RECHECK: Duration = Duration::from_secs(3);

/// The largest count, `SEM_VALUE_MAX` on Linux (`i32::MAX`).
pub const SEMAPHORE_MAX: u32 = i32::MAX as u32;

fn count(state: u64) -> u32 {
    state as u32 & SEMAPHORE_MAX
}

/// The low 32 bits, as the kernel compares them in `futex_wait`.
fn futex_value(state: u64) -> u32 {
    state as u32
}

/// How long a waiter spins before it sleeps: long enough to cover a peer's hand-off on
/// another core (a few microseconds), short enough not to matter when it sleeps after all.
const SPIN: u32 = 200;

impl Semaphore {
    /// A semaphore with `count` permits, to be written into shared memory before peers use it.
    ///
    /// # Panics
    /// If `count` is above [`SEMAPHORE_MAX`] (as `sem_init` fails with `EINVAL`).
    pub const fn new(count: u32) -> Self {
        assert!(count <= SEMAPHORE_MAX, "a semaphore counts to SEMAPHORE_MAX");
        Semaphore {
            state: AtomicU64::new(count as u64),
        }
    }

    /// The number of permits now (a snapshot).
    pub fn value(&self) -> u32 {
        count(self.state.load(Ordering::Relaxed))
    }

    /// Release a permit, waking a sleeping waiter if there may be one (`sem_post`).
    ///
    /// # Errors
    /// Only on overflow ([`SEMAPHORE_MAX`] permits), like `sem_post`'s `EOVERFLOW`; the
    /// count is then unchanged.
    #[inline]
    pub fn post(&self) -> Result<()> {
        // Release: what the poster wrote before is visible to the waiter that takes the
        // permit (Acquire where permits are taken). The flag comes back from the same atomic
        // step: a waiter's announcement and this post are ordered on the one word, so either
        // we see the flag, or the waiter's futex_wait sees the new count and does not sleep.
        //
        // Checked before the add, as glibc's sem_post does: a blind add at SEMAPHORE_MAX
        // carries into the flag (and from there into the starver count) until it is undone,
        // and a peer acting on the word in between (a post that sees count 0 and succeeds,
        // a wake that clears the "flag", a waiter that sets it) corrupts it for good. The
        // dinner of 5 and of 2 served as many meals as with one add, within the noise of a
        // shared 2-core machine.
        let mut s = self.state.load(Ordering::Relaxed);
        let before = loop {
            if count(s) >= SEMAPHORE_MAX {
                return Err(self.overflowed());
            }
            // The count is below the maximum: only it changes.
            match self
                .state
                .compare_exchange_weak(s, s + 1, Ordering::Release, Ordering::Relaxed)
            {
                Ok(before) => break before,
                Err(now) => s = now,
            }
        };
        if before & CONTENDED != 0 {
            self.wake_one();
        }
        Ok(())
    }

    #[cold]
    fn overflowed(&self) -> Error {
        Error::os("sem_post", std::io::Error::from_raw_os_error(libc::EOVERFLOW))
            .with_addr(self as *const Self as usize, 8)
    }

    /// Clear the flag and wake one sleeper. The woken waiter sets the flag again when it
    /// takes a permit or goes back to sleep, so the sleepers left behind are woken by a
    /// later post; posts made before it runs skip the system call.
    #[cold]
    fn wake_one(&self) {
        self.state.fetch_and(!CONTENDED, Ordering::Relaxed);
        sys::futex_wake(&self.state, 1);
    }

    /// Take a permit if one is available now (`sem_trywait`). Unlike a wait, it does not
    /// give way to starving waiters: a caller that does not wait makes no promise of turns,
    /// and a starving waiter that died (its count stays) cannot make it fail.
    #[inline]
    pub fn try_wait(&self) -> bool {
        self.take(false)
    }

    /// Take a permit if one is there and, when `give_way`, no waiter starves (the start of
    /// every wait: newcomers leave permits to sleepers that have waited long).
    #[inline]
    fn take(&self, give_way: bool) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        while count(s) > 0 && !(give_way && starvers(s) != 0) {
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
    #[inline]
    pub fn wait(&self) {
        if !self.take(true) {
            self.wait_until(None);
        }
    }

    /// Take a permit, waiting at most `timeout` (on the monotonic clock). Returns whether a
    /// permit was taken.
    #[inline]
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        // The uncontended path reads no clock.
        self.take(true) || self.wait_until(Instant::now().checked_add(timeout))
    }

    #[inline(never)]
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        for _ in 0..SPIN {
            std::hint::spin_loop();
            let s = self.state.load(Ordering::Relaxed);
            if starvers(s) != 0 {
                break; // sleepers are served first: spinning would not get a permit
            }
            if count(s) > 0 && self.take(true) {
                return true;
            }
        }
        let mut since = Instant::now();
        let (mut slept, mut starving) = (false, false);
        let mut s = self.state.load(Ordering::Relaxed);
        let got = loop {
            // A waiter that has not slept yet gives way to starving ones (other than itself).
            let give_way = !slept && starvers(s) > u32::from(starving);
            if count(s) > 0 && !give_way {
                // Take a permit and leave the flag set: other waiters may be asleep, and
                // this waiter cannot tell (as std's futex mutex locks "contended" after a
                // wait). The count is > 0, so only it is decremented; the starver count
                // (wrapping: garbage cannot make it panic) loses this waiter.
                let mut next = (s - 1) | CONTENDED;
                if starving {
                    next = next.wrapping_sub(STARVER);
                }
                match self
                    .state
                    .compare_exchange_weak(s, next, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => {
                        if count(s) > 1 {
                            // Posts made while the flag was clear woke nobody; pass the
                            // permits left on to a sleeper.
                            sys::futex_wake(&self.state, 1);
                        }
                        return true;
                    }
                    Err(now) => {
                        s = now;
                        continue;
                    }
                }
            }
            if s & CONTENDED == 0 {
                // Announce the sleep before checking the count the last time (in futex_wait).
                s = self.state.fetch_or(CONTENDED, Ordering::Relaxed) | CONTENDED;
                continue;
            }
            if !starving && since.elapsed() >= PATIENCE {
                // Waited long enough: from now on newcomers give way to sleepers.
                s = self
                    .state
                    .fetch_add(STARVER, Ordering::Relaxed)
                    .wrapping_add(STARVER);
                starving = true;
                continue;
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break false,
                },
            };
            // At most GIVE_WAY while giving way: a starver count a peer left behind (or
            // wrote) cannot keep this waiter from a permit that is there. At most RECHECK
            // otherwise: a flag cleared with no wake-up cannot either.
            let most = if give_way { GIVE_WAY } else { RECHECK };
            let quiet = left.is_none_or(|l| l > most);
            // Sleeps only while the word is unchanged: a post in between, or a wake-up that
            // cleared the flag, makes it return.
            match sys::futex_wait(
                &self.state,
                futex_value(s),
                Some(left.map_or(most, |l| l.min(most))),
            ) {
                // RECHECK ran out with no wake-up: no post woke this waiter, so no newcomer
                // took a permit it was woken for. Its patience starts again (a waiter that
                // sleeps long for a post is not starving).
                Ok(false) if quiet && !give_way => since = Instant::now(),
                Ok(_) => {}
                Err(_) => std::thread::yield_now(),
            }
            slept = true;
            s = self.state.load(Ordering::Relaxed);
        };
        if starving {
            self.state.fetch_sub(STARVER, Ordering::Relaxed);
        }
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
        let full = Semaphore::new(SEMAPHORE_MAX);
        assert!(full.post().is_err());
        assert_eq!(full.value(), SEMAPHORE_MAX);
    }

    /// Threads that take and post one permit as fast as they can (a philosopher's fork):
    /// the post that finds the contended flag clears it and wakes one sleeper; a sleeper
    /// about to sleep on the flagged value must see the clearing and look again. A lost
    /// wake-up shows as a wait that times out while the permit sits there.
    #[test]
    fn barging_threads_never_lose_a_wakeup() {
        let fork = Semaphore::new(1);
        std::thread::scope(|s| {
            for t in 0..3 {
                let fork = &fork;
                s.spawn(move || {
                    for i in 0..30_000u32 {
                        // A lost wake-up is noticed when the timeout ends the sleep: the
                        // permit is then found, after far longer than anyone held it.
                        let asked = Instant::now();
                        assert!(fork.wait_timeout(Duration::from_secs(30)));
                        assert!(asked.elapsed() < Duration::from_secs(2), "lost wake-up");
                        // Hold the permit now and then past a waiter's spin, so waiters
                        // sleep and posts find them.
                        if (i + t) % 64 == 0 {
                            let held = Instant::now();
                            while held.elapsed() < Duration::from_micros(20) {
                                std::hint::spin_loop();
                            }
                        }
                        fork.post().unwrap();
                    }
                });
            }
        });
        assert_eq!(fork.value(), 1);
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

    /// Waits that must not be lost: a wait that takes longer than this, while its peers
    /// hold permits for microseconds, was a permit that sat there while the waiter slept
    /// (until a post or RECHECK woke it: the bound must stay below RECHECK).
    const LOST: Duration = Duration::from_secs(2);
    const _: () = assert!(LOST.as_millis() < RECHECK.as_millis());

    /// `wait_timeout` with a long timeout, which must succeed well within [`LOST`].
    fn timed_wait(sem: &Semaphore) {
        let asked = Instant::now();
        assert!(sem.wait_timeout(Duration::from_secs(30)), "lost wake-up");
        let took = asked.elapsed();
        assert!(took < LOST, "lost wake-up: a wait took {took:?}");
    }

    /// Hold a permit past a waiter's spin now and then, so waiters sleep and posts find them.
    fn hold_now_and_then(i: u32) {
        if i.is_multiple_of(64) {
            let held = Instant::now();
            while held.elapsed() < Duration::from_micros(20) {
                std::hint::spin_loop();
            }
        }
    }

    /// Two posts on a full semaphore must both fail with the count unchanged. A single
    /// `fetch_add` at SEMAPHORE_MAX carries into the flag (and from there into the starver
    /// count) until the failing post undoes it: a post in between saw a count of 0, succeeded,
    /// cleared the "flag" and the undo then took the count to 0.
    #[test]
    fn racing_posts_at_the_maximum_all_fail_and_leave_the_count() {
        for start in [u64::from(SEMAPHORE_MAX), u64::from(SEMAPHORE_MAX) | CONTENDED] {
            let sem = Semaphore::default();
            sem.state.store(start, Ordering::Relaxed);
            let t0 = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        while t0.elapsed() < Duration::from_millis(300) {
                            for _ in 0..1_000 {
                                assert!(
                                    sem.post().is_err(),
                                    "a post succeeded on a full semaphore, now {:#x}",
                                    sem.state.load(Ordering::Relaxed)
                                );
                            }
                        }
                    });
                }
            });
            assert_eq!(sem.state.load(Ordering::Relaxed), start);
        }
    }

    /// The count kept at the maximum by a poster while other threads take a permit and post
    /// it back: every failed post leaves the word as it was, no wait is lost, and no
    /// starving waiter is left counted.
    #[test]
    fn takers_racing_posts_at_the_maximum_keep_the_word_intact() {
        let sem = Semaphore::new(SEMAPHORE_MAX);
        let t0 = Instant::now();
        let run = Duration::from_millis(500);
        std::thread::scope(|s| {
            s.spawn(|| {
                while t0.elapsed() < run {
                    for _ in 0..100 {
                        // Fails while the semaphore is full; fills it when a taker holds one.
                        let _ = sem.post();
                    }
                }
            });
            for t in 0..2 {
                let sem = &sem;
                s.spawn(move || {
                    let mut i = t;
                    while t0.elapsed() < run {
                        timed_wait(sem);
                        hold_now_and_then(i);
                        // Fails if the poster filled the semaphore meanwhile.
                        let _ = sem.post();
                        i += 1;
                    }
                });
            }
        });
        let s = sem.state.load(Ordering::Relaxed);
        assert_eq!(s >> 32, 0, "starvers or garbage left: {s:#x}");
        assert_eq!(count(s), SEMAPHORE_MAX, "permits lost: {s:#x}");
    }

    /// A failing post on a full semaphore with the flag set and starving waiters counted
    /// leaves all three as they were (the add carries through the flag into the starver
    /// count; the undo must borrow it back).
    #[test]
    fn overflow_with_the_flag_set_and_starvers_leaves_the_word() {
        let sem = Semaphore::default();
        let full = (3 * STARVER) | CONTENDED | u64::from(SEMAPHORE_MAX);
        sem.state.store(full, Ordering::Relaxed);
        assert!(sem.post().is_err());
        assert_eq!(sem.state.load(Ordering::Relaxed), full);
    }

    /// A sleeper asleep on a word whose flag is then cleared with no wake-up (a peer that
    /// died between a post's add and its wake-up, or garbage written over the word) must
    /// still get a permit that is there: posts that find the flag clear wake nobody.
    #[test]
    fn a_sleeper_gets_a_permit_though_the_flag_was_cleared_without_a_wake() {
        // Each case: what happens to the word while the waiter sleeps, then whether a
        // correct post follows.
        type Scribble = fn(&AtomicU64);
        let cases: [(&str, Scribble, bool); 3] = [
            // A poster added its permit and died before it looked at the flag.
            (
                "died after the add",
                |w| {
                    w.fetch_add(1, Ordering::Release);
                },
                false,
            ),
            // A poster added, cleared the flag and died before the futex wake.
            (
                "died before the wake",
                |w| {
                    w.fetch_add(1, Ordering::Release);
                    w.fetch_and(!CONTENDED, Ordering::Relaxed);
                },
                false,
            ),
            // Garbage: zero written over the word; then a correct post, which sees no flag.
            ("zeroed, then posted", |w| w.store(0, Ordering::Relaxed), true),
        ];
        std::thread::scope(|s| {
            for (what, scribble, post) in cases {
                s.spawn(move || {
                    let sem = Semaphore::new(0);
                    std::thread::scope(|s| {
                        let waiter = s.spawn(|| {
                            let asked = Instant::now();
                            (sem.wait_timeout(Duration::from_secs(10)), asked.elapsed())
                        });
                        // Let it go to sleep (the flag is set just before).
                        while sem.state.load(Ordering::Relaxed) & CONTENDED == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        std::thread::sleep(Duration::from_millis(20));
                        scribble(&sem.state);
                        if post {
                            sem.post().unwrap();
                        }
                        let (got, took) = waiter.join().unwrap();
                        assert!(got, "{what}: no permit");
                        assert!(took < RECHECK + LOST, "{what}: stranded for {took:?}");
                    });
                    assert_eq!(sem.value(), 0, "{what}");
                });
            }
        });
    }

    /// Counts above one: threads take one to three permits each (the first with a long
    /// timed wait, the others with very short ones, giving back what they hold when one
    /// fails, so nobody deadlocks holding part of what it needs) and post them back in a
    /// row, so posts often find the flag clear and the woken waiter must pass the permits
    /// left on.
    #[test]
    fn threads_taking_and_posting_several_permits_never_lose_a_wakeup() {
        const PERMITS: u32 = 3;
        let sem = Semaphore::new(PERMITS);
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for t in 0..6u32 {
                let sem = &sem;
                s.spawn(move || {
                    let mut i = t;
                    while t0.elapsed() < Duration::from_millis(1500) {
                        let want = 1 + i % PERMITS;
                        timed_wait(sem);
                        let mut held = 1;
                        while held < want && sem.wait_timeout(Duration::from_micros(50)) {
                            held += 1;
                        }
                        hold_now_and_then(i);
                        for _ in 0..held {
                            sem.post().unwrap();
                        }
                        i += 1;
                    }
                });
            }
        });
        let s = sem.state.load(Ordering::Relaxed);
        assert_eq!((count(s), starvers(s)), (PERMITS, 0), "{s:#x}");
    }

    /// Bursts of posts in a row to sleepers that each take one permit per round: the first
    /// post wakes one sleeper and clears the flag, the others find it clear and wake nobody,
    /// so the woken waiter must pass the permits left on (and so on down the chain). A
    /// consumer takes no second item before the round ends, so nobody covers for a sleeper
    /// left asleep: the producer's wait for the round shows it.
    #[test]
    fn bursts_of_posts_wake_one_sleeper_per_permit() {
        const CONSUMERS: u32 = 4;
        let (items, done, go) = (Semaphore::new(0), Semaphore::new(0), Semaphore::new(0));
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..CONSUMERS {
                s.spawn(|| loop {
                    timed_wait(&items);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    done.post().unwrap();
                    timed_wait(&go);
                });
            }
            let t0 = Instant::now();
            let mut round = 0;
            while t0.elapsed() < Duration::from_millis(1500) {
                let k = 1 + round % CONSUMERS;
                for _ in 0..k {
                    items.post().unwrap();
                }
                for _ in 0..k {
                    timed_wait(&done);
                }
                for _ in 0..k {
                    go.post().unwrap();
                }
                round += 1;
            }
            stop.store(true, Ordering::Relaxed);
            for _ in 0..CONSUMERS {
                items.post().unwrap();
            }
        });
        assert_eq!((items.value(), done.value(), go.value()), (0, 0, 0));
    }

    /// Very short timeouts (zero to a few dozen microseconds) under contention: a wait that
    /// times out takes nothing and returns about on time, one that succeeds takes one
    /// permit, and a patient waiter among them is never left asleep by the others.
    #[test]
    fn very_short_timeouts_under_contention_keep_the_count() {
        const PERMITS: u32 = 2;
        let sem = Semaphore::new(PERMITS);
        let t0 = Instant::now();
        let run = Duration::from_millis(1500);
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let sem = &sem;
                s.spawn(move || {
                    let mut i = t;
                    while t0.elapsed() < run {
                        let timeout = Duration::from_micros(u64::from((i * 7 + t * 13) % 60));
                        let asked = Instant::now();
                        if sem.wait_timeout(timeout) {
                            hold_now_and_then(i);
                            sem.post().unwrap();
                        } else {
                            let took = asked.elapsed();
                            assert!(took < timeout + LOST, "a {timeout:?} wait took {took:?}");
                        }
                        i += 1;
                    }
                });
            }
            s.spawn(|| {
                let mut i = 0;
                while t0.elapsed() < run {
                    timed_wait(&sem);
                    hold_now_and_then(i);
                    sem.post().unwrap();
                    i += 1;
                }
            });
        });
        let s = sem.state.load(Ordering::Relaxed);
        assert_eq!((count(s), starvers(s)), (PERMITS, 0), "{s:#x}");
    }

    /// A waiter that counted itself as starving and then timed out takes itself off the
    /// count: afterwards try_wait takes a posted permit again and newcomers do not give way.
    #[test]
    fn a_starving_waiter_that_times_out_unregisters() {
        let sem = Semaphore::new(0);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| sem.wait_timeout(Duration::from_millis(300)));
            let asleep = || {
                let t0 = Instant::now();
                while sem.state.load(Ordering::Relaxed) & CONTENDED == 0 {
                    assert!(t0.elapsed() < LOST, "the waiter never slept");
                    std::thread::yield_now();
                }
            };
            asleep();
            std::thread::sleep(PATIENCE * 2);
            // What a barger leaves: a post that cleared the flag and woke the waiter, its
            // permit taken again before the waiter ran. The waiter finds nothing, has waited
            // past its patience, counts itself as starving and sleeps again.
            sem.state.fetch_and(!CONTENDED, Ordering::Relaxed);
            sys::futex_wake(&sem.state, 1);
            asleep();
            let t0 = Instant::now();
            while starvers(sem.state.load(Ordering::Relaxed)) == 0 {
                assert!(t0.elapsed() < LOST, "the waiter never counted as starving");
                std::thread::yield_now();
            }
            assert!(!waiter.join().unwrap(), "nothing was posted");
        });
        assert_eq!(starvers(sem.state.load(Ordering::Relaxed)), 0);
        sem.post().unwrap();
        assert!(sem.try_wait(), "try_wait gives way to a waiter that is gone");
    }

    /// Barging threads and waiters with short timeouts (a few milliseconds: they starve,
    /// then give up), for a while: the bargers always get the permit back within the bound,
    /// and when everyone is done no starver is left counted and the permit is there.
    #[test]
    fn starving_waiters_timing_out_among_barging_threads() {
        let fork = Semaphore::new(1);
        let t0 = Instant::now();
        let run = Duration::from_millis(1500);
        std::thread::scope(|s| {
            for t in 0..2u32 {
                let fork = &fork;
                s.spawn(move || {
                    let mut i = t;
                    while t0.elapsed() < run {
                        timed_wait(fork);
                        hold_now_and_then(i);
                        fork.post().unwrap();
                        i += 1;
                    }
                });
            }
            for t in 0..2u32 {
                let fork = &fork;
                s.spawn(move || {
                    let mut i = t;
                    while t0.elapsed() < run {
                        let timeout = Duration::from_millis(u64::from(1 + (i + t) % 5));
                        if fork.wait_timeout(timeout) {
                            fork.post().unwrap();
                        }
                        i += 1;
                    }
                });
            }
        });
        let s = fork.state.load(Ordering::Relaxed);
        assert_eq!((count(s), starvers(s)), (1, 0), "{s:#x}");
        assert!(fork.try_wait());
    }
}
