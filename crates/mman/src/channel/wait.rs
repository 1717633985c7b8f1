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
use crate::sync::wait::{self as policy, Plan, Wait};
use crate::sys;

/// Bit 63 of an owner word: occupied.
const OCCUPIED: u64 = 1 << 63;
/// The sleeping flag of an event word.
const SLEEPING: u64 = 1 << 32;
/// Where an event word keeps the CPU hint of the last notifier that woke a sleeper (bits
/// 48 to 62; see `sync::wait`): set in the same step that clears `SLEEPING`.
const HINT_SHIFT: u32 = 48;
const HINT_FIELD: u64 = ((1 << policy::HINT_BITS) - 1) << HINT_SHIFT;
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
    let here = policy::cpu_hint() << HINT_SHIFT;
    let mut s = event.load(Ordering::Relaxed);
    while s & SLEEPING != 0 {
        // Bump the sequence, clear the flag and leave this CPU as the hint; keep the rest
        // (garbage included).
        let next = (s & !0x1_ffff_ffff & !HINT_FIELD) | ((s as u32).wrapping_add(1) as u64) | here;
        match event.compare_exchange_weak(s, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => s = now,
        }
    }
    sys::futex_wake(event, u32::MAX);
    policy::note_woke();
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

/// How an endpoint waits: the policy and the bound of its spin (`Options::wait`, `spin`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Waiting {
    pub how: Wait,
    pub spin: Duration,
}

impl Waiting {
    /// [`Wait::Adaptive`] with the crate's default spin bound.
    pub const DEFAULT: Waiting = Waiting {
        how: Wait::Adaptive,
        spin: policy::DEFAULT_SPIN,
    };

    /// Whether a receive may look a few times before taking the general path: not where
    /// the policy never spins.
    #[inline]
    pub fn spins(&self) -> bool {
        !self.spin.is_zero() && matches!(self.how, Wait::Adaptive | Wait::Spin)
    }

    /// How a caller waits again after a wait that answered `Ready` found nothing to take
    /// (a word a peer set and cleared, or garbage): straight to the futex, without the
    /// policy's spin or yield. A loop of yields beside a CPU-bound thread (such a peer) would
    /// push this thread back further at every yield (EEVDF moves a yielder's deadline a
    /// slice ahead each time): a 100 ms receive took 10 s in CI before this.
    pub fn retry(self) -> Waiting {
        Waiting {
            how: Wait::Block,
            spin: Duration::ZERO,
        }
    }

    /// What a waiter on `event` does before it sleeps now: the policy's plan, given the
    /// CPU hint the last waking notifier left in the word. The spin never outlasts one
    /// slice (a dead peer is looked for after it): whatever spin the caller configured,
    /// the waits keep their bounds.
    pub fn plan(&self, event: &AtomicU64) -> Plan {
        let hint = event.load(Ordering::Relaxed) >> HINT_SHIFT;
        self.how.plan(self.spin.min(SLICE), hint)
    }
}

/// Wait until `ready()` holds: spend the time before sleeping as `waiting` says (spin,
/// yield; see `sync::wait`), then sleep on `event` in slices, calling
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
    waiting: Waiting,
    deadline: Option<Instant>,
    ready: impl FnMut() -> bool,
    check: impl FnMut(bool) -> Result<()>,
) -> Result<Waited> {
    wait_planned(event, waiting.plan(event), deadline, ready, check)
}

/// [`wait_for`] with the plan made already ([`Waiting::plan`]).
pub(super) fn wait_planned(
    event: &AtomicU64,
    plan: Plan,
    deadline: Option<Instant>,
    mut ready: impl FnMut() -> bool,
    mut check: impl FnMut(bool) -> Result<()>,
) -> Result<Waited> {
    if deadline.is_some_and(|d| Instant::now() >= d) {
        check(false)?;
        return Ok(Waited::TimedOut);
    }
    if policy::before_sleep(plan, deadline, &mut ready) {
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
