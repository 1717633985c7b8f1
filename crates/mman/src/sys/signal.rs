//! The signal machinery shared by mman's two fault handlers: the SIGBUS handler that turns a
//! truncated file mapping into an error (`sys/fault.rs`) and the SIGSEGV handler that names
//! the guard page that was hit (`sys/guard.rs`).
//!
//! * [`Hook`]: a handler installed once per process for one signal (every `sigaction`
//!   checked), which remembers the disposition it replaced and hands it every signal that is
//!   not its own.
//! * [`kernel_fault`]: the one test of where a signal came from. A handler acts only on a
//!   fault the kernel raised (`si_code > 0`): a signal sent by a process with `kill(2)` or
//!   `rt_sigqueueinfo(2)` has `si_code <= 0` and an `si_addr` of the sender's choosing.
//! * [`Ranges`]: the table of address ranges a handler searches, without locks: each slot is
//!   read under a seqlock, so a handler never acts on a half-updated range.
//!
//! Async-signal-safety audit of what a handler calls here ([`kernel_fault`],
//! [`Ranges::find`], [`Ranges::mark`], [`Hook::chain`], [`die`]): loads and stores of
//! atomics, reads of `OnceLock`s set before the handler was installed, `sigaction(2)`,
//! `sigpending(2)`, `sigismember(3)`, `raise(3)` (all async-signal-safe), and a call of the
//! previous handler. No allocation, no lock, no `std` I/O.

use std::ffi::c_void;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// A handler taking a `siginfo_t` (installed with `SA_SIGINFO`).
pub type Action = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void);

/// A plain handler (installed without `SA_SIGINFO`).
type PlainAction = extern "C" fn(libc::c_int);

// ---------------------------------------------------------------------------------------
// Installing, chaining, dying.

/// mman's handler for one signal: installed once per process, chaining to the disposition it
/// replaced for every signal that is not its own.
pub struct Hook {
    sig: libc::c_int,
    /// The disposition replaced. Set before mman's handler is installed, so the handler
    /// always finds it.
    previous: OnceLock<libc::sigaction>,
    /// The outcome of the one installation: 0, or the errno of the `sigaction` that failed.
    outcome: OnceLock<i32>,
}

impl Hook {
    /// The hook for `sig`, not yet installed.
    pub const fn new(sig: libc::c_int) -> Hook {
        Hook {
            sig,
            previous: OnceLock::new(),
            outcome: OnceLock::new(),
        }
    }

    /// Install `action` with `SA_SIGINFO | SA_ONSTACK | flags` (on the alternate stack when
    /// the thread has one, so a stack overflow can be handled), once per process. Every call
    /// returns the outcome of the first: an error when a `sigaction` failed.
    pub fn install(&self, action: Action, flags: libc::c_int) -> io::Result<()> {
        let errno = *self.outcome.get_or_init(|| match self.replace(action, flags) {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(libc::EINVAL),
        });
        match errno {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Read the current disposition into `previous`, then install `action`.
    fn replace(&self, action: Action, flags: libc::c_int) -> io::Result<()> {
        let old = self.current().ok_or_else(super::errno)?;
        let _ = self.previous.set(old);
        // SAFETY: all-zero is a valid sigaction (SIG_DFL, empty mask, no flags).
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = action as *const () as libc::sighandler_t;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | flags;
        // SAFETY: initialises the mask of a struct we own.
        unsafe { libc::sigemptyset(&mut new.sa_mask) };
        // SAFETY: `new` is fully initialised and names an `extern "C"` function of the
        // SA_SIGINFO type, installed with SA_SIGINFO; `previous` is set before it can run.
        super::check(unsafe { libc::sigaction(self.sig, &new, std::ptr::null_mut()) })
    }

    /// Hand a signal that is not mman's to the disposition replaced: call the previous
    /// handler (and, for a signal a process sent, keep the disposition in place installed:
    /// see [`Hook::stay_installed`]); ignore the signal if it was ignored, unless it is a
    /// fault (returning from a fault would fault again forever); otherwise die of it as by
    /// default.
    ///
    /// # Safety
    /// Called from this hook's handler, with the `sig`, `info` and `ctx` the kernel passed it.
    pub unsafe fn chain(&self, sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
        let Some(prev) = self.previous.get() else {
            die(sig);
            return;
        };
        let handler = prev.sa_sigaction;
        // SAFETY: the kernel's siginfo (forwarded from the caller).
        let sent = unsafe { kernel_fault(info) }.is_none();
        if handler == libc::SIG_IGN {
            if sent {
                return;
            }
            die(sig);
        } else if handler == libc::SIG_DFL {
            die(sig);
        } else {
            // The disposition in place now (mman's, or a handler installed over mman's that
            // called it), to put back if the previous handler sets the default action.
            let before = if sent { self.current() } else { None };
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler was installed with SA_SIGINFO: this type.
                let f = unsafe { std::mem::transmute::<libc::sighandler_t, Action>(handler) };
                f(sig, info, ctx);
            } else {
                // SAFETY: the previous handler was installed without SA_SIGINFO: a plain one.
                let f = unsafe { std::mem::transmute::<libc::sighandler_t, PlainAction>(handler) };
                f(sig);
            }
            if let Some(before) = before {
                self.stay_installed(&before);
            }
        }
    }

    /// The disposition of the signal now, if `sigaction` can read it.
    fn current(&self) -> Option<libc::sigaction> {
        // SAFETY: all-zero is a valid sigaction; with a null new action, sigaction (async-
        // signal-safe) only writes the current one into a struct we own.
        unsafe {
            let mut now: libc::sigaction = std::mem::zeroed();
            (libc::sigaction(self.sig, std::ptr::null(), &mut now) == 0).then_some(now)
        }
    }

    /// After the previous handler ran on a signal a process sent: if it set the default
    /// action, put back the disposition that was in place before it ran (`before`: mman's
    /// handler, or a handler installed over mman's that called it, which must not be
    /// uninstalled either), unless the signal is pending (raised again to die of it). Rust's
    /// std installs such a handler (stack overflows): on a signal that is not its
    /// guard page's it "unregisters itself" by setting the default action and returns, so
    /// that a fault, raised again on return, kills. A sent signal is not raised again: the
    /// default action would only have replaced mman's handler, and the next truncation
    /// fault would kill instead of being an error. So a sent SIGBUS or SIGSEGV no longer
    /// removes mman's handler; the price is that, with std's handler beneath, a second one
    /// sent does not kill as it would without mman (a sender wanting that has SIGKILL).
    fn stay_installed(&self, before: &libc::sigaction) {
        if before.sa_sigaction == libc::SIG_DFL {
            return;
        }
        match self.current() {
            Some(now) if now.sa_sigaction == libc::SIG_DFL => {}
            _ => return,
        }
        // SAFETY: all-zero is a valid sigset_t; sigaction, sigpending and sigismember are
        // async-signal-safe and write only the structs we own.
        unsafe {
            let mut pending: libc::sigset_t = std::mem::zeroed();
            if libc::sigpending(&mut pending) != 0 || libc::sigismember(&pending, self.sig) != 0 {
                return;
            }
            libc::sigaction(self.sig, before, std::ptr::null_mut());
        }
    }
}

/// Restore the default action of `sig` and re-raise it: the signal is delivered, with its
/// default effect, when the handler returns.
pub fn die(sig: libc::c_int) {
    // SAFETY: all-zero is a valid sigaction; SIG_DFL is 0, set again for clarity.
    let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    dfl.sa_sigaction = libc::SIG_DFL;
    // SAFETY: sigaction and raise are async-signal-safe; the struct is ours.
    unsafe {
        libc::sigaction(sig, &dfl, std::ptr::null_mut());
        libc::raise(sig);
    }
}

/// A fault the kernel raised: its code (`BUS_ADRERR`, `SEGV_ACCERR`...) and address.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    /// `si_code`, always > 0.
    pub code: libc::c_int,
    /// `si_addr`: the address whose access faulted.
    pub addr: usize,
}

/// The fault the kernel raised, or `None` for a signal a process sent (`si_code <= 0`:
/// `kill`, `sigqueue`, `tgkill`), whose address is the sender's choice. Handlers act only on
/// the former.
///
/// # Safety
/// `info` is the siginfo the kernel passed to an `SA_SIGINFO` handler.
pub unsafe fn kernel_fault(info: *const libc::siginfo_t) -> Option<Fault> {
    // SAFETY: a valid siginfo (the caller's contract); si_addr is read as a plain field.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    (code > 0).then_some(Fault { code, addr })
}

// ---------------------------------------------------------------------------------------
// The table of ranges a handler searches.

/// One range: `[start, end)` and `W` words of its owner's data. `start == 0` is a free slot,
/// `usize::MAX` one being filled or moved. `seq` is odd while the fields change (a seqlock):
/// a reader uses a slot only if it read the same even `seq` before and after the fields.
/// `mark` is set by a handler and read by the owner, outside the seqlock: 0 until a
/// handler leaves a (non-zero) word there, and the first such word is kept.
struct Slot<const W: usize> {
    seq: AtomicUsize,
    start: AtomicUsize,
    end: AtomicUsize,
    data: [AtomicUsize; W],
    mark: AtomicUsize,
}

impl<const W: usize> Slot<W> {
    const fn new() -> Self {
        Slot {
            seq: AtomicUsize::new(0),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            data: [const { AtomicUsize::new(0) }; W],
            mark: AtomicUsize::new(0),
        }
    }
}

/// A range found by [`Ranges::find`], read consistently.
#[derive(Clone, Copy, Debug)]
pub struct Found<const W: usize> {
    /// Its slot, as [`Ranges::insert`] returned it.
    pub slot: usize,
    /// Its first byte.
    pub start: usize,
    /// One past its last byte.
    pub end: usize,
    /// Its owner's data.
    pub data: [usize; W],
}

/// A table of at most `N` address ranges, each with `W` words of data, that a signal
/// handler searches without locks. All-zero, so a `static` of it lives in `.bss`: the pages
/// of slots a process never reaches are never touched and cost nothing.
pub struct Ranges<const N: usize, const W: usize> {
    slots: [Slot<W>; N],
    /// One past the highest slot ever used: a search looks no further.
    high: AtomicUsize,
    /// Where the next insertion starts looking for a free slot.
    next: AtomicUsize,
}

impl<const N: usize, const W: usize> Ranges<N, W> {
    /// An empty table.
    pub const fn new() -> Self {
        Ranges {
            slots: [const { Slot::new() }; N],
            high: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
        }
    }

    /// Add `[start, end)` (`start` neither 0 nor `usize::MAX`) with `data`; returns its slot,
    /// or `None` when the table is full. The scan starts just past the slot taken last and
    /// wraps: O(1) while the table has room, not O(ranges held).
    pub fn insert(&self, start: usize, end: usize, data: [usize; W]) -> Option<usize> {
        let from = self.next.load(Ordering::Relaxed);
        for k in 0..N {
            let i = (from + k) % N;
            let slot = &self.slots[i];
            if slot
                .start
                .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.next.store((i + 1) % N, Ordering::Relaxed);
                self.high.fetch_max(i + 1, Ordering::AcqRel);
                Self::write(slot, start, end, data, false);
                return Some(i);
            }
        }
        None
    }

    /// Fill a slot under its seqlock.
    fn write(slot: &Slot<W>, start: usize, end: usize, data: [usize; W], keep_mark: bool) {
        slot.seq.fetch_add(1, Ordering::AcqRel);
        // The odd sequence before any of the stores below (a release store orders only
        // what precedes it): a reader that sees a new end or data also sees the odd
        // sequence, or a changed one on its re-check (smp_wmb in write_seqcount_begin).
        std::sync::atomic::fence(Ordering::Release);
        slot.start.store(usize::MAX, Ordering::Release);
        slot.end.store(end, Ordering::Relaxed);
        for (d, v) in slot.data.iter().zip(data) {
            d.store(v, Ordering::Relaxed);
        }
        if !keep_mark {
            slot.mark.store(0, Ordering::Relaxed);
        }
        slot.start.store(start, Ordering::Release);
        slot.seq.fetch_add(1, Ordering::AcqRel);
    }

    /// Take a range out of the searches' view while it moves: no fault is matched against
    /// the old range meanwhile.
    pub fn suspend(&self, i: usize) {
        let slot = &self.slots[i];
        slot.seq.fetch_add(1, Ordering::AcqRel);
        slot.start.store(usize::MAX, Ordering::Release);
        slot.seq.fetch_add(1, Ordering::AcqRel);
    }

    /// Move a range or change its data, keeping its mark.
    pub fn update(&self, i: usize, start: usize, end: usize, data: [usize; W]) {
        Self::write(&self.slots[i], start, end, data, true);
    }

    /// Free a slot (before the memory of its range goes away).
    pub fn remove(&self, i: usize) {
        self.slots[i].start.store(0, Ordering::Release);
    }

    /// Mark a slot with `word` (non-zero; from a handler). The first mark stays: later
    /// ones are dropped.
    pub fn mark(&self, i: usize, word: usize) {
        let _ = self.slots[i]
            .mark
            .compare_exchange(0, word, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The word a handler marked the slot with, or 0.
    #[inline]
    pub fn marked(&self, i: usize) -> usize {
        self.slots[i].mark.load(Ordering::Acquire)
    }

    /// The range holding `addr`, read consistently.
    pub fn find(&self, addr: usize) -> Option<Found<W>> {
        let high = self.high.load(Ordering::Acquire);
        self.slots[..high].iter().enumerate().find_map(|(i, s)| {
            let seq = s.seq.load(Ordering::Acquire);
            if seq % 2 == 1 {
                return None;
            }
            let start = s.start.load(Ordering::Acquire);
            let end = s.end.load(Ordering::Acquire);
            let data = std::array::from_fn(|k| s.data[k].load(Ordering::Acquire));
            let inside = start != 0 && start != usize::MAX && addr >= start && addr < end;
            (inside && s.seq.load(Ordering::Acquire) == seq).then_some(Found {
                slot: i,
                start,
                end,
                data,
            })
        })
    }
}
