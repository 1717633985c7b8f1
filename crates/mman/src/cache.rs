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
//! * [`CachedFile::evict`] drops the pages (`POSIX_FADV_DONTNEED`), after writing dirty ones
//!   back if asked ([`DirtyPages`]), then measures again and reports what stayed: dirty
//!   pages, pages under writeback, pages someone maps or locks.
//! * [`CachedFile::lock`] locks the pages as they are faulted in (`MLOCK_ONFAULT`, then
//!   populate): no window in which a touched page can be evicted before it is locked.
//! * [`walk`] visits directory trees on several threads, counting hard-linked files once and
//!   reporting unreadable or vanished files without stopping.
//!
//! ```no_run
//! # fn main() -> mman::Result<()> {
//! use mman::cache::{CachedFile, DirtyPages, PageRange};
//! let f = CachedFile::open("/var/lib/db/index")?;
//! let before = f.status(PageRange::ALL)?;
//! let touched = f.touch(PageRange::ALL)?; // reads in what was missing
//! println!("{:?} of {} pages were resident; read {}", before.resident, before.pages, touched.touched);
//! let evicted = f.evict(PageRange::ALL, DirtyPages::Stay)?;
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

mod evict;
mod file;
mod lock;
mod status;
mod touch;
mod types;
mod view;
mod walk;

pub use evict::DirtyPages;
pub use file::CachedFile;
pub use lock::{check_lock_limits, LockedFile};
pub use types::{Evicted, PageRange, Source, Status, Touched};
pub use walk::{walk, Visit, WalkFilter, WalkOptions, WalkTotals};

use file::UNKNOWN_REASON;
use view::{count, missing_runs, View};
use walk::open_error;
