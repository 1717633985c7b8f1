//! Page-cache control (Linux): what of a file sits in memory, and making it come, go or stay.
//!
//! The jobs of `vmtouch` and util-linux `fincore`, done so that every figure is one the kernel
//! actually gave:
//!
//! * [`CachedFile::status`] asks `cachestat(2)` (Linux 6.5+: no mapping needed, and it also
//!   counts dirty, writeback and evicted pages), or maps the file and asks `mincore(2)`.
//!   Since Linux 5.2 `mincore` reports *every* page resident for a file the caller neither
//!   owns nor may write, and `cachestat` answers `EPERM` for it: such files come back with
//!   [`Status::resident`] `None` and the reason, never a made-up figure.
//! * [`CachedFile::touch`] reads in only the pages not resident, exactly the range asked
//!   (no read-ahead past it), and turns a file truncated meanwhile into an error rather than
//!   a SIGBUS (`MADV_POPULATE_READ` reports `EFAULT` where a touch would fault).
//! * [`CachedFile::evict`] drops the pages (`POSIX_FADV_DONTNEED`), then measures again and
//!   reports what stayed: dirty pages, pages under writeback, pages someone maps or locks.
//! * [`CachedFile::lock`] locks the pages as they are faulted in (`MLOCK_ONFAULT`, then
//!   populate): no window in which a touched page can be evicted before it is locked.
//! * [`walk`] visits directory trees on several threads, counting hard-linked files once and
//!   reporting unreadable or vanished files without stopping.
//!
//! ```no_run
//! # fn main() -> mman::Result<()> {
//! use mman::cache::{CachedFile, PageRange};
//! let f = CachedFile::open("/var/lib/db/index")?;
//! let before = f.status(PageRange::ALL)?;
//! let touched = f.touch(PageRange::ALL)?; // reads in what was missing
//! println!("{:?} of {} pages were resident; read {}", before.resident, before.pages, touched.touched);
//! let evicted = f.evict(PageRange::ALL, false)?;
//! println!("{} pages stayed", evicted.after.resident.unwrap_or(0));
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::ffi::c_void;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::sys;
use crate::sys::cache as sc;

/// A range of pages of a file: `first..end`, `end` `None` meaning to the end of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRange {
    /// The first page.
    pub first: u64,
    /// One past the last page; `None`: the end of the file.
    pub end: Option<u64>,
}

impl PageRange {
    /// The whole file.
    pub const ALL: PageRange = PageRange { first: 0, end: None };

    /// The pages that hold the bytes `start..end` (`end` `None`: to the end of the file):
    /// the start is rounded down and the end up to a page.
    pub fn bytes(start: u64, end: Option<u64>) -> PageRange {
        let ps = sys::page_size() as u64;
        PageRange {
            first: start / ps,
            end: end.map(|e| e.div_ceil(ps)),
        }
    }
}

/// Who answered a residency question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `cachestat(2)`.
    Cachestat,
    /// `mmap(2)` + `mincore(2)`.
    Mincore,
}

/// The residency of a range of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Pages in the range (the last one may be partial).
    pub pages: u64,
    /// Pages in the page cache; `None` when the kernel will not say (see the `unknown` field).
    pub resident: Option<u64>,
    /// Why `resident` is unknown.
    pub unknown: Option<String>,
    /// Dirty pages (cachestat only).
    pub dirty: Option<u64>,
    /// Pages under writeback (cachestat only).
    pub writeback: Option<u64>,
    /// Pages once cached and since evicted (cachestat only).
    pub evicted: Option<u64>,
    /// Of those, the ones evicted recently enough to signal memory pressure (cachestat only).
    pub recently_evicted: Option<u64>,
    /// Who answered.
    pub source: Source,
}

impl Status {
    fn known(pages: u64, resident: u64, source: Source) -> Status {
        Status {
            pages,
            resident: Some(resident),
            unknown: None,
            dirty: None,
            writeback: None,
            evicted: None,
            recently_evicted: None,
            source,
        }
    }
    fn unknown(pages: u64, why: String, source: Source) -> Status {
        Status {
            pages,
            resident: None,
            unknown: Some(why),
            dirty: None,
            writeback: None,
            evicted: None,
            recently_evicted: None,
            source,
        }
    }
}

/// What [`CachedFile::touch`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Touched {
    /// Pages in the range.
    pub pages: u64,
    /// Pages read in (or, when residency is unknown, asked for).
    pub touched: u64,
    /// The residency afterwards.
    pub after: Status,
}

impl Touched {
    /// Pages resident afterwards (`None` when unknown).
    pub fn resident_after(&self) -> Option<u64> {
        self.after.resident
    }
}

/// What [`CachedFile::evict`] did: the residency before and after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evicted {
    /// Before.
    pub before: Status,
    /// After: `resident` counts the pages that stayed, `dirty` and `writeback` say why some.
    pub after: Status,
}

impl Evicted {
    /// Pages that left the cache (`None` when unknown).
    pub fn evicted(&self) -> Option<u64> {
        Some(self.before.resident?.saturating_sub(self.after.resident?))
    }
}

/// An open file whose page-cache residency can be read and changed.
#[derive(Debug)]
pub struct CachedFile {
    file: File,
    path: PathBuf,
    size: u64,
    dev: u64,
    ino: u64,
    nlink: u64,
    uid: u32,
}

const UNKNOWN_REASON: &str = "the kernel withholds the page-cache state of a file this user \
     neither owns nor may write (cachestat: EPERM; mincore would claim every page resident); \
     run as its owner or root";

impl CachedFile {
    /// Open `path` read-only (without updating its access time where allowed).
    pub fn open(path: impl AsRef<Path>) -> Result<CachedFile> {
        let path = path.as_ref();
        let fd = open_at(rustix::fs::CWD, path, true).map_err(|e| open_error(e, path))?;
        CachedFile::from_fd(fd, path.to_path_buf())
    }

    fn from_fd(fd: OwnedFd, path: PathBuf) -> Result<CachedFile> {
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::os("fstat", e.into()).with_path(Some(&path)))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode as _) != rustix::fs::FileType::RegularFile {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "page cache",
                "not a regular file: only regular files have page-cache residency to report",
            )
            .with_path(Some(&path)));
        }
        Ok(CachedFile {
            file: File::from(fd),
            path,
            size: st.st_size as u64,
            dev: file_id(&st).0,
            ino: file_id(&st).1,
            nlink: st.st_nlink as u64,
            uid: st.st_uid,
        })
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Its size in bytes when opened.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Its pages (the last may be partial).
    pub fn pages(&self) -> u64 {
        self.size.div_ceil(sys::page_size() as u64)
    }
    /// (device, inode): the identity of the file, shared by its hard links.
    pub fn identity(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
    /// How many names the file has.
    pub fn links(&self) -> u64 {
        self.nlink
    }
    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// How many pages of `range` the file has.
    pub fn pages_in(&self, range: PageRange) -> u64 {
        let (first, end) = self.span(range);
        end - first
    }

    /// The pages of `range` that exist, as a page interval.
    fn span(&self, range: PageRange) -> (u64, u64) {
        let pages = self.pages();
        let end = range.end.unwrap_or(pages).min(pages);
        let first = range.first.min(end);
        (first, end)
    }

    /// `(offset, length)` in bytes for cachestat/fadvise; length 0 means to the end.
    fn byte_span(&self, first: u64, end: u64) -> (u64, u64) {
        let ps = sys::page_size() as u64;
        if end == self.pages() {
            (first * ps, 0)
        } else {
            (first * ps, (end - first) * ps)
        }
    }

    /// How much of `range` is in the page cache.
    pub fn status(&self, range: PageRange) -> Result<Status> {
        let (first, end) = self.span(range);
        let pages = end - first;
        if pages == 0 {
            let source = if sc::cachestat_available() {
                Source::Cachestat
            } else {
                Source::Mincore
            };
            return Ok(Status::known(0, 0, source));
        }
        let (off, len) = self.byte_span(first, end);
        match sc::cachestat(self.file.as_fd(), off, len) {
            Ok(cs) => Ok(Status {
                pages,
                resident: Some(cs.cached.min(pages)),
                unknown: None,
                dirty: Some(cs.dirty),
                writeback: Some(cs.writeback),
                evicted: Some(cs.evicted),
                recently_evicted: Some(cs.recently_evicted),
                source: Source::Cachestat,
            }),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                Ok(Status::unknown(pages, UNKNOWN_REASON.into(), Source::Cachestat))
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)) => {
                match self.page_map(PageRange {
                    first,
                    end: Some(end),
                })? {
                    Some(map) => Ok(Status::known(pages, count(&map), Source::Mincore)),
                    None => Ok(Status::unknown(pages, UNKNOWN_REASON.into(), Source::Mincore)),
                }
            }
            Err(e) => Err(Error::os("cachestat", e).with_path(Some(&self.path))),
        }
    }

    /// Residency page by page (`mmap` + `mincore`): one byte a page, bit 0 set when
    /// resident; `None` when the kernel would not tell the truth for this file.
    pub fn page_map(&self, range: PageRange) -> Result<Option<Vec<u8>>> {
        let (first, end) = self.span(range);
        if !sc::mincore_tells_truth(self.uid, &self.path) {
            return Ok(None);
        }
        let mut out = vec![0u8; (end - first) as usize];
        if end == first {
            return Ok(Some(out));
        }
        let view = View::new(self, first, end, "mincore")?;
        sys::mincore(view.addr, view.len, &mut out).map_err(|e| {
            Error::os("mincore", e)
                .with_path(Some(&self.path))
                .with_addr(view.addr as usize, view.len)
        })?;
        for b in &mut out {
            *b &= 1;
        }
        Ok(Some(out))
    }

    /// Residency in `n` equal slices of `range` (for a bar like `vmtouch -v`): each slice as
    /// (resident pages, pages); `None` when the kernel will not say.
    pub fn buckets(&self, range: PageRange, n: usize) -> Result<Option<Vec<(u64, u64)>>> {
        let (first, end) = self.span(range);
        let pages = end - first;
        let n = (n as u64).min(pages).max(1);
        let bounds = |i: u64| first + pages * i / n;
        if let Some(map) = self.page_map(range)? {
            return Ok(Some(
                (0..n)
                    .map(|i| {
                        let (a, b) = ((bounds(i) - first) as usize, (bounds(i + 1) - first) as usize);
                        (count(&map[a..b]), (b - a) as u64)
                    })
                    .collect(),
            ));
        }
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let (a, b) = (bounds(i), bounds(i + 1));
            match self
                .status(PageRange {
                    first: a,
                    end: Some(b),
                })?
                .resident
            {
                Some(r) => out.push((r, b - a)),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    /// Read into the page cache the pages of `range` that are not there, and only those:
    /// the reads cover exactly the missing pages (no read-ahead past the range).
    pub fn touch(&self, range: PageRange) -> Result<Touched> {
        let (first, end) = self.span(range);
        let r = PageRange {
            first,
            end: Some(end),
        };
        let pages = end - first;
        let before = self.status(r)?;
        if pages == 0 || before.resident == Some(pages) {
            return Ok(Touched {
                pages,
                touched: 0,
                after: before,
            });
        }
        let map = if before.resident == Some(0) {
            None
        } else {
            self.page_map(r)?
        };
        // A run that reaches the end of the file is faulted in through a mapping with the
        // kernel's read-ahead (large folios, no copy). A run that ends before it is read with
        // pread in random mode, which reads exactly the bytes asked for: read-ahead would run
        // past its end, and even switching modes near the end does not stop it (read-ahead
        // marks already planted in the page cache fire regardless of the mode). Neither way
        // raises SIGBUS if the file is truncated meanwhile: EFAULT or a short read.
        let ps = sys::page_size() as u64;
        const CHUNK: u64 = 512; // pages: 2 MiB
        let mut buf = Vec::new();
        let mut touched = 0;
        let advise = |a: sc::FileAdvice| {
            sc::fadvise(self.file.as_fd(), 0, 0, a)
                .map_err(|e| Error::os("posix_fadvise", e).with_path(Some(&self.path)))
        };
        let mut random = false;
        for (a, b) in missing_runs(map.as_deref(), pages) {
            let bounded = first + b < self.pages();
            if bounded != random {
                advise(if bounded {
                    sc::FileAdvice::Random
                } else {
                    sc::FileAdvice::Normal
                })?;
                random = bounded;
            }
            if !bounded && b - a >= CHUNK {
                // A long run to the end of the file: fault it in through a mapping, with the
                // kernel's read-ahead and no copy; a truncation is EFAULT, not SIGBUS. (Short
                // ones are cheaper to read than to map.)
                let view = View::new(self, first + a, first + b, "touch")?;
                sc::populate_read(view.addr, view.len)
                    .map_err(|e| self.fault_error("touch", e, view.addr as usize, view.len))?;
                touched += b - a;
                continue;
            }
            buf.resize((((b - a).min(CHUNK)) * ps) as usize, 0);
            let mut at = a;
            while at < b {
                let to = (at + CHUNK).min(b);
                let off = (first + at) * ps;
                let want = ((to - at) * ps).min(self.size.saturating_sub(off)) as usize;
                let got = sc::pread_full(self.file.as_fd(), &mut buf[..want], off).map_err(|e| {
                    Error::os("read", e)
                        .with_path(Some(&self.path))
                        .with_range(off, Some(want))
                })?;
                if got < want {
                    return Err(self.truncated("touch").unwrap_or_else(|| {
                        Error::new(ErrorKind::Os, "touch", "the file changed size while being read")
                            .with_path(Some(&self.path))
                    }));
                }
                touched += to - at;
                at = to;
            }
        }
        Ok(Touched {
            pages,
            touched,
            after: self.status(r)?,
        })
    }

    /// Drop the pages of `range` from the page cache (`POSIX_FADV_DONTNEED`), after writing
    /// dirty ones back if `flush` (`fdatasync`), and measure what stayed.
    pub fn evict(&self, range: PageRange, flush: bool) -> Result<Evicted> {
        let (first, end) = self.span(range);
        let r = PageRange {
            first,
            end: Some(end),
        };
        let before = self.status(r)?;
        if flush {
            sc::fdatasync(self.file.as_fd())
                .map_err(|e| Error::os("fdatasync", e).with_path(Some(&self.path)))?;
        }
        if end > first {
            let (off, len) = self.byte_span(first, end);
            sc::fadvise(self.file.as_fd(), off, len, sc::FileAdvice::DontNeed)
                .map_err(|e| Error::os("posix_fadvise(DONTNEED)", e).with_path(Some(&self.path)))?;
        }
        let after = self.status(r)?;
        Ok(Evicted { before, after })
    }

    /// Lock the pages of `range` in memory until the returned guard is dropped: the range is
    /// mapped, locked as it faults in (`MLOCK_ONFAULT`), then faulted in, so no page can be
    /// evicted between being read and being locked. Needs `RLIMIT_MEMLOCK` room for the
    /// whole range, or `CAP_IPC_LOCK` (see [`check_lock_limits`]).
    pub fn lock(&self, range: PageRange) -> Result<LockedFile> {
        let (first, end) = self.span(range);
        if end == first {
            return Ok(LockedFile {
                _view: None,
                path: self.path.clone(),
                pages: 0,
            });
        }
        let view = View::new(self, first, end, "lock")?;
        sys::mlock(view.addr, view.len, true).map_err(|e| {
            Error::memlock("mlock", e, Some(view.len as u64))
                .with_path(Some(&self.path))
                .with_addr(view.addr as usize, view.len)
        })?;
        sc::populate_read(view.addr, view.len)
            .map_err(|e| self.fault_error("lock", e, view.addr as usize, view.len))?;
        Ok(LockedFile {
            _view: Some(view),
            path: self.path.clone(),
            pages: end - first,
        })
    }

    /// The error for a fault (`EFAULT` from populating): a truncation if the file shrank.
    fn fault_error(&self, op: &'static str, e: std::io::Error, addr: usize, len: usize) -> Error {
        if e.raw_os_error() == Some(libc::EFAULT) {
            if let Some(t) = self.truncated(op) {
                return t;
            }
        }
        Error::os(op, e).with_path(Some(&self.path)).with_addr(addr, len)
    }

    /// `Some(Truncated)` if the file is now shorter than when it was opened.
    fn truncated(&self, op: &'static str) -> Option<Error> {
        let now = rustix::fs::fstat(&self.file).map_or(0, |s| s.st_size as u64);
        (now < self.size).then(|| {
            Error::truncated(op, Some(&self.path), self.size, now)
                .with_hint("the file was truncated while in use; it was skipped")
        })
    }
}

/// Pages locked by [`CachedFile::lock`]; dropping it unlocks them (unmapping the locked
/// view releases its lock).
#[derive(Debug)]
pub struct LockedFile {
    _view: Option<View>,
    path: PathBuf,
    pages: u64,
}

impl LockedFile {
    /// The pages locked.
    pub fn pages(&self) -> u64 {
        self.pages
    }
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether locking `bytes` in `mappings` more mappings fits this process's limits
/// (`RLIMIT_MEMLOCK` unless it has `CAP_IPC_LOCK`, and `vm.max_map_count`); the error says
/// how much is needed and how to raise the limit.
pub fn check_lock_limits(bytes: u64, mappings: u64) -> Result<()> {
    if !sc::may_lock_unlimited() {
        if let (Some(soft), _) = sys::memlock_limit() {
            if bytes > soft {
                return Err(Error::new(
                    ErrorKind::ResourceLimit,
                    "lock",
                    format!(
                        "locking needs {} but RLIMIT_MEMLOCK allows {} (all locks of this process count)",
                        human(bytes),
                        human(soft)
                    ),
                )
                .with_hint(crate::error::memlock_hint(Some(bytes))));
            }
        }
    }
    if let (Some(max), Some(now)) = sc::map_count() {
        if now + mappings > max {
            return Err(Error::new(
                ErrorKind::ResourceLimit,
                "lock",
                format!("locking needs one mapping a file: {mappings} more, but vm.max_map_count is {max} and {now} are in use"),
            )
            .with_hint(format!("raise it: sysctl -w vm.max_map_count={}", now + mappings + 1024)));
        }
    }
    Ok(())
}

/// A size for people: `10M`, `4.0K`, `1.5G`, as vmtouch prints them.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}")
    } else if v < 10.0 && v.fract() != 0.0 {
        format!("{v:.1}{}", UNITS[i])
    } else {
        format!("{v:.0}{}", UNITS[i])
    }
}

fn count(map: &[u8]) -> u64 {
    map.iter().filter(|&&b| b & 1 != 0).count() as u64
}

/// Runs of non-resident pages `(start, end)`; everything when the map is unknown.
fn missing_runs(map: Option<&[u8]>, pages: u64) -> Vec<(u64, u64)> {
    let Some(map) = map else {
        return vec![(0, pages)];
    };
    let mut runs = Vec::new();
    let mut start = None;
    for (i, &b) in map.iter().enumerate() {
        match (b & 1 == 0, start) {
            (true, None) => start = Some(i as u64),
            (false, Some(s)) => {
                runs.push((s, i as u64));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, map.len() as u64));
    }
    runs
}

/// A read-only shared mapping of some pages of a file that mman never dereferences: it is
/// only handed to mincore, madvise and mlock, so a concurrent truncation cannot fault here.
#[derive(Debug)]
struct View {
    addr: *mut c_void,
    len: usize,
}

// SAFETY: the view is an address range, never dereferenced; unmapping it from any thread is
// fine.
unsafe impl Send for View {}
// SAFETY: as above: shared use only passes the range to system calls.
unsafe impl Sync for View {}

impl View {
    fn new(f: &CachedFile, first: u64, end: u64, op: &'static str) -> Result<View> {
        let ps = sys::page_size() as u64;
        let len = usize::try_from((end - first) * ps).map_err(|_| {
            Error::new(ErrorKind::InvalidInput, op, "range too large to map").with_path(Some(&f.path))
        })?;
        let req = sys::MapRequest::SHARED;
        let prot = sys::Prot::READ;
        // SAFETY: the kernel chooses the address; nothing is replaced.
        let addr = unsafe {
            sys::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                &req,
                Some(f.file.as_fd()),
                first * ps,
            )
        }
        .map_err(|e| {
            Error::os("mmap", e)
                .with_path(Some(&f.path))
                .with_range(first * ps, Some(len))
        })?;
        Ok(View { addr, len })
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: our own mapping, never dereferenced, so no reference into it exists.
        let _ = unsafe { sys::munmap(self.addr, self.len) };
    }
}

/// (device, inode) of a stat: the field widths differ between architectures.
#[allow(clippy::useless_conversion)]
fn file_id(st: &rustix::fs::Stat) -> (u64, u64) {
    (u64::from(st.st_dev), u64::from(st.st_ino))
}

fn open_at(dir: BorrowedFd<'_>, name: &Path, follow: bool) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let mut flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    // O_NOATIME is allowed only to the owner or CAP_FOWNER: try it, fall back without.
    match rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::PERM) => Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?),
        Err(e) => Err(e.into()),
    }
}

fn open_error(e: std::io::Error, path: &Path) -> Error {
    let err = Error::os("open", e).with_path(Some(path));
    match err.raw_os_error() {
        Some(libc::ENOENT) => err.with_hint("it vanished, or never existed"),
        Some(libc::EACCES) => err.with_hint("no read permission; it was skipped"),
        Some(libc::ELOOP) => err.with_hint("a symbolic link (follow links with -f)"),
        _ => err,
    }
}

/// Keeps an entry of a walk (path, is a directory) when it answers true.
pub type WalkFilter = Box<dyn Fn(&Path, bool) -> bool + Send + Sync>;

/// How [`walk`] goes over trees. The default: no links followed, no size limit, one
/// thread a core, no filter.
#[derive(Default)]
pub struct WalkOptions {
    /// Follow symbolic links below the roots (the roots themselves are always followed).
    pub follow_symlinks: bool,
    /// Skip files larger than this.
    pub max_size: Option<u64>,
    /// Threads; 0: one a core.
    pub threads: usize,
    /// Keep an entry (file or directory, by path) only if this says so.
    pub filter: Option<WalkFilter>,
}

impl std::fmt::Debug for WalkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalkOptions")
            .field("follow_symlinks", &self.follow_symlinks)
            .field("max_size", &self.max_size)
            .field("threads", &self.threads)
            .field("filter", &self.filter.is_some())
            .finish()
    }
}

/// What [`walk`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkTotals {
    /// Regular files visited (a hard-linked file once).
    pub files: u64,
    /// Directories entered.
    pub directories: u64,
    /// Entries skipped with an error (reported to the visitor).
    pub skipped: u64,
}

/// One thing [`walk`] met.
#[derive(Debug)]
pub enum Visit<'a> {
    /// A regular file, open.
    File(&'a CachedFile),
    /// An entry that could not be visited, and why.
    Skipped(Error),
}

struct WalkState<'v> {
    opts: &'v WalkOptions,
    visit: &'v (dyn Fn(Visit<'_>) + Sync),
    linked: Mutex<HashSet<(u64, u64)>>,
    dirs_seen: Mutex<HashSet<(u64, u64)>>,
    totals: Mutex<WalkTotals>,
}

/// Visit every regular file under `roots` (files or directories), on `opts.threads` threads.
/// Files with several hard links are visited once; errors (unreadable, vanished, symlink
/// loops) are handed to `visit` as [`Visit::Skipped`] and the walk goes on.
pub fn walk(roots: &[PathBuf], opts: &WalkOptions, visit: &(dyn Fn(Visit<'_>) + Sync)) -> WalkTotals {
    let state = WalkState {
        opts,
        visit,
        linked: Mutex::new(HashSet::new()),
        dirs_seen: Mutex::new(HashSet::new()),
        totals: Mutex::new(WalkTotals::default()),
    };
    // Files named directly are visited here; a thread pool is started only for directories.
    let mut dirs = Vec::new();
    for root in roots {
        match rustix::fs::stat(root) {
            Ok(st)
                if rustix::fs::FileType::from_raw_mode(st.st_mode as _)
                    == rustix::fs::FileType::Directory =>
            {
                dirs.push(root.clone())
            }
            Ok(_) => state.file(rustix::fs::CWD, root, root.clone(), true),
            Err(e) => state.skip(open_error(e.into(), root)),
        }
    }
    if !dirs.is_empty() {
        let dirs = &dirs[..];
        // rayon reads 0 as one thread a core.
        match rayon::ThreadPoolBuilder::new().num_threads(opts.threads).build() {
            Ok(pool) => pool.scope(|s| state.roots(s, dirs)),
            Err(_) => rayon::scope(|s| state.roots(s, dirs)),
        }
    }
    state.totals.into_inner().unwrap_or_else(|e| e.into_inner())
}

const BATCH: usize = 128;

impl<'v> WalkState<'v> {
    fn add(&self, f: impl FnOnce(&mut WalkTotals)) {
        f(&mut self.totals.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn skip(&self, e: Error) {
        self.add(|t| t.skipped += 1);
        (self.visit)(Visit::Skipped(e));
    }

    fn roots<'s>(&'s self, s: &rayon::Scope<'s>, roots: &'s [PathBuf]) {
        for root in roots {
            s.spawn(move |s| self.root(s, root));
        }
    }

    fn root<'s>(&'s self, s: &rayon::Scope<'s>, path: &'s Path) {
        self.dir(s, rustix::fs::CWD, path.to_path_buf(), path.to_path_buf(), true)
    }

    fn dir<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        parent: BorrowedFd<'_>,
        path: PathBuf,
        name: PathBuf,
        follow: bool,
    ) {
        use rustix::fs::{Mode, OFlags};
        let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        if !follow {
            flags |= OFlags::NOFOLLOW;
        }
        let fd = match rustix::fs::openat(parent, &name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => return self.skip(open_error(e.into(), &path)),
        };
        if self.opts.follow_symlinks {
            if let Ok(st) = rustix::fs::fstat(&fd) {
                let id = file_id(&st);
                if !self
                    .dirs_seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id)
                {
                    return self.skip(
                        Error::new(
                            ErrorKind::InvalidInput,
                            "walk",
                            "directory reached a second time (a symbolic-link loop?); skipped",
                        )
                        .with_path(Some(&path)),
                    );
                }
            }
        }
        self.add(|t| t.directories += 1);
        let dir = match rustix::fs::Dir::read_from(&fd) {
            Ok(d) => d,
            Err(e) => return self.skip(Error::os("readdir", e.into()).with_path(Some(&path))),
        };
        let fd = std::sync::Arc::new(fd);
        let mut batch: Vec<(std::ffi::OsString, bool)> = Vec::new();
        let flush = |batch: Vec<(std::ffi::OsString, bool)>| {
            let fd = fd.clone();
            let path = path.clone();
            s.spawn(move |_| {
                for (name, follow) in batch {
                    let p = path.join(&name);
                    self.file(fd.as_fd(), Path::new(&name), p, follow);
                }
            });
        };
        for entry in dir {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.skip(Error::os("readdir", e.into()).with_path(Some(&path)));
                    break;
                }
            };
            let bytes = entry.file_name().to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let name = std::ffi::OsString::from(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes),
            );
            use rustix::fs::FileType as T;
            let mut kind = entry.file_type();
            let mut follow = false;
            if kind == T::Unknown || (kind == T::Symlink && self.opts.follow_symlinks) {
                let at = if kind == T::Symlink {
                    rustix::fs::AtFlags::empty()
                } else {
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW
                };
                follow = kind == T::Symlink;
                match rustix::fs::statat(fd.as_fd(), &name, at) {
                    Ok(st) => kind = T::from_raw_mode(st.st_mode as _),
                    Err(e) => {
                        self.skip(open_error(e.into(), &path.join(&name)));
                        continue;
                    }
                }
            }
            match kind {
                T::Directory => {
                    let child = path.join(&name);
                    if !self.keep(&child, true) {
                        continue;
                    }
                    let fd = fd.clone();
                    s.spawn(move |s| self.dir(s, fd.as_fd(), child, PathBuf::from(name), follow));
                }
                T::RegularFile => {
                    batch.push((name, follow));
                    if batch.len() == BATCH {
                        flush(std::mem::take(&mut batch));
                    }
                }
                _ => {}
            }
        }
        if !batch.is_empty() {
            // The last batch runs here: no task to hand over.
            for (name, follow) in batch {
                let p = path.join(&name);
                self.file(fd.as_fd(), Path::new(&name), p, follow);
            }
        }
    }

    fn keep(&self, path: &Path, is_dir: bool) -> bool {
        self.opts.filter.as_ref().is_none_or(|f| f(path, is_dir))
    }

    fn file(&self, dir: BorrowedFd<'_>, name: &Path, path: PathBuf, follow: bool) {
        if !self.keep(&path, false) {
            return;
        }
        let fd = match open_at(dir, name, follow) {
            Ok(fd) => fd,
            Err(e) => return self.skip(open_error(e, &path)),
        };
        let f = match CachedFile::from_fd(fd, path) {
            Ok(f) => f,
            Err(e) => return self.skip(e),
        };
        if self.opts.max_size.is_some_and(|m| f.size > m) {
            return;
        }
        if f.nlink > 1
            && !self
                .linked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(f.identity())
        {
            return;
        }
        self.add(|t| t.files += 1);
        (self.visit)(Visit::File(&f));
    }
}
