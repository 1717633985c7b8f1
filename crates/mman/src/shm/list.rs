//! Listing the named objects, and removing the stale ones: those no live handle holds and
//! nobody made to be kept.

use std::os::fd::{AsFd, BorrowedFd};

use super::{object_name, CREATOR_TAG, KEPT, PREFIX};
use crate::error::{Error, Result};
use crate::sys::shm as sys;

/// One object found by [`list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The name without the leading `/mman.`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Owner uid.
    pub uid: u32,
    /// Permission bits.
    pub mode: u32,
    /// The PID of the creating process, when recorded (shown for information: the PID may
    /// name another process by now; staleness is judged by [`in_use`](Self::in_use)).
    pub creator: Option<u32>,
    /// Created to be kept ([`SharedMemory::create_kept`](super::SharedMemory::create_kept),
    /// `mman shm create`): never stale.
    pub kept: bool,
    /// Whether a live handle holds it (a process that has it open through mman, or a child
    /// that inherited such a handle). `None` when unknown: another program's object, one
    /// this user may not open, or a system without OFD locks.
    pub in_use: Option<bool>,
    /// Whether mman made it (its name has the `mman.` prefix). When false, `name` is the
    /// object's name verbatim, to give
    /// [`SharedMemory::open_foreign`](super::SharedMemory::open_foreign) or
    /// [`SharedMemory::unlink_foreign`](super::SharedMemory::unlink_foreign).
    pub mman: bool,
}

impl ObjectInfo {
    /// Whether it is stale: mman's, with its creator's stamp, not kept, and held by no live
    /// handle. Without a stamp (no extended attributes on `/dev/shm`, or another program's
    /// object) nothing is stale.
    pub fn is_stale(&self) -> bool {
        self.mman && self.creator.is_some() && !self.kept && self.in_use == Some(false)
    }
}

/// The creator's PID and whether the object is kept, from its stamp (`PID:START` or
/// `PID:START:kept`); `None` for no stamp or one that does not parse.
fn read_stamp(fd: BorrowedFd<'_>) -> Option<(u32, bool)> {
    let stamp = String::from_utf8(sys::tag(fd, CREATOR_TAG)?).ok()?;
    let mut parts = stamp.split(':');
    let pid = parts.next()?.parse::<u32>().ok()?;
    parts.next()?.parse::<u64>().ok()?;
    let kept = match parts.next() {
        None => false,
        Some(KEPT) => true,
        Some(_) => return None,
    };
    parts.next().is_none().then_some((pid, kept))
}

/// The objects mman created that exist now (Linux: the `mman.*` entries of `/dev/shm`).
///
/// # Errors
/// As [`list_all`].
pub fn list() -> Result<Vec<ObjectInfo>> {
    Ok(list_all()?.into_iter().filter(|o| o.mman).collect())
}

/// Every shared-memory object that exists now, mman's and others' (glibc's named
/// semaphores, `sem.*`, included). Foreign objects have [`ObjectInfo::mman`] false and their
/// name verbatim.
///
/// # Errors
/// The error of reading the directory `/dev/shm`:
/// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) where there is none (as on macOS),
/// [`ErrorKind::PermissionDenied`](crate::ErrorKind::PermissionDenied). An object that
/// vanishes or cannot be opened while listed is skipped or listed from its directory entry,
/// not an error.
pub fn list_all() -> Result<Vec<ObjectInfo>> {
    let dir = std::path::Path::new("/dev/shm");
    let entries = std::fs::read_dir(dir).map_err(|e| Error::os("readdir", e).with_path(Some(dir)))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let fname = entry.file_name();
        let Some(fname) = fname.to_str() else {
            // Not UTF-8: shown with its bytes escaped, never dropped.
            let shown = fname.as_encoded_bytes().escape_ascii().to_string();
            if let Ok(m) = entry.metadata() {
                use std::os::unix::fs::MetadataExt;
                out.push(ObjectInfo {
                    name: shown,
                    size: m.len(),
                    uid: m.uid(),
                    mode: m.mode() & 0o7777,
                    creator: None,
                    kept: false,
                    in_use: None,
                    mman: false,
                });
            }
            continue;
        };
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let (bare, mman) = match fname.strip_prefix(PREFIX) {
            Some(bare) => (bare, true),
            None => (fname, false),
        };
        let fd = match sys::shm_open(&format!("/{fname}"), false) {
            Ok(fd) => fd,
            // It vanished between readdir and open: it is gone, nothing to list.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            // Another user's object this user may not open: listed from its directory entry.
            Err(_) => {
                let Ok(m) = entry.metadata() else { continue };
                use std::os::unix::fs::MetadataExt;
                out.push(ObjectInfo {
                    name: bare.to_string(),
                    size: m.len(),
                    uid: m.uid(),
                    mode: m.mode() & 0o7777,
                    creator: None,
                    kept: false,
                    in_use: None,
                    mman,
                });
                continue;
            }
        };
        let Ok(o) = sys::owner(fd.as_fd()) else { continue };
        let (creator, kept) = match read_stamp(fd.as_fd()) {
            Some((pid, kept)) => (Some(pid), kept),
            None => (None, false),
        };
        // Only mman's handles mark what they use; another program's object says nothing.
        let in_use = if mman { sys::in_use(fd.as_fd()).ok() } else { None };
        out.push(ObjectInfo {
            name: bare.to_string(),
            size: o.size,
            uid: o.uid,
            mode: o.mode,
            creator,
            kept,
            in_use,
            mman,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Unlink every stale object of this user (see [`ObjectInfo::is_stale`]): mman's, not
/// kept, held by no live handle. Returns their names. Kept objects, objects in use and
/// objects without a creator's stamp are never removed.
///
/// Each is claimed before its name goes (a write lock on the in-use byte, which succeeds
/// only while no handle holds it and keeps new handles from marking it meanwhile), and its
/// stamp and identity are checked again under the claim: an object opened, kept, or removed
/// and created again since it was listed is left alone.
///
/// # Errors
/// As [`list`]; the error of opening a stale object (other than its having vanished, which
/// is skipped) or of `shm_unlink`: the first such error stops the sweep, and the objects
/// removed before it stay removed.
pub fn remove_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for o in list()? {
        if o.is_stale() && o.uid == sys::euid() {
            let full = object_name(&o.name)?;
            let fd = match sys::shm_open(&full, true) {
                Ok(fd) => fd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::os("shm_open", e).with_path(Some(full.as_ref()))),
            };
            let claimed = sys::try_claim(fd.as_fd())
                .map_err(|e| Error::os("fcntl", e).with_path(Some(full.as_ref())))?;
            let still_stale = matches!(read_stamp(fd.as_fd()), Some((_, false)));
            if claimed && still_stale && sys::still_named(fd.as_fd(), &full) {
                sys::shm_unlink(&full)
                    .map_err(|e| Error::os("shm_unlink", e).with_path(Some(full.as_ref())))?;
                removed.push(o.name);
            }
            // The claim ends with `fd`, after the name is gone.
        }
    }
    Ok(removed)
}
