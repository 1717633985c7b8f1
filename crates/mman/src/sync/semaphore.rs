//! The counting semaphore: one futex word holding the count, a contended flag and the
//! number of starving waiters (see the docs of [`Semaphore`] and of its state word).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::wait::{self, Wait};
use super::ProcessShared;
use crate::error::{Error, Result};
use crate::sys;

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
    /// that starve ([`STARVER`]); bit 63 is unused. One word: a post learns from its one
    /// atomic update whether to wake anyone, and a waiter's announcement and a post are
    /// ordered on it. The flag is in the futex word so that clearing it makes a waiter
    /// about to sleep on the old value return and look again.
    state: AtomicU64,
}

// SAFETY: repr(C), one AtomicU64, no pointers; zero is count 0 with no sleepers. Garbage is
// some count, maybe the contended flag, some number of starving waiters: at worst a
// spurious wake-up, a wait that gives way for GIVE_WAY, a sleeper whose flag was cleared
// that finds a permit only after RECHECK.
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
        //
        // The first step guesses the word instead of loading it: no permit, no waiter (0),
        // as a lock or a fork is while held. A load before the compare-and-swap fetches a line
        // another core last wrote as shared, and the swap then fetches it again to own it; the
        // guess costs one transfer right or wrong, and a wrong one hands back the word. Five
        // philosophers: 22.5 M -> 25.0 M meals/s (6 rounds alternated, every round ahead);
        // two: 9.2 M -> 12.4 M; the process ping-pong of `mman bench ipc` unchanged.
        let mut s = match self
            .state
            .compare_exchange(0, 1, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => return Ok(()), // no waiter to wake, far from the maximum
            Err(now) => now,
        };
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
        wait::note_woke();
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
        // Guess one permit and nobody else (1), as a free lock or fork is: see `post`.
        let mut s = match self
            .state
            .compare_exchange(1, 0, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => return true, // no starver to give way to
            Err(now) => now,
        };
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

    /// Take a permit, waiting as long as it takes (`sem_wait`), by the default policy,
    /// [`Wait::Adaptive`].
    #[inline]
    pub fn wait(&self) {
        self.wait_with(Wait::Adaptive)
    }

    /// [`wait`](Self::wait), spending the time before sleeping as `how` says.
    #[inline]
    pub fn wait_with(&self, how: Wait) {
        if !self.take(true) {
            self.wait_until(None, how);
        }
    }

    /// Take a permit, waiting at most `timeout` (on the monotonic clock). Returns whether a
    /// permit was taken.
    #[inline]
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_timeout_with(timeout, Wait::Adaptive)
    }

    /// [`wait_timeout`](Self::wait_timeout), spending the time before sleeping as `how`
    /// says.
    #[inline]
    pub fn wait_timeout_with(&self, timeout: Duration, how: Wait) -> bool {
        // The uncontended path reads no clock.
        self.take(true) || self.wait_until(Instant::now().checked_add(timeout), how)
    }

    #[inline(never)]
    fn wait_until(&self, deadline: Option<Instant>, how: Wait) -> bool {
        // No CPU hint here: the word has no room that the fast paths' guesses (0 and 1)
        // could ignore; the policy learns from this thread's last waits instead.
        let plan = how.plan(wait::DEFAULT_SPIN, 0);
        let mut starved_out = false;
        let got = wait::before_sleep(plan, deadline, || {
            let s = self.state.load(Ordering::Relaxed);
            if starvers(s) != 0 {
                // Sleepers are served first: spinning would not get a permit.
                starved_out = true;
                return true;
            }
            count(s) > 0 && self.take(true)
        });
        if got && !starved_out {
            return true;
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
                        // A peer that keeps changing the word cannot keep this wait past
                        // its deadline.
                        if super::locks::past(deadline) {
                            break false;
                        }
                        s = now;
                        continue;
                    }
                }
            }
            if s & CONTENDED == 0 {
                // Announce the sleep before checking the count the last time (in futex_wait).
                s = self.state.fetch_or(CONTENDED, Ordering::Relaxed) | CONTENDED;
                if super::locks::past(deadline) {
                    break false;
                }
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
mod tests;
