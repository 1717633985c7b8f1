//! Liveness the kernel tracks, for channel endpoints and handles: locks that belong to an
//! open file description and vanish when the last descriptor of it closes, which happens
//! when its process dies or execs (every descriptor here is close-on-exec).
//!
//! * An endpoint holds an OFD write lock (`F_OFD_SETLK`) on the 8 bytes of its owner word,
//!   through a description of its own: taking the lock is claiming the slot, and a slot is
//!   occupied exactly while the lock is held (`F_OFD_GETLK`). Nothing a peer writes into
//!   the shared memory can fake it.
//! * A handle holds `flock(LOCK_SH)` on a description of its own; the last handle anywhere
//!   is the one whose `LOCK_EX | LOCK_NB` succeeds.
//!
//! **Forks.** A child created by `fork` inherits the descriptors (the same descriptions,
//! so the same locks) of its parent: left open, they would keep a dead parent's endpoints
//! "alive" for as long as the child lives. So every such descriptor is registered in
//! [`Held`]'s table, and a fork handler closes them all in the child (`close` is
//! async-signal-safe; the endpoint objects the child inherited refuse to work, the fork
//! generation tells them). The table has no fixed size: it is a list of chunks, each
//! allocated by the parent when the ones before are full and never freed, which the child
//! walks with atomic loads only. A descriptor is opened and registered (and unregistered
//! and closed) while a fork waits: a fork handler run before the fork (`prepare`) waits
//! until no thread is between the two steps, so no fork from another thread catches a
//! descriptor open but not yet in the table. (A child made by a raw `clone` system call,
//! which runs no fork handler, keeps the descriptors until it execs or exits.)
//!
//! These locks are advisory and exclude nobody; they are used only to learn who is there.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, Ordering};

/// A fresh open file description of the file behind `fd` (read-write, close-on-exec).
fn reopen(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(rustix::fs::open(
        path.as_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    )?)
}

fn flock_struct(kind: libc::c_int, start: u64, len: u64) -> libc::flock {
    // SAFETY: all-zero is a valid flock; the fields that matter are set below.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind as _;
    l.l_whence = libc::SEEK_SET as _;
    l.l_start = start as _;
    l.l_len = len as _;
    l
}

/// Take an OFD write lock on `start .. start + len` of `fd`'s description, without
/// waiting. `Ok(false)` when another description holds a lock on those bytes.
pub fn try_lock_range(fd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<bool> {
    let l = flock_struct(libc::F_WRLCK, start, len);
    // SAFETY: fcntl reads the struct we own; the descriptor is borrowed and open.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &l) };
    if r == 0 {
        return Ok(true);
    }
    let e = super::errno();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Whether some description other than `fd`'s holds a lock on `start .. start + len`.
pub fn range_locked(fd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<bool> {
    let mut l = flock_struct(libc::F_WRLCK, start, len);
    // SAFETY: fcntl writes the struct we own; the descriptor is borrowed and open.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut l) };
    super::check(r)?;
    Ok(l.l_type as libc::c_int != libc::F_UNLCK)
}

/// `flock(LOCK_SH)`, waiting (only a peer deciding to unlink holds LOCK_EX, briefly).
pub fn share(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::flock(fd, rustix::fs::FlockOperation::LockShared)?)
}

/// `flock(LOCK_EX | LOCK_NB)`: whether this description is the only one with a lock.
pub fn try_exclusive(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::flock(fd, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
}

// ---------------------------------------------------------------------------------------
// The table of descriptors to close in a child created by `fork`.

/// Entries per chunk of the table.
const CHUNK: usize = 256;

/// A chunk of the table: descriptors (-1 = a free entry), and the next chunk.
struct Chunk {
    fds: [AtomicI32; CHUNK],
    next: AtomicPtr<Chunk>,
}

impl Chunk {
    const fn new() -> Chunk {
        Chunk {
            fds: [const { AtomicI32::new(-1) }; CHUNK],
            next: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

/// The first chunk; the others are allocated as needed and never freed (a child walks
/// them), so a pointer read from `next` stays valid for the life of the process.
static FIRST: Chunk = Chunk::new();

/// Put `fd` in a free entry of the table (growing it if every entry is taken); the entry.
fn register(fd: RawFd) -> &'static AtomicI32 {
    let mut chunk: &'static Chunk = &FIRST;
    loop {
        for e in &chunk.fds {
            // A plain load first: a failed compare-and-swap costs a locked instruction.
            if e.load(Ordering::Relaxed) == -1
                && e.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                return e;
            }
        }
        let mut next = chunk.next.load(Ordering::Acquire);
        if next.is_null() {
            let fresh = Box::into_raw(Box::new(Chunk::new()));
            match chunk.next.compare_exchange(
                std::ptr::null_mut(),
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => next = fresh,
                Err(theirs) => {
                    // Another thread appended one first: use it, and free ours (never
                    // published, so nobody else can see it).
                    // SAFETY: `fresh` came from Box::into_raw above and was not shared.
                    drop(unsafe { Box::from_raw(fresh) });
                    next = theirs;
                }
            }
        }
        // SAFETY: `next` points to a chunk leaked by Box::into_raw and never freed.
        chunk = unsafe { &*next };
    }
}

/// Threads between opening a descriptor and registering it (or between unregistering it
/// and closing it), in the low bits; `FORKING` while a fork waits for them or runs.
static OPENING: AtomicU32 = AtomicU32::new(0);
const FORKING: u32 = 1 << 31;

/// Run `f` (opening and registering a descriptor, or unregistering and closing one) where
/// no fork can come in the middle: it waits while a fork is under way, and a fork waits
/// for it (see [`before_fork`]).
fn unforked<R>(f: impl FnOnce() -> R) -> R {
    super::forks::watch();
    let mut s = OPENING.load(Ordering::Relaxed);
    loop {
        if s & FORKING != 0 {
            std::thread::yield_now();
            s = OPENING.load(Ordering::Relaxed);
            continue;
        }
        match OPENING.compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => s = now,
        }
    }
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            OPENING.fetch_sub(1, Ordering::Release);
        }
    }
    let _leave = Leave;
    f()
}

/// Before a fork (`pthread_atfork` prepare, in the forking thread): keep new descriptors
/// from being opened, and wait until the threads between opening and registering are done.
pub(super) fn before_fork() {
    let mut s = OPENING.load(Ordering::Relaxed);
    loop {
        if s & FORKING != 0 {
            // Another thread forks: wait for its fork to end.
            std::thread::yield_now();
            s = OPENING.load(Ordering::Relaxed);
            continue;
        }
        match OPENING.compare_exchange_weak(s, s | FORKING, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => s = now,
        }
    }
    while OPENING.load(Ordering::Acquire) != FORKING {
        std::thread::yield_now();
    }
}

/// After a fork, in the parent: descriptors may be opened again.
pub(super) fn after_fork_in_parent() {
    OPENING.fetch_and(!FORKING, Ordering::Release);
}

/// A descriptor whose locks must not outlive this process: closed on drop here, and in
/// any child created by `fork` (so the child never keeps the parent's locks alive).
#[derive(Debug)]
pub struct Held {
    fd: Option<OwnedFd>,
    entry: &'static AtomicI32,
    generation: u64,
    pid: u32,
}

impl Held {
    /// A fresh open file description of the file behind `fd` (read-write, close-on-exec),
    /// registered to be closed in children created by `fork`: opened and registered with
    /// no fork in between.
    ///
    /// # Errors
    /// The error of opening `/proc/self/fd/N`.
    pub fn reopen(fd: BorrowedFd<'_>) -> io::Result<Held> {
        unforked(|| {
            let fd = reopen(fd)?;
            let entry = register(fd.as_raw_fd());
            Ok(Held {
                fd: Some(fd),
                entry,
                generation: super::sync::fork_generation(),
                pid: super::shm::pid(),
            })
        })
    }

    /// The descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_ref().expect("held until drop").as_fd()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let fd = self.fd.take();
        if super::sync::fork_generation() != self.generation || super::shm::pid() != self.pid {
            // Inherited by a fork: the handler closed it in this process already (the
            // table entry too); do not close a number that may name another file by now.
            std::mem::forget(fd);
            return;
        }
        // Unregistered and closed with no fork in between: a child never inherits it
        // without its entry, nor an entry naming a number reused since.
        unforked(|| {
            self.entry.store(-1, Ordering::Release);
            drop(fd);
        });
    }
}

/// In a child created by `fork`: close every registered descriptor, and let descriptors be
/// opened again. Async-signal-safe (atomic loads and stores, `close`).
pub(super) fn close_all_in_child() {
    let mut chunk: *const Chunk = &FIRST;
    while !chunk.is_null() {
        // SAFETY: FIRST, or a chunk leaked by `register` and never freed.
        let c = unsafe { &*chunk };
        for e in &c.fds {
            let fd: RawFd = e.swap(-1, Ordering::AcqRel);
            if fd >= 0 {
                // SAFETY: close(2) on a descriptor this process inherited and no longer
                // uses; nothing else refers to it in the child (the owning objects forget it).
                unsafe { libc::close(fd) };
            }
        }
        chunk = c.next.load(Ordering::Acquire);
    }
    // The forking thread's `before_fork` left FORKING set; no other thread exists here.
    OPENING.store(0, Ordering::Release);
}
