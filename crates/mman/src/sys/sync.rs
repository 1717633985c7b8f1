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

/// The name of the memfd that marks this process image (see [`thread_identity`]).
const MARK_NAME: &str = "mman-image";
/// The token's high bits: the mark's descriptor number, or [`NO_MARK`].
const MARK_SHIFT: u32 = 20;
/// The token's low bits: the low bits of the mark's inode XOR the start time, or of the
/// start time.
const LOW: u32 = (1 << MARK_SHIFT) - 1;
/// The descriptor field of a token without a mark (none could be made, or its number did
/// not fit): the low bits are then the thread's start time, as before marks.
const NO_MARK: u32 = (1 << (32 - MARK_SHIFT)) - 1;

/// This process image's mark: a close-on-exec memfd named `mman-image`, made once and
/// kept open, as (descriptor number, inode). An `exec` closes it (the new image has none,
/// or a new one with another inode), so a lock named by it is held by nobody after an
/// exec; a child created by `fork` inherits it (its threads have TIDs of their own).
/// `None` when it cannot be made, or its number does not fit in a token.
fn image_mark() -> Option<(u32, u64)> {
    static MARK: std::sync::OnceLock<Option<(u32, u64)>> = std::sync::OnceLock::new();
    *MARK.get_or_init(|| {
        use std::os::fd::AsRawFd;
        let fd = rustix::fs::memfd_create(MARK_NAME, rustix::fs::MemfdFlags::CLOEXEC).ok()?;
        let n = fd.as_raw_fd() as u32;
        if n >= NO_MARK {
            return None;
        }
        let ino = rustix::fs::fstat(&fd).ok()?.st_ino as u64;
        // Kept open for the life of this process image.
        std::mem::forget(fd);
        Some((n, ino))
    })
}

/// The inode of the image mark at descriptor `fd` of task `tid` (through
/// `/proc/TID/fd/FD`): `Ok(None)` when there is no such descriptor or it is not a mark
/// (the task's process execed, or it is another process); an error when it cannot be
/// looked at (another user's process, `/proc` hidden).
fn mark_of(tid: u32, fd: u32) -> io::Result<Option<u64>> {
    let path = format!("/proc/{tid}/fd/{fd}");
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH);
    let link = match std::fs::read_link(&path) {
        Ok(l) => l,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    if link.as_os_str() != format!("/memfd:{MARK_NAME} (deleted)").as_str() {
        return Ok(None);
    }
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(&path) {
        Ok(m) => Ok(Some(m.ino())),
        Err(e) if gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The calling thread's identity: its TID and a 32-bit token that tells this thread of
/// this process image from a later thread that reuses the TID, and from this same thread
/// after an `exec` (which keeps the TID of the thread that calls it, and the start time,
/// of the process's first thread). The token is the image mark's descriptor number (12
/// bits) and the low 20 bits of its inode XOR the thread's start time (clock ticks since
/// boot, from `/proc/TID/stat`), so that both a new image and a new thread of the same
/// image change it (see `image_mark`); without a mark, the low 20 bits of the start time.
/// Cached per thread; a fork invalidates the cache.
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
        let start = match task_state(tid) {
            Ok(Some((_, start))) => Some(start as u32),
            _ => None,
        };
        let token = match (image_mark(), start) {
            (Some((fd, ino)), Some(start)) => fd << MARK_SHIFT | ((ino as u32 ^ start) & LOW),
            // Without a start time, no mark either: a token of 0 low bits is the TID alone.
            (_, start) => NO_MARK << MARK_SHIFT | (start.unwrap_or(0) & LOW),
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

/// Whether the thread that took a lock as (`tid`, `token`) still runs in the process image
/// that took it. A TID that no longer exists, a zombie, a TID reused by another thread,
/// and a process that has called `exec` since (its image mark is gone, or another) are
/// dead. When `/proc` cannot tell (not mounted, hidden, another user's descriptors), the
/// owner is taken to be alive: a lock is never stolen from a thread that may still hold it.
pub fn owner_alive(tid: u32, token: u32) -> bool {
    if tid == 0 || tid > (1 << 22) {
        // Not a TID Linux hands out (pid_max is at most 2^22): garbage.
        return false;
    }
    match task_state(tid) {
        Ok(None) => false,
        Ok(Some((b'Z' | b'X' | b'x', _))) => false,
        Ok(Some((_, start))) => match token >> MARK_SHIFT {
            // No mark; start time 0: the owner could not read it, its TID alone must do.
            NO_MARK => token & LOW == 0 || start as u32 & LOW == token & LOW,
            fd => match mark_of(tid, fd) {
                Ok(Some(ino)) => (ino as u32 ^ start as u32) & LOW == token & LOW,
                Ok(None) => false,
                Err(_) => true,
            },
        },
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
