//! The one waiting policy of mman: how a waiter that finds nothing there yet (no permit, a
//! lock held, an empty ring, a full ring) spends the time before it sleeps in the kernel.
//!
//! Spinning pays only while the party that will answer runs on *another* CPU: then the
//! answer comes within a cache-line transfer, far sooner than a futex wake-up (which costs
//! from a few to tens of microseconds, depending on the host). Where the answering party
//! shares the waiter's CPU, or waits for a CPU at all, every spin delays the very answer it
//! waits for. [`Wait::Adaptive`], the default, therefore spins only when
//! - the control group's CPU quota lets two of its processes run at once (a one-CPU
//!   container: it yields once, then sleeps),
//! - and the peer was last seen on another CPU. Where the object has room for it, the party
//!   that wakes a sleeper records its CPU in the object; a waiter that finds its own CPU
//!   there yields once (the peer, ready to run on this CPU, then runs at once: no futex
//!   call on either side) and sleeps. A waiter that has just woken a sleeper yields first
//!   too: the kernel tends to place the woken task on the waker's CPU.
//!
//! The spin is bounded by time ([`DEFAULT_SPIN`], 50 µs, longer than a cross-CPU wake-up
//! on the hosts measured, so a pair whose one side slept once finds its way back to
//! spinning), not by a number of `pause` instructions, whose cost varies tenfold between
//! CPU generations.
//!
//! Beside CPU-bound load (more tasks ready to run than CPUs, from `/proc/loadavg`, read at
//! most every 10 ms) a yield would hand the CPU to the load for a whole time slice, so the
//! waiter never yields there; it still spins, since a peer on another CPU answers whenever
//! both happen to run, but after a spin in vain it sleeps at once the next time. A thread
//! remembers how its last wait ended: answered by a yield, it yields first (pinned to one
//! CPU, it then never spins); answered by a spin, it spins first.
//!
//! A CPU number a peer writes into shared memory is a hint: garbage there costs a spin that
//! was not needed or a sleep that was, never correctness or a bound on a wait.
//!
//! ```
//! use mman::sync::{place, Semaphore, Wait};
//! # fn main() -> mman::Result<()> {
//! let shared = mman::MapOptions::new().len(4096).shared().map_anonymous()?;
//! let sem: &Semaphore = place(&shared, 0)?;
//! sem.post()?;
//! sem.wait_with(Wait::Block); // never spins nor yields: sleeps at once, as sem_t does
//! assert!(!sem.wait_timeout_with(std::time::Duration::from_millis(1), Wait::Spin));
//! # Ok(()) }
//! ```

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::sys;

/// How a waiter spends the time before it sleeps in the kernel. Every waiting place of
/// mman takes one: [`Semaphore`](super::Semaphore), [`Mutex`](super::Mutex),
/// [`Barrier`](super::Barrier), and the channels' senders, receivers and subscribers
/// (`channel::Options::wait`). In the spirit of the LMAX Disruptor's wait strategies: the
/// default suits any placement; the others are for users who know theirs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Wait {
    /// Spin only where it can help (see the [module docs](self)), yield where the peer
    /// shares this CPU, else sleep. The default.
    #[default]
    Adaptive,
    /// Always spin for the spin bound before sleeping: the fastest hand-off when each party
    /// has a CPU of its own (pinned, nothing else running); on one CPU or beside CPU-bound
    /// load each wait burns the whole bound and delays the peer.
    Spin,
    /// Yield the CPU (`sched_yield`) for the spin bound before sleeping: suits parties that
    /// share one CPU and answer each other at once; elsewhere it costs a system call a
    /// round and a whole CPU while waiting.
    Yield,
    /// Sleep in the kernel at once (a futex), as `sem_t` and a pipe do: costs a wake-up
    /// (a system call and, across CPUs, an inter-processor interrupt) per hand-off, and no
    /// CPU while waiting.
    Block,
}

/// The spin bound of mman's waiters unless configured (channels: `Options::spin`).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// What a waiter does before it sleeps: yield up to `yields` times, spin for `spin`, then
/// yield up to `yields_after` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub yields: u32,
    pub spin: Duration,
    /// Yield for all of `spin` instead of spinning ([`Wait::Yield`]).
    pub yield_spin: bool,
    pub yields_after: u32,
}

impl Plan {
    const SLEEP: Plan = Plan {
        yields: 0,
        spin: Duration::ZERO,
        yield_spin: false,
        yields_after: 0,
    };
    const YIELD_ONCE: Plan = Plan {
        yields: 1,
        ..Plan::SLEEP
    };
}

/// Bits of a CPU hint: the CPU plus one (0: unknown), masked to 15 bits.
pub(crate) const HINT_BITS: u32 = 15;
const HINT_MASK: u64 = (1 << HINT_BITS) - 1;

/// This thread's CPU as a hint for a peer: the CPU plus one, 0 where unknown (or beyond the
/// hint's bits).
#[inline]
pub(crate) fn cpu_hint() -> u64 {
    match sys::cpus::current_cpu() {
        Some(c) if u64::from(c) < HINT_MASK => u64::from(c) + 1,
        _ => 0,
    }
}

/// How this thread's last wait before sleeping ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Last {
    /// Nothing known, or it slept at once.
    Slept,
    /// It spun or yielded in vain, then slept.
    GaveUp,
    /// Its spin caught the answer.
    Spun,
    /// A yield did: the peer shared this CPU, and ran when this thread gave it up.
    Yielded,
}

/// How this thread's waits ended, counted since it started: what the waiting policy chose
/// and what came of it. Only waits that found nothing there at first are counted (a permit
/// taken or a message found at once is no wait).
///
/// ```
/// let before = mman::sync::wait::Stats::this_thread();
/// // ... waits ...
/// let after = mman::sync::wait::Stats::this_thread();
/// assert!(after.spun >= before.spun);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Waits answered while spinning.
    pub spun: u64,
    /// Waits answered after yielding the CPU.
    pub yielded: u64,
    /// Waits that spun or yielded in vain, then slept.
    pub gave_up: u64,
    /// Waits that slept at once (the policy saw no use in spinning or yielding).
    pub slept_at_once: u64,
}

impl Stats {
    /// The counts of the calling thread.
    pub fn this_thread() -> Stats {
        STATS.with(Cell::get)
    }
}

thread_local! {
    static STATS: Cell<Stats> = const { Cell::new(Stats { spun: 0, yielded: 0, gave_up: 0, slept_at_once: 0 }) };
    /// Set when this thread woke a sleeper: the kernel tends to place the woken task on the
    /// waker's CPU, so the next wait yields first.
    static WOKE: Cell<bool> = const { Cell::new(false) };
    /// How this thread's last wait ended: a thread that was answered after a yield yields
    /// first next time (its peer shares its CPU), one answered by spinning spins first.
    static LAST: Cell<Last> = const { Cell::new(Last::Slept) };
}

/// Record that this thread has just woken a sleeper (a futex wake-up of a peer).
#[inline]
pub(crate) fn note_woke() {
    WOKE.with(|w| w.set(true));
}

impl Wait {
    /// The plan of a waiter that is about to wait, given the CPU hint its peer left (0 when
    /// none) and the spin bound.
    pub(crate) fn plan(self, spin: Duration, peer_hint: u64) -> Plan {
        if spin.is_zero() {
            return Plan::SLEEP;
        }
        match self {
            Wait::Block => Plan::SLEEP,
            Wait::Spin => Plan { spin, ..Plan::SLEEP },
            Wait::Yield => Plan {
                spin,
                yield_spin: true,
                ..Plan::SLEEP
            },
            Wait::Adaptive => adaptive(spin, peer_hint & HINT_MASK),
        }
    }
}

/// What [`Wait::Adaptive`] decides from.
#[derive(Clone, Copy, Debug)]
struct Seen {
    oversubscribed: bool,
    /// No two processes of this control group ever run at once (one CPU online, or a CPU
    /// quota below two).
    one_at_a_time: bool,
    /// This thread may run on one CPU only (its peer may still run on another).
    pinned: bool,
    /// The peer was last seen on this CPU.
    peer_here: bool,
    /// This thread just woke a sleeper.
    woke: bool,
    last: Last,
}

fn adaptive(spin: Duration, peer_hint: u64) -> Plan {
    let woke = WOKE.with(|w| w.replace(false));
    let oversubscribed = sys::cpus::oversubscribed();
    decide(
        spin,
        Seen {
            oversubscribed,
            one_at_a_time: sys::cpus::shared_cpus() < 2,
            pinned: sys::cpus::pinned_cpus() < 2,
            peer_here: peer_hint != 0 && peer_hint == cpu_hint(),
            woke,
            last: LAST.with(Cell::get),
        },
    )
}

fn decide(spin: Duration, seen: Seen) -> Plan {
    // Beside CPU-bound load a yield hands this CPU to the load for a time slice, so only a
    // spin may help there: the peer, on another CPU, answers while both happen to run.
    let yields_help = !seen.oversubscribed;
    if seen.one_at_a_time || seen.peer_here || (seen.pinned && seen.last == Last::Yielded) {
        // The peer runs only when this waiter stops: it was seen on this CPU, the group
        // runs one process at a time, or (pinned to one CPU) a yield answered last time, as
        // when `taskset -c 0` pins a whole pipeline. A spin only delays it.
        return if yields_help {
            Plan::YIELD_ONCE
        } else {
            Plan::SLEEP
        };
    }
    if seen.oversubscribed && seen.last == Last::GaveUp {
        // Beside load the last spin was in vain (the peer waited for a CPU, or shares this
        // one): sleep at once this time, spin again the next.
        return Plan::SLEEP;
    }
    // Yield first where the peer probably shares this CPU (this thread just woke it, or a
    // yield answered last time); spin; then yield once more before sleeping, for a peer
    // that turned out to share the CPU (the next wait then yields first).
    let yield_first = yields_help && (seen.woke || seen.last == Last::Yielded);
    Plan {
        yields: u32::from(yield_first),
        spin,
        yield_spin: false,
        yields_after: u32::from(yields_help && !yield_first),
    }
}

/// Carry out `plan` until `ready()` holds: yield, spin (the clock read once per 64 checks),
/// yield. Returns whether `ready()` held; never outlasts `deadline` by more than a yield.
pub(crate) fn before_sleep(plan: Plan, deadline: Option<Instant>, mut ready: impl FnMut() -> bool) -> bool {
    let mut last = carry_out(plan, deadline, &mut ready);
    let at_once = plan == Plan::SLEEP;
    if last == Last::Slept && !at_once {
        last = Last::GaveUp;
    }
    LAST.with(|l| l.set(last));
    STATS.with(|s| {
        let mut now = s.get();
        match last {
            Last::Spun => now.spun += 1,
            Last::Yielded => now.yielded += 1,
            Last::Slept => now.slept_at_once += 1,
            Last::GaveUp => now.gave_up += 1,
        }
        s.set(now);
    });
    matches!(last, Last::Spun | Last::Yielded)
}

fn carry_out(plan: Plan, deadline: Option<Instant>, ready: &mut impl FnMut() -> bool) -> Last {
    let yields = |n: u32, ready: &mut dyn FnMut() -> bool| {
        (0..n).any(|_| {
            sys::cpus::yield_cpu();
            ready()
        })
    };
    if yields(plan.yields, ready) {
        return Last::Yielded;
    }
    let mut budget = plan.spin;
    if let Some(d) = deadline {
        budget = budget.min(d.saturating_duration_since(Instant::now()));
    }
    if !budget.is_zero() {
        if plan.yield_spin {
            let start = Instant::now();
            while start.elapsed() < budget {
                if yields(1, ready) {
                    return Last::Yielded;
                }
            }
        } else if spin(budget, ready) {
            return Last::Spun;
        }
    }
    if yields(plan.yields_after, ready) {
        return Last::Yielded;
    }
    Last::Slept
}

/// Spin up to `budget` for `ready()`; the clock is read once per 64 checks, and not at all
/// for an answer that comes within the first 64.
fn spin(budget: Duration, ready: &mut impl FnMut() -> bool) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_policies_plan_what_they_say() {
        let s = DEFAULT_SPIN;
        assert_eq!(Wait::Block.plan(s, 0), Plan::SLEEP);
        assert_eq!(Wait::Spin.plan(s, 0).spin, s);
        assert!(Wait::Yield.plan(s, 0).yield_spin);
        assert_eq!(Wait::Spin.plan(Duration::ZERO, 0), Plan::SLEEP, "no bound: sleep");
    }

    #[test]
    fn adaptive_never_spins_beside_a_peer_on_this_cpu() {
        let plan = Wait::Adaptive.plan(DEFAULT_SPIN, cpu_hint());
        if sys::cpus::current_cpu().is_some() {
            // The hint names this CPU (unless the thread moved in between: then it may spin).
            assert!(plan.yields <= 1, "{plan:?}");
        }
    }

    #[test]
    fn adaptive_decides_by_what_it_sees() {
        let s = DEFAULT_SPIN;
        let quiet = Seen {
            oversubscribed: false,
            one_at_a_time: false,
            pinned: false,
            peer_here: false,
            woke: false,
            last: Last::Slept,
        };
        // Two CPUs, the peer elsewhere: spin, then yield once before sleeping.
        let p = decide(s, quiet);
        assert_eq!((p.yields, p.spin, p.yields_after), (0, s, 1));
        // Beside CPU-bound load: never a yield; a spin, unless the last one was in vain or
        // the peer runs only when this waiter stops.
        let loaded = Seen {
            oversubscribed: true,
            ..quiet
        };
        let p = decide(s, loaded);
        assert_eq!((p.yields, p.spin, p.yields_after), (0, s, 0));
        let p = decide(
            s,
            Seen {
                woke: true,
                last: Last::Yielded,
                ..loaded
            },
        );
        assert_eq!((p.yields, p.yields_after), (0, 0));
        for seen in [
            Seen {
                last: Last::GaveUp,
                ..loaded
            },
            Seen {
                one_at_a_time: true,
                ..loaded
            },
            Seen {
                peer_here: true,
                ..loaded
            },
            Seen {
                pinned: true,
                last: Last::Yielded,
                ..loaded
            },
        ] {
            assert_eq!(decide(s, seen), Plan::SLEEP, "{seen:?}");
        }
        // One CPU for the whole group, or the peer on this one: yield once, never spin.
        assert_eq!(
            decide(
                s,
                Seen {
                    one_at_a_time: true,
                    ..quiet
                }
            ),
            Plan::YIELD_ONCE
        );
        // Pinned: spin while spins answer; once a yield answered, the peer shares the CPU.
        let pinned = Seen {
            pinned: true,
            ..quiet
        };
        assert_eq!(
            decide(
                s,
                Seen {
                    last: Last::Spun,
                    ..pinned
                }
            )
            .spin,
            s
        );
        assert_eq!(
            decide(
                s,
                Seen {
                    last: Last::Slept,
                    ..pinned
                }
            )
            .yields_after,
            1
        );
        assert_eq!(
            decide(
                s,
                Seen {
                    last: Last::Yielded,
                    ..pinned
                }
            ),
            Plan::YIELD_ONCE
        );
        assert_eq!(
            decide(
                s,
                Seen {
                    peer_here: true,
                    ..quiet
                }
            ),
            Plan::YIELD_ONCE
        );
        // Just woke the peer, or a yield answered last time: yield first, then spin.
        for seen in [
            Seen { woke: true, ..quiet },
            Seen {
                last: Last::Yielded,
                ..quiet
            },
        ] {
            let p = decide(s, seen);
            assert_eq!((p.yields, p.spin, p.yields_after), (1, s, 0));
        }
        // A spin answered last time: spin first.
        assert_eq!(
            decide(
                s,
                Seen {
                    last: Last::Spun,
                    ..quiet
                }
            )
            .yields,
            0
        );
    }

    #[test]
    fn waits_are_counted_by_how_they_ended() {
        let before = Stats::this_thread();
        assert!(!before_sleep(Wait::Block.plan(DEFAULT_SPIN, 0), None, || true));
        let mut n = 0;
        assert!(before_sleep(Wait::Spin.plan(DEFAULT_SPIN, 0), None, || {
            n += 1;
            n > 3
        }));
        let after = Stats::this_thread();
        assert_eq!(after.slept_at_once, before.slept_at_once + 1);
        assert_eq!(after.spun, before.spun + 1);
    }

    #[test]
    fn before_sleep_is_bounded_by_the_plan_and_the_deadline() {
        let plan = Plan {
            yields: 2,
            spin: Duration::from_millis(5),
            yield_spin: false,
            yields_after: 1,
        };
        let t = Instant::now();
        assert!(!before_sleep(plan, None, || false));
        assert!(t.elapsed() >= Duration::from_millis(5));
        let t = Instant::now();
        let d = Some(Instant::now());
        assert!(!before_sleep(
            Plan {
                spin: Duration::from_secs(60),
                ..plan
            },
            d,
            || false
        ));
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the deadline bounds the spin"
        );
        let mut n = 0;
        assert!(before_sleep(plan, None, || {
            n += 1;
            n == 2
        }));
    }
}
