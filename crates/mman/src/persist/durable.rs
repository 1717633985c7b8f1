//! `Durable<T>`: a value changed only by transactions that are never torn (see the module
//! docs of `persist`), its `Writer`, and the write+fdatasync baseline.

use std::fs::File;
use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::format::{
    commit_slot, data_then_head, header_crc, newest_valid, Header, Heads, Layout, SlotSum, Storage, MAGIC,
    VERSION,
};
use super::{create_atomically, page};
use crate::error::{Error, ErrorKind, Result};
use crate::map::{FlushMode, MapOptions, Mapping};
use crate::sys;

/// How a [`Durable`] commit is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// `msync(MS_SYNC)` of the new copy's pages before returning: survives a power loss.
    Durable,
    /// No sync: survives the process being killed at any instant (the page cache keeps what
    /// was written), not a power loss. Much faster.
    ProcessCrashSafe,
}

/// The real file. Process-crash-safe commits of small values write through the mapping (no
/// system call: an 8-byte commit costs nanoseconds). Large values, and every write of a durable
/// commit (the third field), go through `pwritev`: the kernel's copy is vectorised where the
/// mapping's atomic 8-byte stores are not, and no page is dirtied through a write fault (with
/// writes through the mapping, a 1 MiB durable commit measured 1.35 ms against 0.82 ms when
/// other files were being written between commits; a write fault on ext4 probably ties the
/// sync to the running journal transaction). Such a slot goes out in one `pwritev` (head, the
/// zeros up to the data, the data): one write of one range, which syncs faster than the data
/// and then the head apart (bench/RESULTS.md). Both ways land in the same page cache the
/// mapping shows.
struct MapStorage<'a>(&'a Mapping, &'a File, bool);

/// A file image in memory, for a new file's first copy (and tests that build odd ones).
struct Img<'a>(&'a mut Vec<u8>);

impl Storage for Img<'_> {
    fn write(&mut self, off: u64, data: &[u8]) -> Result<()> {
        self.0[off as usize..off as usize + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn sync(&mut self, _: u64, _: u64) -> Result<()> {
        Ok(())
    }
}

/// How long a reader tries while writers keep rewriting both copies under it.
const READ_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// From this size on, `pwritev`/`pread` beat the atomic copies to and from the mapping.
const PWRITE_FROM: usize = 64 << 10;

impl Storage for MapStorage<'_> {
    /// Through the mapping: `write_slot` sends everything else to `pwritev`.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.0.write_at(offset as usize, data)
    }
    fn write_slot(&mut self, at: u64, head: &[u8; 16], data_off: u64, data: &[u8]) -> Result<()> {
        if !(self.2 || data.len() >= PWRITE_FROM) {
            return data_then_head(self, at, head, data_off, data);
        }
        let pad = vec![0u8; data_off as usize - head.len()];
        sys::persist::pwrite_all_vectored(self.1.as_fd(), &[head, &pad, data], at)
            .map_err(|e| Error::os("pwritev", e).with_range(at, Some(data_off as usize + data.len())))?;
        // Unlike a store through the mapping, a write past the end of a file someone truncated
        // does not fail: it lengthens the file again, and the kernel fills what was cut with
        // zeros, the header included. The commit would report success while the file could
        // no longer be opened. So the header is read back (64 bytes through the mapping) and
        // must still be one.
        let h: Header = self.0.load(0)?;
        if h.magic != MAGIC || h.crc != header_crc(&h) {
            return Err(Error::new(
                ErrorKind::Corrupted,
                "commit durable",
                "the file's header is gone after the write: the file was truncated or overwritten under this handle",
            )
            .with_hint("another process changed the file outside mman's protocol; the value must be written anew to a fresh file"));
        }
        Ok(())
    }
    fn sync(&mut self, offset: u64, len: u64) -> Result<()> {
        let a = offset as usize;
        self.0
            .flush(a..(a + len as usize).min(self.0.len()), FlushMode::Sync)
    }
}

/// A `T` changed only by transactions that are never torn (see the [module docs](super)).
///
/// ```
/// # fn main() -> mman::Result<()> {
/// use mman::persist::{Commit, Durable};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("accounts");
/// // Two balances that always sum to 100, whatever kills the process when.
/// let mut accounts = Durable::<[u64; 2]>::open(&path, *b"accounts", [100, 0])?;
/// accounts.update(Commit::Durable, |a| {
///     a[0] -= 30;
///     a[1] += 30;
/// })?;
/// let mut writer = accounts.writer()?; // many commits under one lock
/// for _ in 0..3 {
///     writer.update(Commit::ProcessCrashSafe, |a| {
///         a[0] -= 1;
///         a[1] += 1;
///     })?;
/// }
/// drop(writer);
/// assert_eq!(accounts.read()?, [67, 33]);
/// // The tag names the type: a file of another is refused.
/// assert!(Durable::<[u64; 2]>::open_existing(&path, *b"balances").is_err());
/// # Ok(()) }
/// ```
pub struct Durable<T: bytemuck::Pod> {
    map: Mapping,
    file: File,
    layout: Layout,
    path: PathBuf,
    _t: PhantomData<T>,
}

impl<T: bytemuck::Pod> std::fmt::Debug for Durable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("path", &self.path)
            .field("layout", &self.layout)
            .finish()
    }
}

impl<T: bytemuck::Pod> Durable<T> {
    /// The layout of a durable file for `T`.
    pub(crate) fn layout() -> Layout {
        Layout::new(
            std::mem::size_of::<T>() as u64,
            std::mem::align_of::<T>() as u64,
            page(),
        )
    }

    /// Open the durable `T` at `path`, checking it is one (magic, version, size and
    /// alignment of `T`, the caller's 8-byte type `tag`); create it (mode 0600, atomically)
    /// holding `initial` if it does not exist.
    ///
    /// # Errors
    /// As [`open_with`](Self::open_with).
    pub fn open(path: impl AsRef<Path>, tag: [u8; 8], initial: T) -> Result<Self> {
        Self::open_with(path.as_ref(), tag, initial, 0o600)
    }

    /// [`open`](Self::open) with the mode for a new file.
    ///
    /// # Errors
    /// For a missing file, the errors of creating it atomically (a temporary file in its
    /// directory, `write`, `fsync`, `link`, `fsync` of the directory):
    /// [`ErrorKind::NotFound`] for a missing directory, [`ErrorKind::PermissionDenied`] for
    /// one this user may not write. Then as [`open_existing`](Self::open_existing).
    pub fn open_with(path: &Path, tag: [u8; 8], initial: T, mode: u32) -> Result<Self> {
        let layout = Self::layout();
        if !path.exists() {
            create_atomically(path, &Self::image(&layout, tag, &initial), mode)?;
        }
        Self::open_existing(path, tag)
    }

    fn image(layout: &Layout, tag: [u8; 8], initial: &T) -> Vec<u8> {
        let mut img = vec![0u8; layout.file_len() as usize];
        let mut h = Header {
            magic: MAGIC,
            version: VERSION,
            align: std::mem::align_of::<T>() as u32,
            size: layout.size,
            tag,
            stride: layout.stride,
            created_seq: 1,
            crc: 0,
            _pad: [0; 12],
        };
        h.crc = header_crc(&h);
        img[..64].copy_from_slice(bytemuck::bytes_of(&h));
        // Slot 0 holds the initial value with sequence 1; slot 1 stays invalid (seq 0).
        let _ = commit_slot(
            &mut Img(&mut img),
            layout,
            0,
            1,
            bytemuck::bytes_of(initial),
            Commit::ProcessCrashSafe,
        );
        img
    }

    /// Open an existing durable file, with every check and no creation.
    ///
    /// # Errors
    /// * The error of `open` for reading and writing: [`ErrorKind::NotFound`],
    ///   [`ErrorKind::PermissionDenied`].
    /// * [`ErrorKind::NotMappable`] for anything but a regular file.
    /// * [`ErrorKind::InvalidInput`] when it is not a durable variable of this type: too
    ///   short, wrong magic, header checksum, version, tag, or size and alignment of `T`.
    /// * [`ErrorKind::Corrupted`] when both copies fail their checksums.
    /// * [`ErrorKind::StorageFull`] when the file has holes (cut by another program) and
    ///   its file system has no room to back them (`fallocate`, made before any commit).
    /// * As [`MapOptions::map`] for the mapping.
    pub fn open_existing(path: &Path, tag: [u8; 8]) -> Result<Self> {
        Self::open_checked(path, tag, true)
    }

    /// Open an existing durable file for reading only: it is opened and mapped read-only,
    /// so a read-only file can be read and nothing is ever written. [`read`](Self::read)
    /// works; [`update`](Self::update) and the commits of a [`writer`](Self::writer) fail.
    ///
    /// # Errors
    /// As [`open_existing`](Self::open_existing), with read access only.
    pub fn open_read_only(path: &Path, tag: [u8; 8]) -> Result<Self> {
        Self::open_checked(path, tag, false)
    }

    fn open_checked(path: &Path, tag: [u8; 8], write: bool) -> Result<Self> {
        let layout = Self::layout();
        // A FIFO (after fstat) and a socket (which open refuses) alike.
        let not_regular = || {
            Error::new(
                ErrorKind::NotMappable,
                "open durable",
                "not a regular file: a durable variable is a regular file",
            )
            .with_path(Some(path))
        };
        // Never "remove it": the file may be the user's own, or another program's.
        let bad = |why: String| {
            Error::new(ErrorKind::InvalidInput, "open durable", why)
                .with_path(Some(path))
                .with_hint("not a durable variable of this type: it was left as it is; give another path")
        };
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer; it is
        // refused below as not a regular file. (No effect on regular files.)
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| {
                if crate::sys::opened_a_socket(&e, path) {
                    not_regular()
                } else {
                    Error::os("open", e).with_path(Some(path))
                }
            })?;
        let meta = file
            .metadata()
            .map_err(|e| Error::os("fstat", e).with_path(Some(path)))?;
        if !meta.file_type().is_file() {
            return Err(not_regular());
        }
        let len = meta.len();
        if len < 64 {
            return Err(bad(format!("{len} bytes: too short for a header")));
        }
        let mut raw = [0u8; 64];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut raw, 0)
            .map_err(|e| Error::os("read", e).with_path(Some(path)))?;
        let h: Header = bytemuck::pod_read_unaligned(&raw);
        if h.magic != MAGIC {
            return Err(bad("no mman durable header (wrong magic)".into()));
        }
        if h.crc != header_crc(&h) {
            return Err(bad("the header is corrupted (checksum mismatch)".into()));
        }
        // A file keeps its version: an older one is read and committed to as it was written.
        let mut layout = layout;
        layout.sum = SlotSum::for_version(h.version).ok_or_else(|| {
            bad(format!(
                "format version {}, this mman reads 1 to {VERSION}",
                h.version
            ))
        })?;
        if h.tag != tag {
            return Err(bad(format!(
                "type tag {:?}, expected {:?}",
                String::from_utf8_lossy(&h.tag),
                String::from_utf8_lossy(&tag)
            )));
        }
        if h.size != layout.size
            || h.align as u64 != std::mem::align_of::<T>() as u64
            || h.stride != layout.stride
        {
            return Err(bad(format!(
                "holds a {}-byte value aligned to {}, this type is {} bytes aligned to {}",
                h.size,
                h.align,
                layout.size,
                std::mem::align_of::<T>()
            )));
        }
        if len < layout.file_len() {
            return Err(bad(format!(
                "{len} bytes, truncated: the layout needs {}",
                layout.file_len()
            )));
        }
        let mut options = MapOptions::new();
        if write {
            // A file with holes (cut by another program) backed before any commit is
            // written through the mapping: a full disk is an error here, not a lost commit.
            super::back(&file, path, layout.file_len())?;
            options.read_write();
        }
        let map = options
            .shared()
            .len(layout.file_len() as usize)
            .map(&file)
            .map_err(|e| e.with_path(Some(path)))?;
        let d = Durable {
            map,
            file,
            layout,
            path: path.to_path_buf(),
            _t: PhantomData,
        };
        d.current().map_err(|e| e.with_path(Some(path)))?;
        Ok(d)
    }

    fn current(&self) -> Result<(T, u64, u64)> {
        let mut v = T::zeroed();
        let read = |off: u64, buf: &mut [u8]| {
            if buf.len() >= PWRITE_FROM {
                // Large copies by the kernel: vectorised, unlike atomic loads. A read that
                // stops short met the end of a file someone cut: the truncation, with sizes.
                std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, off).map_err(|e| {
                    match (e.kind(), sys::file_info(self.file.as_fd())) {
                        (std::io::ErrorKind::UnexpectedEof, Ok(now)) => {
                            let needed = self.layout.file_len();
                            Error::truncated("pread", Some(&self.path), needed, now.size.min(needed))
                        }
                        _ => Error::os("pread", e).with_path(Some(&self.path)),
                    }
                })
            } else {
                self.map
                    .read_at(off as usize, buf)
                    .map_err(|e| e.with_path(Some(&self.path)))
            }
        };
        let heads = || -> Result<Heads> {
            let mut h: Heads = [[0u8; 16]; 2];
            for (i, h) in h.iter_mut().enumerate() {
                read(self.layout.slot(i as u64), h)?;
            }
            Ok(h)
        };
        // A writer may rewrite the copy being read, and, committing fast, the other one too
        // before it is read: both checksums then fail although nothing is corrupted. So both
        // failing means corruption only if the heads did not change meanwhile; while they
        // change, try again (yielding, then sleeping a little longer each time), for at most
        // READ_PATIENCE.
        let (mut started, mut tries) = (None, 0u32);
        loop {
            // The heads come back when neither copy holds: the ones both were judged by.
            let before = match newest_valid(&self.layout, read, bytemuck::bytes_of_mut(&mut v))? {
                Ok((slot, seq)) => return Ok((v, slot, seq)),
                Err(heads) => heads,
            };
            // The data loads before the heads are read again (weakly ordered CPUs): data of
            // a later commit seen above means its head is seen changed below.
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            if heads()? == before {
                return Err(Error::new(
                    ErrorKind::Corrupted,
                    "read durable",
                    "both copies are corrupted (checksums fail)",
                )
                .with_path(Some(&self.path))
                .with_hint("the file was damaged outside mman's protocol"));
            }
            let since = *started.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > READ_PATIENCE {
                return Err(Error::os("read durable", std::io::ErrorKind::TimedOut.into())
                    .with_path(Some(&self.path))
                    .with_hint("a writer rewrote both copies faster than they could be read, for 5 s"));
            }
            tries += 1;
            if tries <= 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(u64::from(tries - 64).min(1000)));
            }
        }
    }

    /// The current value: the newest copy whose checksum holds. Never blocks a writer.
    ///
    /// # Errors
    /// * [`ErrorKind::Corrupted`] when both copies fail their checksums and their heads did
    ///   not change meanwhile (while they change, a writer is at work and the read is tried
    ///   again).
    /// * [`ErrorKind::Os`] (timed out) when writers kept rewriting both copies faster than
    ///   they could be read for 5 s (or a peer scribbles on the heads).
    /// * [`ErrorKind::Truncated`] when the file shrank (see [`Mapping::read_at`]; values of
    ///   64 KiB and more are read with `pread`, which reports it by stopping short); the
    ///   error of `pread` for other failures.
    pub fn read(&self) -> Result<T> {
        Ok(self.current()?.0)
    }

    /// Change the value in one transaction: lock out other writers (`flock`), read the
    /// newest value, apply `f`, commit it to the inactive copy, unlock. A writer that dies
    /// mid-way leaves the previous value, and its lock dies with it.
    ///
    /// # Errors
    /// As [`writer`](Self::writer), then as [`Writer::update`].
    pub fn update(&mut self, mode: Commit, f: impl FnOnce(&mut T)) -> Result<T> {
        let mut w = self.writer()?;
        w.update(mode, f).copied()
    }

    /// Hold the writer lock for many transactions (no lock system calls per commit).
    ///
    /// # Errors
    /// The error of `flock` (which waits for another writer rather than fail); then as
    /// [`read`](Self::read), after which the lock is released again.
    pub fn writer(&mut self) -> Result<Writer<'_, T>> {
        sys::persist::lock_exclusive(self.file.as_fd(), true)
            .map_err(|e| Error::os("flock", e).with_path(Some(&self.path)))?;
        match self.current() {
            Ok((value, slot, seq)) => Ok(Writer {
                d: self,
                value,
                slot,
                seq,
                stale: false,
            }),
            Err(e) => {
                let _ = sys::persist::unlock(self.file.as_fd());
                Err(e)
            }
        }
    }
}

/// Holds a [`Durable`]'s writer lock; commits without further lock calls. Unlocks on drop.
pub struct Writer<'a, T: bytemuck::Pod> {
    d: &'a mut Durable<T>,
    value: T,
    slot: u64,
    seq: u64,
    /// The in-memory value may be ahead of the file (a failed commit, a panic in `f`).
    stale: bool,
}

impl<T: bytemuck::Pod> Writer<'_, T> {
    /// The value as of the last commit.
    pub fn value(&self) -> &T {
        &self.value
    }
    /// One transaction: apply `f` to the value and commit it; returns the new value.
    ///
    /// `f` works on the writer's own copy, in place (no copy of `T` per commit, which
    /// matters for large `T`). If the commit fails, or `f` panicked in an earlier call, the
    /// copy is reloaded from the file before anything else is committed.
    ///
    /// # Errors
    /// * As [`Durable::read`] when the copy must first be reloaded.
    /// * The errors of writing the inactive copy: through the mapping
    ///   ([`ErrorKind::Truncated`] when the file shrank), or by `pwritev` (values of 64 KiB
    ///   and more, and every [`Commit::Durable`] commit); then of `msync` for
    ///   [`Commit::Durable`]. On a [`Durable`] opened read-only: [`ErrorKind::PermissionDenied`],
    ///   or `EBADF` from `pwritev`.
    /// * [`ErrorKind::Corrupted`] when the newest copy's sequence number is `u64::MAX` (no
    ///   writer counts that far: the file was damaged), rather than a wrapped number that
    ///   would mark the new copy invalid.
    pub fn update(&mut self, mode: Commit, f: impl FnOnce(&mut T)) -> Result<&T> {
        if self.stale {
            self.reload()?;
        }
        self.stale = true;
        f(&mut self.value);
        let slot = 1 - self.slot;
        // A sequence number is a count of commits: u64::MAX is garbage, not history, and
        // wrapping to 0 would mark the new copy invalid while reporting success.
        let seq = self.seq.checked_add(1).ok_or_else(|| {
            Error::new(
                ErrorKind::Corrupted,
                "update durable",
                "the newest copy's sequence number is at its maximum: no commit can follow it",
            )
            .with_path(Some(&self.d.path))
            .with_hint("the file was damaged outside mman's protocol")
        })?;
        let r = commit_slot(
            &mut MapStorage(&self.d.map, &self.d.file, mode == Commit::Durable),
            &self.d.layout,
            slot,
            seq,
            bytemuck::bytes_of(&self.value),
            mode,
        );
        if let Err(e) = r {
            // Best effort now; `stale` makes the next call retry.
            let _ = self.reload();
            return Err(match e.path() {
                Some(_) => e,
                None => e.with_path(Some(&self.d.path)),
            });
        }
        self.slot = slot;
        self.seq = seq;
        self.stale = false;
        Ok(&self.value)
    }

    /// Replace the in-memory copy with the newest valid one in the file.
    // Cold and out of line: the `T` it returns by value would otherwise give `update` a frame
    // of `size_of::<T>()`, probed page by page on every commit (5% of a 1 MiB commit's CPU).
    #[cold]
    #[inline(never)]
    fn reload(&mut self) -> Result<()> {
        let (value, slot, seq) = self.d.current()?;
        self.value = value;
        self.slot = slot;
        self.seq = seq;
        self.stale = false;
        Ok(())
    }
}

impl<T: bytemuck::Pod> Drop for Writer<'_, T> {
    fn drop(&mut self) {
        let _ = sys::persist::unlock(self.d.file.as_fd());
    }
}

/// `write()` then `fdatasync()` of `data` at offset 0 of `file`: the baseline durable
/// commits are compared with.
///
/// # Errors
/// The error of `pwrite` (such as `ENOSPC`, or `EBADF` for a file not open for writing) or
/// of `fdatasync` (`fsync` on macOS).
pub fn write_and_fdatasync(file: &File, data: &[u8]) -> Result<()> {
    let named = |e: Error| e.with_path(sys::fd_path(file.as_fd()).as_deref());
    std::os::unix::fs::FileExt::write_all_at(file, data, 0).map_err(|e| named(Error::os("pwrite", e)))?;
    sys::persist::fdatasync(file.as_fd()).map_err(|e| named(Error::os("fdatasync", e)))
}

#[cfg(test)]
#[path = "durable_tests.rs"]
mod tests;
