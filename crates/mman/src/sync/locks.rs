//! A robust process-shared `Mutex<T>`, a `Condvar` beside it, and the init state word that
//! keeps peers from seeing them (or a `Barrier`) half-built.
//!
//! All of them are pointer-free words in shared memory (`AtomicU64`, the crate's one access
//! scheme): no list pointers a peer could rewrite and a C library would follow, no address of
//! this process's thread descriptors exposed to others. Robustness comes from the lock word
//! itself: it names its owner by TID and a token of its process image, and a waiter that
//! has slept a while checks that the owner still runs, in that image (an `exec` ends it).

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::wait::{self, Wait};
use super::{slot, ProcessShared};
use crate::error::{Error, ErrorKind, Result};
use crate::map::Mapping;
use crate::sys;
use crate::sys::sync::{owner_alive, thread_identity};

const READY: u64 = 1;
const BUSY: u64 = 1 << 63;
/// How long an opener waits for a live creator to finish initialising.
const INIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Run `init` exactly once across every process that maps `state`: the first caller
/// initialises while the others wait (on a futex, not spinning). If the initialiser dies
/// mid-way, the next opener takes over; a live initialiser that takes longer than
/// [`INIT_TIMEOUT`] is an error naming its PID.
///
/// The word: 0 (never initialised), `BUSY | pid` (being initialised by `pid`), `READY`.
/// Anything else is not an mman object, and an error.
pub(crate) fn init_once(
    state: &AtomicU64,
    what: &'static str,
    init: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let me = BUSY | sys::shm::pid() as u64;
    let deadline = Instant::now() + INIT_TIMEOUT;
    loop {
        // Acquire: a READY seen here makes the initialiser's writes visible (its Release).
        match state.load(Ordering::Acquire) {
            READY => return Ok(()),
            0 => {
                if state
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Acquire)
                    .is_ok()
                {
                    break;
                }
                if past(Some(deadline)) {
                    return Err(changing(what));
                }
            }
            s if s & BUSY != 0 && s & !BUSY <= u32::MAX as u64 => {
                let pid = (s & !BUSY) as u32;
                if !sys::shm::process_exists(pid) {
                    // The creator died half-way: nobody else will finish. Take over.
                    if state
                        .compare_exchange(s, me, Ordering::Acquire, Ordering::Acquire)
                        .is_ok()
                    {
                        break;
                    }
                    if past(Some(deadline)) {
                        return Err(changing(what));
                    }
                    continue;
                }
                if Instant::now() >= deadline {
                    return Err(Error::new(
                        ErrorKind::Os,
                        what,
                        format!("process {pid} started initialising it and has not finished after {INIT_TIMEOUT:?}"),
                    )
                    .with_hint("that process is alive but stuck; kill it, and the next opener takes over"));
                }
                let _ = sys::futex_wait(state, s as u32, Some(Duration::from_millis(10)));
            }
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    what,
                    format!("the init state word holds {other:#x}: this memory is not an mman object"),
                ))
            }
        }
    }
    // An initialiser that panics gives the object back (0), as one that fails does: left
    // at `BUSY | pid` of a process still alive, every opener would wait INIT_TIMEOUT and
    // fail, for as long as this process lives.
    let mut finish = Finish { state, to: 0 };
    let r = init();
    finish.to = if r.is_ok() { READY } else { 0 };
    drop(finish);
    r
}

/// Whether `deadline` has passed. Every loop that retries after a failed compare-and-swap
/// asks before it retries: a peer that keeps changing the word cannot keep a timed wait
/// past its deadline.
pub(crate) fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// The error of an [`init_once`] whose state word kept changing under it until the timeout.
#[cold]
fn changing(what: &'static str) -> Error {
    Error::new(
        ErrorKind::Os,
        what,
        format!("the init state word kept changing for {INIT_TIMEOUT:?}: another process keeps writing it"),
    )
    .with_hint("some process writes this memory without being an mman object's user")
}

/// Ends an [`init_once`]: stores `to` (0 unless the initialiser returned Ok) and wakes the
/// openers waiting, also when the initialiser panics.
struct Finish<'a> {
    state: &'a AtomicU64,
    to: u64,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        // Release: everything init wrote happens-before any Acquire load that sees READY.
        self.state.store(self.to, Ordering::Release);
        sys::futex_wake(self.state, u32::MAX);
    }
}

// The lock word of a Mutex. The low 32 bits are the futex word:
const TID: u64 = (1 << 30) - 1;
/// The largest TID Linux hands out (`pid_max` is at most 2^22). A lock word naming a larger
/// one names no thread: garbage, or [`ABANDONED`]; its lock is taken over at once.
const MAX_TID: u32 = 1 << 22;
/// The TID field of a lock released by a guard dropped in a panic: held by nobody alive,
/// so the next locker takes it over at once and is told, as after an owner's death.
const ABANDONED: u64 = TID;
/// Someone sleeps (or is about to) on the futex: the unlocker must wake one.
const WAITERS: u64 = 1 << 30;
/// The previous owner died holding the lock and the data was not yet declared repaired.
/// With a TID: held by the thread repairing it. Without one: unrecoverable.
const INCONSISTENT: u64 = 1 << 31;
/// The high 32 bits: the owner's token (its process image's mark, or its start time: see
/// `sys::sync::thread_identity`), so that a later thread reusing the TID, or the same
/// thread after an `exec`, is not taken for the owner.
const TOKEN_SHIFT: u32 = 32;

/// How often a waiter checks that the owner still runs: an owner that dies holding the lock
/// is noticed within about this long.
const LIVENESS_CHECK: Duration = Duration::from_millis(50);

fn tid_of(word: u64) -> u32 {
    (word & TID) as u32
}
fn token_of(word: u64) -> u32 {
    (word >> TOKEN_SHIFT) as u32
}
/// The calling thread as a lock word would name it: `(word, tid, token)`.
fn me() -> (u64, u32, u32) {
    let (tid, token) = thread_identity();
    ((token as u64) << TOKEN_SHIFT | tid as u64, tid, token)
}
fn is_free(word: u64) -> bool {
    tid_of(word) == 0 && word & INCONSISTENT == 0
}
fn is_unrecoverable(word: u64) -> bool {
    tid_of(word) == 0 && word & INCONSISTENT != 0
}

/// How [`Mutex`] was acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Got {
    Yes,
    OwnerDied,
}

/// A mutex for processes: lives in shared memory, and is robust: if the holder dies (its
/// thread ends, its process is killed, or its process calls `exec`, as glibc's robust
/// mutexes count it), the next [`lock`](Mutex::lock) succeeds within
/// about 100 ms with [`MutexGuard::owner_died`] set, so the new owner can repair the data and
/// call [`MutexGuard::make_consistent`]. If a guard whose owner died is dropped without
/// `make_consistent`, the mutex becomes unrecoverable: every later `lock` is an error.
///
/// A guard dropped while its thread panics counts as its owner's death: its copy is *not*
/// written back (a panic may come in the middle of an update; the data stays as the last
/// [`MutexGuard::write_back`], or as it was locked), and the next owner sees
/// [`MutexGuard::owner_died`] (which it clears with `make_consistent`).
///
/// The lock is one pointer-free word: the owner's TID and a token of its process image (so a
/// reused TID is not mistaken for the owner), a waiters bit and an inconsistency bit. Waiters
/// sleep on a futex and, every 50 ms, check in `/proc` that the owner still runs. The token
/// names a close-on-exec memfd each process keeps open (`mman-image`): `exec` keeps the TID
/// and start time of the process's first thread, and closes that descriptor, so a waiter
/// that finds it gone (`/proc/TID/fd`) takes the lock over. That look needs the right to
/// inspect the owner's process (the same user, as for `/proc/PID/fd` in general); a waiter
/// without it cannot tell an exec, and waits as for a live owner. A process that closes
/// descriptors it did not open (all above 2, say) makes its own locks look abandoned, as it
/// makes its channel endpoints look gone. All processes sharing a mutex must see the same
/// PID namespace, and run an mman with the same lock word.
///
/// `T` is plain data ([`bytemuck::Pod`]): another process writes it, and one that dies
/// mid-update may leave any bytes. The guard holds a **copy** of the data, read when the lock
/// is taken and written back when the guard drops (only if it was changed): a peer that
/// ignores the lock can change the bytes in shared memory, but never under a reference this
/// process holds.
///
/// ```
/// # fn main() -> mman::Result<()> {
/// use mman::sync::Mutex;
/// let shared = mman::shm::anonymous(4096)?;
/// let counter = Mutex::<u64>::open(&shared, 0, || 0)?;
/// *counter.lock()? += 1;
/// assert_eq!(*counter.lock()?, 1);
/// # Ok(()) }
/// ```
#[repr(C)]
pub struct Mutex<T> {
    /// The init state word ([`init_once`]).
    state: AtomicU64,
    /// The lock word (see the constants above).
    word: AtomicU64,
    /// Never referenced: read and written only by the crate's 8-byte atomic copies.
    data: UnsafeCell<T>,
}

// SAFETY: the data is reached only by atomic copies made while holding the lock; the words
// are atomics.
unsafe impl<T: bytemuck::Pod + Send> Sync for Mutex<T> {}

impl<T: bytemuck::Pod> Mutex<T> {
    /// The mutex at `offset` of `map`, initialised with `init()` by whichever process opens
    /// it first; the others wait for that and never see it half-built.
    ///
    /// # Errors
    /// The object does not fit or is misaligned, the mapping is not readable and writable,
    /// its file has no room for the object's pages ([`ErrorKind::StorageFull`], as
    /// [`place`](super::place)), the bytes there are not an mman object, or a live
    /// initialiser is stuck.
    pub fn open(map: &Mapping, offset: usize, init: impl FnOnce() -> T) -> Result<&Self> {
        let p = slot::<Self>(map, offset, "mutex")?;
        // SAFETY: `p` is in bounds, aligned and read-write (slot), and stays mapped as long
        // as `map` is borrowed. A `&Mutex` gives access only to atomics and to the data
        // through the UnsafeCell, never by reference.
        let m = unsafe { &*p };
        init_once(&m.state, "mutex", || {
            m.word.store(0, Ordering::Relaxed);
            m.write_data(&init());
            Ok(())
        })?;
        Ok(m)
    }

    /// Lock, waiting as long as it takes.
    ///
    /// # Errors
    /// The mutex is unrecoverable (an owner died and the next one did not call
    /// [`MutexGuard::make_consistent`]), or this thread already holds it (a wait that could
    /// never end).
    pub fn lock(&self) -> Result<MutexGuard<'_, T>> {
        self.lock_with(Wait::Adaptive)
    }

    /// [`lock`](Self::lock), spending the time before sleeping as `how` says (see
    /// [`Wait`]; `lock` is [`Wait::Adaptive`]).
    ///
    /// # Errors
    /// As [`lock`](Self::lock).
    pub fn lock_with(&self, how: Wait) -> Result<MutexGuard<'_, T>> {
        match self.acquire(None, how)? {
            Some(g) => Ok(g),
            None => Err(self.at(Error::new(ErrorKind::Os, "mutex lock", "not acquired"))),
        }
    }

    /// Lock, waiting at most `timeout` (any duration: one past what an [`Instant`] can
    /// hold waits as long as it takes); `None` if it stayed held by a live owner. A dead
    /// owner's lock is taken over, also with a zero timeout.
    ///
    /// # Errors
    /// As [`lock`](Self::lock).
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Option<MutexGuard<'_, T>>> {
        self.acquire(Instant::now().checked_add(timeout), Wait::Adaptive)
    }

    /// Lock if nobody holds it now (a dead holder's lock is taken over).
    ///
    /// # Errors
    /// As [`lock`](Self::lock).
    pub fn try_lock(&self) -> Result<Option<MutexGuard<'_, T>>> {
        let (mine, tid, token) = me();
        let s = self.word.load(Ordering::Relaxed);
        let got = if is_free(s) {
            self.word
                .compare_exchange(s, mine, Ordering::Acquire, Ordering::Relaxed)
                .ok()
                .map(|_| Got::Yes)
        } else {
            self.take_if_dead(s, mine, tid, token)?
        };
        Ok(got.map(|g| self.guard(g)))
    }

    fn acquire(&self, deadline: Option<Instant>, how: Wait) -> Result<Option<MutexGuard<'_, T>>> {
        let (mine, tid, token) = me();
        // Fast path: free and consistent.
        if self
            .word
            .compare_exchange(0, mine, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(Some(self.guard(Got::Yes)));
        }
        self.acquire_contended(mine, tid, token, deadline, how)
            .map(|g| g.map(|g| self.guard(g)))
    }

    #[cold]
    fn acquire_contended(
        &self,
        mine: u64,
        tid: u32,
        token: u32,
        deadline: Option<Instant>,
        how: Wait,
    ) -> Result<Option<Got>> {
        let mut spun = false;
        // When to look next whether the owner still runs. By the clock, not by futex waits
        // that time out: in a process whose signal handlers run more often than every
        // LIVENESS_CHECK (a profiler's timer), every wait ends early with EINTR, and a dead
        // owner would never be noticed.
        let mut next_check = Instant::now() + LIVENESS_CHECK;
        loop {
            let s = self.word.load(Ordering::Relaxed);
            if is_free(s) {
                // Taken with the waiters bit: others may be asleep behind us.
                if self
                    .word
                    .compare_exchange(s, mine | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(Some(Got::Yes));
                }
                if past(deadline) {
                    return Ok(None);
                }
                continue;
            }
            if is_unrecoverable(s) {
                return Err(self.unrecoverable());
            }
            if tid_of(s) == tid && token_of(s) == token {
                return Err(self.at(Error::new(
                    ErrorKind::InvalidInput,
                    "mutex lock",
                    "this thread already holds the mutex: the wait could never end",
                )
                .with_hint("drop the guard before locking again")));
            }
            if tid_of(s) > MAX_TID {
                // Names no thread (ABANDONED by a panic, or garbage): nobody to wait for.
                if let Some(got) = self.take_if_dead(s, mine | WAITERS, tid, token)? {
                    return Ok(Some(got));
                }
                if past(deadline) {
                    return Ok(None);
                }
                continue;
            }
            if !spun {
                // Before the first sleep, as the waiting policy says (no owner's CPU is
                // known here: the lock word holds its thread).
                spun = true;
                let plan = how.plan(wait::DEFAULT_SPIN, 0);
                wait::before_sleep(plan, deadline, || is_free(self.word.load(Ordering::Relaxed)));
                continue;
            }
            if s & WAITERS == 0
                && self
                    .word
                    .compare_exchange(s, s | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                if past(deadline) {
                    return Ok(None);
                }
                continue;
            }
            let now = Instant::now();
            let expired = deadline.is_some_and(|d| now >= d);
            if now >= next_check || expired {
                // Is the owner still there? (Also once more before giving up.)
                next_check = now + LIVENESS_CHECK;
                let w = self.word.load(Ordering::Relaxed);
                if let Some(got) = self.take_if_dead(w, mine | WAITERS, tid, token)? {
                    return Ok(Some(got));
                }
                if expired {
                    return Ok(None);
                }
            }
            let mut wait = next_check.saturating_duration_since(now);
            if let Some(d) = deadline {
                wait = wait.min(d.saturating_duration_since(now));
            }
            // Sleeps only while the word is unchanged; an unlock in between makes it return.
            // However it ends (woken, timed out, interrupted, failed), the loop looks again.
            let _ = sys::futex_wait(&self.word, (s | WAITERS) as u32, Some(wait));
        }
    }

    /// Take the lock from a dead owner; `None` if the owner lives or the word changed.
    fn take_if_dead(&self, s: u64, mine: u64, tid: u32, token: u32) -> Result<Option<Got>> {
        if is_free(s) {
            return Ok(None);
        }
        if is_unrecoverable(s) {
            return Err(self.unrecoverable());
        }
        if (tid_of(s) == tid && token_of(s) == token) || owner_alive(tid_of(s), token_of(s)) {
            return Ok(None);
        }
        let taken = self
            .word
            .compare_exchange(s, mine | INCONSISTENT, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        Ok(taken.then_some(Got::OwnerDied))
    }

    fn guard(&self, got: Got) -> MutexGuard<'_, T> {
        let mut value = T::zeroed();
        self.read_data(&mut value);
        MutexGuard {
            mutex: self,
            value,
            changed: false,
            owner_died: got == Got::OwnerDied,
            panicking: std::thread::panicking(),
            _not_send: PhantomData,
        }
    }

    fn read_data(&self, value: &mut T) {
        // SAFETY: the data field is inside the mutex, mapped and readable while `self` is
        // borrowed; every access to it is one of the crate's atomic copies.
        unsafe { sys::words::copy_out(self.data.get() as *const u8, bytemuck::bytes_of_mut(value)) }
    }

    fn write_data(&self, value: &T) {
        // SAFETY: as in read_data; the mapping is writable (checked by `slot` at open).
        unsafe { sys::words::copy_in(bytemuck::bytes_of(value), self.data.get() as *mut u8) }
    }

    /// Unlock: the word becomes free, unrecoverable (`INCONSISTENT`) or [`ABANDONED`], and
    /// a sleeper is woken.
    fn release(&self, new: u64) {
        // Release: the data written back before this is visible to the next owner.
        let s = self.word.swap(new, Ordering::Release);
        if new == INCONSISTENT {
            // Everyone waiting must learn that the mutex is unrecoverable.
            sys::futex_wake(&self.word, u32::MAX);
        } else if s & WAITERS != 0 {
            // Free: the woken one takes it. Abandoned: the woken one takes it over.
            sys::futex_wake(&self.word, 1);
            wait::note_woke();
        }
    }

    fn unrecoverable(&self) -> Error {
        self.at(
            Error::new(
                ErrorKind::Os,
                "mutex lock",
                "the mutex is unrecoverable: an owner died holding it and the next one did not call make_consistent()",
            )
            .with_hint("recreate the mutex (a fresh zeroed object)"),
        )
    }

    /// An error about this mutex names its address.
    fn at(&self, e: Error) -> Error {
        e.with_addr(self as *const Self as usize, size_of::<Self>())
    }
}

/// Holds a [`Mutex`] and a copy of its data: derefs to the copy; when dropped, writes the
/// copy back (if it was changed) and unlocks. Not `Send`: the lock names the thread that
/// took it.
pub struct MutexGuard<'a, T: bytemuck::Pod> {
    mutex: &'a Mutex<T>,
    value: T,
    changed: bool,
    owner_died: bool,
    /// Whether the thread was already panicking when it locked (a lock taken in a `Drop`
    /// that runs while unwinding): only a panic that began while the guard was held
    /// abandons it.
    panicking: bool,
    _not_send: PhantomData<*const ()>,
}

impl<T: bytemuck::Pod> MutexGuard<'_, T> {
    /// Write the guard's copy to shared memory now, while still holding the lock (dropping
    /// the guard does it too): progress that survives if this process dies before unlocking.
    pub fn write_back(&mut self) {
        self.mutex.write_data(&self.value);
        self.changed = false;
    }
    /// Whether the previous owner died holding the lock: the data may be half-updated
    /// (what it wrote back before dying, with [`write_back`](Self::write_back) or an earlier
    /// guard, is there; changes still only in its copy are lost).
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
    /// Declare the data repaired after [`owner_died`](Self::owner_died); without this, the
    /// mutex becomes unrecoverable when the guard drops.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for a check of the lock word.
    pub fn make_consistent(&mut self) -> Result<()> {
        if self.owner_died {
            self.mutex.word.fetch_and(!INCONSISTENT, Ordering::Relaxed);
            self.owner_died = false;
        }
        Ok(())
    }
}

impl<T: bytemuck::Pod> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: bytemuck::Pod> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.changed = true;
        &mut self.value
    }
}

impl<T: bytemuck::Pod> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.panicking {
            // The copy may be half-updated: not written back, and the next owner is told
            // (whether or not this owner had repaired the data: it did not finish).
            self.mutex.release(ABANDONED);
            return;
        }
        if self.changed {
            self.mutex.write_data(&self.value);
        }
        self.mutex.release(if self.owner_died { INCONSISTENT } else { 0 });
    }
}

/// A condition variable for processes, used with a [`Mutex`]: one futex sequence word, so a
/// waiter that dies leaves nothing behind. Waits are timed on CLOCK_MONOTONIC. All-zero bytes
/// are a valid condition variable.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Condvar {
    /// Bumped by every notify; a waiter sleeps while its low half is what it saw before
    /// unlocking.
    seq: AtomicU64,
}

// SAFETY: repr(C), one AtomicU64, no pointers; any value is a valid sequence number.
unsafe impl ProcessShared for Condvar {}

impl Condvar {
    /// The condition variable at `offset` of `map`.
    ///
    /// # Errors
    /// As [`place`](super::place).
    pub fn open(map: &Mapping, offset: usize) -> Result<&Self> {
        super::place(map, offset)
    }

    /// Release the guard's mutex, wait for a notification, and lock again.
    ///
    /// A guard whose lock was taken over from an owner that died
    /// ([`MutexGuard::owner_died`]) must be made consistent first: waiting releases it as it
    /// is, which makes the mutex unrecoverable, as dropping it would.
    ///
    /// # Errors
    /// As [`Mutex::lock`], when locking again.
    pub fn wait<'a, T: bytemuck::Pod>(&self, guard: MutexGuard<'a, T>) -> Result<MutexGuard<'a, T>> {
        self.wait_for(guard, None).map(|(g, _)| g)
    }

    /// [`wait`](Self::wait) for at most `timeout`; the bool says whether it timed out.
    ///
    /// # Errors
    /// As [`Mutex::lock`], when locking again.
    pub fn wait_timeout<'a, T: bytemuck::Pod>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> Result<(MutexGuard<'a, T>, bool)> {
        self.wait_for(guard, Some(timeout))
    }

    fn wait_for<'a, T: bytemuck::Pod>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Option<Duration>,
    ) -> Result<(MutexGuard<'a, T>, bool)> {
        let mutex = guard.mutex;
        // Read before unlocking: a notify after the unlock changes the word, so the futex
        // wait below returns at once instead of missing it.
        let seen = self.seq.load(Ordering::Relaxed) as u32;
        drop(guard);
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let plan = Wait::Adaptive.plan(wait::DEFAULT_SPIN, 0);
        let changed = || self.seq.load(Ordering::Relaxed) as u32 != seen;
        let woken = wait::before_sleep(plan, deadline, changed) || {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            sys::futex_wait(&self.seq, seen, left.or(timeout)).unwrap_or(true)
        };
        Ok((mutex.lock()?, !woken))
    }

    /// Wake one waiter.
    pub fn notify_one(&self) {
        self.seq.fetch_add(1, Ordering::Relaxed);
        sys::futex_wake(&self.seq, 1);
    }

    /// Wake every waiter.
    pub fn notify_all(&self) {
        self.seq.fetch_add(1, Ordering::Relaxed);
        sys::futex_wake(&self.seq, u32::MAX);
    }
}
