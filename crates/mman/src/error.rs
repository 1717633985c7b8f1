//! The one error type of the library: every failure names the operation, what it was applied
//! to (path, address, offset, length), the OS error, and a hint where one helps.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What kind of failure an [`Error`] is, for callers that want to react to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input cannot be memory-mapped: a pipe, FIFO, socket, directory, a `/proc` or
    /// `/sys` file, most character devices. Fall back to `read()`.
    NotMappable,
    /// An argument is malformed or out of range: a length that overflows, an offset past the
    /// end of the file, an unaligned fixed address, write+exec without permission.
    InvalidInput,
    /// A resource limit stands in the way: `RLIMIT_MEMLOCK`, reserved huge pages, memory.
    ResourceLimit,
    /// The kernel or platform lacks the feature.
    Unsupported,
    /// A fixed placement found the address range already mapped.
    AddressInUse,
    /// The operation is not allowed: file opened read-only, missing capability.
    PermissionDenied,
    /// The file does not exist.
    NotFound,
    /// A mapped file shrank while mapped: pages past its new end vanished. mman turned the
    /// SIGBUS that would have killed the process into this error ([`Error::truncation`]
    /// gives the sizes).
    Truncated,
    /// The other end of a channel is gone: closed, or its process died.
    Disconnected,
    /// The file system has no room for the bytes: it is full (a disk, a tmpfs such as
    /// `/dev/shm`), or a quota is used up (`ENOSPC`, `EDQUOT`). Also a page of a mapped file
    /// *inside* its size that the kernel could not back when it was touched: mman turned
    /// the SIGBUS into this error, and [`Error::unbacked_offset`] gives the page's offset
    /// (such a fault also comes from a disk that failed to read the page, `EIO`, which the
    /// fault does not tell apart).
    StorageFull,
    /// Shared or persistent state holds values no mman peer writes (a peer scribbled over
    /// it, a durable file's copies all fail their checksums, or it is not what it claims to
    /// be): the operation refused to go on.
    Corrupted,
    /// Any other operating-system error.
    Os,
}

/// An error from an mman operation.
///
/// Its `Display` is one line meant for a person: the operation, the path or address and
/// length, the OS error, and a hint, as in
/// `mlock at 0x7f12a000 (length 4096): Cannot allocate memory (os error 12); hint: RLIMIT_MEMLOCK is ...`.
///
/// ```
/// let map = mman::MapOptions::new().len(4096).map_anonymous().unwrap();
/// let e = map.read_at(4000, &mut [0u8; 200]).unwrap_err();
/// assert!(e.to_string().starts_with("read at 0x"), "{e}");
/// assert!(e.to_string().contains("(length 4096): bytes 4000..4200 are outside the mapping of 4096 bytes"), "{e}");
/// ```
///
/// It is one pointer wide, so a `Result<(), Error>` costs no more than a `bool` to return.
pub struct Error(Box<Inner>);

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    op: &'static str,
    path: Option<PathBuf>,
    addr: Option<usize>,
    offset: Option<u64>,
    len: Option<usize>,
    reason: Option<String>,
    hint: Option<String>,
    source: Option<io::Error>,
    sizes: Option<(u64, u64)>,
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// `Display` already carries the OS error (`...: No such file or directory (os error 2)`), so
/// `source()` does not return it again: a printer of error chains (anyhow's `{:#}`, a CLI's
/// `cause: cause` list) prints it once. [`Error::os_error`] gives it to code.
impl std::error::Error for Error {}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error reported by the OS for operation `op`; the kind is derived from the errno.
    pub(crate) fn os(op: &'static str, source: io::Error) -> Self {
        let kind = kind_of(&source);
        Error(Box::new(Inner {
            kind,
            op,
            path: None,
            addr: None,
            offset: None,
            len: None,
            reason: None,
            hint: None,
            source: Some(source),
            sizes: None,
        }))
    }

    /// An OS error from a call that reports a resource limit with `EAGAIN` (mmap, mremap
    /// and mincore: locked or unavailable memory; thread creation: the thread limit): that
    /// `EAGAIN` is [`ErrorKind::ResourceLimit`]; anything else as [`os`](Self::os).
    pub(crate) fn os_limited(op: &'static str, source: io::Error) -> Self {
        let eagain = source.raw_os_error() == Some(libc::EAGAIN);
        let e = Self::os(op, source);
        if eagain {
            e.with_kind(ErrorKind::ResourceLimit)
        } else {
            e
        }
    }

    /// An error found by mman itself before asking the OS.
    pub(crate) fn new(kind: ErrorKind, op: &'static str, reason: impl Into<String>) -> Self {
        Error(Box::new(Inner {
            kind,
            op,
            path: None,
            addr: None,
            offset: None,
            len: None,
            reason: Some(reason.into()),
            hint: None,
            source: None,
            sizes: None,
        }))
    }

    /// A file that shrank from `expected` to `actual` bytes while mapped.
    pub(crate) fn truncated(op: &'static str, path: Option<&Path>, expected: u64, actual: u64) -> Self {
        let mut e = Error::new(
            ErrorKind::Truncated,
            op,
            format!("file shrank from {expected} to {actual} bytes while mapped"),
        )
        .with_path(path);
        e.0.sizes = Some((expected, actual));
        e
    }

    /// For [`ErrorKind::Truncated`]: (the bytes the mapping needed, the file's size now).
    pub fn truncation(&self) -> Option<(u64, u64)> {
        match self.0.kind {
            ErrorKind::Truncated => self.0.sizes,
            _ => None,
        }
    }

    /// The page holding byte `offset` of a mapped file, which the kernel could not back when
    /// it was touched although the file (now `size` bytes) did not shrink past it. `caught`:
    /// a fault of this process's own access (the SIGBUS handler replaced the page with a
    /// zero page), rather than a copy the kernel refused (`EFAULT`).
    pub(crate) fn unbacked(
        op: &'static str,
        path: Option<&Path>,
        offset: u64,
        size: u64,
        caught: bool,
    ) -> Self {
        let after = if caught {
            "; that page reads as zeros in this mapping now, and what is written there does not reach the file"
        } else {
            ""
        };
        let mut e = Error::new(
            ErrorKind::StorageFull,
            op,
            format!(
                "could not back the page holding byte {offset} of the mapped file ({size} bytes: it did not \
                 shrink, so this is no truncation): the file system is full or over a quota, or it could not \
                 fill a hole or read the page (ENOSPC, EDQUOT or EIO){after}"
            ),
        )
        .with_path(path)
        .with_hint(STORAGE_HINT);
        e.0.sizes = Some((offset, size));
        e
    }

    /// For a page of a mapped file the kernel could not back ([`ErrorKind::StorageFull`]
    /// from a fault or a copy the kernel refused): the file offset of the first byte that
    /// could not be reached (the start of the faulting page, or the first byte a copy out of
    /// the mapping did not copy), and the file's size.
    pub fn unbacked_offset(&self) -> Option<(u64, u64)> {
        match self.0.kind {
            ErrorKind::StorageFull => self.0.sizes,
            _ => None,
        }
    }

    /// An error of a call that locks memory (`mlock`, `mlockall`, a locked mapping): the
    /// errors a too-small `RLIMIT_MEMLOCK` produces become [`ErrorKind::ResourceLimit`] with
    /// [`memlock_hint`]; `needed` is what the call wanted, when known.
    pub(crate) fn memlock(op: &'static str, source: io::Error, needed: Option<u64>) -> Self {
        let err = Error::os(op, source);
        match err.raw_os_error() {
            Some(libc::ENOMEM) | Some(libc::EAGAIN) | Some(libc::EPERM) => err
                .with_kind(ErrorKind::ResourceLimit)
                .with_hint(memlock_hint(needed)),
            _ => err,
        }
    }

    pub(crate) fn with_path(mut self, path: Option<&Path>) -> Self {
        self.0.path = path.map(Path::to_path_buf);
        self
    }
    pub(crate) fn with_addr(mut self, addr: usize, len: usize) -> Self {
        self.0.addr = Some(addr);
        self.0.len = Some(len);
        self
    }
    pub(crate) fn with_range(mut self, offset: u64, len: Option<usize>) -> Self {
        self.0.offset = Some(offset);
        self.0.len = len;
        self
    }
    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.0.hint = Some(hint.into());
        self
    }
    pub(crate) fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.0.kind = kind;
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }
    /// The operation that failed, such as `"mmap"` or `"mlock"`.
    pub fn operation(&self) -> &'static str {
        self.0.op
    }
    /// The file involved, when there was one and its name is known.
    pub fn path(&self) -> Option<&Path> {
        self.0.path.as_deref()
    }
    /// The OS error, when the OS reported one.
    pub fn os_error(&self) -> Option<&io::Error> {
        self.0.source.as_ref()
    }
    /// The errno, when the OS reported one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.0.source.as_ref().and_then(io::Error::raw_os_error)
    }
    /// The advice attached to the error, if any.
    pub fn hint(&self) -> Option<&str> {
        self.0.hint.as_deref()
    }

    fn render(&self) -> String {
        use fmt::Write;
        let mut s = String::from(self.0.op);
        if let Some(p) = &self.0.path {
            let _ = write!(s, " {}", p.display());
        }
        if let Some(a) = self.0.addr {
            let _ = write!(s, " at {a:#x}");
        }
        match (self.0.offset, self.0.len) {
            (Some(o), Some(l)) => {
                let _ = write!(s, " (offset {o}, length {l})");
            }
            (Some(o), None) => {
                let _ = write!(s, " (offset {o})");
            }
            (None, Some(l)) => {
                let _ = write!(s, " (length {l})");
            }
            (None, None) => {}
        }
        s.push_str(": ");
        match (&self.0.reason, &self.0.source) {
            (Some(r), Some(e)) => {
                let _ = write!(s, "{r}: {e}");
            }
            (Some(r), None) => s.push_str(r),
            (None, Some(e)) => {
                let _ = write!(s, "{e}");
            }
            (None, None) => s.push_str("failed"),
        }
        if let Some(h) = &self.0.hint {
            let _ = write!(s, "; hint: {h}");
        }
        s
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match e.0.kind {
            ErrorKind::NotFound => io::ErrorKind::NotFound,
            ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
            ErrorKind::Unsupported | ErrorKind::NotMappable => io::ErrorKind::Unsupported,
            ErrorKind::AddressInUse => io::ErrorKind::AddrInUse,
            ErrorKind::ResourceLimit => io::ErrorKind::OutOfMemory,
            ErrorKind::Truncated => io::ErrorKind::UnexpectedEof,
            ErrorKind::Disconnected => io::ErrorKind::BrokenPipe,
            ErrorKind::StorageFull if e.raw_os_error() == Some(libc::EDQUOT) => io::ErrorKind::QuotaExceeded,
            ErrorKind::StorageFull => io::ErrorKind::StorageFull,
            ErrorKind::Corrupted => io::ErrorKind::InvalidData,
            ErrorKind::Os => {
                e.0.source
                    .as_ref()
                    .map(io::Error::kind)
                    .unwrap_or(io::ErrorKind::Other)
            }
        };
        io::Error::new(kind, e)
    }
}

/// How to raise `RLIMIT_MEMLOCK`, with its values now and, when known, how much is needed:
/// the one hint every memory-locking error of mman gives.
pub(crate) fn memlock_hint(needed: Option<u64>) -> String {
    let bytes = |l: Option<u64>| l.map_or("unlimited".to_string(), |b| format!("{b} bytes"));
    let (soft, hard) = crate::sys::memlock_limit();
    let need = needed.map_or(String::new(), |b| {
        let kib = b.div_ceil(1024);
        format!("at least {kib} KiB is needed (`ulimit -l {kib}`); ")
    });
    format!(
        "{need}RLIMIT_MEMLOCK is {} (hard limit {}); raise it with `ulimit -l` (in KiB), \
         `memlock` in /etc/security/limits.conf or LimitMEMLOCK= in a systemd unit, \
         or grant CAP_IPC_LOCK",
        bytes(soft),
        bytes(hard)
    )
}

/// The hint of every [`ErrorKind::StorageFull`] error mman makes.
pub(crate) const STORAGE_HINT: &str =
    "the file system holding the file is full or over a quota: see `df` and \
     `quota`, free some space (or remount a tmpfs larger: `mount -o remount,size=...`) and try again";

/// The kind of an OS error. `EAGAIN` is "would block" here ([`ErrorKind::Os`]); the calls
/// that use it for a resource limit make their errors with [`Error::os_limited`].
fn kind_of(e: &io::Error) -> ErrorKind {
    match e.raw_os_error() {
        Some(libc::ENODEV) => ErrorKind::NotMappable,
        Some(libc::EINVAL) | Some(libc::EOVERFLOW) => ErrorKind::InvalidInput,
        Some(libc::ENOMEM) => ErrorKind::ResourceLimit,
        Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => ErrorKind::Unsupported,
        Some(libc::EEXIST) => ErrorKind::AddressInUse,
        Some(libc::EPERM) | Some(libc::EACCES) => ErrorKind::PermissionDenied,
        Some(libc::ENOENT) => ErrorKind::NotFound,
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::StorageFull,
        _ => ErrorKind::Os,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_operation_subject_os_error_and_hint() {
        let e = Error::os("mlock", io::Error::from_raw_os_error(libc::ENOMEM))
            .with_addr(0x1000, 4096)
            .with_hint("raise RLIMIT_MEMLOCK");
        let s = e.to_string();
        assert!(s.starts_with("mlock at 0x1000 (length 4096): "), "{s}");
        assert!(s.contains("os error 12"), "{s}");
        assert!(s.ends_with("; hint: raise RLIMIT_MEMLOCK"), "{s}");
        assert_eq!(e.kind(), ErrorKind::ResourceLimit);
    }

    #[test]
    fn io_error_conversion_keeps_kind() {
        let e = Error::new(ErrorKind::NotMappable, "mmap", "is a FIFO").with_path(Some(Path::new("/tmp/f")));
        assert_eq!(e.to_string(), "mmap /tmp/f: is a FIFO");
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::Unsupported);
    }

    #[test]
    fn a_full_disk_or_quota_is_storage_full() {
        let e = Error::os("fallocate", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.kind(), ErrorKind::StorageFull);
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::StorageFull);
        let e = Error::os("fallocate", io::Error::from_raw_os_error(libc::EDQUOT));
        assert_eq!(e.kind(), ErrorKind::StorageFull);
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::QuotaExceeded);
        let e = Error::unbacked("write", Some(Path::new("/t/f")), 8192, 16384, true);
        assert_eq!(e.kind(), ErrorKind::StorageFull);
        assert_eq!(e.unbacked_offset(), Some((8192, 16384)));
        assert_eq!(e.truncation(), None);
        assert!(
            e.to_string()
                .starts_with("write /t/f: could not back the page holding byte 8192"),
            "{e}"
        );
        let t = Error::truncated("read", None, 10, 5);
        assert_eq!((t.truncation(), t.unbacked_offset()), (Some((10, 5)), None));
    }

    #[test]
    fn eagain_is_a_limit_only_from_the_calls_that_mean_it() {
        let eagain = || io::Error::from_raw_os_error(libc::EAGAIN);
        assert_eq!(
            Error::os_limited("mmap", eagain()).kind(),
            ErrorKind::ResourceLimit
        );
        assert_eq!(
            Error::os_limited("mincore", eagain()).kind(),
            ErrorKind::ResourceLimit
        );
        assert_eq!(
            Error::os_limited("mmap", io::Error::from_raw_os_error(libc::EACCES)).kind(),
            ErrorKind::PermissionDenied
        );
        let would_block = Error::os("recvmsg(SCM_RIGHTS)", eagain());
        assert_eq!(would_block.kind(), ErrorKind::Os);
        assert_eq!(io::Error::from(would_block).kind(), io::ErrorKind::WouldBlock);
    }
}
