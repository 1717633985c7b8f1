//! A robust process-shared `Mutex<T>`, a `Condvar` beside it, a futex `Barrier`, and the
//! init state word that keeps peers from seeing any of them half-built.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::slot;
use crate::error::{Error, ErrorKind, Result};
use crate::map::Mapping;
use crate::sys;
use crate::sys::sync::{self as raw, Locked};

const READY: u32 = 1;
const BUSY: u32 = 1 << 31;
/// How long an opener waits for a live creator to finish initialising.
const INIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Run `init` exactly once across every process that maps `state`: the first caller
/// initialises while the others wait (on a futex, not spinning). If the initialiser dies
/// mid-way, the next opener takes over; a live initialiser that takes longer than
/// [`INIT_TIMEOUT`] is an error naming its PID.
pub(crate) fn init_once(
    state: &AtomicU32,
    what: &'static str,
    init: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let me = BUSY | sys::shm::pid();
    let deadline = Instant::now() + INIT_TIMEOUT;
    loop {
        match state.load(Ordering::Acquire) {
            READY => return Ok(()),
            0 => {
                if state
                    .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    break;
                }
            }
            s if s & BUSY != 0 => {
                let pid = s & !BUSY;
                if !sys::shm::process_exists(pid) {
                    // The creator died half-way: nobody else will finish. Take over.
                    if state
                        .compare_exchange(s, me, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        break;
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
                let _ = sys::futex_wait(state, s, Some(Duration::from_millis(10)));
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
    let r = init();
    state.store(if r.is_ok() { READY } else { 0 }, Ordering::Release);
    sys::futex_wake(state, u32::MAX);
    r
}

/// A mutex for processes: lives in shared memory, and is robust: if the holder dies, the next
/// [`lock`](Mutex::lock) succeeds with [`MutexGuard::owner_died`] set, so the new owner can
/// repair the data and call [`MutexGuard::make_consistent`].
///
/// If a guard whose owner died is dropped without `make_consistent`, the mutex becomes
/// unrecoverable (glibc's `ENOTRECOVERABLE`): every later `lock` is an error. This is
/// `PTHREAD_MUTEX_ROBUST | PTHREAD_PROCESS_SHARED` underneath, so C code built on the same
/// layout can share it.
///
/// `T` is plain data ([`bytemuck::Pod`]): another process writes it, and one that dies
/// mid-update may leave any bytes.
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
    state: AtomicU32,
    raw: UnsafeCell<libc::pthread_mutex_t>,
    data: UnsafeCell<T>,
}

// SAFETY: the data is reached only through a guard that holds the process-shared lock.
unsafe impl<T: bytemuck::Pod + Send> Sync for Mutex<T> {}

impl<T: bytemuck::Pod> Mutex<T> {
    /// The mutex at `offset` of `map`, initialised with `init()` by whichever process opens
    /// it first; the others wait for that and never see it half-built.
    pub fn open(map: &Mapping, offset: usize, init: impl FnOnce() -> T) -> Result<&Self> {
        let p = slot::<Self>(map, offset, "mutex")?;
        // SAFETY: `p` is in bounds, aligned and read-write (slot). Only the state word is
        // read before initialisation, through an atomic.
        let state = unsafe { &*std::ptr::addr_of!((*p).state) };
        init_once(state, "mutex", || {
            // SAFETY: init_once gives this closure to exactly one process while the others
            // wait, so nobody uses the mutex or the data yet.
            unsafe {
                raw::mutex_init((*p).raw.get()).map_err(|e| {
                    Error::os("pthread_mutex_init", e).with_addr(p as usize, size_of::<Self>())
                })?;
                (*p).data.get().write(init());
            }
            Ok(())
        })?;
        // SAFETY: initialised (READY); every field is shared through UnsafeCell or atomics.
        Ok(unsafe { &*p })
    }

    /// Lock, waiting as long as it takes.
    pub fn lock(&self) -> Result<MutexGuard<'_, T>> {
        // SAFETY: initialised by open(); mapped while `self` lives.
        let r = unsafe { raw::mutex_lock(self.raw.get()) };
        self.guard(r.map_err(|e| self.lock_error("pthread_mutex_lock", e))?)
            .ok_or_else(|| self.at(Error::new(ErrorKind::Os, "pthread_mutex_lock", "not acquired")))
    }

    /// Lock if nobody holds it now.
    pub fn try_lock(&self) -> Result<Option<MutexGuard<'_, T>>> {
        // SAFETY: as in lock.
        let r = unsafe { raw::mutex_trylock(self.raw.get()) };
        Ok(self.guard(r.map_err(|e| self.lock_error("pthread_mutex_trylock", e))?))
    }

    /// An error about this mutex names its address.
    fn at(&self, e: Error) -> Error {
        e.with_addr(self as *const Self as usize, size_of::<Self>())
    }

    fn lock_error(&self, op: &'static str, e: std::io::Error) -> Error {
        let err = self.at(Error::os(op, e));
        if err.raw_os_error() == Some(libc::ENOTRECOVERABLE) {
            err.with_hint("an owner died and the next one did not call make_consistent(); recreate the mutex")
        } else {
            err
        }
    }

    fn guard(&self, r: Locked) -> Option<MutexGuard<'_, T>> {
        match r {
            Locked::No => None,
            r => Some(MutexGuard {
                mutex: self,
                owner_died: r == Locked::OwnerDied,
                _not_send: PhantomData,
            }),
        }
    }
}

/// Holds a [`Mutex`]; derefs to the data; unlocks when dropped. Not `Send`: a pthread
/// mutex is unlocked by the thread that locked it.
pub struct MutexGuard<'a, T: bytemuck::Pod> {
    mutex: &'a Mutex<T>,
    owner_died: bool,
    _not_send: PhantomData<*const ()>,
}

impl<T: bytemuck::Pod> MutexGuard<'_, T> {
    /// Whether the previous owner died holding the lock: the data may be half-updated.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
    /// Declare the data repaired after [`owner_died`](Self::owner_died); without this, the
    /// mutex becomes unrecoverable when the guard drops.
    pub fn make_consistent(&mut self) -> Result<()> {
        if self.owner_died {
            // SAFETY: we hold the mutex, acquired with EOWNERDEAD.
            unsafe { raw::mutex_consistent(self.mutex.raw.get()) }
                .map_err(|e| self.mutex.at(Error::os("pthread_mutex_consistent", e)))?;
            self.owner_died = false;
        }
        Ok(())
    }
}

impl<T: bytemuck::Pod> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold the lock, so no cooperating thread or process touches the data.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T: bytemuck::Pod> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref, and `&mut self` makes the borrow unique.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T: bytemuck::Pod> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this thread holds the mutex.
        unsafe { raw::mutex_unlock(self.mutex.raw.get()) };
    }
}

/// A condition variable for processes, used with a [`Mutex`]; waits are timed on
/// CLOCK_MONOTONIC. A waiter that dies while waiting can leave glibc's condition variable
/// needing one extra notify; prefer `notify_all` when processes may die.
#[repr(C)]
pub struct Condvar {
    state: AtomicU32,
    raw: UnsafeCell<libc::pthread_cond_t>,
}

// SAFETY: a process-shared pthread condvar is made for concurrent use.
unsafe impl Sync for Condvar {}

impl Condvar {
    /// The condition variable at `offset` of `map`, initialised once.
    pub fn open(map: &Mapping, offset: usize) -> Result<&Self> {
        let p = slot::<Self>(map, offset, "condvar")?;
        // SAFETY: in bounds, aligned, read-write (slot); only the atomic is read first.
        let state = unsafe { &*std::ptr::addr_of!((*p).state) };
        init_once(state, "condvar", || {
            // SAFETY: one process initialises while the others wait.
            unsafe { raw::cond_init((*p).raw.get()) }
                .map_err(|e| Error::os("pthread_cond_init", e).with_addr(p as usize, size_of::<Self>()))
        })?;
        // SAFETY: initialised.
        Ok(unsafe { &*p })
    }

    /// Release the guard's mutex, wait for a notification, and lock again.
    pub fn wait<'a, T: bytemuck::Pod>(&self, guard: MutexGuard<'a, T>) -> Result<MutexGuard<'a, T>> {
        self.wait_until(guard, None).map(|(g, _)| g)
    }

    /// [`wait`](Self::wait) for at most `timeout`; the bool says whether it timed out.
    pub fn wait_timeout<'a, T: bytemuck::Pod>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> Result<(MutexGuard<'a, T>, bool)> {
        let deadline = raw::monotonic_deadline(timeout);
        self.wait_until(guard, Some(&deadline))
    }

    fn wait_until<'a, T: bytemuck::Pod>(
        &self,
        mut guard: MutexGuard<'a, T>,
        deadline: Option<&libc::timespec>,
    ) -> Result<(MutexGuard<'a, T>, bool)> {
        // SAFETY: initialised condvar; the guard proves this thread holds the mutex.
        match unsafe { raw::cond_wait(self.raw.get(), guard.mutex.raw.get(), deadline) } {
            Ok(Locked::Yes) => Ok((guard, false)),
            Ok(Locked::No) => Ok((guard, true)),
            Ok(Locked::OwnerDied) => {
                guard.owner_died = true;
                Ok((guard, false))
            }
            Err(e) => {
                let err = guard.mutex.lock_error("pthread_cond_wait", e);
                // The mutex was not re-acquired: the guard must not unlock it.
                std::mem::forget(guard);
                Err(err)
            }
        }
    }

    /// Wake one waiter.
    pub fn notify_one(&self) {
        // SAFETY: initialised condvar.
        unsafe { raw::cond_notify(self.raw.get(), false) }
    }

    /// Wake every waiter.
    pub fn notify_all(&self) {
        // SAFETY: initialised condvar.
        unsafe { raw::cond_notify(self.raw.get(), true) }
    }
}

/// A barrier for `n` processes (or threads): each [`wait`](Barrier::wait) blocks until `n`
/// have arrived, then all go on, and it is ready for the next round. Futex-based.
#[repr(C)]
pub struct Barrier {
    state: AtomicU32,
    n: AtomicU32,
    arrived: AtomicU32,
    generation: AtomicU32,
}

// SAFETY: repr(C), atomics only, no pointers. (Not ProcessShared: it needs its count set
// through `open` before use.)
unsafe impl Sync for Barrier {}

impl Barrier {
    /// The barrier for `n` participants at `offset` of `map`, initialised once.
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
            b.n.store(n, Ordering::Relaxed);
            b.arrived.store(0, Ordering::Relaxed);
            Ok(())
        })?;
        if b.n.load(Ordering::Relaxed) != n {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "barrier",
                format!(
                    "the barrier here is for {} participants, not {n}",
                    b.n.load(Ordering::Relaxed)
                ),
            ));
        }
        Ok(b)
    }

    /// Wait for all participants. Returns `true` in exactly one of them (the last to arrive).
    pub fn wait(&self) -> bool {
        let gen = self.generation.load(Ordering::Acquire);
        let n = self.n.load(Ordering::Relaxed);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == n {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            sys::futex_wake(&self.generation, u32::MAX);
            return true;
        }
        while self.generation.load(Ordering::Acquire) == gen {
            let _ = sys::futex_wait(&self.generation, gen, None);
        }
        false
    }
}
