//! glibc's process-shared pthread objects and POSIX semaphores, behind `mman::sync`'s
//! `Mutex`, `Condvar` and `PosixSemaphore`. Every function takes a pointer into shared
//! memory; the callers guarantee it is mapped, aligned and initialised as the function says.

use std::io;
use std::time::Duration;

/// What a lock operation on a robust mutex found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locked {
    /// Acquired normally.
    Yes,
    /// Acquired, but the previous owner died holding it (`EOWNERDEAD`).
    OwnerDied,
    /// Not acquired (try-lock found it held, or a timed wait expired).
    No,
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

fn locked(r: libc::c_int) -> io::Result<Locked> {
    match r {
        0 => Ok(Locked::Yes),
        libc::EOWNERDEAD => Ok(Locked::OwnerDied),
        libc::EBUSY | libc::ETIMEDOUT => Ok(Locked::No),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// CLOCK_MONOTONIC now plus `d`, as an absolute deadline.
pub fn monotonic_deadline(d: Duration) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let mut sec = now
        .tv_sec
        .saturating_add(d.as_secs().min(i64::MAX as u64 / 2) as libc::time_t);
    let mut nsec = now.tv_nsec + d.subsec_nanos() as libc::c_long;
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// Initialise a process-shared, robust mutex in place.
///
/// # Safety
/// `m` points to writable memory for a `pthread_mutex_t` that no process uses yet.
pub unsafe fn mutex_init(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    // SAFETY: the attr is ours, initialised before use and destroyed after; `m` is the
    // caller's (contract).
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        check(libc::pthread_mutexattr_init(&mut attr))?;
        let r = (|| {
            check(libc::pthread_mutexattr_setpshared(
                &mut attr,
                libc::PTHREAD_PROCESS_SHARED,
            ))?;
            check(libc::pthread_mutexattr_setrobust(
                &mut attr,
                libc::PTHREAD_MUTEX_ROBUST,
            ))?;
            check(libc::pthread_mutex_init(m, &attr))
        })();
        libc::pthread_mutexattr_destroy(&mut attr);
        r
    }
}

/// `pthread_mutex_lock`.
///
/// # Safety
/// `m` is an initialised mutex from [`mutex_init`], mapped for the whole call.
pub unsafe fn mutex_lock(m: *mut libc::pthread_mutex_t) -> io::Result<Locked> {
    // SAFETY: per the contract.
    locked(unsafe { libc::pthread_mutex_lock(m) })
}

/// `pthread_mutex_trylock`.
///
/// # Safety
/// As [`mutex_lock`].
pub unsafe fn mutex_trylock(m: *mut libc::pthread_mutex_t) -> io::Result<Locked> {
    // SAFETY: per the contract.
    locked(unsafe { libc::pthread_mutex_trylock(m) })
}

/// `pthread_mutex_unlock`.
///
/// # Safety
/// As [`mutex_lock`], and the calling thread holds the mutex.
pub unsafe fn mutex_unlock(m: *mut libc::pthread_mutex_t) {
    // SAFETY: per the contract; unlocking a held mutex cannot fail.
    unsafe { libc::pthread_mutex_unlock(m) };
}

/// `pthread_mutex_consistent`: the new owner repaired what the dead owner left.
///
/// # Safety
/// As [`mutex_unlock`], after a lock that returned [`Locked::OwnerDied`].
pub unsafe fn mutex_consistent(m: *mut libc::pthread_mutex_t) -> io::Result<()> {
    // SAFETY: per the contract.
    check(unsafe { libc::pthread_mutex_consistent(m) })
}

/// Initialise a process-shared condition variable timed on CLOCK_MONOTONIC.
///
/// # Safety
/// `c` points to writable memory for a `pthread_cond_t` that no process uses yet.
pub unsafe fn cond_init(c: *mut libc::pthread_cond_t) -> io::Result<()> {
    // SAFETY: the attr is ours; `c` is the caller's (contract).
    unsafe {
        let mut attr: libc::pthread_condattr_t = std::mem::zeroed();
        check(libc::pthread_condattr_init(&mut attr))?;
        let r = (|| {
            check(libc::pthread_condattr_setpshared(
                &mut attr,
                libc::PTHREAD_PROCESS_SHARED,
            ))?;
            check(libc::pthread_condattr_setclock(&mut attr, libc::CLOCK_MONOTONIC))?;
            check(libc::pthread_cond_init(c, &attr))
        })();
        libc::pthread_condattr_destroy(&mut attr);
        r
    }
}

/// `pthread_cond_wait`, or `pthread_cond_timedwait` until `deadline` (monotonic).
///
/// # Safety
/// `c` from [`cond_init`], `m` from [`mutex_init`] and held by the caller.
pub unsafe fn cond_wait(
    c: *mut libc::pthread_cond_t,
    m: *mut libc::pthread_mutex_t,
    deadline: Option<&libc::timespec>,
) -> io::Result<Locked> {
    // SAFETY: per the contract.
    let r = unsafe {
        match deadline {
            None => libc::pthread_cond_wait(c, m),
            Some(d) => libc::pthread_cond_timedwait(c, m, d),
        }
    };
    // The mutex is held again in every outcome but an error; ETIMEDOUT means "not signalled".
    match r {
        libc::ETIMEDOUT => Ok(Locked::No),
        r => locked(r),
    }
}

/// `pthread_cond_signal` (`all`: `pthread_cond_broadcast`).
///
/// # Safety
/// `c` from [`cond_init`].
pub unsafe fn cond_notify(c: *mut libc::pthread_cond_t, all: bool) {
    // SAFETY: per the contract; these cannot fail on an initialised condvar.
    unsafe {
        if all {
            libc::pthread_cond_broadcast(c);
        } else {
            libc::pthread_cond_signal(c);
        }
    }
}

extern "C" {
    // glibc 2.30+; not in the libc crate.
    fn sem_clockwait(
        sem: *mut libc::sem_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

fn errno_result(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `sem_init(sem, 1, value)`.
///
/// # Safety
/// `s` points to writable memory for a `sem_t` that no process uses yet.
pub unsafe fn sem_init(s: *mut libc::sem_t, value: u32) -> io::Result<()> {
    // SAFETY: per the contract.
    errno_result(unsafe { libc::sem_init(s, 1, value) })
}

/// `sem_post`.
///
/// # Safety
/// `s` is an initialised semaphore, mapped for the whole call.
pub unsafe fn sem_post(s: *mut libc::sem_t) -> io::Result<()> {
    // SAFETY: per the contract.
    errno_result(unsafe { libc::sem_post(s) })
}

/// `sem_wait` (retried on EINTR), `sem_trywait` (`deadline` = now), or `sem_clockwait` on
/// CLOCK_MONOTONIC. Returns whether a permit was taken.
///
/// # Safety
/// As [`sem_post`].
pub unsafe fn sem_wait(s: *mut libc::sem_t, how: Option<Option<&libc::timespec>>) -> io::Result<bool> {
    loop {
        // SAFETY: per the contract.
        let r = unsafe {
            match how {
                None => libc::sem_wait(s),
                Some(None) => libc::sem_trywait(s),
                Some(Some(d)) => sem_clockwait(s, libc::CLOCK_MONOTONIC, d),
            }
        };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::ETIMEDOUT) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// `sem_getvalue`.
///
/// # Safety
/// As [`sem_post`].
pub unsafe fn sem_value(s: *mut libc::sem_t) -> i32 {
    let mut v = 0;
    // SAFETY: per the contract; `v` is ours.
    unsafe { libc::sem_getvalue(s, &mut v) };
    v
}

/// `sem_open(name, O_CREAT, 0600, value)` or `sem_open(name, 0)`.
pub fn sem_open(name: &str, create: bool, value: u32) -> io::Result<*mut libc::sem_t> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid C string; glibc returns SEM_FAILED or a mapping it owns.
    let s = unsafe {
        if create {
            libc::sem_open(
                c.as_ptr(),
                libc::O_CREAT,
                0o600 as libc::c_uint,
                value as libc::c_uint,
            )
        } else {
            libc::sem_open(c.as_ptr(), 0)
        }
    };
    if s == libc::SEM_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(s)
    }
}

/// `sem_close`.
///
/// # Safety
/// `s` came from [`sem_open`] and is not used afterwards.
pub unsafe fn sem_close(s: *mut libc::sem_t) {
    // SAFETY: per the contract.
    unsafe { libc::sem_close(s) };
}

/// `sem_unlink`.
pub fn sem_unlink(name: &str) -> io::Result<()> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid C string.
    errno_result(unsafe { libc::sem_unlink(c.as_ptr()) })
}
