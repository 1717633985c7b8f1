//! Bytes-like arguments (`bytes`, `bytearray`, `memoryview`, numpy arrays) read in place
//! through the buffer protocol, without a copy.
//!
//! `PyObject_GetBuffer` and `Py_buffer` joined the limited API only in 3.11, yet both have
//! been exported by every CPython 3 with this very layout (it has not changed since 3.3;
//! 3.11 made it stable as it was). This abi3 module for 3.9+ declares them itself.

use std::ffi::{c_char, c_int, c_void};

use pyo3::ffi;
use pyo3::prelude::*;

/// CPython's `Py_buffer`.
#[repr(C)]
struct RawBuffer {
    buf: *mut c_void,
    obj: *mut ffi::PyObject,
    len: isize,
    itemsize: isize,
    readonly: c_int,
    ndim: c_int,
    format: *mut c_char,
    shape: *mut isize,
    strides: *mut isize,
    suboffsets: *mut isize,
    internal: *mut c_void,
}

extern "C" {
    fn PyObject_GetBuffer(obj: *mut ffi::PyObject, view: *mut RawBuffer, flags: c_int) -> c_int;
    fn PyBuffer_Release(view: *mut RawBuffer);
}

/// `PyBUF_SIMPLE`: contiguous bytes, no format.
const SIMPLE: c_int = 0;
/// `PyBUF_WRITABLE`.
const WRITABLE: c_int = 1;

/// A contiguous buffer held from a Python object; released on drop (with the GIL: it is
/// neither `Send` nor `Sync`, and lives only inside a method holding the GIL).
pub struct Buffer {
    raw: RawBuffer,
}

/// The bytes of a [`Buffer`], to hand to a closure that runs without the GIL.
#[derive(Clone, Copy)]
pub struct Span {
    ptr: usize,
    len: usize,
}

impl Buffer {
    /// The bytes of `obj` (any object with the buffer protocol, C-contiguous), writable
    /// ones when `writable`.
    pub fn get(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Buffer> {
        let mut raw = RawBuffer {
            buf: std::ptr::null_mut(),
            obj: std::ptr::null_mut(),
            len: 0,
            itemsize: 0,
            readonly: 0,
            ndim: 0,
            format: std::ptr::null_mut(),
            shape: std::ptr::null_mut(),
            strides: std::ptr::null_mut(),
            suboffsets: std::ptr::null_mut(),
            internal: std::ptr::null_mut(),
        };
        let flags = if writable { SIMPLE | WRITABLE } else { SIMPLE };
        // SAFETY: `obj` is a live object (we hold the GIL and a reference); `raw` is a
        // Py_buffer-shaped struct the call fills in, or leaves alone on failure.
        let rc = unsafe { PyObject_GetBuffer(obj.as_ptr(), &mut raw, flags) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(Buffer { raw })
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.raw.len as usize
    }

    /// The span, for use while `self` lives.
    pub fn span(&self) -> Span {
        Span {
            ptr: self.raw.buf as usize,
            len: self.raw.len as usize,
        }
    }

    /// The bytes as a slice, while the GIL is held.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: as for `Span::bytes`; the buffer is held for `self`'s lifetime.
        unsafe { self.span().bytes() }
    }
}

impl Span {
    /// The bytes.
    ///
    /// # Safety
    /// The [`Buffer`] the span came from must still be held. Another Python thread may
    /// still write the object's bytes meanwhile (a numpy array, a bytearray; its size
    /// cannot change while exported): the same race `hashlib` and `socket.send` accept
    /// when they release the GIL, and the caller's to avoid.
    pub unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the exporter promised `len` readable bytes at `ptr` while the buffer is held.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }

    /// The bytes, writable.
    ///
    /// # Safety
    /// As [`bytes`](Self::bytes), from a buffer got writable, and no other reference to
    /// these bytes made from it meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut<'a>(self) -> &'a mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: the exporter promised `len` writable bytes at `ptr` while held.
        unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut u8, self.len) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: filled by a successful PyObject_GetBuffer and released once; a Buffer is
        // !Send and only made and dropped by code holding the GIL.
        unsafe { PyBuffer_Release(&mut self.raw) };
    }
}
