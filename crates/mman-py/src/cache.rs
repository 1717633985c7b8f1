//! `mman.cache`'s native part: status, touch, evict and lock of files and trees, done by
//! the Rust crate (`mman::cache`, its tree walk included) on a worker thread while the
//! caller waits in slices, so that Ctrl-C raises `KeyboardInterrupt` at once (the worker is
//! told to stop and finishes on its own; pages it locked are unlocked as it drops them).
//! The data classes are made in `python/mman/cache.py` from the dicts built here.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use mman::cache::{self, CachedFile, DirtyPages, LockedFile, PageRange, Source, Status, Visit, WalkOptions};
use mman::ErrorKind;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::{to_py, usage, IntoPy};
use crate::wait::SLICE;

/// What to do to each file.
#[derive(Clone, Copy)]
enum Op {
    Status,
    Touch,
    Evict(DirtyPages),
    Lock,
}

/// What was done to one file.
enum Done {
    Status(Status),
    Touched(cache::Touched),
    Evicted(cache::Evicted),
    Locked(LockedFile),
}

/// One file's outcome: its path, its size, what was done.
struct FileDone {
    path: PathBuf,
    size: u64,
    done: Done,
}

fn op_of(op: &str, write_back: bool) -> PyResult<Op> {
    Ok(match op {
        "status" => Op::Status,
        "touch" => Op::Touch,
        "evict" if write_back => Op::Evict(DirtyPages::WriteBackFirst),
        "evict" => Op::Evict(DirtyPages::Stay),
        "lock" => Op::Lock,
        _ => {
            return Err(usage(
                ErrorKind::InvalidInput,
                "cache",
                &format!("no operation {op:?}"),
                None,
            ))
        }
    })
}

fn apply(f: &CachedFile, op: Op, range: PageRange) -> mman::Result<FileDone> {
    let done = match op {
        Op::Status => Done::Status(f.status(range)?),
        Op::Touch => Done::Touched(f.touch(range)?),
        Op::Evict(dirty) => Done::Evicted(f.evict(range, dirty)?),
        Op::Lock => Done::Locked(f.lock(range)?),
    };
    Ok(FileDone {
        path: f.path().to_path_buf(),
        size: f.size(),
        done,
    })
}

/// Run `work` on a worker thread and wait for it in slices, answering Ctrl-C: then the
/// worker's `stop` flag is raised and the call returns the signal handler's exception.
fn interruptible<T: Send + 'static>(
    py: Python<'_>,
    work: impl FnOnce(&AtomicBool) -> T + Send + 'static,
) -> PyResult<T> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let flag = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("mman-cache".into())
        .spawn(move || {
            let _ = tx.send(work(&flag));
        })
        .map_err(|e| PyOSError::new_err(format!("page cache: spawning a worker thread: {e}")))?;
    let mut rx = Some(rx);
    loop {
        // The receiver is moved in and out: it is Send but not Sync.
        let r = rx.take().expect("put back below");
        let (got, r) = py.detach(move || (r.recv_timeout(SLICE), r));
        rx = Some(r);
        match got {
            Ok(v) => return Ok(v),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(PyRuntimeError::new_err("page cache: the worker thread panicked"))
            }
        }
        if let Err(e) = py.check_signals() {
            stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
    }
}

fn status_dict<'py>(py: Python<'py>, path: &Path, size: u64, s: &Status) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("path", path.as_os_str())?;
    d.set_item("size", size)?;
    d.set_item("pages", s.pages)?;
    d.set_item("resident", s.resident)?;
    d.set_item("unknown", s.unknown.as_deref())?;
    d.set_item("dirty", s.dirty)?;
    d.set_item("writeback", s.writeback)?;
    d.set_item("evicted", s.evicted)?;
    d.set_item("recently_evicted", s.recently_evicted)?;
    let source = match s.source {
        Source::Cachestat => "cachestat",
        _ => "mincore",
    };
    d.set_item("source", source)?;
    Ok(d)
}

/// A file's outcome as a dict; a lock's guard goes to `locks`.
fn done_dict<'py>(py: Python<'py>, f: FileDone, locks: &mut Vec<LockedFile>) -> PyResult<Bound<'py, PyDict>> {
    let (path, size) = (&f.path, f.size);
    Ok(match f.done {
        Done::Status(s) => status_dict(py, path, size, &s)?,
        Done::Touched(t) => {
            let d = PyDict::new(py);
            d.set_item("path", path.as_os_str())?;
            d.set_item("pages", t.pages)?;
            d.set_item("touched", t.touched)?;
            d.set_item("after", status_dict(py, path, size, &t.after)?)?;
            d
        }
        Done::Evicted(e) => {
            let d = PyDict::new(py);
            d.set_item("path", path.as_os_str())?;
            d.set_item("before", status_dict(py, path, size, &e.before)?)?;
            d.set_item("after", status_dict(py, path, size, &e.after)?)?;
            d
        }
        Done::Locked(l) => {
            let d = PyDict::new(py);
            d.set_item("path", path.as_os_str())?;
            d.set_item("pages", l.pages())?;
            locks.push(l);
            d
        }
    })
}

/// Pages locked in memory by `mman.cache.lock`: unlocked by `unlock()`, at the end of a
/// `with` block, or when garbage-collected.
#[pyclass(module = "mman._mman", name = "_Locks")]
pub struct Locks {
    held: Mutex<Vec<LockedFile>>,
}

#[pymethods]
impl Locks {
    /// Unlock every page.
    fn unlock(&self) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Whether pages are still locked.
    #[getter]
    fn locked(&self) -> bool {
        !self.held.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

/// Do `op` ("status", "touch", "evict", "lock") to the bytes `start..end` of the file
/// `path`: a dict of the outcome (and, for a lock, the guard), or the error raised.
#[pyfunction]
#[pyo3(signature = (op, path, start=0, end=None, write_back=false))]
pub fn cache_file<'py>(
    py: Python<'py>,
    op: &str,
    path: PathBuf,
    start: u64,
    end: Option<u64>,
    write_back: bool,
) -> PyResult<(Bound<'py, PyDict>, Option<Locks>)> {
    let op = op_of(op, write_back)?;
    let range = PageRange::bytes(start, end);
    let f = interruptible(py, move |_| {
        CachedFile::open(&path).and_then(|f| apply(&f, op, range))
    })?
    .py_err()?;
    let mut locks = Vec::new();
    let d = done_dict(py, f, &mut locks)?;
    let guard = matches!(op, Op::Lock).then(|| Locks {
        held: Mutex::new(locks),
    });
    Ok((d, guard))
}

/// A tree's outcomes, the errors of entries skipped, directories entered, a lock's guard.
type TreeDone<'py> = (Bound<'py, PyList>, Bound<'py, PyList>, u64, Option<Locks>);

/// Do `op` to every regular file under `roots` (walked on several threads, hard-linked
/// files once): (the outcomes, the errors of files skipped, directories entered, the guard
/// of a lock). The walk stops early on Ctrl-C.
#[pyfunction]
#[pyo3(signature = (op, roots, follow_symlinks=false, max_size=None, threads=0, write_back=false))]
pub fn cache_tree<'py>(
    py: Python<'py>,
    op: &str,
    roots: Vec<PathBuf>,
    follow_symlinks: bool,
    max_size: Option<u64>,
    threads: usize,
    write_back: bool,
) -> PyResult<TreeDone<'py>> {
    let op = op_of(op, write_back)?;
    let opts = WalkOptions {
        follow_symlinks,
        max_size,
        threads,
        filter: None,
    };
    let (files, errors, totals) = interruptible(py, move |stop| {
        let files = Mutex::new(Vec::new());
        let errors = Mutex::new(Vec::new());
        let totals = cache::walk(&roots, &opts, &|v| {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let r = match v {
                Visit::File(f) => apply(f, op, PageRange::ALL),
                Visit::Skipped(e) => Err(e),
            };
            match r {
                Ok(d) => files.lock().unwrap_or_else(|e| e.into_inner()).push(d),
                Err(e) => errors.lock().unwrap_or_else(|e| e.into_inner()).push(e),
            }
        });
        let files = files.into_inner().unwrap_or_else(|e| e.into_inner());
        (
            files,
            errors.into_inner().unwrap_or_else(|e| e.into_inner()),
            totals,
        )
    })?;
    let mut locks = Vec::new();
    let out = PyList::empty(py);
    for f in files {
        out.append(done_dict(py, f, &mut locks)?)?;
    }
    let errs = PyList::empty(py);
    for e in errors {
        errs.append(to_py(e).into_value(py))?;
    }
    let guard = matches!(op, Op::Lock).then(|| Locks {
        held: Mutex::new(locks),
    });
    Ok((out, errs, totals.directories, guard))
}
