//! The table's file: made afresh (or an existing table reused) and held for the dinner, or
//! refused. (Apart from the dinner itself, in `philosophers.rs`, to keep both short.)

use anyhow::{bail, Context, Result};
use mman::MapOptions;

use super::{Table, MAGIC, MAGIC_AT};

/// Make `path` a fresh table for `n` philosophers, and hold it: the returned file carries an
/// exclusive `flock` for the whole dinner, so a second dinner given the same `--file` is
/// refused instead of wiping the forks, gate and counters of one in progress (whose
/// philosophers then waited for good on forks that were reset under them). A file mman
/// creates is created with O_EXCL and O_NOFOLLOW; an existing one (`--file`) is used only if
/// it is a table already (a regular file of the table's size with its mark), never truncated
/// otherwise; what is checked is the file opened, not the name. (The default temporary file
/// exists already, made by `tempfile` with O_EXCL.)
pub(super) fn prepare_table(path: &std::path::Path, n: usize, named: bool) -> Result<std::fs::File> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let size = Table::size(n) as u64;
    let refuse = || {
        anyhow::anyhow!(
            "philosophers --file {}: the file exists and is not a table for {n} philosophers; refusing to touch it \
             (give a new path, or remove it yourself)",
            path.display()
        )
    };
    let open = |create: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            // O_NONBLOCK: a FIFO put in the table's place must not hold up the open.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .mode(0o600)
            .open(path)
    };
    let (file, fresh) = match open(named) {
        Ok(f) => (f, named),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Not even opened unless it is a regular file: opening a device can act.
            let m = std::fs::symlink_metadata(path)
                .with_context(|| format!("philosophers: {}", path.display()))?;
            if !m.file_type().is_file() {
                return Err(refuse());
            }
            match open(false) {
                Ok(f) => (f, false),
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(refuse()),
                Err(e) => return Err(e).with_context(|| format!("philosophers: open {}", path.display())),
            }
        }
        Err(e) => return Err(e).with_context(|| format!("philosophers: create {}", path.display())),
    };
    if !file.metadata().is_ok_and(|m| m.file_type().is_file()) {
        bail!("philosophers --file {}: not a regular file", path.display());
    }
    if let Err(e) = rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        if e == rustix::io::Errno::WOULDBLOCK {
            bail!(
                "philosophers --file {}: another dinner is using this table; refusing to reset it under it \
                 (wait for it to end, or give another path)",
                path.display()
            );
        }
        if fresh {
            remove_if_same(path, &file);
        }
        return Err(std::io::Error::from(e))
            .with_context(|| format!("philosophers: flock {}", path.display()));
    }
    if named && !fresh {
        let mut mark = [0u8; 8];
        let is_table = file.metadata().is_ok_and(|m| m.len() == size)
            && file.read_exact_at(&mut mark, MAGIC_AT as u64).is_ok()
            && mark == MAGIC.to_le_bytes();
        if !is_table {
            return Err(refuse());
        }
    }
    // A fresh table: zeros, every page backed, then the mark. A file this run created and
    // could not prepare (a full disk, a quota) is removed again: left half-made, without its
    // mark, every later dinner given the path would refuse it.
    if let Err(e) = reset_table(&file, path, size) {
        if fresh {
            remove_if_same(path, &file);
        }
        return Err(e);
    }
    Ok(file)
}

/// Back every page of the table in the file (`fallocate`, through
/// [`Mapping::allocate`](mman::Mapping::allocate)), then write it afresh: zeros and its mark. Backed first, so that a full disk or tmpfs is
/// this error, not a fork posted into a page the file system cannot hold (the post would
/// land in a private copy and its philosopher's neighbour wait for good); and an existing
/// table that cannot be backed is left as it was, mark and all, not cut to nothing first.
fn reset_table(file: &std::fs::File, path: &std::path::Path, size: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    file.set_len(size)
        .with_context(|| format!("philosophers: size {}", path.display()))?;
    MapOptions::new()
        .read_write()
        .shared()
        .map(file)
        .and_then(|map| map.allocate(..))
        .with_context(|| format!("philosophers: prepare the table {}", path.display()))?;
    let mut image = vec![0u8; size as usize];
    image[MAGIC_AT..MAGIC_AT + 8].copy_from_slice(&MAGIC.to_le_bytes());
    file.write_all_at(&image, 0)
        .with_context(|| format!("philosophers: write {}", path.display()))?;
    Ok(())
}

/// Remove `path` if it still names `file` (the file this run created): never another file
/// put in its place since.
fn remove_if_same(path: &std::path::Path, file: &std::fs::File) {
    use std::os::unix::fs::MetadataExt;
    let same = match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    };
    if same {
        let _ = std::fs::remove_file(path);
    }
}
