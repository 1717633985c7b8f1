//! What `mman::sync` needs from the system besides futexes: thread identities and their
//! liveness (for the pointer-free robust `Mutex`), and glibc's POSIX semaphores behind
//! `PosixSemaphore` and `NamedSemaphore`. Every semaphore function takes a pointer into
//! shared memory; the callers guarantee it is mapped, aligned and initialised as the
//! function says.

use std::cell::Cell;
use std::io;
use std::time::Duration;

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

// ---------------------------------------------------------------------------------------
// Who holds a lock: thread identities that survive PID reuse, and their liveness.

/// How many times this process's ancestry forked (see [`super::forks::generation`]).
#[cfg(feature = "channel")]
pub fn fork_generation() -> u64 {
    super::forks::generation()
}

/// The calling thread's identity: its TID and a token, the low 32 bits of its start time
/// (clock ticks since boot, from `/proc/thread-self/stat`), which tells a thread from a
/// later one that reuses its TID. Cached per thread; a fork invalidates the cache.
pub fn thread_identity() -> (u32, u32) {
    thread_local! {
        static ME: Cell<(u64, u32, u32)> = const { Cell::new((u64::MAX, 0, 0)) };
    }
    ME.with(|me| {
        let forks = super::forks::generation();
        let (seen, tid, token) = me.get();
        if seen == forks {
            return (tid, token);
        }
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        let token = match task_state(tid) {
            Ok(Some((_, start))) => start as u32,
            _ => 0,
        };
        me.set((forks, tid, token));
        (tid, token)
    })
}

/// The state letter and start time of task `tid` (a thread or a process) from
/// `/proc/TID/stat`; `Ok(None)` when there is no such task.
fn task_state(tid: u32) -> io::Result<Option<(u8, u64)>> {
    let stat = match std::fs::read(format!("/proc/{tid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e),
    };
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/TID/stat");
    let close = stat.iter().rposition(|&b| b == b')').ok_or_else(bad)?;
    let rest = std::str::from_utf8(&stat[close + 1..]).map_err(|_| bad())?;
    let mut fields = rest.split_whitespace();
    let state = fields.next().and_then(|f| f.bytes().next()).ok_or_else(bad)?;
    let start = fields.nth(18).and_then(|f| f.parse().ok()).ok_or_else(bad)?;
    Ok(Some((state, start)))
}

/// Whether the thread that took a lock as (`tid`, `token`) still runs. A TID that no longer
/// exists, a zombie, or a TID reused by a thread started at another time is dead. When
/// `/proc` cannot tell (not mounted, hidden), the owner is taken to be alive: a lock is never
/// stolen from a thread that may still hold it.
pub fn owner_alive(tid: u32, token: u32) -> bool {
    if tid == 0 || tid > (1 << 22) {
        // Not a TID Linux hands out (pid_max is at most 2^22): garbage.
        return false;
    }
    match task_state(tid) {
        Ok(None) => false,
        // Token 0: the owner could not read its own start time; its TID alone must do.
        Ok(Some((state, start))) => {
            !matches!(state, b'Z' | b'X' | b'x') && (token == 0 || start as u32 == token)
        }
        Err(_) => true,
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

/// `sem_init(sem, 1, value)`.
///
/// # Safety
/// `s` points to writable memory for a `sem_t` that no process uses yet.
pub unsafe fn sem_init(s: *mut libc::sem_t, value: u32) -> io::Result<()> {
    // SAFETY: per the contract.
    super::check(unsafe { libc::sem_init(s, 1, value) })
}

/// `sem_post`.
///
/// # Safety
/// `s` is an initialised semaphore, mapped for the whole call.
pub unsafe fn sem_post(s: *mut libc::sem_t) -> io::Result<()> {
    // SAFETY: per the contract.
    super::check(unsafe { libc::sem_post(s) })
}

/// How long [`sem_wait`] waits for a permit.
#[derive(Clone, Copy)]
pub enum SemWait<'a> {
    /// Not at all: `sem_trywait`.
    Try,
    /// As long as it takes: `sem_wait`.
    Forever,
    /// Until this absolute CLOCK_MONOTONIC deadline (see [`monotonic_deadline`]):
    /// `sem_clockwait`.
    Until(&'a libc::timespec),
}

/// Take a permit, waiting as `how` says (an interrupted wait is resumed: EINTR is retried).
/// Returns whether a permit was taken: always true for [`SemWait::Forever`].
///
/// # Safety
/// As [`sem_post`].
pub unsafe fn sem_wait(s: *mut libc::sem_t, how: SemWait<'_>) -> io::Result<bool> {
    loop {
        // SAFETY: per the contract.
        let r = unsafe {
            match how {
                SemWait::Try => libc::sem_trywait(s),
                SemWait::Forever => libc::sem_wait(s),
                SemWait::Until(deadline) => sem_clockwait(s, libc::CLOCK_MONOTONIC, deadline),
            }
        };
        if r == 0 {
            return Ok(true);
        }
        let e = super::errno();
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
        Err(super::errno())
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
    super::check(unsafe { libc::sem_unlink(c.as_ptr()) })
}

/// Whether the bytes of a `sem_t` are a process-shared glibc semaphore: glibc keeps
/// `FUTEX_PRIVATE_FLAG` (128) in the 32-bit field at byte 8 when `pshared` was 1, and 0 for a
/// process-private one (so all-zero bytes are private, and their wake-ups stay in-process).
pub fn sem_is_shared(image: &[u8]) -> bool {
    image.len() >= 12 && image[8..12] == 128u32.to_ne_bytes()
}

/// Check `/dev/shm/sem.NAME` before glibc's `sem_open` maps it: a regular file owned by this
/// user, writable by nobody else, holding a whole `sem_t`. A missing file is fine when it is
/// to be created (glibc creates it atomically, mode 0600 here).
pub fn check_sem_file(name: &str, create: bool) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = format!("/dev/shm/sem.{}", name.trim_start_matches('/'));
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => return Ok(()),
        Err(e) => return Err(e),
    };
    let m = f.metadata()?;
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{path}: {why}"),
        ))
    };
    if !m.file_type().is_file() {
        return refuse("not a regular file".into());
    }
    let euid = rustix::process::geteuid().as_raw();
    if m.uid() != euid {
        return refuse(format!("owned by uid {}, not {euid}", m.uid()));
    }
    if m.mode() & 0o022 != 0 {
        return refuse(format!("mode {:04o} lets others write it", m.mode() & 0o7777));
    }
    if m.len() < std::mem::size_of::<libc::sem_t>() as u64 {
        return refuse(format!("{} bytes, too short for a sem_t", m.len()));
    }
    Ok(())
}
