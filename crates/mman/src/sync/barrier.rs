//! A futex `Barrier` for processes or threads: pointer-free words in shared memory, like the
//! locks beside it (`locks.rs`), initialised once through the same state word.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::locks::init_once;
use super::slot;
use super::wait::{self, Wait};
use crate::error::{Error, ErrorKind, Result};
use crate::map::Mapping;
use crate::sys;

/// A barrier for `n` processes (or threads): each [`wait`](Barrier::wait) blocks until `n`
/// have arrived, then all go on, and it is ready for the next round. Futex-based, pointer-free.
///
/// A participant that never comes keeps the others waiting, as with any barrier; so does a
/// peer that writes a participant count no round can reach. [`wait_timeout`](Self::wait_timeout)
/// bounds the wait and takes the arrival back when the time runs out, so the round still
/// needs `n`.
#[repr(C)]
pub struct Barrier {
    state: AtomicU64,
    n: AtomicU64,
    /// The round in one word: its generation in the low half (the futex word waiters sleep
    /// on: an arrival, which changes only the high half, does not wake them), the
    /// participants arrived in it in the high half. One word, so arriving, completing a round
    /// and taking an arrival back are each one atomic step: a waiter that gives up can never
    /// leave a round that completed with it counted.
    round: AtomicU64,
}

/// One arrival in [`Barrier::round`]'s high half.
const ARRIVAL: u64 = 1 << 32;

/// The longest a waiter sleeps before it looks at the round again: a last arriver killed
/// between completing the round and waking the others (or a peer that wrote the next
/// generation) leaves them asleep with the round done; they notice within this.
const RECHECK: Duration = Duration::from_secs(3);

// SAFETY: repr(C), atomics only, no pointers. (Not ProcessShared: it needs its count set
// through `open` before use.)
unsafe impl Sync for Barrier {}

impl Barrier {
    /// The barrier for `n` participants at `offset` of `map`, initialised once.
    ///
    /// # Errors
    /// `n` is 0, the place is unusable (as [`place`](super::place)), or the barrier there
    /// was made for another number of participants.
    pub fn open(map: &Mapping, offset: usize, n: u32) -> Result<&Self> {
        if n == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "barrier",
                "a barrier needs at least 1 participant",
            ));
        }
        let p = slot::<Self>(map, offset, "barrier")?;
        // SAFETY: in bounds, aligned, read-write; all fields are atomics.
        let b = unsafe { &*p };
        init_once(&b.state, "barrier", || {
            b.n.store(n as u64, Ordering::Relaxed);
            b.round.store(0, Ordering::Relaxed);
            Ok(())
        })?;
        let have = b.n.load(Ordering::Relaxed);
        if have != n as u64 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "barrier",
                format!("the barrier here is for {have} participants, not {n}"),
            ));
        }
        Ok(b)
    }

    /// Wait for all participants. Returns `true` in exactly one of them (the last to arrive).
    pub fn wait(&self) -> bool {
        self.wait_until(None).unwrap_or(false)
    }

    /// Wait for all participants, at most `timeout`: `Some(true)` in the last to arrive,
    /// `Some(false)` in the others, `None` if the time ran out first, the arrival then taken
    /// back (the round still needs `n` participants; a round that completes in the same
    /// instant counts this one and returns `Some`).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<bool> {
        // A timeout too large for the clock waits as long as `wait`.
        self.wait_until(Instant::now().checked_add(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Option<bool> {
        // Orderings: every arrival is an AcqRel read-modify-write of the one word, so the
        // last arriver acquires every earlier arrival's writes, and its Release step to the
        // next generation publishes them, with its own, to the waiters that see that
        // generation (Acquire).
        let n = self.n.load(Ordering::Relaxed);
        let mut s = self.round.load(Ordering::Relaxed);
        let gen = loop {
            let gen = s as u32;
            // At or past the count (a peer's garbage can put it past): the round is complete.
            let last = (s >> 32) + 1 >= n;
            let next = if last {
                u64::from(gen.wrapping_add(1))
            } else {
                s.wrapping_add(ARRIVAL)
            };
            match self
                .round
                .compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) if last => {
                    sys::futex_wake(&self.round, u32::MAX);
                    return Some(true);
                }
                Ok(_) => break gen,
                // Not counted yet: a peer that keeps changing the word cannot keep this
                // wait past its deadline.
                Err(_) if super::locks::past(deadline) => return None,
                Err(now) => s = now,
            }
        };
        let plan = Wait::Adaptive.plan(wait::DEFAULT_SPIN, 0);
        wait::before_sleep(plan, deadline, || {
            self.round.load(Ordering::Relaxed) as u32 != gen
        });
        loop {
            let now = self.round.load(Ordering::Acquire);
            if now as u32 != gen {
                return Some(false);
            }
            let left = match deadline {
                None => RECHECK,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(RECHECK),
                    _ => return self.take_back(gen),
                },
            };
            let _ = sys::futex_wait(&self.round, gen, Some(left));
        }
    }

    /// Take back an arrival in generation `gen`, unless that round has completed: `None` if
    /// taken back, `Some(false)` if the round completed (with this participant counted).
    #[cold]
    fn take_back(&self, gen: u32) -> Option<bool> {
        let mut s = self.round.load(Ordering::Relaxed);
        loop {
            if s as u32 != gen {
                // Completed: see its participants' writes, as a waiter that saw it would.
                std::sync::atomic::fence(Ordering::Acquire);
                return Some(false);
            }
            match self.round.compare_exchange_weak(
                s,
                s.wrapping_sub(ARRIVAL),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return None,
                Err(now) => s = now,
            }
        }
    }
}
