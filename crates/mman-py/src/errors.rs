//! mman's `Error` as a Python exception: the classes live in `mman/_errors.py` (so they can
//! inherit from both `mman.Error` and a builtin such as `FileNotFoundError`); this file picks
//! the class for an [`ErrorKind`] and fills in `errno`, `operation`, `path`, `hint`, `kind`.

use mman::{Error, ErrorKind};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The Python class of each kind, imported once.
static CLASSES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Truncated => "TruncatedError",
        ErrorKind::Disconnected => "Disconnected",
        ErrorKind::Corrupted => "CorruptedError",
        ErrorKind::NotFound => "NotFoundError",
        ErrorKind::PermissionDenied => "PermissionDeniedError",
        ErrorKind::AddressInUse => "ExistsError",
        ErrorKind::InvalidInput => "InvalidInputError",
        ErrorKind::ResourceLimit => "ResourceLimitError",
        ErrorKind::Unsupported => "UnsupportedError",
        ErrorKind::NotMappable => "NotMappableError",
        _ => "Error",
    }
}

fn kind_name(kind: ErrorKind) -> String {
    format!("{kind:?}")
}

/// The exception for `e`.
pub fn to_py(e: Error) -> PyErr {
    Python::attach(|py| match build(py, &e) {
        Ok(err) => err,
        Err(fallback) => fallback,
    })
}

fn build(py: Python<'_>, e: &Error) -> PyResult<PyErr> {
    let obj = make(
        py,
        e.kind(),
        e.raw_os_error(),
        e.to_string(),
        e.operation(),
        e.path().map(|p| p.to_string_lossy().into_owned()),
        e.hint(),
    )?;
    if let Some((needed, now)) = e.truncation() {
        obj.setattr("truncation", (needed, now))?;
    }
    Ok(PyErr::from_value(obj))
}

fn make<'py>(
    py: Python<'py>,
    kind: ErrorKind,
    errno: Option<i32>,
    message: String,
    op: &str,
    path: Option<String>,
    hint: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    let module = CLASSES.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("mman._errors")?.into_any().unbind())
    })?;
    let cls = module.bind(py).getattr(class_name(kind))?.cast_into::<PyType>()?;
    let obj = match errno {
        Some(errno) => cls.call1((errno, message))?,
        None => cls.call1((message,))?,
    };
    obj.setattr("operation", op)?;
    obj.setattr("path", path)?;
    obj.setattr("hint", hint)?;
    obj.setattr("kind", kind_name(kind))?;
    Ok(obj)
}

/// `Result<T, mman::Error>` to `PyResult<T>`.
pub trait IntoPy<T> {
    /// The exception for an error.
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for mman::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// An error made here, as mman's own kinds (a closed handle, an argument out of range).
pub fn usage(kind: ErrorKind, op: &str, what: &str, hint: Option<&str>) -> PyErr {
    Python::attach(
        |py| match make(py, kind, None, format!("{op}: {what}"), op, None, hint) {
            Ok(obj) => PyErr::from_value(obj),
            Err(e) => e,
        },
    )
}
