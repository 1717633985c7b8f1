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
//!   CRC-32 of both; a commit writes the inactive copy, makes it durable (`msync(MS_SYNC)` of
//!   exactly its pages, in [`Commit::Durable`] mode), and that copy, with the higher sequence
//!   number and a valid checksum, *is* the flip: there is no separate pointer to update, so
//!   one sync per commit suffices where a header flip would take a second. Open (and every
//!   read) picks the newest valid copy, so a torn write of the inactive copy falls back to the
//!   previous value. Writers exclude each other with `flock` (released by the kernel when a
//!   writer dies); readers copy both candidates out, check them, and never block writers.
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

use std::fs::File;
use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::map::{FlushMode, MapOptions, Mapping};
use crate::sys;

fn page() -> u64 {
    sys::page_size() as u64
}

/// Create `path` atomically with `bytes` as its contents and `mode`, unless it exists: a
/// process killed while creating leaves no file or a complete one.
fn create_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.mman-new-{}", std::process::id()));
    let fail = |op: &'static str, e: std::io::Error, p: &Path| Error::os(op, e).with_path(Some(p));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| fail("create", e, &tmp))?;
    let written = (|| {
        use std::io::Write;
        (&f).write_all(bytes)?;
        // The mode exactly as asked: create applied the umask.
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        sys::persist::fsync(f.as_fd())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail("write", e, &tmp));
    }
    sys::persist::publish(&tmp, path).map_err(|e| fail("link", e, path))?;
    sys::persist::sync_dir(&dir).map_err(|e| fail("fsync", e, &dir))?;
    Ok(())
}

fn open_locked(path: &Path, wait: bool) -> Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::os("open", e).with_path(Some(path)))?;
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

/// A `T` whose bytes are a file (see the [module docs](self)).
pub struct Persistent<T: bytemuck::Pod> {
    map: Mapping,
    _lock: File,
    _t: PhantomData<T>,
}

impl<T: bytemuck::Pod> std::fmt::Debug for Persistent<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistent")
            .field("path", &self.map.path())
            .finish()
    }
}

impl<T: bytemuck::Pod> Persistent<T> {
    /// Open `path`, creating it zero-filled (mode 0600) if missing; fail at once if another
    /// handle holds it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), 0o600, false)
    }

    /// [`open`](Self::open), waiting for another holder to let go.
    pub fn open_wait(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), 0o600, true)
    }

    /// [`open`](Self::open) with the mode for a new file, and whether to wait for the lock.
    pub fn open_with(path: &Path, mode: u32, wait: bool) -> Result<Self> {
        let size = std::mem::size_of::<T>().max(1) as u64;
        if std::mem::align_of::<T>() as u64 > page() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "persist",
                "the type is aligned beyond a page",
            )
            .with_path(Some(path)));
        }
        let file_len = size.next_multiple_of(page());
        if !path.exists() {
            create_atomically(path, &vec![0u8; file_len as usize], mode)?;
        }
        let f = open_locked(path, wait)?;
        let len = f
            .metadata()
            .map_err(|e| Error::os("fstat", e).with_path(Some(path)))?
            .len();
        if len < size {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "persist",
                format!("the file has {len} bytes; the value needs {size}"),
            )
            .with_path(Some(path))
            .with_hint("it was made for another type, or truncated; remove it to start afresh"));
        }
        let map = MapOptions::new()
            .read_write()
            .shared()
            .len(size as usize)
            .map(&f)
            .map_err(|e| e.with_path(Some(path)))?;
        Ok(Persistent {
            map,
            _lock: f,
            _t: PhantomData,
        })
    }

    /// Make the value durable: `msync(MS_SYNC)` of its pages.
    ///
    /// # Errors
    /// `msync` fails, or the file is now shorter than the value
    /// ([`ErrorKind::Truncated`]): writes past its end were lost.
    pub fn flush(&self) -> Result<()> {
        self.map.flush(.., FlushMode::Sync)?;
        // The file measured too (one fstat): a truncation inside the value's page raises no
        // fault, and what was written past the new end is lost.
        self.verify()
    }

    /// The value, by copy (aligned 8-byte atomic loads: a concurrent writer elsewhere yields
    /// some mix of old and new words, never undefined behaviour).
    ///
    /// # Errors
    /// [`ErrorKind::Truncated`] when the file shrank and a vanished page was touched. A
    /// truncation that ends inside the value's last page reads as zeros there without a
    /// fault; [`flush`](Self::flush) and [`verify`](Self::verify) measure the file and
    /// report it.
    pub fn get(&self) -> Result<T> {
        self.map.load(0)
    }

    /// Replace the value, by copy.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn set(&self, value: &T) -> Result<()> {
        self.map.store(0, value)
    }

    /// Copy the value out, let `f` change the copy, write it back; returns what `f`
    /// returns. Another process writing the file at the same time can interleave with
    /// this; cooperating mman handles are kept apart by the handle's `flock`.
    ///
    /// # Errors
    /// As [`get`](Self::get); `f` is not called if the value cannot be read.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        let mut v = self.get()?;
        let r = f(&mut v);
        self.set(&v)?;
        Ok(r)
    }

    /// Check that the file still holds the whole value (one `fstat`).
    ///
    /// # Errors
    /// [`ErrorKind::Truncated`] with the sizes.
    pub fn verify(&self) -> Result<()> {
        self.map.verify_file_size()
    }

    /// The value in place, as a reference: no copy.
    ///
    /// # Safety
    /// While the reference lives, nobody may write or truncate the file: no other process,
    /// no `std::fs` call or other mapping in this one, no other handle. (The handle's
    /// `flock` keeps out only those who ask for it.)
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub unsafe fn as_ref(&self) -> Result<&T> {
        // SAFETY: the caller vouches nobody changes the bytes while the reference lives.
        let bytes = unsafe { self.map.as_slice() }?;
        // SAFETY: the mapping is page-aligned (T's alignment is at most a page, checked at
        // open) and at least size_of::<T>() bytes long; T is Pod, so any bytes are a T.
        Ok(unsafe { &*bytes.as_ptr().cast::<T>() })
    }

    /// The value in place, as a mutable reference: no copy.
    ///
    /// # Safety
    /// As [`as_ref`](Self::as_ref), and nobody else may read the file either while the
    /// reference lives.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub unsafe fn as_mut(&mut self) -> Result<&mut T> {
        // SAFETY: forwarded from the caller's contract.
        let bytes = unsafe { self.map.as_mut_slice() }?;
        // SAFETY: as in as_ref; the slice is unique for the borrow of `self`.
        Ok(unsafe { &mut *bytes.as_mut_ptr().cast::<T>() })
    }
}

/// The course notes' `persist()`: map `path` MAP_SHARED | MAP_FIXED over `len` bytes at
/// `addr`, so the variable there *becomes* the file's contents (created zero-filled if
/// missing, grown to `len`). Returns the mapping; keep it (or `forget` it) for as long as the
/// variable is used.
///
/// # Safety
/// `addr` must be page-aligned, `len` a multiple of the page size, and `addr..addr + len`
/// memory the caller owns that nothing else uses: whatever was there is replaced without
/// asking (a page-aligned `static mut` array, as in the notes, qualifies when no reference
/// to it lives across this call). Another process writing the file changes the variable
/// under any reference to it.
pub unsafe fn persist_fixed(path: impl AsRef<Path>, addr: *mut u8, len: usize) -> Result<Mapping> {
    let path = path.as_ref();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::os("open", e).with_path(Some(path)))?;
    if f.metadata().map(|m| m.len()).unwrap_or(0) < len as u64 {
        f.set_len(len as u64)
            .map_err(|e| Error::os("ftruncate", e).with_path(Some(path)))?;
    }
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        MapOptions::new()
            .read_write()
            .shared()
            .len(len)
            .map_fixed_replace(addr as usize, Some(f.as_fd()))
    }
    .map_err(|e| e.with_path(Some(path)))
}

/// How a [`Durable`] commit is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// `msync(MS_SYNC)` of the new copy's pages before returning: survives a power loss.
    Durable,
    /// No sync: survives the process being killed at any instant (the page cache keeps what
    /// was written), not a power loss. Much faster.
    ProcessCrashSafe,
}

const MAGIC: [u8; 8] = *b"MMANDUR\0";
const VERSION: u32 = 1;

/// Where things are in a durable file, for a `T` of `size` bytes and `align` alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of T.
    pub size: u64,
    /// Offset of T inside a slot (after the 16-byte slot header, aligned for T).
    pub data_off: u64,
    /// Offset of slot 0; slot 1 follows at `+ stride`.
    pub first_slot: u64,
    /// Distance between the slots (a whole number of pages).
    pub stride: u64,
}

impl Layout {
    /// The layout for `size` bytes aligned to `align`, with pages of `page` bytes.
    pub fn new(size: u64, align: u64, page: u64) -> Layout {
        let data_off = 16u64.max(align);
        Layout {
            size,
            data_off,
            first_slot: page,
            stride: (data_off + size).next_multiple_of(page),
        }
    }
    /// The file's length.
    pub fn file_len(&self) -> u64 {
        self.first_slot + 2 * self.stride
    }
    /// Offset of slot `i` (0 or 1).
    pub fn slot(&self, i: u64) -> u64 {
        self.first_slot + i * self.stride
    }
}

/// The 64-byte header of a durable file.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
struct Header {
    magic: [u8; 8],
    version: u32,
    align: u32,
    size: u64,
    tag: [u8; 8],
    stride: u64,
    created_seq: u64,
    crc: u32,
    _pad: [u8; 12],
}

fn header_crc(h: &Header) -> u32 {
    let mut c = *h;
    c.crc = 0;
    crc32fast::hash(bytemuck::bytes_of(&c))
}

fn slot_crc(seq: u64, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(data);
    h.finalize()
}

/// The storage a durable commit writes to: the real file's mapping, or a test double that
/// records writes and syncs to simulate power losses.
pub trait Storage {
    /// Write `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    /// Make `offset..offset + len` durable.
    fn sync(&mut self, offset: u64, len: u64) -> Result<()>;
}

/// Write copy `slot` of a commit: data first, then its header (sequence number and CRC of
/// both), then, in durable mode, one sync of exactly the slot's pages. The protocol, generic
/// so tests can run it against a recording [`Storage`].
pub fn commit_slot<S: Storage>(
    s: &mut S,
    layout: &Layout,
    slot: u64,
    seq: u64,
    data: &[u8],
    mode: Commit,
) -> Result<()> {
    let at = layout.slot(slot);
    s.write(at + layout.data_off, data)?;
    // The data before its header, for a reader on another CPU (the CRC catches the rest).
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&seq.to_le_bytes());
    head[8..12].copy_from_slice(&slot_crc(seq, data).to_le_bytes());
    s.write(at, &head)?;
    if mode == Commit::Durable {
        s.sync(at, layout.data_off + layout.size)?;
    }
    Ok(())
}

/// The newest valid copy in a file image (or mapping) read through `read`: `(slot, seq)`
/// and the bytes copied into `out`. `None` if neither copy is valid.
pub fn newest_valid(
    layout: &Layout,
    mut read: impl FnMut(u64, &mut [u8]) -> Result<()>,
    out: &mut [u8],
) -> Result<Option<(u64, u64)>> {
    let mut heads = [[0u8; 16]; 2];
    for (i, h) in heads.iter_mut().enumerate() {
        read(layout.slot(i as u64), h)?;
    }
    std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
    let seq = |h: &[u8; 16]| u64::from_le_bytes(h[..8].try_into().unwrap_or_default());
    let crc = |h: &[u8; 16]| u32::from_le_bytes(h[8..12].try_into().unwrap_or_default());
    // Newest first.
    let order = if seq(&heads[1]) > seq(&heads[0]) {
        [1usize, 0]
    } else {
        [0, 1]
    };
    for i in order {
        let s = seq(&heads[i]);
        if s == 0 {
            continue;
        }
        read(layout.slot(i as u64) + layout.data_off, out)?;
        if slot_crc(s, out) == crc(&heads[i]) {
            return Ok(Some((i as u64, s)));
        }
    }
    Ok(None)
}

/// The real file. Process-crash-safe commits of small values write through the mapping (no
/// system call: an 8-byte commit costs nanoseconds). Large values, and every write of a durable
/// commit (the third field), go through `pwrite`: the kernel's copy is vectorised where the
/// mapping's atomic 8-byte stores are not, and no page is dirtied through a write fault (with
/// writes through the mapping, a 1 MiB durable commit measured 1.35 ms against 0.82 ms when
/// other files were being written between commits; a write fault on ext4 probably ties the
/// sync to the running journal transaction). Both land in the same page cache the mapping
/// shows.
struct MapStorage<'a>(&'a Mapping, &'a File, bool);

/// From this size on, `pwrite`/`pread` beat the atomic copies to and from the mapping.
const PWRITE_FROM: usize = 64 << 10;

impl Storage for MapStorage<'_> {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if self.2 || data.len() >= PWRITE_FROM {
            return std::os::unix::fs::FileExt::write_all_at(self.1, data, offset)
                .map_err(|e| Error::os("pwrite", e).with_range(offset, Some(data.len())));
        }
        self.0.write_at(offset as usize, data)
    }
    fn sync(&mut self, offset: u64, len: u64) -> Result<()> {
        let a = offset as usize;
        self.0
            .flush(a..(a + len as usize).min(self.0.len()), FlushMode::Sync)
    }
}

/// A `T` changed only by transactions that are never torn (see the [module docs](self)).
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
    pub fn layout() -> Layout {
        Layout::new(
            std::mem::size_of::<T>() as u64,
            std::mem::align_of::<T>() as u64,
            page(),
        )
    }

    /// Open the durable `T` at `path`, checking it is one (magic, version, size and
    /// alignment of `T`, the caller's 8-byte type `tag`); create it (mode 0600, atomically)
    /// holding `initial` if it does not exist.
    pub fn open(path: impl AsRef<Path>, tag: [u8; 8], initial: T) -> Result<Self> {
        Self::open_with(path.as_ref(), tag, initial, 0o600)
    }

    /// [`open`](Self::open) with the mode for a new file.
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
    /// The file cannot be opened for reading and writing, or is not a durable variable of
    /// this type (magic, version, tag, size, checksums).
    pub fn open_existing(path: &Path, tag: [u8; 8]) -> Result<Self> {
        Self::open_checked(path, tag, true)
    }

    /// Open an existing durable file for reading only: it is opened and mapped read-only,
    /// so a read-only file can be read and nothing is ever written. [`read`](Self::read)
    /// works; [`writer`](Self::writer) and [`update`](Self::update) fail.
    ///
    /// # Errors
    /// As [`open_existing`](Self::open_existing), with read access only.
    pub fn open_read_only(path: &Path, tag: [u8; 8]) -> Result<Self> {
        Self::open_checked(path, tag, false)
    }

    fn open_checked(path: &Path, tag: [u8; 8], write: bool) -> Result<Self> {
        let layout = Self::layout();
        let bad = |why: String| {
            Error::new(ErrorKind::InvalidInput, "open durable", why)
                .with_path(Some(path))
                .with_hint("not a durable variable of this type; remove it to start afresh")
        };
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer; it is
        // refused below as not a regular file. (No effect on regular files.)
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| Error::os("open", e).with_path(Some(path)))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::os("fstat", e).with_path(Some(path)))?;
        if !meta.file_type().is_file() {
            return Err(Error::new(
                ErrorKind::NotMappable,
                "open durable",
                "not a regular file: a durable variable is a regular file",
            )
            .with_path(Some(path)));
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
        if h.version != VERSION {
            return Err(bad(format!(
                "format version {}, this mman reads {VERSION}",
                h.version
            )));
        }
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
        // A writer may overwrite the copy being read: its checksum then fails and the other
        // (newer) copy is taken. Retry a few times for a reader racing many commits.
        for _ in 0..64 {
            let r = newest_valid(
                &self.layout,
                |off, buf| {
                    if buf.len() >= PWRITE_FROM {
                        // Large copies by the kernel: vectorised, unlike atomic loads.
                        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, off)
                            .map_err(|e| Error::os("pread", e).with_path(Some(&self.path)))
                    } else {
                        self.map.read_at(off as usize, buf)
                    }
                },
                bytemuck::bytes_of_mut(&mut v),
            )?;
            if let Some((slot, seq)) = r {
                return Ok((v, slot, seq));
            }
            std::thread::yield_now();
        }
        Err(Error::new(
            ErrorKind::InvalidInput,
            "read durable",
            "both copies are corrupted (checksums fail)",
        )
        .with_path(Some(&self.path))
        .with_hint("the file was damaged outside mman's protocol"))
    }

    /// The current value: the newest copy whose checksum holds. Never blocks a writer.
    pub fn read(&self) -> Result<T> {
        Ok(self.current()?.0)
    }

    /// Change the value in one transaction: lock out other writers (`flock`), read the
    /// newest value, apply `f`, commit it to the inactive copy, unlock. A writer that dies
    /// mid-way leaves the previous value, and its lock dies with it.
    pub fn update(&mut self, mode: Commit, f: impl FnOnce(&mut T)) -> Result<T> {
        let mut w = self.writer()?;
        w.update(mode, f).copied()
    }

    /// Hold the writer lock for many transactions (no lock system calls per commit).
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
    pub fn update(&mut self, mode: Commit, f: impl FnOnce(&mut T)) -> Result<&T> {
        if self.stale {
            self.reload()?;
        }
        self.stale = true;
        f(&mut self.value);
        let slot = 1 - self.slot;
        let seq = self.seq + 1;
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
pub fn write_and_fdatasync(file: &File, data: &[u8]) -> Result<()> {
    let named = |e: Error| e.with_path(sys::fd_path(file.as_fd()).as_deref());
    std::os::unix::fs::FileExt::write_all_at(file, data, 0).map_err(|e| named(Error::os("pwrite", e)))?;
    sys::persist::fdatasync(file.as_fd()).map_err(|e| named(Error::os("fdatasync", e)))
}
