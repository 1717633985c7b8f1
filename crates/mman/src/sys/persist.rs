//! System calls behind `mman::persist`: advisory file locks, durable creation.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;

/// `flock(LOCK_EX)`, waiting (`wait`) or not (`LOCK_NB`: `Ok(false)` when held elsewhere).
pub fn lock_exclusive(fd: BorrowedFd<'_>, wait: bool) -> io::Result<bool> {
    use rustix::fs::FlockOperation as Op;
    let op = if wait {
        Op::LockExclusive
    } else {
        Op::NonBlockingLockExclusive
    };
    loop {
        match rustix::fs::flock(fd, op) {
            Ok(()) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::WOULDBLOCK) if !wait => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

/// `flock(LOCK_UN)`.
pub fn unlock(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::flock(fd, rustix::fs::FlockOperation::Unlock)?)
}

/// `fsync`.
pub fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::fsync(fd)?)
}

/// `pwritev`: `bufs` back to back from `offset` of `fd`, all of them (a short write goes on
/// where it stopped; `EINTR` is retried). One call writes them as one range.
pub fn pwrite_all_vectored(fd: BorrowedFd<'_>, bufs: &[&[u8]], mut offset: u64) -> io::Result<()> {
    let mut bufs: Vec<&[u8]> = bufs.iter().copied().filter(|b| !b.is_empty()).collect();
    while !bufs.is_empty() {
        let iov: Vec<io::IoSlice<'_>> = bufs.iter().map(|b| io::IoSlice::new(b)).collect();
        let mut n = match rustix::io::pwritev(fd, &iov, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        offset += n as u64;
        while let Some(first) = bufs.first_mut() {
            if n < first.len() {
                *first = &first[n..];
                break;
            }
            n -= first.len();
            bufs.remove(0);
        }
    }
    Ok(())
}

/// `fdatasync` (where the platform has it; `fsync` elsewhere).
pub use super::os::fdatasync;

/// A new regular file in `dir` that has no name yet (`O_TMPFILE`, mode 0600 until changed):
/// a process that dies before naming it leaves nothing behind. `None` where the system or
/// the file system has no such files.
pub fn unnamed_file(dir: &Path) -> io::Result<Option<std::fs::File>> {
    // Without /proc it could not be named (see `name_file`): not worth writing then.
    #[cfg(linux_like)]
    if Path::new("/proc/self/fd").is_dir() {
        use rustix::fs::{Mode, OFlags};
        use rustix::io::Errno;
        let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
        match rustix::fs::openat(rustix::fs::CWD, dir, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => return Ok(Some(fd.into())),
            // A kernel or file system without O_TMPFILE.
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOSYS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let _ = dir;
    Ok(None)
}

/// Give the unnamed file `f` the name `to` unless `to` exists (`Some(false)` then),
/// atomically (`linkat` of `/proc/self/fd/N`). `None` when it cannot be named this way
/// (`/proc` not mounted, or `linkat` through it refused for any other reason than an
/// existing `to`): the caller then writes a named temporary file, whose own errors say
/// what is wrong.
pub fn name_file(f: &std::fs::File, to: &Path) -> io::Result<Option<bool>> {
    use std::os::fd::AsRawFd;
    let me = format!("/proc/self/fd/{}", f.as_raw_fd());
    if !Path::new("/proc/self/fd").is_dir() {
        return Ok(None);
    }
    let (cwd, follow) = (rustix::fs::CWD, rustix::fs::AtFlags::SYMLINK_FOLLOW);
    match rustix::fs::linkat(cwd, me.as_str(), cwd, to, follow) {
        Ok(()) => Ok(Some(true)),
        Err(rustix::io::Errno::EXIST) => Ok(Some(false)),
        Err(_) => Ok(None),
    }
}

/// Give `tmp` the name `to` unless `to` exists (`Ok(false)` then), atomically: a crash
/// leaves either no `to` or the complete file. `link` + `unlink`, which every Unix has.
pub fn publish(tmp: &Path, to: &Path) -> io::Result<bool> {
    match std::fs::hard_link(tmp, to) {
        Ok(()) => {
            let _ = std::fs::remove_file(tmp);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(tmp);
            Ok(false)
        }
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            Err(e)
        }
    }
}

/// `fsync` of a directory, so a new name in it survives a power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = std::fs::File::open(dir)?;
    d.sync_all()
}
