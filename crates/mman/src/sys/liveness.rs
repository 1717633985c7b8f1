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
//! A child created by `fork` inherits the descriptors (the same descriptions) of its
//! parent's endpoints: they are closed in the child by a fork handler (`close` is
//! async-signal-safe), so a dead parent's locks go with it. The endpoint objects the child
//! inherited refuse to work (the fork generation tells them).
//!
//! These locks are advisory and exclude nobody; they are used only to learn who is there.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// A fresh open file description of the file behind `fd` (read-write, close-on-exec).
pub fn reopen(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
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

/// Descriptors to close in a child created by `fork` (0 = a free entry).
static HELD: [AtomicI32; 1024] = [const { AtomicI32::new(-1) }; 1024];

/// A descriptor whose locks must not outlive this process: closed on drop here, and in
/// any child created by `fork` (so the child never keeps the parent's locks alive).
#[derive(Debug)]
pub struct Held {
    fd: Option<OwnedFd>,
    entry: Option<usize>,
    generation: u64,
}

impl Held {
    /// Register `fd`. With every entry taken (1024 endpoints in one process), the
    /// descriptor is still held, but a forked child keeps it open (until it execs or exits).
    pub fn new(fd: OwnedFd) -> Held {
        let generation = super::sync::fork_generation();
        let raw = fd.as_raw_fd();
        let entry = HELD.iter().position(|e| {
            e.compare_exchange(-1, raw, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        Held {
            fd: Some(fd),
            entry,
            generation,
        }
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
        if super::sync::fork_generation() != self.generation && self.entry.is_some() {
            // Inherited by a fork: the handler closed it in this process already; do not
            // close a number that may name another file by now.
            std::mem::forget(fd);
            return;
        }
        if let Some(i) = self.entry {
            HELD[i].store(-1, Ordering::Release);
        }
        drop(fd);
    }
}

/// In a child created by `fork`: close every registered descriptor. Async-signal-safe
/// (atomic loads and stores, `close`).
pub(super) fn close_all_in_child() {
    for e in HELD.iter() {
        let fd: RawFd = e.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: close(2) on a descriptor this process inherited and no longer uses;
            // nothing else refers to it in the child (the owning objects forget it).
            unsafe { libc::close(fd) };
        }
    }
}
