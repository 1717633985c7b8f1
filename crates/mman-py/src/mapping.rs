//! `mman.map_file` and `mman.Mapping`: a file mapping with the habits of `mmap.mmap`, whose
//! reads of a truncated file raise `mman.TruncatedError` instead of killing the interpreter
//! with SIGBUS. Every access is one of the Rust crate's copies (`read_at`, `write_at`).

use std::sync::Arc;

use mman::{ErrorKind, FlushMode, MapOptions};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PySlice};

use crate::buffer::Buffer;
use crate::errors::{usage, IntoPy};

/// Copies at least this large are made with the GIL released.
pub const LARGE: usize = 64 * 1024;

/// What a memoryview of a mapping keeps alive: the mapping stays mapped until the mapping
/// object and every view are gone.
#[pyclass(module = "mman._mman", name = "_Export", frozen)]
pub struct Export {
    _map: Arc<mman::Mapping>,
}

/// The export of `map`: (owner, address, length, read-only) for `mman._view`.
pub fn export(py: Python<'_>, map: &Arc<mman::Mapping>) -> PyResult<(Py<Export>, usize, usize, bool)> {
    let owner = Py::new(py, Export { _map: map.clone() })?;
    let readonly = !map.protection().contains(mman::Protection::WRITE);
    Ok((owner, map.as_ptr() as usize, map.len(), readonly))
}

/// A mapped file (`mman.map_file`).
#[pyclass(module = "mman._mman", name = "Mapping")]
pub struct Mapping {
    map: Option<Arc<mman::Mapping>>,
    pos: usize,
}

/// Copy `n` bytes at `offset` of `map` into a new `bytes`, the GIL released for large ones.
pub fn read_bytes<'py>(
    py: Python<'py>,
    map: &mman::Mapping,
    offset: usize,
    n: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, n, |buf| {
        if n >= LARGE {
            py.detach(|| map.read_at(offset, buf)).py_err()
        } else {
            map.read_at(offset, buf).py_err()
        }
    })
}

/// Copy `data` to `offset` of `map`, the GIL released for large ones.
pub fn write_bytes(py: Python<'_>, map: &mman::Mapping, offset: usize, data: &Buffer) -> PyResult<()> {
    if data.len() >= LARGE {
        let span = data.span();
        // SAFETY: `data` is held until this returns.
        py.detach(|| map.write_at(offset, unsafe { span.bytes() }))
            .py_err()
    } else {
        map.write_at(offset, data.as_slice()).py_err()
    }
}

fn closed() -> PyErr {
    usage(ErrorKind::InvalidInput, "mapping", "the mapping is closed", None)
}

impl Mapping {
    fn map(&self) -> PyResult<&Arc<mman::Mapping>> {
        self.map.as_ref().ok_or_else(closed)
    }

    fn index(&self, i: isize) -> PyResult<usize> {
        let len = self.map()?.len() as isize;
        let j = if i < 0 { i + len } else { i };
        if j < 0 || j >= len {
            return Err(pyo3::exceptions::PyIndexError::new_err(
                "mapping index out of range",
            ));
        }
        Ok(j as usize)
    }
}

#[pymethods]
impl Mapping {
    fn __len__(&self) -> PyResult<usize> {
        Ok(self.map()?.len())
    }

    fn __getitem__<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        let map = self.map()?;
        if let Ok(slice) = key.cast::<PySlice>() {
            let ind = slice.indices(map.len() as isize)?;
            if ind.step == 1 || ind.slicelength == 0 {
                let n = ind.slicelength;
                return Ok(
                    read_bytes(py, map, if n == 0 { 0 } else { ind.start as usize }, n)?
                        .into_any()
                        .unbind(),
                );
            }
            // A stride: copy the span once, pick from it.
            let (lo, hi) = if ind.step > 0 {
                (ind.start, ind.start + ind.step * (ind.slicelength as isize - 1))
            } else {
                (ind.start + ind.step * (ind.slicelength as isize - 1), ind.start)
            };
            let mut span = vec![0u8; (hi - lo + 1) as usize];
            map.read_at(lo as usize, &mut span).py_err()?;
            let picked: Vec<u8> = (0..ind.slicelength as isize)
                .map(|k| span[(ind.start + k * ind.step - lo) as usize])
                .collect();
            return Ok(PyBytes::new(py, &picked).into_any().unbind());
        }
        let i = self.index(key.extract::<isize>()?)?;
        let mut b = [0u8; 1];
        map.read_at(i, &mut b).py_err()?;
        Ok(b[0].into_pyobject(py)?.into_any().unbind())
    }

    fn __setitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let map = self.map()?;
        if let Ok(slice) = key.cast::<PySlice>() {
            let ind = slice.indices(map.len() as isize)?;
            let data = Buffer::get(value, false)?;
            if data.len() != ind.slicelength {
                return Err(pyo3::exceptions::PyIndexError::new_err(
                    "mapping slice assignment is wrong size",
                ));
            }
            if ind.step == 1 || ind.slicelength == 0 {
                return write_bytes(py, map, ind.start.max(0) as usize, &data);
            }
            for (k, b) in data.as_slice().iter().enumerate() {
                map.write_at((ind.start + k as isize * ind.step) as usize, &[*b])
                    .py_err()?;
            }
            return Ok(());
        }
        let i = self.index(key.extract::<isize>()?)?;
        let b: u8 = value.extract()?;
        map.write_at(i, &[b]).py_err()
    }

    /// Read up to `n` bytes from the position (all the rest when `n` is None or negative).
    #[pyo3(signature = (n=None))]
    fn read<'py>(&mut self, py: Python<'py>, n: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let map = self.map()?.clone();
        let left = map.len().saturating_sub(self.pos);
        let n = match n {
            Some(n) if n >= 0 => (n as usize).min(left),
            _ => left,
        };
        let b = read_bytes(py, &map, self.pos.min(map.len()), n)?;
        self.pos += n;
        Ok(b)
    }

    /// Read the byte at the position and advance.
    fn read_byte(&mut self) -> PyResult<u8> {
        let map = self.map()?;
        if self.pos >= map.len() {
            return Err(pyo3::exceptions::PyValueError::new_err("read byte out of range"));
        }
        let mut b = [0u8; 1];
        map.read_at(self.pos, &mut b).py_err()?;
        self.pos += 1;
        Ok(b[0])
    }

    /// Write the bytes-like `data` at the position and advance; returns its length.
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let map = self.map()?.clone();
        let data = Buffer::get(data, false)?;
        if self.pos + data.len() > map.len() {
            return Err(pyo3::exceptions::PyValueError::new_err("data out of range"));
        }
        write_bytes(py, &map, self.pos, &data)?;
        self.pos += data.len();
        Ok(data.len())
    }

    /// Write one byte at the position and advance.
    fn write_byte(&mut self, byte: u8) -> PyResult<()> {
        let map = self.map()?;
        map.write_at(self.pos, &[byte]).py_err()?;
        self.pos += 1;
        Ok(())
    }

    /// Move the position: `whence` 0 from the start, 1 from the position, 2 from the end.
    #[pyo3(signature = (pos, whence=0))]
    fn seek(&mut self, pos: isize, whence: i32) -> PyResult<usize> {
        let len = self.map()?.len() as isize;
        let base = match whence {
            0 => 0,
            1 => self.pos as isize,
            2 => len,
            _ => return Err(pyo3::exceptions::PyValueError::new_err("unknown seek type")),
        };
        let to = base + pos;
        if to < 0 || to > len {
            return Err(pyo3::exceptions::PyValueError::new_err("seek out of range"));
        }
        self.pos = to as usize;
        Ok(self.pos)
    }

    /// The position.
    fn tell(&self) -> PyResult<usize> {
        self.map()?;
        Ok(self.pos)
    }

    /// The lowest index in `[start, end)` where `sub` is found, or -1.
    #[pyo3(signature = (sub, start=None, end=None))]
    fn find(
        &self,
        py: Python<'_>,
        sub: &Bound<'_, PyAny>,
        start: Option<isize>,
        end: Option<isize>,
    ) -> PyResult<isize> {
        let map = self.map()?;
        let len = map.len() as isize;
        let clamp = |i: isize| if i < 0 { (i + len).max(0) } else { i.min(len) } as usize;
        let a = clamp(start.unwrap_or(self.pos as isize));
        let b = clamp(end.unwrap_or(len));
        if a > b {
            return Ok(-1);
        }
        let hay = read_bytes(py, map, a, b - a)?;
        let at: isize = hay.call_method1("find", (sub,))?.extract()?;
        Ok(if at < 0 { -1 } else { at + a as isize })
    }

    /// `msync` the range (all of it by default) and wait for it to reach the disk.
    #[pyo3(signature = (offset=0, size=None))]
    fn flush(&self, py: Python<'_>, offset: usize, size: Option<usize>) -> PyResult<()> {
        let map = self.map()?.clone();
        let end = size.map_or(map.len(), |s| offset.saturating_add(s));
        py.detach(|| map.flush(offset..end, FlushMode::Sync)).py_err()
    }

    /// Check that the file still covers the mapping (one `fstat`); raise `TruncatedError`
    /// if it shrank.
    fn verify(&self) -> PyResult<()> {
        self.map()?.verify_file_size().py_err()
    }

    /// Whether a touch of a page past a shrunken file's end was caught.
    #[getter]
    fn truncated(&self) -> PyResult<bool> {
        Ok(self.map()?.is_truncated())
    }

    /// The mapped file's path.
    #[getter]
    fn path(&self) -> PyResult<Option<String>> {
        Ok(self.map()?.path().map(|p| p.to_string_lossy().into_owned()))
    }

    /// Whether writes are allowed.
    #[getter]
    fn writable(&self) -> PyResult<bool> {
        Ok(self.map()?.protection().contains(mman::Protection::WRITE))
    }

    /// Unmap (once every memoryview of it is gone too). Idempotent.
    fn close(&mut self) {
        self.map = None;
    }

    #[getter]
    fn closed(&self) -> bool {
        self.map.is_none()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&mut self, _t: Py<PyAny>, _v: Py<PyAny>, _tb: Py<PyAny>) -> bool {
        self.close();
        false
    }

    /// A memoryview of the mapped bytes, in place (see `mman._view` for what it sees after
    /// a truncation).
    #[getter]
    fn buf<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let e = export(py, self.map()?)?;
        py.import("mman._view")?.call_method1("view", (e,))
    }

    /// (owner, address, length, read-only): what `mman.Mapping.buf` builds a memoryview of.
    fn _export(&self, py: Python<'_>) -> PyResult<(Py<Export>, usize, usize, bool)> {
        export(py, self.map()?)
    }

    fn __repr__(&self) -> String {
        match &self.map {
            None => "<mman.Mapping closed>".into(),
            Some(m) => format!(
                "<mman.Mapping {} length={} {}>",
                m.path()
                    .map_or("?".into(), |p| format!("{:?}", p.to_string_lossy())),
                m.len(),
                if m.protection().contains(mman::Protection::WRITE) {
                    "read-write"
                } else {
                    "read-only"
                }
            ),
        }
    }
}

/// Map `path` (shared, read-write when `write`) from `offset`, `length` bytes (to the end
/// of the file when None).
#[pyfunction]
#[pyo3(signature = (path, write=false, offset=0, length=None))]
pub fn map_file(
    py: Python<'_>,
    path: std::path::PathBuf,
    write: bool,
    offset: u64,
    length: Option<usize>,
) -> PyResult<Mapping> {
    let mut opts = MapOptions::new();
    opts.offset(offset).shared();
    if write {
        opts.read_write();
    }
    if let Some(n) = length {
        opts.len(n);
    }
    let map = py.detach(|| opts.map_path(&path)).py_err()?;
    Ok(Mapping {
        map: Some(Arc::new(map)),
        pos: 0,
    })
}
