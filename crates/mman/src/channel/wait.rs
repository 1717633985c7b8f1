//! Who is attached, whether they still live, and how a party waits for another: a short
//! bounded spin, then a futex sleep in slices, checking between slices that the party it
//! waits for is still there.
//!
//! **Owner words.** Each endpoint slot of a region has an owner word: 0 when vacant,
//! else the owner's PID with bit 63 set and a per-claim count in bits 32..63 (so no two
//! claims write the same word). The word is for messages and for the quick check of a
//! clean departure (0); whether the owner *lives* is the kernel's answer about a lock on
//! the word's bytes (see `sys::liveness` and `Region::claim`), which nothing written into
//! the memory can fake.
//!
//! **Events.** A party that sleeps does so on an event word: a sequence number in the low
//! 32 bits (the futex word) and `SLEEPING` at bit 32. The sleeper sets `SLEEPING` and then
//! re-checks its condition; the notifier publishes its change and then reads the word (a
//! `SeqCst` fence on both sides, the Dekker pattern): either the notifier sees the flag, or
//! the sleeper sees the change. Seeing the flag, the notifier bumps the sequence (clearing
//! the flag) and wakes: no system call when nobody sleeps.

use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// Bit 63 of an owner word: occupied.
const OCCUPIED: u64 = 1 << 63;
/// The sleeping flag of an event word.
const SLEEPING: u64 = 1 << 32;
/// How long a sleeper sleeps before it checks on its peers again: the bound on how late a
/// peer's death is noticed (the promise is 100 ms).
pub(super) const SLICE: Duration = Duration::from_millis(50);

/// This process's owner word, and the fork generation it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Me {
    pub word: u64,
    pub generation: u64,
}

impl Me {
    pub fn now() -> Me {
        let generation = sys::sync::fork_generation();
        Me {
            word: OCCUPIED | sys::shm::pid() as u64,
            generation,
        }
    }

    /// Whether this process is the one the endpoint was attached in.
    #[inline(always)]
    pub fn is_current(&self) -> bool {
        sys::sync::fork_generation() == self.generation
    }

    /// Fail if this process is not the one the endpoint was attached in (it was inherited
    /// across `fork`).
    #[inline(always)]
    pub fn check(&self, op: &'static str) -> Result<()> {
        if self.is_current() {
            return Ok(());
        }
        Err(self.forked(op))
    }

    #[cold]
    fn forked(&self, op: &'static str) -> Error {
        Error::new(
            ErrorKind::InvalidInput,
            op,
            format!(
                "this endpoint belongs to process {}, and this process is a child created by fork",
                self.word as u32
            ),
        )
        .with_hint(
            "attach a new endpoint in the child (keep the channel handle across fork, not the endpoint)",
        )
    }
}

/// The PID in an owner word.
pub(super) fn pid_of(owner: u64) -> u32 {
    owner as u32
}

/// Wake every sleeper of `event` whether or not its flag is set: for a departure, which
/// a sleeper may not be watching for (it looks for its peers between slices).
pub(super) fn wake_all(event: &AtomicU64) {
    event.fetch_add(1, Ordering::SeqCst);
    sys::futex_wake(event, u32::MAX);
}

/// Wake every sleeper of `event`, if one sleeps. Call after publishing a change.
#[inline(always)]
pub(super) fn notify(event: &AtomicU64) {
    fence(Ordering::SeqCst);
    if event.load(Ordering::Relaxed) & SLEEPING != 0 {
        wake(event);
    }
}

#[cold]
#[inline(never)]
fn wake(event: &AtomicU64) {
    let mut s = event.load(Ordering::Relaxed);
    while s & SLEEPING != 0 {
        // Bump the sequence and clear the flag; keep the rest (garbage included).
        let next = (s & !0x1_ffff_ffff) | ((s as u32).wrapping_add(1) as u64);
        match event.compare_exchange_weak(s, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => s = now,
        }
    }
    sys::futex_wake(event, u32::MAX);
}

/// Announce a sleeper on `event` (as `wait_for` does before it sleeps) and return the
/// sequence to wait on: a notifier that publishes after this bumps it. The caller then
/// re-checks its condition before it waits.
#[cfg(feature = "async")]
pub(super) fn arm(event: &AtomicU64) -> u32 {
    let seq = event.fetch_or(SLEEPING, Ordering::SeqCst) as u32;
    fence(Ordering::SeqCst);
    seq
}

/// How a wait ended.
pub(super) enum Waited {
    /// The condition holds.
    Ready,
    /// The deadline passed.
    TimedOut,
}

/// The spin budget before sleeping: long enough to catch a peer's answer on another core
/// (a round trip is well under a microsecond there), short enough that a sleeper that
/// sleeps after all wasted little.
pub(super) const SPIN: Duration = Duration::from_micros(30);

/// Wait until `ready()` holds: spin for `spin`, then sleep on `event` in slices, calling
/// `check(look)` before each sleep to learn that waiting is pointless (a peer gone: an
/// error). `look` is true once per slice of waiting, whatever woke the sleeper (a peer
/// bumping the word, a signal): the time to ask the kernel whether the peers' locks are
/// still held (a system call each, too dear for every wake-up). `deadline` bounds the
/// whole wait.
///
/// `Ready` means only that the watched words changed: callers look again and, finding
/// nothing (a peer may keep changing a word to values that still mean "nothing"), call
/// again with the same deadline. So a deadline already past is answered first, before
/// `ready()` is asked (after `check(false)`, so that a peer's clean departure is still
/// told): every such retry loop ends at its deadline.
pub(super) fn wait_for(
    event: &AtomicU64,
    spin: Duration,
    deadline: Option<Instant>,
    mut ready: impl FnMut() -> bool,
    mut check: impl FnMut(bool) -> Result<()>,
) -> Result<Waited> {
    if deadline.is_some_and(|d| Instant::now() >= d) {
        check(false)?;
        return Ok(Waited::TimedOut);
    }
    // The spin never outlasts the deadline or one slice (a dead peer is looked for after
    // it): whatever spin the caller configured, the waits keep their bounds.
    let mut spin = spin.min(SLICE);
    if let Some(d) = deadline {
        spin = spin.min(d.saturating_duration_since(Instant::now()));
    }
    if spin_until(spin, &mut ready) {
        return Ok(Waited::Ready);
    }
    let mut last_look = Instant::now();
    loop {
        let look = last_look.elapsed() >= SLICE;
        if look {
            last_look = Instant::now();
        }
        check(look)?;
        let seq = event.fetch_or(SLEEPING, Ordering::SeqCst) as u32;
        fence(Ordering::SeqCst);
        if ready() {
            return Ok(Waited::Ready);
        }
        let mut slice = SLICE;
        if let Some(d) = deadline {
            match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => slice = slice.min(left),
                _ => return Ok(Waited::TimedOut),
            }
        }
        // A notifier that bumped the sequence since our fetch_or makes this return at once.
        if sys::futex_wait(event, seq, Some(slice)).is_err() {
            std::thread::yield_now();
        }
        if ready() {
            return Ok(Waited::Ready);
        }
    }
}

/// Spin up to `budget` for `ready()`; the clock is read once per 64 checks.
#[inline]
fn spin_until(budget: Duration, ready: &mut impl FnMut() -> bool) -> bool {
    if budget.is_zero() {
        return ready();
    }
    // The first checks read no clock: a reply that comes within them costs no clock read.
    for _ in 0..64 {
        if ready() {
            return true;
        }
        std::hint::spin_loop();
    }
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= budget {
            return ready();
        }
    }
}
