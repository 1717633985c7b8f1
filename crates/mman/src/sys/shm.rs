//! System calls behind `mman::shm`: POSIX shared-memory objects, memfd and seals, and
//! descriptor passing over Unix sockets.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::fs::Mode;

/// `shm_open(O_CREAT | O_EXCL | O_RDWR)`, then `fchmod` so the mode is exactly `mode`
/// whatever the umask. (`O_EXCL` already refuses any name that exists, a planted symbolic
/// link included.)
pub fn shm_create(name: &str, mode: u32) -> io::Result<OwnedFd> {
    use rustix::shm::OFlags;
    let fd = rustix::shm::open(
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | super::os::SHM_OPEN_FLAGS,
        Mode::from_raw_mode(mode as _),
    )?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode as _))?;
    Ok(fd)
}

/// `shm_open(O_RDWR)` or `shm_open(O_RDONLY)` of an existing object, never following a
/// symbolic link nor waiting on a FIFO (see `os::SHM_OPEN_FLAGS`).
pub fn shm_open(name: &str, write: bool) -> io::Result<OwnedFd> {
    use rustix::shm::OFlags;
    let flags = if write { OFlags::RDWR } else { OFlags::RDONLY };
    Ok(rustix::shm::open(
        name,
        flags | super::os::SHM_OPEN_FLAGS,
        Mode::empty(),
    )?)
}

/// `shm_unlink`.
pub fn shm_unlink(name: &str) -> io::Result<()> {
    Ok(rustix::shm::unlink(name)?)
}

/// Give the object `len` bytes of real backing store now (`fallocate` on Linux, so a full
/// `/dev/shm` is `ENOSPC` here rather than SIGBUS later), or at least the size elsewhere.
pub use super::os::allocate;

/// `ftruncate`.
pub fn set_len(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    Ok(rustix::fs::ftruncate(fd, len)?)
}

/// Owner, permission bits and size of an open object.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub uid: u32,
    pub mode: u32,
    pub size: u64,
    pub regular: bool,
}

/// `fstat` for ownership checks.
pub fn owner(fd: BorrowedFd<'_>) -> io::Result<Owner> {
    let st = rustix::fs::fstat(fd)?;
    Ok(Owner {
        uid: st.st_uid,
        mode: st.st_mode as u32 & 0o7777,
        size: st.st_size as u64,
        regular: rustix::fs::FileType::from_raw_mode(st.st_mode as _) == rustix::fs::FileType::RegularFile,
    })
}

/// This process's effective user id.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// This process's id.
pub fn pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// The start time of a process (field 22 of `/proc/PID/stat`, in clock ticks since boot):
/// with the PID it names one process, even after the PID is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid` exists (`kill(pid, 0)`: EPERM still means it exists). The PIDs
/// asked about come from memory or tags others can write: 0 and anything past `i32::MAX`
/// name no process (as an `i32`, `kill` would take them for process groups, and rustix's
/// `Pid::from_raw` asserts a PID is positive).
#[cfg(all(linux_like, feature = "sync"))]
pub fn process_exists(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return false;
    };
    match rustix::process::test_kill_process(p) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}

/// Record a small attribute on the object (a `user.` extended attribute; tmpfs has them
/// since Linux 6.6). Best effort elsewhere (`ENOTSUP`).
pub fn set_tag(fd: BorrowedFd<'_>, key: &str, value: &[u8]) -> io::Result<()> {
    super::os::set_xattr(fd, key, value)
}

/// Read an attribute written by [`set_tag`].
pub fn tag(fd: BorrowedFd<'_>, key: &str) -> Option<Vec<u8>> {
    super::os::xattr(fd, key)
}

/// memfd objects and their seals (`F_SEAL_*`; `ENOSYS` where there are none).
pub use super::os::seals;

/// Credentials (pid, uid, gid) of the process at the other end of a Unix socket
/// (`SO_PEERCRED`; `ENOSYS` where there is none).
pub use super::os::peer_credentials;

/// Send `payload` and one descriptor over a Unix socket (`SCM_RIGHTS`).
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>, payload: &[u8]) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::mem::MaybeUninit;
    let fds = [fd];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    if !cmsg.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
    }
    let iov = [io::IoSlice::new(payload)];
    loop {
        match rustix::net::sendmsg(sock, &iov, &mut cmsg, SendFlags::empty()) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map(|_| ()).map_err(Into::into),
        }
    }
}

/// Receive a payload (into `buf`) and at most one descriptor sent by [`send_fd`].
pub fn recv_fd(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    use std::mem::MaybeUninit;
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [io::IoSliceMut::new(buf)];
    // Received descriptors close on exec (atomically where the platform can).
    let recv_flags = super::os::RECV_CLOEXEC.unwrap_or(RecvFlags::empty());
    let got = loop {
        match rustix::net::recvmsg(sock, &mut iov, &mut cmsg, recv_flags) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r?,
        }
    };
    let mut fd = None;
    for msg in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = msg {
            for f in fds {
                // Keep the first; any extra is closed when dropped.
                if fd.is_none() {
                    if super::os::RECV_CLOEXEC.is_none() {
                        let _ = rustix::io::fcntl_setfd(&f, rustix::io::FdFlags::CLOEXEC);
                    }
                    fd = Some(f);
                }
            }
        }
    }
    Ok((got.bytes, fd))
}

/// The size of `/dev/shm` and the bytes free there, in bytes.
pub fn capacity() -> Option<(u64, u64)> {
    let st = rustix::fs::statvfs("/dev/shm").ok()?;
    Some((st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize))
}

/// Open, read-only, the file that process `pid` has open as descriptor `fd`
/// (`/proc/PID/fd/FD`): how a receiver takes a sealed memfd a sender keeps open for it. The
/// kernel allows it only to a process that may inspect `pid` (the same user, in practice).
#[cfg(all(linux_like, feature = "channel"))]
pub fn open_peer_fd(pid: u32, fd: u32) -> io::Result<OwnedFd> {
    let path = format!("/proc/{pid}/fd/{fd}");
    Ok(rustix::fs::open(
        path.as_str(),
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::CLOEXEC
            | rustix::fs::OFlags::NOCTTY
            | rustix::fs::OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
    )?)
}

/// The real uid of process `pid` (the owner of `/proc/PID`), if it exists.
#[cfg(all(linux_like, feature = "channel"))]
pub fn process_uid(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}")).ok().map(|m| m.uid())
}

/// The byte, far past any object's end, on which every mman handle of a named object holds
/// an OFD read lock (on its own open file description) while it lives: the kernel drops it
/// when the last descriptor of that description closes, so when its process dies or execs
/// (shm_open's descriptors close on exec). Locks past the end of a file are allowed and
/// cover nothing that anyone reads; channel endpoints lock their owner words, far below.
#[cfg(linux_like)]
const IN_USE_AT: u64 = i64::MAX as u64 - 1;

#[cfg(linux_like)]
fn in_use_lock(kind: libc::c_int) -> libc::flock {
    // SAFETY: all-zero is a valid flock; the fields that matter are set below.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind as _;
    l.l_whence = libc::SEEK_SET as _;
    l.l_start = IN_USE_AT as _;
    l.l_len = 1;
    l
}

/// `F_OFD_SETLK` of the in-use byte, never waiting: `Ok(false)` when another description
/// holds a conflicting lock. `ENOSYS` where there are no OFD locks.
fn set_in_use_lock(fd: BorrowedFd<'_>, kind: libc::c_int) -> io::Result<bool> {
    #[cfg(linux_like)]
    {
        use std::os::fd::AsRawFd;
        let l = in_use_lock(kind);
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
    #[cfg(not(linux_like))]
    {
        let _ = (fd, kind);
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }
}

/// Take the in-use read lock on `fd`'s description: `Ok(false)` while a sweeper holds its
/// claim (see [`try_claim`]).
pub fn mark_in_use(fd: BorrowedFd<'_>) -> io::Result<bool> {
    set_in_use_lock(fd, libc::F_RDLCK as libc::c_int)
}

/// Whether another description than `fd`'s holds an in-use lock (`F_OFD_GETLK`, which
/// needs no write access). `ENOSYS` where there are no OFD locks.
pub fn in_use(fd: BorrowedFd<'_>) -> io::Result<bool> {
    #[cfg(linux_like)]
    {
        use std::os::fd::AsRawFd;
        let mut l = in_use_lock(libc::F_WRLCK as libc::c_int);
        // SAFETY: fcntl writes the struct we own; the descriptor is borrowed and open.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut l) };
        super::check(r)?;
        Ok(l.l_type as libc::c_int != libc::F_UNLCK as libc::c_int)
    }
    #[cfg(not(linux_like))]
    {
        let _ = fd;
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }
}

/// A sweeper's claim: the in-use byte write-locked on `fd`'s description (open for
/// writing), which succeeds only while no handle holds its read lock, and keeps new handles
/// from taking one until `fd` closes. `Ok(false)` when a handle holds it.
pub fn try_claim(fd: BorrowedFd<'_>) -> io::Result<bool> {
    set_in_use_lock(fd, libc::F_WRLCK as libc::c_int)
}

/// Whether the object the name `name` gives now is the one open as `fd` (same device and
/// inode): a name removed and created again in between is another object.
pub fn still_named(fd: BorrowedFd<'_>, name: &str) -> bool {
    let Ok(now) = shm_open(name, false) else {
        return false;
    };
    match (rustix::fs::fstat(fd), rustix::fs::fstat(&now)) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}
