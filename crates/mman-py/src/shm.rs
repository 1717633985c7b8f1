//! `mman.SharedMemory`: `multiprocessing.shared_memory.SharedMemory`'s attributes and
//! methods over mman's named objects, without a resource tracker; and `mman.shm`'s
//! `list`/`remove_stale`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mman::shm::{self, OpenCheck};
use mman::ErrorKind;
use pyo3::prelude::*;

use crate::errors::{usage, IntoPy};
use crate::mapping::export;

/// A fresh name: the process, the time and a counter (what `multiprocessing` calls `psm_`).
pub fn fresh_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}{:x}_{:x}_{n:x}",
        std::process::id(),
        t & 0xffff_ffff_ffff
    )
}

/// Open `name` as mman's object (`/mman.NAME`), else verbatim (`/NAME`: a C program's or
/// Python's own): (the handle, whether it is foreign).
pub fn open_any(name: &str, min_size: u64) -> mman::Result<(shm::SharedMemory, bool)> {
    match shm::SharedMemory::open(name, min_size) {
        Ok(obj) => Ok((obj, false)),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let check = OpenCheck {
                min_size,
                owner: None,
                allowed_other_bits: 0,
            };
            match shm::SharedMemory::open_foreign(name, &check) {
                Ok(obj) => Ok((obj, true)),
                // Neither exists: say so of mman's name, as the caller most likely meant it.
                Err(f) if f.kind() == ErrorKind::NotFound => Err(e),
                Err(f) => Err(f),
            }
        }
        Err(e) => Err(e),
    }
}

/// A named shared-memory block, for code written for
/// `multiprocessing.shared_memory.SharedMemory`.
#[pyclass(module = "mman._mman", name = "SharedMemory")]
pub struct SharedMemory {
    /// The cached memoryview (`buf`), released by `close`.
    view: Option<Py<PyAny>>,
    map: Option<Arc<mman::Mapping>>,
    obj: Option<shm::SharedMemory>,
    name: String,
    size: u64,
    foreign: bool,
}

#[pymethods]
impl SharedMemory {
    #[new]
    #[pyo3(signature = (name=None, create=false, size=0))]
    fn new(py: Python<'_>, name: Option<String>, create: bool, size: i64) -> PyResult<Self> {
        if size < 0 {
            return Err(usage(
                ErrorKind::InvalidInput,
                "shm_open",
                "'size' must be a positive integer",
                None,
            ));
        }
        let size = size as u64;
        let (obj, name, foreign) = if create {
            if size == 0 {
                return Err(usage(
                    ErrorKind::InvalidInput,
                    "shm_open",
                    "'size' must be a positive number different from zero",
                    None,
                ));
            }
            let name = name.unwrap_or_else(|| fresh_name("psm_"));
            let mut obj = py.detach(|| shm::SharedMemory::create(&name, size)).py_err()?;
            // Python's semantics: the name stays until unlink(), whoever closes.
            obj.keep();
            (obj, name, false)
        } else {
            let Some(name) = name else {
                return Err(usage(
                    ErrorKind::InvalidInput,
                    "shm_open",
                    "'name' can only be None if create=True",
                    None,
                ));
            };
            let (obj, foreign) = open_any(&name, size).py_err()?;
            (obj, name, foreign)
        };
        let map = obj.map().py_err()?;
        Ok(SharedMemory {
            view: None,
            size: map.len() as u64,
            map: Some(Arc::new(map)),
            obj: Some(obj),
            name,
            foreign,
        })
    }

    /// The name to open the block by (`/mman.NAME` for mman's, `/NAME` for a foreign one).
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The object's name as the system knows it (`/mman.NAME`, or `/NAME`).
    #[getter]
    fn system_name(&self) -> String {
        if self.foreign {
            format!("/{}", self.name.trim_start_matches('/'))
        } else {
            shm::object_name(&self.name).unwrap_or_default()
        }
    }

    /// The size in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.size
    }

    /// A memoryview of the block's bytes.
    #[getter]
    fn buf(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(v) = &self.view {
            return Ok(v.clone_ref(py));
        }
        let Some(map) = &self.map else {
            return Err(usage(
                ErrorKind::InvalidInput,
                "buf",
                "the shared memory is closed",
                None,
            ));
        };
        let e = export(py, map)?;
        let v = py.import("mman._view")?.call_method1("view", (e,))?.unbind();
        self.view = Some(v.clone_ref(py));
        Ok(v)
    }

    /// Close this handle: unmapped once every memoryview of it is gone. The name stays
    /// (`unlink` removes it).
    fn close(&mut self, py: Python<'_>) {
        if let Some(v) = self.view.take() {
            // Views taken from `buf` may outlive this; they keep the memory mapped.
            let _ = v.bind(py).call_method0("release");
        }
        self.map = None;
        self.obj = None;
    }

    /// Remove the name (the memory lives on while mapped). Call it once, from one process.
    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        let name = self.name.clone();
        let foreign = self.foreign;
        py.detach(|| {
            if foreign {
                shm::SharedMemory::unlink_foreign(&name)
            } else {
                shm::SharedMemory::unlink(&name)
            }
        })
        .py_err()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&mut self, py: Python<'_>, _t: Py<PyAny>, _v: Py<PyAny>, _tb: Py<PyAny>) -> bool {
        self.close(py);
        false
    }

    /// Pickled as its name: the receiving process opens the same block.
    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<(Py<PyAny>, (String, bool, u64))> {
        let me = slf.borrow();
        Ok((slf.get_type().into_any().unbind(), (me.name.clone(), false, 0)))
    }

    fn __repr__(&self) -> String {
        format!("SharedMemory({:?}, size={})", self.name, self.size)
    }
}

/// An object as `mman.shm.ObjectInfo`'s fields: name, size, uid, mode, creator pid,
/// whether it was created to be kept, whether a live handle holds it, whether mman made it,
/// whether it is stale (the crate's judgement).
type ObjectRow = (String, u64, u32, u32, Option<u32>, bool, Option<bool>, bool, bool);

/// The objects that exist, as `ObjectRow`s.
#[pyfunction]
#[pyo3(signature = (all=false))]
pub fn shm_list(py: Python<'_>, all: bool) -> PyResult<Vec<ObjectRow>> {
    let list = py
        .detach(|| if all { shm::list_all() } else { shm::list() })
        .py_err()?;
    Ok(list
        .into_iter()
        .map(|o| {
            let stale = o.is_stale();
            (
                o.name, o.size, o.uid, o.mode, o.creator, o.kept, o.in_use, o.mman, stale,
            )
        })
        .collect())
}

/// Unlink this user's mman objects whose creator is gone; their names.
#[pyfunction]
pub fn shm_remove_stale(py: Python<'_>) -> PyResult<Vec<String>> {
    py.detach(shm::remove_stale).py_err()
}
