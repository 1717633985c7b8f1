//! Memfd objects with seals, and passing a descriptor (with the sender's credentials) to
//! an unrelated process over a Unix socket.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::error::{Error, ErrorKind, Result};
use crate::map::{MapOptions, Mapping};
use crate::sys::shm as sys;

/// How many more times sealing is tried after `EBUSY` (see `Memfd::add_seals`).
const BUSY_RETRIES: u32 = 3;

bitflags::bitflags! {
    /// File seals (`F_SEAL_*`) of a memfd: promises the kernel enforces on everyone.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Seals: u32 {
        /// `F_SEAL_SEAL`: no more seals may be added.
        const SEAL = sys::seals::SEAL;
        /// `F_SEAL_SHRINK`: the size may not decrease.
        const SHRINK = sys::seals::SHRINK;
        /// `F_SEAL_GROW`: the size may not increase.
        const GROW = sys::seals::GROW;
        /// `F_SEAL_WRITE`: the contents may not change (no write(), no writable shared
        /// mapping).
        const WRITE = sys::seals::WRITE;
        /// `F_SEAL_FUTURE_WRITE`: no new writes, but mappings writable before the seal still
        /// are.
        const FUTURE_WRITE = sys::seals::FUTURE_WRITE;
        /// What makes the contents immutable and un-shrinkable: WRITE, SHRINK, GROW, SEAL.
        const FROZEN = Self::WRITE.bits() | Self::SHRINK.bits() | Self::GROW.bits() | Self::SEAL.bits();
    }
}

impl Seals {
    /// No seal.
    pub const NONE: Seals = Seals::empty();

    /// The seals of `other` missing from `self`.
    pub const fn missing(self, other: Seals) -> Seals {
        other.difference(self)
    }
}

impl std::fmt::Display for Seals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (Seals::SEAL, "seal"),
            (Seals::SHRINK, "shrink"),
            (Seals::GROW, "grow"),
            (Seals::WRITE, "write"),
            (Seals::FUTURE_WRITE, "future_write"),
        ];
        let on: Vec<&str> = names
            .iter()
            .filter(|(s, _)| self.contains(*s))
            .map(|(_, n)| *n)
            .collect();
        if on.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&on.join("|"))
        }
    }
}

/// An anonymous file in memory (`memfd_create`), which can be sealed and passed to another
/// process. Linux: elsewhere making or adopting one is [`ErrorKind::Unsupported`].
///
/// ```
/// # fn main() -> mman::Result<()> {
/// use mman::shm::{Memfd, Seals};
/// let memfd = Memfd::create("doc", 4096)?;
/// memfd.map()?.write_at(0, b"frozen")?; // writable until sealed; the mapping is dropped
/// memfd.add_seals(Seals::FROZEN)?; // no writes, no resizing, no more seals, for anyone
/// let sealed = memfd.map_sealed()?; // so it is a plain &[u8]
/// assert_eq!(&sealed[..6], b"frozen");
/// assert!(memfd.set_len(0).is_err());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Memfd {
    fd: OwnedFd,
}

impl Memfd {
    /// A new memfd of `size` bytes (allocated now), sealing allowed.
    ///
    /// # Errors
    /// * The error of `memfd_create`: [`ErrorKind::Unsupported`] outside Linux,
    ///   [`ErrorKind::InvalidInput`] for a name longer than 249 bytes or holding a NUL.
    /// * The error of `fallocate` when memory is short (`ENOSPC`:
    ///   [`ErrorKind::StorageFull`], or `ENOMEM`: [`ErrorKind::ResourceLimit`]).
    pub fn create(name: &str, size: u64) -> Result<Self> {
        let fd = sys::seals::memfd(name).map_err(|e| Error::os("memfd_create", e))?;
        sys::allocate(fd.as_fd(), size).map_err(|e| Error::os("fallocate", e))?;
        Ok(Memfd { fd })
    }

    /// Adopt a descriptor received from elsewhere (for example from [`recv_fd`]); it must be
    /// a memfd or another file that supports seals.
    ///
    /// # Errors
    /// The error of `fcntl(F_GET_SEALS)`: [`ErrorKind::InvalidInput`] (`EINVAL`) when `fd`
    /// does not support seals; [`ErrorKind::Unsupported`] outside Linux.
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        sys::seals::get(fd.as_fd()).map_err(|e| {
            Error::os("fcntl(F_GET_SEALS)", e).with_hint("the descriptor is not a memfd that supports seals")
        })?;
        Ok(Memfd { fd })
    }

    /// The size in bytes.
    ///
    /// # Errors
    /// The error of `fstat` on the descriptor.
    pub fn size(&self) -> Result<u64> {
        Ok(sys::owner(self.fd.as_fd())
            .map_err(|e| Error::os("fstat", e))?
            .size)
    }

    /// Change the size (refused once sealed against it).
    ///
    /// # Errors
    /// The error of `ftruncate`: [`ErrorKind::PermissionDenied`] (`EPERM`) when sealed
    /// against the change ([`Seals::SHRINK`], [`Seals::GROW`]); [`ErrorKind::InvalidInput`]
    /// for a descriptor open read-only (as one taken from another process may be).
    pub fn set_len(&self, len: u64) -> Result<()> {
        sys::set_len(self.fd.as_fd(), len).map_err(|e| Error::os("ftruncate", e))
    }

    /// The seals in force.
    ///
    /// # Errors
    /// The error of `fcntl(F_GET_SEALS)` (which a `Memfd`, checked for seals when made, does
    /// not give in practice).
    pub fn seals(&self) -> Result<Seals> {
        let bits = sys::seals::get(self.fd.as_fd()).map_err(|e| Error::os("fcntl(F_GET_SEALS)", e))?;
        // Seals this version does not name are kept: `contains` and `missing` stay exact.
        Ok(Seals::from_bits_retain(bits))
    }

    /// Add seals. `WRITE` fails with `EBUSY` while a writable shared mapping exists, or a
    /// page is pinned (tried a few times over a moment first).
    ///
    /// # Errors
    /// The error of `fcntl(F_ADD_SEALS)`: `EBUSY` ([`ErrorKind::Os`]) for [`Seals::WRITE`]
    /// while a writable shared mapping exists; [`ErrorKind::PermissionDenied`] (`EPERM`) once
    /// [`Seals::SEAL`] is in force, or for a descriptor open read-only.
    pub fn add_seals(&self, seals: Seals) -> Result<()> {
        let mut result = sys::seals::add(self.fd.as_fd(), seals.bits());
        // `EBUSY` also comes from a page the kernel still holds a moment longer (faulted in
        // just now and waiting in another CPU's LRU batch, or pinned for I/O): the kernel
        // waits about 150 ms for it; a few more tries ride out such a moment, while a
        // writable mapping fails each try at once.
        for _ in 0..BUSY_RETRIES {
            match &result {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    result = sys::seals::add(self.fd.as_fd(), seals.bits());
                }
                _ => break,
            }
        }
        result.map_err(|e| {
            let err = Error::os("fcntl(F_ADD_SEALS)", e).with_hint(format!("adding {seals}"));
            match err.raw_os_error() {
                Some(libc::EBUSY) => err.with_hint(
                    "a writable shared mapping of the memfd still exists (drop it first), or the kernel still holds one of its pages (pinned for I/O)",
                ),
                Some(libc::EPERM) => err.with_hint("the memfd is sealed against new seals (F_SEAL_SEAL)"),
                _ => err,
            }
        })
    }

    /// Fail unless every seal of `required` is in force: what a receiver checks before
    /// trusting a descriptor.
    ///
    /// # Errors
    /// [`ErrorKind::PermissionDenied`] when a seal of `required` is missing (the message
    /// names them); else as [`seals`](Self::seals).
    pub fn require_seals(&self, required: Seals) -> Result<()> {
        let have = self.seals()?;
        if have.contains(required) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::PermissionDenied,
            "check seals",
            format!("seals {have} lack {}", have.missing(required)),
        )
        .with_hint("the sender must seal the memfd before passing it"))
    }

    /// Map it shared and writable (before sealing against writes).
    ///
    /// # Errors
    /// As [`MapOptions::map`]; in particular [`ErrorKind::PermissionDenied`] once sealed
    /// against writes ([`Seals::WRITE`], [`Seals::FUTURE_WRITE`]), or for a descriptor open
    /// read-only.
    pub fn map(&self) -> Result<Mapping> {
        MapOptions::new().read_write().shared().map(self.fd.as_fd())
    }

    /// Map a memfd sealed against writing and shrinking as a [`SealedMap`], which derefs
    /// to `[u8]`: the kernel guarantees its bytes neither change nor vanish.
    ///
    /// A memfd of huge pages (`MFD_HUGETLB`, made by another program: mman makes none) is
    /// refused. Reading a page of it that was never written asks the kernel for a huge
    /// page, and when none is left the read faults with SIGBUS. mman's handler can answer a
    /// fault in a file mapping only by mapping zeros from the fault to the end, which would
    /// change the bytes after it under the reference this type hands out.
    ///
    /// # Errors
    /// [`ErrorKind::PermissionDenied`] unless both [`Seals::WRITE`] and [`Seals::SHRINK`] are
    /// in force; [`ErrorKind::Unsupported`] for a memfd of huge pages; else as
    /// [`MapOptions::map`] (read-only and private here).
    pub fn map_sealed(&self) -> Result<SealedMap> {
        self.require_seals(Seals::WRITE | Seals::SHRINK)?;
        if sys::seals::huge_pages(self.fd.as_fd()).map_err(|e| Error::os("fstatfs", e))? {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "map sealed memfd",
                "a memfd of huge pages (MFD_HUGETLB) cannot be viewed as immutable bytes",
            )
            .with_hint("a fault for a huge page none is left for could only be answered by changing the bytes; send a memfd of ordinary pages"));
        }
        let inner = MapOptions::new().private().map(self.fd.as_fd())?;
        Ok(SealedMap { inner })
    }
}

impl AsFd for Memfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Memfd> for OwnedFd {
    fn from(m: Memfd) -> OwnedFd {
        m.fd
    }
}

/// A read-only mapping of a memfd sealed against writes and shrinking: immutable for
/// everyone, so it is a plain `&[u8]`.
#[derive(Debug)]
pub struct SealedMap {
    inner: Mapping,
}

impl std::ops::Deref for SealedMap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: F_SEAL_WRITE and F_SEAL_SHRINK were verified before mapping: no process
        // can change or truncate the bytes. The mapping is read-only and this type offers
        // no way to change its protection, so the slice stays valid and unchanged.
        unsafe { self.inner.as_slice() }.unwrap_or(&[])
    }
}

/// Who is at the other end of a Unix socket (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCredentials {
    /// The peer's PID.
    pub pid: u32,
    /// The peer's effective uid.
    pub uid: u32,
    /// The peer's effective gid.
    pub gid: u32,
}

/// The credentials of the peer of a connected Unix socket (Linux: elsewhere
/// [`ErrorKind::Unsupported`]).
///
/// # Errors
/// The error of `getsockopt(SO_PEERCRED)`; [`ErrorKind::Unsupported`] outside Linux.
pub fn peer_credentials(sock: &std::os::unix::net::UnixStream) -> Result<PeerCredentials> {
    let (pid, uid, gid) =
        sys::peer_credentials(sock.as_fd()).map_err(|e| Error::os("getsockopt(SO_PEERCRED)", e))?;
    Ok(PeerCredentials { pid, uid, gid })
}

/// Send a descriptor and a short message over a connected Unix socket (`SCM_RIGHTS`).
///
/// # Errors
/// The error of `sendmsg(2)` (retried on `EINTR`): for example `EPIPE` once the peer has
/// closed its end, or `EAGAIN` ([`ErrorKind::Os`]; `std::io::ErrorKind::WouldBlock` once
/// converted) when a non-blocking socket's buffer is full.
pub fn send_fd(sock: &std::os::unix::net::UnixStream, fd: BorrowedFd<'_>, message: &[u8]) -> Result<()> {
    sys::send_fd(sock.as_fd(), fd, message).map_err(|e| Error::os("sendmsg(SCM_RIGHTS)", e))
}

/// Receive a descriptor and its message sent by [`send_fd`].
///
/// # Errors
/// * [`ErrorKind::InvalidInput`] when the message carried no descriptor (as at the end of
///   the stream, once the peer has closed its end).
/// * The error of `recvmsg(2)` (retried on `EINTR`): for example `EAGAIN`
///   ([`ErrorKind::Os`]) on a non-blocking socket with nothing pending.
pub fn recv_fd(sock: &std::os::unix::net::UnixStream) -> Result<(OwnedFd, Vec<u8>)> {
    let mut buf = vec![0u8; 4096];
    let (n, fd) = sys::recv_fd(sock.as_fd(), &mut buf).map_err(|e| Error::os("recvmsg(SCM_RIGHTS)", e))?;
    buf.truncate(n);
    let fd = fd.ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            "recvmsg(SCM_RIGHTS)",
            "the message carried no descriptor",
        )
    })?;
    Ok((fd, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_memfd_derefs_and_refuses_truncation() {
        let m = Memfd::create("t", 4096).unwrap();
        m.map().unwrap().write_at(0, b"sealed").unwrap();
        assert!(m.map_sealed().is_err());
        m.add_seals(Seals::FROZEN).unwrap();
        let s = m.map_sealed().unwrap();
        assert_eq!(&s[..6], b"sealed");
        assert!(m.set_len(0).is_err());
        assert_eq!(m.size().unwrap(), 4096);
    }
}
