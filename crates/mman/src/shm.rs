//! Shared memory between processes: anonymous memory inherited across `fork`, named POSIX
//! shared-memory objects, memfd objects with seals, and passing a descriptor to an unrelated
//! process over a Unix socket.
//!
//! ```
//! # fn main() -> mman::Result<()> {
//! use mman::shm::SharedMemory;
//! let name = format!("doc-{}", std::process::id());
//! let obj = SharedMemory::create(&name, 4096)?;        // /dev/shm/mman.doc-PID, mode 0600
//! obj.map()?.write_at(0, b"hello")?;
//! let peer = SharedMemory::open(&name, 4096)?;        // checks type, owner, mode and size
//! let mut buf = [0u8; 5];
//! peer.map()?.read_at(0, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! # Ok(()) }                                           // `obj` unlinks the name on drop
//! ```

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::error::{Error, ErrorKind, Result};
use crate::map::{MapOptions, Mapping};
use crate::sys::shm as sys;

mod list;
mod memfd;

pub use list::{list, list_all, remove_stale, ObjectInfo};
pub use memfd::{peer_credentials, recv_fd, send_fd, Memfd, PeerCredentials, SealedMap, Seals};

/// The prefix of every object mman creates, so [`list`] can tell them apart.
pub const PREFIX: &str = "mman.";

/// The attribute holding the creator's stamp: `PID:START`, or `PID:START:kept` for an object
/// kept on purpose. An older mman reads the kept form as no stamp (creator unknown), so it
/// never calls a kept object stale either.
const CREATOR_TAG: &str = "user.mman.creator";

/// The stamp's suffix on an object kept on purpose.
const KEPT: &str = "kept";

/// Anonymous memory shared with the children this process creates by `fork` after mapping
/// it (`MAP_SHARED | MAP_ANONYMOUS`): what one writes, the others see.
///
/// # Errors
/// As [`MapOptions::map_anonymous`]: [`ErrorKind::ResourceLimit`] when memory or address
/// space run out (`ENOMEM`).
pub fn anonymous(len: usize) -> Result<Mapping> {
    MapOptions::new().len(len).shared().map_anonymous()
}

/// Anonymous memory that `fork` copies instead of sharing (`MAP_PRIVATE | MAP_ANONYMOUS`):
/// after the fork, each process writes its own copy.
///
/// # Errors
/// As [`anonymous`].
pub fn anonymous_private(len: usize) -> Result<Mapping> {
    MapOptions::new().len(len).private().map_anonymous()
}

/// The full object name for a user's name: `/mman.NAME`. Accepts `NAME`, `mman.NAME` and
/// `/mman.NAME`.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] when `NAME` is empty, longer than 200 bytes, holds a `/`, or
/// is `.` or `..`.
pub fn object_name(name: &str) -> Result<String> {
    let bare = name.trim_start_matches('/');
    let bare = bare.strip_prefix(PREFIX).unwrap_or(bare);
    Ok(format!("/{PREFIX}{}", checked(name, bare, 200)?))
}

/// The object name for a name given verbatim, for objects mman did not create (a C
/// program's `shm_open("/ring")`, Python's `multiprocessing.shared_memory`): `ring` and
/// `/ring` both give `/ring`; no prefix is added.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] when the name without its leading `/` is empty, longer than
/// 255 bytes, holds a `/`, or is `.` or `..`.
pub fn raw_object_name(name: &str) -> Result<String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    Ok(format!("/{}", checked(name, bare, 255)?))
}

/// `bare` (the part of `name` after the leading `/` and any prefix), if it can name an
/// object: 1 to `max` bytes, no `/`, not `.` or `..`.
fn checked<'a>(name: &str, bare: &'a str, max: usize) -> Result<&'a str> {
    if bare.is_empty() || bare.contains('/') || bare.len() > max || bare == "." || bare == ".." {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "shm_open",
            format!("{name:?} is not a valid shared-memory name"),
        )
        .with_hint(format!("use 1 to {max} bytes without '/'")));
    }
    Ok(bare)
}

/// What the opener demands of an existing object before mapping it.
#[derive(Clone, Debug)]
pub struct OpenCheck {
    /// The smallest size that will do.
    pub min_size: u64,
    /// The owner required (default: this process's effective uid).
    pub owner: Option<u32>,
    /// Permission bits the object may have beyond the owner's (default 0: none for group
    /// and others).
    pub allowed_other_bits: u32,
}

/// A named POSIX shared-memory object (`shm_open`), open for reading and writing.
///
/// The handle that created the object unlinks its name when dropped, unless
/// [`keep`](Self::keep) was called; handles from [`open`](Self::open) never unlink.
///
/// Every handle marks the object in use while it lives (an OFD lock on its own open file
/// description, which the kernel drops when the process dies or execs, as channel endpoints
/// do). An object no handle holds any more is stale ([`list`], [`remove_stale`]), unless it
/// was created to be kept ([`create_kept`](Self::create_kept)): that one stays until it is
/// removed by name.
///
/// ```
/// # fn main() -> mman::Result<()> {
/// use mman::{shm::SharedMemory, ErrorKind};
/// let name = format!("doc-type-{}", std::process::id());
/// let obj = SharedMemory::create(&name, 4096)?; // mode 0600, the 4096 bytes allocated
/// assert_eq!(obj.name(), format!("/mman.{name}"));
/// obj.map()?.store(0, &7u64)?;
/// // Another process (here the same one) opens it, checked, and sees the bytes.
/// let peer = SharedMemory::open(&name, 4096)?;
/// assert_eq!(peer.map()?.load::<u64>(0)?, 7);
/// let taken = SharedMemory::create(&name, 4096).unwrap_err();
/// assert_eq!(taken.kind(), ErrorKind::AddressInUse);
/// drop(obj); // the creating handle unlinks the name
/// assert_eq!(SharedMemory::open(&name, 4096).unwrap_err().kind(), ErrorKind::NotFound);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SharedMemory {
    name: String,
    fd: OwnedFd,
    size: u64,
    unlink_on_drop: bool,
}

impl SharedMemory {
    /// Create `/mman.NAME` of `size` bytes, mode 0600 whatever the umask; fails if it
    /// exists. The size is allocated now, so a full `/dev/shm` is an error here rather
    /// than a SIGBUS later.
    ///
    /// # Errors
    /// As [`create_with_mode`](Self::create_with_mode).
    pub fn create(name: &str, size: u64) -> Result<Self> {
        Self::create_with_mode(name, size, 0o600)
    }

    /// [`create`](Self::create) with another mode (exactly this mode; the umask is not
    /// applied).
    ///
    /// # Errors
    /// * [`ErrorKind::InvalidInput`] for an invalid name (see [`object_name`]), or a size
    ///   beyond the largest file (`i64::MAX` bytes).
    /// * [`ErrorKind::AddressInUse`] when the name exists; else the error of `shm_open` or
    ///   `fchmod` (such as [`ErrorKind::PermissionDenied`]).
    /// * The error of `fallocate` (`ftruncate` outside Linux, and for size 0), after which the
    ///   new name is removed again: `ENOSPC` ([`ErrorKind::StorageFull`]) when `/dev/shm`
    ///   lacks the room, with a hint giving what it holds and has free.
    pub fn create_with_mode(name: &str, size: u64, mode: u32) -> Result<Self> {
        Self::create_full(name, size, mode, false, size)
    }

    /// Create `/mman.NAME` to be kept: like [`create_with_mode`](Self::create_with_mode),
    /// but marked as kept on purpose. The handle never unlinks it; [`list`] shows it as
    /// kept (never stale, whether a handle holds it or not) and [`remove_stale`] leaves it
    /// alone. It stays until it is removed by name ([`unlink`](Self::unlink)) or the
    /// system restarts. This is what `mman shm create` makes.
    ///
    /// ```
    /// # fn main() -> mman::Result<()> {
    /// use mman::shm::{self, SharedMemory};
    /// let name = format!("doc-kept-{}", std::process::id());
    /// drop(SharedMemory::create_kept(&name, 4096, 0o600)?); // outlives its handle
    /// let info = shm::list()?.into_iter().find(|o| o.name == name).unwrap();
    /// assert!(info.kept && !info.is_stale());
    /// assert!(!shm::remove_stale()?.contains(&name));
    /// SharedMemory::unlink(&name)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`create_with_mode`](Self::create_with_mode).
    pub fn create_kept(name: &str, size: u64, mode: u32) -> Result<Self> {
        Self::create_full(name, size, mode, true, size)
    }

    /// [`create`](Self::create) with only the first `backed` bytes allocated now: the rest
    /// reads as zeros and is allocated when first touched (a channel's pool slots, backed
    /// when first loaned).
    #[cfg(all(linux_like, feature = "channel"))]
    pub(crate) fn create_backed(name: &str, size: u64, backed: u64) -> Result<Self> {
        Self::create_full(name, size, 0o600, false, backed.min(size))
    }

    fn create_full(name: &str, size: u64, mode: u32, kept: bool, backed: u64) -> Result<Self> {
        let full = object_name(name)?;
        // A file's size is an off_t: beyond it fallocate says only EINVAL.
        if size > i64::MAX as u64 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "shm_open",
                format!(
                    "{size} bytes is more than any object can hold ({} bytes)",
                    i64::MAX
                ),
            )
            .with_path(Some(full.as_ref())));
        }
        let fd = sys::shm_create(&full, mode).map_err(|e| {
            let err = Error::os("shm_open", e).with_path(Some(full.as_ref()));
            match err.raw_os_error() {
                Some(libc::EEXIST) => err.with_kind(ErrorKind::AddressInUse).with_hint(
                    "the name is taken: open it (SharedMemory::open), or remove it (SharedMemory::unlink)",
                ),
                _ => err,
            }
        })?;
        let mut obj = SharedMemory {
            name: full,
            fd,
            size,
            // Until it is ready, a failure removes the name again, kept or not.
            unlink_on_drop: true,
        };
        // The whole size first: an opener never maps less than the creator will use.
        let made = if backed < size {
            sys::set_len(obj.fd.as_fd(), size)
                .and_then(|()| crate::sys::allocate_range(obj.fd.as_fd(), 0, backed).map(drop))
        } else {
            sys::allocate(obj.fd.as_fd(), size)
        };
        made.map_err(|e| {
            let err = Error::os("fallocate", e).with_path(Some(obj.name.as_ref()));
            if err.raw_os_error() == Some(libc::ENOSPC) {
                match sys::capacity() {
                    Some((total, _)) if backed > total => err.with_hint(format!(
                        "{backed} bytes is more than /dev/shm holds at all ({total} bytes): ask for less, or mount a larger tmpfs"
                    )),
                    Some((_, free)) => err.with_hint(format!(
                        "/dev/shm has {free} bytes free: remove the stale objects, which no process uses (shm::remove_stale), or grow the tmpfs"
                    )),
                    None => err.with_hint("/dev/shm is full: remove objects no longer needed or grow the tmpfs"),
                }
            } else {
                err
            }
        })?;
        // In use from now on: the lock first, then the stamp, so that no sweeper ever sees
        // the stamp of an object whose creator has not yet marked it (it judges only
        // objects with a stamp). An object that could not be marked gets no stamp (unless it
        // is kept, which needs no lock): without one it is never called stale.
        let marked = matches!(sys::mark_in_use(obj.fd.as_fd()), Ok(true));
        if marked || kept {
            let me = sys::pid();
            let start = sys::start_time(me).unwrap_or(0);
            let stamp = if kept {
                format!("{me}:{start}:{KEPT}")
            } else {
                format!("{me}:{start}")
            };
            // Best effort: without xattrs `list` reports the state as unknown, and
            // `remove_stale` leaves the object alone.
            let _ = sys::set_tag(obj.fd.as_fd(), CREATOR_TAG, stamp.as_bytes());
        }
        obj.unlink_on_drop = !kept;
        Ok(obj)
    }

    /// Open an existing `/mman.NAME`, checking before any mapping that it is a regular file
    /// owned by this user, writable by nobody else, and at least `min_size` bytes. The
    /// object is in use while the handle lives (it is not stale).
    ///
    /// # Errors
    /// As [`open_checked`](Self::open_checked) with those checks.
    pub fn open(name: &str, min_size: u64) -> Result<Self> {
        Self::open_checked(
            name,
            &OpenCheck {
                min_size,
                owner: None,
                allowed_other_bits: 0,
            },
        )
    }

    /// [`open`](Self::open) with explicit checks.
    ///
    /// # Errors
    /// * [`ErrorKind::InvalidInput`]: an invalid name (see [`object_name`]), an object that
    ///   is not a regular file, or smaller than [`OpenCheck::min_size`].
    /// * [`ErrorKind::NotFound`]: no such object.
    /// * The error of `shm_open` (`ELOOP`) for a name that is a symbolic link, which is never
    ///   followed (`/dev/shm` is writable by every user; a link there was planted).
    /// * [`ErrorKind::PermissionDenied`]: `shm_open` refused to open it for reading and
    ///   writing, it belongs to another owner than [`OpenCheck::owner`], or its mode gives
    ///   group or others bits beyond [`OpenCheck::allowed_other_bits`].
    pub fn open_checked(name: &str, check: &OpenCheck) -> Result<Self> {
        Self::open_full(object_name(name)?, check)
    }

    /// Open an object mman did not create, by its name verbatim (`/ring`, see
    /// [`raw_object_name`]), with the same checks as [`open_checked`](Self::open_checked).
    /// The handle never unlinks it.
    ///
    /// # Errors
    /// As [`open_checked`](Self::open_checked).
    pub fn open_foreign(name: &str, check: &OpenCheck) -> Result<Self> {
        Self::open_full(raw_object_name(name)?, check)
    }

    /// Remove an object by its name verbatim (`/ring`), mman's or not.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for an invalid name (see [`raw_object_name`]); the error
    /// of `shm_unlink`: [`ErrorKind::NotFound`], or [`ErrorKind::PermissionDenied`] for
    /// another user's object.
    pub fn unlink_foreign(name: &str) -> Result<()> {
        let full = raw_object_name(name)?;
        sys::shm_unlink(&full).map_err(|e| Error::os("shm_unlink", e).with_path(Some(full.as_ref())))
    }

    fn open_full(full: String, check: &OpenCheck) -> Result<Self> {
        let path = full.clone();
        let fail = |e: Error| e.with_path(Some(path.as_ref()));
        let fd = sys::shm_open(&full, true).map_err(|e| {
            let err = fail(Error::os("shm_open", e));
            match err.raw_os_error() {
                Some(libc::ELOOP) => err.with_hint(
                    "the name is a symbolic link, which no shared-memory object is: someone else planted it; do not trust it",
                ),
                _ => err,
            }
        })?;
        let o = sys::owner(fd.as_fd()).map_err(|e| fail(Error::os("fstat", e)))?;
        if !o.regular {
            return Err(fail(Error::new(
                ErrorKind::InvalidInput,
                "shm_open",
                "not a regular file",
            )));
        }
        let want = check.owner.unwrap_or_else(sys::euid);
        if o.uid != want {
            return Err(fail(
                Error::new(
                    ErrorKind::PermissionDenied,
                    "shm_open",
                    format!("owned by uid {}, expected uid {want}", o.uid),
                )
                .with_hint("someone else created this name; do not trust its contents"),
            ));
        }
        let extra = o.mode & 0o077 & !check.allowed_other_bits;
        if extra != 0 {
            return Err(fail(
                Error::new(
                    ErrorKind::PermissionDenied,
                    "shm_open",
                    format!("mode {:04o} lets group or others in", o.mode),
                )
                .with_hint("create it with mode 0600, or allow those bits in OpenCheck"),
            ));
        }
        if o.size < check.min_size {
            return Err(fail(
                Error::new(
                    ErrorKind::InvalidInput,
                    "shm_open",
                    format!("{} bytes, smaller than the {} needed", o.size, check.min_size),
                )
                .with_hint("a mapping past its end would raise SIGBUS; recreate it larger"),
            ));
        }
        // In use while this handle lives. Best effort: refused only while a sweeper that
        // found the object unused is removing its name (the handle stays valid; the name
        // goes), or where there are no OFD locks.
        let _ = sys::mark_in_use(fd.as_fd());
        Ok(SharedMemory {
            name: full,
            fd,
            size: o.size,
            unlink_on_drop: false,
        })
    }

    /// Remove the name `/mman.NAME` (mappings and open handles stay valid).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for an invalid name (see [`object_name`]); the error of
    /// `shm_unlink`: [`ErrorKind::NotFound`], or [`ErrorKind::PermissionDenied`] for
    /// another user's object.
    pub fn unlink(name: &str) -> Result<()> {
        let full = object_name(name)?;
        sys::shm_unlink(&full).map_err(|e| Error::os("shm_unlink", e).with_path(Some(full.as_ref())))
    }

    /// The full object name, `/mman.NAME`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Keep the name after this handle is dropped. The object is not marked as kept: once no
    /// handle holds it, [`list`] calls it stale and [`remove_stale`] removes it (as a named
    /// channel's region, which its last handle removes, is removed after a crash). To keep
    /// an object on purpose, create it with [`create_kept`](Self::create_kept).
    pub fn keep(&mut self) {
        self.unlink_on_drop = false;
    }
    /// Map the whole object, shared, readable and writable.
    ///
    /// # Errors
    /// As [`MapOptions::map`] (the object is open for reading and writing, so its mode is no
    /// obstacle): chiefly [`ErrorKind::ResourceLimit`] when address space runs out. Errors
    /// name the object.
    pub fn map(&self) -> Result<Mapping> {
        MapOptions::new()
            .read_write()
            .shared()
            .map(self.fd.as_fd())
            .map_err(|e| e.with_path(Some(self.name.as_ref())))
    }
}

impl AsFd for SharedMemory {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        if self.unlink_on_drop {
            let _ = sys::shm_unlink(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_checked() {
        assert_eq!(object_name("x").unwrap(), "/mman.x");
        assert_eq!(object_name("mman.x").unwrap(), "/mman.x");
        assert_eq!(object_name("/mman.x").unwrap(), "/mman.x");
        assert!(object_name("").is_err());
        assert!(object_name("a/b").is_err());
    }
}
