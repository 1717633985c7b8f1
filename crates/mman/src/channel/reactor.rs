//! Waiting without a thread per channel, for async code: one thread per process waits on
//! the event words of every pending future at once (`futex_waitv`, Linux 5.16+) and wakes
//! the futures whose word changed.
//!
//! A pending future arms its event word (sets `SLEEPING`, as a blocking waiter does), so
//! the party that makes progress bumps the word and wakes the futex; the reactor, waiting
//! on all armed words, then wakes the future's `Waker`. It is runtime-agnostic: tokio,
//! async-std or a hand-written executor all poll the same futures.
//!
//! Every 50 ms the reactor wakes every future anyway: a pending future re-checks that its
//! peer still exists (a dead peer never bumps the word), which is how async waits notice
//! a killed peer within 100 ms, as blocking ones do.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use super::wait::SLICE;
use super::Guarded;
use crate::error::{Error, Result};
use crate::sys;

/// How many words one `futex_waitv` takes (the kernel's limit is 128; one is ours).
const MAX_WORDS: usize = 127;

struct Registration {
    /// The index of the event word in `region`.
    word: usize,
    expected: u32,
    waker: Waker,
    /// Keeps the mapping (and so the word's address) alive while the kernel may look.
    region: Arc<Guarded>,
}

impl Registration {
    fn word(&self) -> &AtomicU64 {
        self.region.word(self.word)
    }
}

struct Reactor {
    pending: Mutex<Vec<Registration>>,
    /// Bumped (and woken) when a registration is added: the reactor re-reads the list.
    control: AtomicU64,
    /// The fork generation of the process that made it.
    generation: u64,
}

/// The reactor of this process. A child created by `fork` inherits the parent's reactor
/// but not its thread (and perhaps a lock held at the instant of the fork): it gets a
/// reactor of its own, told apart by the fork generation.
fn reactor() -> Result<&'static Reactor> {
    static REACTOR: AtomicPtr<Reactor> = AtomicPtr::new(std::ptr::null_mut());
    let generation = sys::sync::fork_generation();
    let now = REACTOR.load(Ordering::Acquire);
    // SAFETY: a non-null pointer in REACTOR comes from Box::leak below and is never freed.
    if let Some(r) = unsafe { now.as_ref() } {
        if r.generation == generation {
            return Ok(r);
        }
    }
    let fresh: &'static mut Reactor = Box::leak(Box::new(Reactor {
        pending: Mutex::new(Vec::new()),
        control: AtomicU64::new(0),
        generation,
    }));
    let fresh_ptr: *mut Reactor = fresh;
    match REACTOR.compare_exchange(now, fresh_ptr, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            // SAFETY: leaked above, never freed.
            let r: &'static Reactor = unsafe { &*fresh_ptr };
            if let Err(e) = std::thread::Builder::new()
                .name("mman-channel-reactor".into())
                .spawn(move || run(r))
            {
                // Let a later call try again (a few bytes leaked).
                REACTOR.store(std::ptr::null_mut(), Ordering::Release);
                return Err(Error::os_limited("start the channel reactor thread", e)
                    .with_hint("the process or user is at its thread limit (RLIMIT_NPROC)"));
            }
            Ok(r)
        }
        // Another thread installed one first (a few bytes leaked, once).
        // SAFETY: as above.
        Err(other) => Ok(unsafe { &*other }),
    }
}

/// Wake `waker` once the low half of the word `word` of `region` differs from `expected`
/// (or within 50 ms in any case).
///
/// # Errors
/// The reactor thread cannot be started.
pub(super) fn register(region: &Arc<Guarded>, word: usize, expected: u32, waker: &Waker) -> Result<()> {
    let r = reactor()?;
    {
        let mut pending = r.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending
            .iter_mut()
            .find(|p| p.word == word && Arc::ptr_eq(&p.region, region) && p.waker.will_wake(waker))
        {
            Some(p) => p.expected = expected,
            None => pending.push(Registration {
                word,
                expected,
                waker: waker.clone(),
                region: Arc::clone(region),
            }),
        }
    }
    r.control.fetch_add(1, Ordering::SeqCst);
    sys::futex_wake(&r.control, 1);
    Ok(())
}

fn run(r: &'static Reactor) {
    let mut last_all = std::time::Instant::now();
    loop {
        let ctl = r.control.load(Ordering::SeqCst) as u32;
        let (due, timeout) = {
            let pending = r.pending.lock().unwrap_or_else(|e| e.into_inner());
            let due: Vec<(usize, Arc<Guarded>, u32)> = pending
                .iter()
                .take(MAX_WORDS)
                .map(|p| (p.word, Arc::clone(&p.region), p.expected))
                .collect();
            let timeout = if pending.len() > MAX_WORDS {
                std::time::Duration::from_millis(1)
            } else {
                SLICE
            };
            (due, timeout)
        };
        let mut words: Vec<(&AtomicU64, u32)> = vec![(&r.control, ctl)];
        words.extend(due.iter().map(|(w, region, e)| (region.word(*w), *e)));
        // An error (an old kernel without futex_waitv) degrades to polling every slice.
        if sys::futex_waitv(&words, timeout).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(words);
        let all = last_all.elapsed() >= SLICE;
        if all {
            last_all = std::time::Instant::now();
        }
        // Wake the futures whose word moved (all of them every slice), and forget them:
        // a future still pending registers again when polled.
        let woken: Vec<Waker> = {
            let mut pending = r.pending.lock().unwrap_or_else(|e| e.into_inner());
            let mut woken = Vec::new();
            pending.retain(|p| {
                let moved = p.word().load(Ordering::Relaxed) as u32 != p.expected;
                if all || moved {
                    woken.push(p.waker.clone());
                    false
                } else {
                    true
                }
            });
            woken
        };
        for w in woken {
            w.wake();
        }
    }
}
