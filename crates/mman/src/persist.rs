//! Persistent variables: values whose bytes live in a file and outlive the process.
//!
//! * [`Persistent<T>`]: the course notes' `persist()`, typed. The file *is* the value's bytes
//!   (zero-filled when new, rounded up to the page), mapped MAP_SHARED, so a C program mapping
//!   the same file sees the same bytes. Any process that can write the file, and this one
//!   through `std::fs` or another mapping, can change or truncate those bytes at any moment,
//!   and the handle's `flock` is advisory (it keeps cooperating mman handles apart, nobody
//!   else). So the value is read and written by copy: [`Persistent::get`],
//!   [`Persistent::set`], [`Persistent::update`]; a truncation is an error, never a value
//!   silently turned to zeros behind a reference. [`Persistent::as_ref`] and
//!   [`Persistent::as_mut`] hand out references for a caller who can vouch that nobody
//!   else touches the file. [`persist_fixed`] is the notes' MAP_FIXED-over-a-global form,
//!   `unsafe`.
//! * [`Durable<T>`]: changed only by transactions, never torn, by a killed process or a power
//!   loss. The file holds a header and two copies of `T`, each with its sequence number and a
//!   checksum of both (XXH3-64; CRC-32 in files of format version 1, which are still read and
//!   written as such); a commit writes the inactive copy (large values and durable commits in
//!   one `pwritev`), makes it durable (`msync(MS_SYNC)` of
//!   exactly its pages, in [`Commit::Durable`] mode), and that copy, with the higher sequence
//!   number and a valid checksum, *is* the flip: there is no separate pointer to update, so
//!   one sync per commit suffices where a header flip would take a second. Open (and every
//!   read) picks the newest valid copy, so a torn write of the inactive copy falls back to the
//!   previous value. Writers exclude each other with `flock` (released by the kernel when a
//!   writer dies); readers copy both candidates out, check them, and never block writers
//!   (both failing while the heads change means a writer rewrote them meanwhile, and the
//!   reader tries again, for at most 5 s; failing with the heads unchanged is corruption).
//!
//! ```
//! # fn main() -> mman::Result<()> {
//! use mman::persist::{Commit, Durable, Persistent};
//! let dir = tempfile::tempdir().unwrap();
//! let runs = Persistent::<u64>::open(dir.path().join("runs"))?;
//! runs.update(|n| *n += 1)?;                   // copy in, change, copy back
//! assert_eq!(runs.get()?, 1);
//! runs.flush()?;                               // msync: durable
//! let path = dir.path().join("hits");
//! let mut hits = Durable::<u64>::open(&path, *b"hitcount", 0)?;
//! hits.update(Commit::Durable, |n| *n += 1)?;
//! assert_eq!(hits.read()?, 1);
//! drop(hits);
//! assert_eq!(Durable::<u64>::open(&path, *b"hitcount", 0)?.read()?, 1);
//! # Ok(()) }
//! ```

// The files: `persistent` (`Persistent<T>`, `persist_fixed`), `durable` (`Durable<T>`, its
// writer and commits), `format` (the durable file's layout, header and commit protocol, with
// its power-loss simulation tests).

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::sys;

mod durable;
mod format;
mod persistent;

pub use durable::{write_and_fdatasync, Commit, Durable, Writer};
pub use persistent::{persist_fixed, Persistent};

fn page() -> u64 {
    sys::page_size() as u64
}

/// Give the first `len` bytes of the open file `f` (`path`) real backing store now
/// (`fallocate`), before they are mapped: a value written through the mapping then never
/// meets a full disk or tmpfs as a fault, only here, as [`ErrorKind::StorageFull`]. A file
/// mman created is complete already (written, not sparse); one made by another program
/// (`ftruncate`) may have holes. Never grows the file (the callers check its size first);
/// nothing to do where the file system cannot allocate ahead.
fn back(f: &File, path: &Path, len: u64) -> Result<()> {
    sys::allocate_range(f.as_fd(), 0, len).map(drop).map_err(|e| {
        let err = Error::os("fallocate", e)
            .with_path(Some(path))
            .with_range(0, Some(len as usize));
        match err.kind() {
            ErrorKind::StorageFull => err.with_hint(crate::error::STORAGE_HINT),
            _ => err,
        }
    })
}

/// Create `path` atomically with `bytes` as its contents and `mode`, unless it exists: a
/// process killed while creating leaves no file or a complete one, and nothing else. The
/// file is written without a name (`O_TMPFILE`) and linked into place once complete; where
/// that cannot be done, it is written under a temporary name beside `path`, then linked.
fn create_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let fail = |op: &'static str, e: std::io::Error, p: &Path| Error::os(op, e).with_path(Some(p));
    // Named by the path asked for: a temporary name is mman's own, and what fails (a
    // missing or unwritable directory) is the same for both.
    let create_error = |e: std::io::Error, tmp: Option<&Path>| {
        let how = match tmp {
            Some(t) => format!(
                "the file is written first as {}, then linked into place",
                t.file_name().map(Path::new).unwrap_or(t).display()
            ),
            None => "the file is written first without a name, then linked into place".to_string(),
        };
        let why = match e.raw_os_error() {
            Some(libc::ENOENT) => format!("the directory {} does not exist", dir.display()),
            Some(libc::EACCES) => {
                format!("this user may not create files in {} ({how})", dir.display())
            }
            // Not a permission: nobody may write there, root included.
            Some(libc::EROFS) => format!(
                "{} is on a read-only file system: no file can be created there; choose a directory on a writable one",
                dir.display()
            ),
            _ => how,
        };
        fail("create", e, path).with_hint(why)
    };
    if let Some(f) = sys::persist::unnamed_file(&dir).map_err(|e| create_error(e, None))? {
        fill(&f, bytes, mode).map_err(|e| fail("write", e, path))?;
        if sys::persist::name_file(&f, path)
            .map_err(|e| fail("link", e, path))?
            .is_some()
        {
            return sys::persist::sync_dir(&dir).map_err(|e| fail("fsync", e, &dir));
        }
        // No /proc to name it through: the named way below.
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.mman-new-{}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| create_error(e, Some(&tmp)))?;
    if let Err(e) = fill(&f, bytes, mode) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail("write", e, &tmp));
    }
    sys::persist::publish(&tmp, path).map_err(|e| fail("link", e, path))?;
    sys::persist::sync_dir(&dir).map_err(|e| fail("fsync", e, &dir))?;
    Ok(())
}

/// Write a new file's contents, give it exactly `mode`, and make it durable.
fn fill(f: &File, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    (&*f).write_all(bytes)?;
    // The mode exactly as asked: create applied the umask. On the descriptor (fchmod), not
    // a name: whoever else may write the directory could have put a symbolic link to another
    // of this user's files in its place by now.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    sys::persist::fsync(f.as_fd())
}

/// Open an existing file read-write, never blocking on a FIFO nor becoming a controlling
/// terminal (what is found there is checked only once it is open).
fn open_existing(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            if sys::opened_a_socket(&e, path) {
                // What check_format says of a FIFO, which opens.
                Error::new(
                    ErrorKind::InvalidInput,
                    "persist",
                    "not a regular file: a persistent value is a regular file",
                )
                .with_path(Some(path))
            } else {
                Error::os("open", e).with_path(Some(path))
            }
        })
}

/// An existing file is used only if it has the format mman makes: a regular file of one of
/// the lengths in `lens` (the first is the one this system makes, named in the error).
/// `what` names the format in the error.
fn check_format(f: &File, path: &Path, lens: &[u64], what: &str) -> Result<()> {
    let len = lens[0];
    let info = sys::file_info(f.as_fd()).map_err(|e| Error::os("fstat", e).with_path(Some(path)))?;
    if info.kind != sys::FileType::Regular {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "persist",
            format!("not a regular file: {what} is a regular file of {len} bytes"),
        )
        .with_path(Some(path)));
    }
    if !lens.contains(&info.size) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "persist",
            format!("the file has {} bytes; {what} has exactly {len}", info.size),
        )
        .with_path(Some(path))
        .with_hint("it was made for another type or by another program, or truncated: it was left as it is; give another path"));
    }
    Ok(())
}

/// The lengths a file holding a `size`-byte value may have: the value rounded up to this
/// system's pages (what mman makes here; first), to the pages of any other system (4, 16 or
/// 64 KiB: what mman made there), or the value alone (what a C program writing it makes,
/// the notes' `persist()` of a 4 KiB page included, on any system). Which system opens a
/// file must not decide whether it is a persistent value.
fn value_file_lens(size: u64) -> Vec<u64> {
    let mut lens = vec![size.next_multiple_of(page())];
    for l in [4u64 << 10, 16 << 10, 64 << 10]
        .map(|p| size.next_multiple_of(p))
        .into_iter()
        .chain([size])
    {
        if !lens.contains(&l) {
            lens.push(l);
        }
    }
    lens
}

fn open_locked(path: &Path, wait: bool) -> Result<File> {
    let f = open_existing(path)?;
    let got = sys::persist::lock_exclusive(f.as_fd(), wait)
        .map_err(|e| Error::os("flock", e).with_path(Some(path)))?;
    if !got {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            "flock",
            "another process holds this persistent variable",
        )
        .with_path(Some(path))
        .with_hint("open_wait() waits for it; or use a Durable<T> for several processes"));
    }
    Ok(f)
}
