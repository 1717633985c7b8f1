//! Linux's zero-copy calls: splice, vmsplice, copy_file_range and pipe sizing.
use super::*;
use rustix::pipe::SpliceFlags;

fn retry<T>(fd: BorrowedFd<'_>, mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => wait_ready(fd, true)?,
            r => return Ok(r?),
        }
    }
}

/// `splice(2)` from `from` (at `*off` when given) into `to`, up to `len` bytes.
pub fn splice(
    from: BorrowedFd<'_>,
    off: Option<&mut u64>,
    to: BorrowedFd<'_>,
    len: usize,
) -> io::Result<usize> {
    let mut off = off;
    retry(to, || {
        rustix::pipe::splice(
            from,
            off.as_deref_mut(),
            to,
            None,
            len,
            SpliceFlags::MOVE | SpliceFlags::MORE,
        )
    })
}

/// `vmsplice(2)`: hand the pages at `ptr..ptr+len` to the pipe `to` by reference.
///
/// # Safety
/// The range must be mapped and readable. The pipe keeps references to the pages, not
/// copies: the reader sees them as they are when it reads.
pub unsafe fn vmsplice(to: BorrowedFd<'_>, ptr: *const u8, len: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let iov = libc::iovec {
        iov_base: ptr as *mut c_void,
        iov_len: len,
    };
    loop {
        // SAFETY: `to` is the write end of a pipe, so the kernel only reads the range,
        // which the caller guarantees mapped and readable; no Rust reference is made.
        let r = unsafe { libc::vmsplice(to.as_raw_fd(), &iov, 1, 0) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => wait_ready(to, true)?,
            _ => return Err(e),
        }
    }
}

/// `copy_file_range(2)` at the current offsets of both descriptors.
pub fn copy_file_range(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    retry(to, || rustix::fs::copy_file_range(from, None, to, None, len))
}

/// Grow a pipe's buffer (`F_SETPIPE_SZ`), up to `/proc/sys/fs/pipe-max-size`.
pub fn grow_pipe(fd: BorrowedFd<'_>, want: usize) -> Option<usize> {
    let now = rustix::pipe::fcntl_getpipe_size(fd).ok()?;
    if now >= want {
        return Some(now);
    }
    rustix::pipe::fcntl_setpipe_size(fd, want).ok()
}

/// A new pipe, both ends close-on-exec.
pub fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}
