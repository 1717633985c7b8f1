//! What mman needs of descriptors: fstat, offsets, read and write with retries, resource
//! usage.

use super::*;

/// The kind of file behind a descriptor, and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Regular,
    Directory,
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
    Symlink,
    Unknown,
}

/// What mman needs to know of an open file.
#[derive(Clone, Copy, Debug)]
pub struct FileInfo {
    pub kind: FileType,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    /// Hard links to the inode (read by the page-cache walk).
    #[cfg_attr(not(all(linux_like, feature = "cache")), allow(dead_code))]
    pub nlink: u64,
    /// The owner's user id (read by the page-cache walk).
    #[cfg_attr(not(all(linux_like, feature = "cache")), allow(dead_code))]
    pub uid: u32,
}

impl FileType {
    pub(crate) fn of(t: rustix::fs::FileType) -> FileType {
        use rustix::fs::FileType as T;
        match t {
            T::RegularFile => FileType::Regular,
            T::Directory => FileType::Directory,
            T::BlockDevice => FileType::BlockDevice,
            T::CharacterDevice => FileType::CharDevice,
            T::Fifo => FileType::Fifo,
            T::Socket => FileType::Socket,
            T::Symlink => FileType::Symlink,
            _ => FileType::Unknown,
        }
    }
}

impl FileInfo {
    /// The fields of a `stat` (whose widths differ between architectures).
    #[allow(clippy::unnecessary_cast)]
    pub(crate) fn of(st: &rustix::fs::Stat) -> FileInfo {
        FileInfo {
            kind: FileType::of(rustix::fs::FileType::from_raw_mode(st.st_mode as _)),
            size: st.st_size as u64,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            nlink: st.st_nlink as u64,
            uid: st.st_uid,
        }
    }
}

/// `fstat(2)`, with the size of a block device asked of the device.
pub fn file_info(fd: BorrowedFd<'_>) -> io::Result<FileInfo> {
    let mut info = FileInfo::of(&rustix::fs::fstat(fd)?);
    if info.kind == FileType::BlockDevice {
        info.size = os::block_device_size(fd)?;
    }
    Ok(info)
}

/// The name of an open descriptor, for error messages (Linux: `/proc/self/fd`).
pub fn fd_path(fd: BorrowedFd<'_>) -> Option<std::path::PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
}

/// The current offset of a descriptor, `None` if it has none (pipes, sockets, terminals).
pub fn offset_of(fd: BorrowedFd<'_>) -> Option<u64> {
    rustix::fs::seek(fd, rustix::fs::SeekFrom::Current(0)).ok()
}

/// Set the offset of a seekable descriptor.
pub fn seek_to(fd: BorrowedFd<'_>, pos: u64) -> io::Result<u64> {
    Ok(rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(pos))?)
}

/// `read(2)`, retried on `EINTR`.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return Ok(r?),
        }
    }
}

/// Wait until `fd` is ready: writable when `write`, else readable.
pub fn wait_ready(fd: BorrowedFd<'_>, write: bool) -> io::Result<()> {
    use rustix::event::{poll, PollFd, PollFlags};
    let flags = if write { PollFlags::OUT } else { PollFlags::IN };
    let mut fds = [PollFd::new(&fd, flags)];
    loop {
        match poll(&mut fds, None) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map(|_| ()).map_err(Into::into),
        }
    }
}

/// `write(2)` of raw memory, retried on `EINTR`; a non-blocking `fd` is waited on.
///
/// # Safety
/// `ptr..ptr+len` must be mapped (the kernel copies it; a hole past a file's end is `EFAULT`,
/// not a signal).
pub unsafe fn write_raw(fd: BorrowedFd<'_>, ptr: *const u8, len: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    retry_write(fd, || {
        // SAFETY: the kernel reads `len` bytes at `ptr`, which the caller guarantees mapped;
        // it never creates a Rust reference to them.
        unsafe { libc::write(fd.as_raw_fd(), ptr.cast(), len) }
    })
}

/// Make a raw write-like call into `fd` (a count, or -1 and `errno`) until it is neither
/// interrupted (`EINTR`) nor would block (`EAGAIN`: `fd` is waited on): the bytes it took.
pub fn retry_write(fd: BorrowedFd<'_>, mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let r = call();
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = super::errno();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => wait_ready(fd, true)?,
            _ => return Err(e),
        }
    }
}

/// Write all of `buf`, handling short writes, `EINTR` and `EAGAIN`. Returns the syscalls made.
pub fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<u64> {
    let mut calls = 0;
    while !buf.is_empty() {
        // SAFETY: `buf` is a live slice.
        let n = unsafe { write_raw(fd, buf.as_ptr(), buf.len()) }?;
        calls += 1;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        buf = &buf[n..];
    }
    Ok(calls)
}

/// Resource usage of this process: (minor faults, major faults, user seconds, system seconds).
pub fn rusage_self() -> (u64, u64, f64, f64) {
    // SAFETY: getrusage fills the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        ru.ru_minflt as u64,
        ru.ru_majflt as u64,
        secs(ru.ru_utime),
        secs(ru.ru_stime),
    )
}

/// Whether two descriptors name the same file (device and inode).
#[cfg(all(linux_like, feature = "channel"))]
pub fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    match (file_info(a), file_info(b)) {
        (Ok(x), Ok(y)) => x.dev == y.dev && x.ino == y.ino,
        _ => false,
    }
}

/// The device (major, minor) and inode of the file at `path` itself (`lstat`), if any.
#[cfg(all(linux_like, feature = "maps"))]
pub fn path_id(path: &std::path::Path) -> Option<((u32, u32), u64)> {
    let st = rustix::fs::lstat(path).ok()?;
    let dev = st.st_dev as u64;
    #[allow(clippy::unnecessary_cast)]
    Some(((rustix::fs::major(dev), rustix::fs::minor(dev)), st.st_ino as u64))
}

/// Whether `e`, the error of opening `path`, is the `ENXIO` that `open(2)` gives for a Unix
/// socket: the caller reports it as the file that is not a regular one, as it reports a
/// FIFO (which opens, and is refused after `fstat`).
pub fn opened_a_socket(e: &io::Error, path: &std::path::Path) -> bool {
    e.raw_os_error() == Some(libc::ENXIO)
        && rustix::fs::stat(path).is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode as _) == rustix::fs::FileType::Socket
        })
}
