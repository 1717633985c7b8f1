//! `mman.Channel` and its endpoints `Sender`/`Receiver`: the Rust crate's channel, with
//! endpoints that attach lazily in the process that uses them (see `lazy`).

use std::sync::Arc;
use std::time::Duration;

use mman::channel::{self, Message, Options};
use mman::shm::Memfd;
use mman::ErrorKind;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::buffer::{Buffer, Span};
use crate::errors::IntoPy;
use crate::lazy::End;
use crate::mapping::LARGE;
use crate::shm::fresh_name;
use crate::wait::{blocking, seconds, Timeout};

/// The ring of each sender by default: 1 MiB (messages up to 1 MiB less 16 bytes).
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// The slot pool by default: 4 slots of 2 MiB, so that a 1 MiB numpy array with its pickle
/// header goes through the pool (5x the messages a second of a sealed memfd for each:
/// 10,700 against 2,160 in `send_obj`/`recv_obj` between two processes). A slot takes its
/// memory when first used, and one at a time serves messages sent one at a time.
pub const DEFAULT_POOL: (usize, usize) = (4, 2 << 20);

/// A batch received (`recv_batch`) takes no more messages once it holds this many bytes.
const BATCH_BYTES: usize = 4 << 20;

/// The largest scratch buffer a sender keeps between messages for gathering one.
const SCRATCH_KEPT: usize = 8 << 20;

/// Messages larger than the channel's `max_message` (a pool slot: 2 MiB by default) are
/// handed over as sealed memfds (`send_sealed`): written once by the kernel into a fresh
/// memfd, read in place by the receiver (`recv_obj`'s numpy arrays are views of it).
/// Smaller ones go through the ring, or from 32 KiB through the channel's slot pool (a
/// copy into a slot that stays in the caches, a copy out), which is faster for them: a
/// fresh memfd's pages cost more to allocate than two copies.
///
/// A message of `total` bytes gathered from `spans` into a fresh memfd, copied by the
/// kernel (`pwrite` into pages `fallocate` reserved).
///
/// # Safety
/// The buffers of `spans` must be held until this returns.
unsafe fn memfd_of(spans: &[Span], total: usize) -> PyResult<Memfd> {
    use std::os::unix::fs::FileExt;
    let memfd = Memfd::create("mman-py-message", total as u64).py_err()?;
    let io = |e: std::io::Error| {
        let errno = e.raw_os_error().unwrap_or(0);
        pyo3::exceptions::PyOSError::new_err((errno, format!("send: writing the message into a memfd: {e}")))
    };
    let file = std::fs::File::from(
        std::os::fd::AsFd::as_fd(&memfd)
            .try_clone_to_owned()
            .map_err(io)?,
    );
    let mut at = 0u64;
    for s in spans {
        // SAFETY: the caller holds the buffers.
        let bytes = unsafe { s.bytes() };
        file.write_all_at(bytes, at).map_err(io)?;
        at += bytes.len() as u64;
    }
    Ok(memfd)
}

/// Send the concatenation of `spans` as a sealed memfd, waiting for room in slices.
///
/// # Safety
/// The buffers of `spans` must be held until this returns.
unsafe fn send_sealed(
    py: Python<'_>,
    tx: &mut channel::Sender,
    spans: &[Span],
    total: usize,
    timeout: Timeout,
) -> PyResult<Option<()>> {
    // SAFETY: passed on from the caller.
    let memfd = py.detach(|| unsafe { memfd_of(spans, total) })?;
    let mut pending = Some(memfd);
    blocking(py, timeout, |slice| {
        let m = pending.take().expect("put back when not sent");
        match tx.send_sealed_timeout(m, slice)? {
            None => Ok(Some(())),
            Some(m) => {
                pending = Some(m);
                Ok(None)
            }
        }
    })
}

/// `bytes` of `src`, copied without the GIL when large.
fn bytes_of<'py>(py: Python<'py>, src: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    if src.len() < LARGE {
        return Ok(PyBytes::new(py, src));
    }
    PyBytes::new_with(py, src.len(), |buf| {
        py.detach(|| buf.copy_from_slice(src));
        Ok(())
    })
}

pub fn timed_out(op: &str) -> PyErr {
    pyo3::exceptions::PyTimeoutError::new_err(format!("{op}: timed out"))
}

/// A channel by name: make endpoints with `sender()` and `receiver()`.
#[pyclass(module = "mman._mman", name = "Channel")]
pub struct Channel {
    chan: Arc<channel::Channel>,
    name: String,
}

#[pymethods]
impl Channel {
    /// Create the channel `name` (a fresh name when None): `capacity` bytes of ring per
    /// sender (a power of two), up to `senders` senders at once; `pool`: the slot pool's
    /// (slots, slot size in bytes, a multiple of 4096) for messages from 32 KiB up, (0, 0)
    /// for none (None: 4 slots of 2 MiB). `spin`: seconds a waiting endpoint made from this
    /// object may spin before it sleeps (None: mman's default, 50 µs).
    #[new]
    #[pyo3(signature = (name=None, capacity=DEFAULT_CAPACITY, senders=1, spin=None, pool=None))]
    fn new(
        py: Python<'_>,
        name: Option<String>,
        capacity: usize,
        senders: usize,
        spin: Option<f64>,
        pool: Option<(usize, usize)>,
    ) -> PyResult<Self> {
        let name = name.unwrap_or_else(|| fresh_name("chan_"));
        let mut opts = Options::new();
        opts.capacity(capacity).senders(senders);
        let (slots, slot_size) = pool.unwrap_or(DEFAULT_POOL);
        opts.pool(slots, slot_size);
        if let Some(spin) = seconds(spin)? {
            opts.spin(spin);
        }
        let chan = py.detach(|| opts.create(&name)).py_err()?;
        Ok(Channel {
            chan: Arc::new(chan),
            name,
        })
    }

    /// Open the channel `name` another process created (`spin` as for the constructor).
    #[staticmethod]
    #[pyo3(signature = (name, spin=None))]
    fn open(py: Python<'_>, name: String, spin: Option<f64>) -> PyResult<Self> {
        let mut opts = Options::new();
        if let Some(spin) = seconds(spin)? {
            opts.spin(spin);
        }
        let chan = py.detach(|| opts.open(&name)).py_err()?;
        Ok(Channel {
            chan: Arc::new(chan),
            name,
        })
    }

    /// A sending endpoint (attached on first use, in the process that uses it).
    fn sender(&self) -> Sender {
        Sender {
            end: End::new(self.name.clone(), Some(self.chan.clone())),
            scratch: Vec::new(),
        }
    }

    /// The receiving endpoint (attached on first use; one at a time per channel).
    fn receiver(&self) -> Receiver {
        Receiver {
            end: End::new(self.name.clone(), Some(self.chan.clone())),
            pending: None,
            scratch: Vec::new(),
        }
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The slot pool: (slots, slot size in bytes); (0, 0) without one.
    #[getter]
    fn pool(&self) -> (usize, usize) {
        self.chan.pool()
    }

    /// Ring bytes per sender.
    #[getter]
    fn capacity(&self) -> usize {
        self.chan.capacity()
    }

    /// The largest message.
    #[getter]
    fn max_message(&self) -> usize {
        self.chan.max_message()
    }

    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<(Py<PyAny>, (String,))> {
        let open = slf.get_type().getattr("open")?.unbind();
        Ok((open, (slf.borrow().name.clone(),)))
    }

    fn __repr__(&self) -> String {
        format!("<mman.Channel {:?} capacity={}>", self.name, self.chan.capacity())
    }
}

/// A sending end of a `Channel`.
#[pyclass(module = "mman._mman", name = "Sender")]
pub struct Sender {
    end: End<channel::Channel, channel::Sender>,
    /// Where messages made of parts are gathered, kept between messages (up to
    /// `SCRATCH_KEPT`) so that its pages are not faulted in anew each time.
    scratch: Vec<u8>,
}

impl Sender {
    fn tx(&mut self, py: Python<'_>) -> PyResult<&mut channel::Sender> {
        self.end.get(py, |c| c.sender())
    }

    /// Send `msg`: at once if there is room, else waiting in slices (`None`: timed out).
    pub fn send_slice(&mut self, py: Python<'_>, msg: &Buffer, timeout: Timeout) -> PyResult<Option<()>> {
        let tx = self.tx(py)?;
        if msg.len() < LARGE && tx.try_send(msg.as_slice()).py_err()? {
            return Ok(Some(()));
        }
        let span = msg.span();
        if msg.len() > tx.max_message() {
            // SAFETY: `msg` is held until this returns.
            return unsafe { send_sealed(py, tx, &[span], msg.len(), timeout) };
        }
        blocking(py, timeout, |slice| {
            // SAFETY: `msg` is held by the caller until this returns.
            let bytes = unsafe { span.bytes() };
            let sent = if slice.is_zero() {
                tx.try_send(bytes)?
            } else {
                tx.send_timeout(bytes, slice)?
            };
            Ok(sent.then_some(()))
        })
    }
}

#[pymethods]
impl Sender {
    /// Open a sender of the channel `name` (attached on first use).
    #[staticmethod]
    fn _open(name: String) -> Sender {
        Sender {
            end: End::new(name, None),
            scratch: Vec::new(),
        }
    }

    /// Send the bytes-like `data`, waiting for room (at most `timeout` seconds: then
    /// `TimeoutError`). `mman.Disconnected` once the receiver is gone.
    #[pyo3(signature = (data, timeout=None))]
    fn send(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = seconds(timeout)?;
        let msg = Buffer::get(data, false)?;
        self.send_slice(py, &msg, timeout)?
            .ok_or_else(|| timed_out("send"))
    }

    /// Send `data` if there is room now; whether it was sent.
    fn try_send(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<bool> {
        let msg = Buffer::get(data, false)?;
        Ok(self.send_slice(py, &msg, Some(Duration::ZERO))?.is_some())
    }

    /// Send every bytes-like of `items` in order, waiting for room as needed (the GIL
    /// released, Ctrl-C answered); how many. An error (or Ctrl-C) ends the batch: the
    /// messages before it were sent.
    fn send_batch(&mut self, py: Python<'_>, items: &Bound<'_, PyAny>) -> PyResult<usize> {
        let bufs = items
            .try_iter()?
            .map(|o| Buffer::get(&o?, false))
            .collect::<PyResult<Vec<_>>>()?;
        for b in &bufs {
            self.send_slice(py, b, None)?;
        }
        Ok(bufs.len())
    }

    /// Pickle `obj` (protocol 5) and send it as one message, its out-of-band buffers (numpy
    /// arrays) copied straight from their memory into the ring.
    #[pyo3(signature = (obj, timeout=None))]
    fn send_obj(slf: &Bound<'_, Self>, obj: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<()> {
        slf.py()
            .import("mman._obj")?
            .call_method1("send_obj", (slf, obj, timeout))?;
        Ok(())
    }

    /// Send the concatenation of the bytes-likes `parts` as one message (gathered with the
    /// GIL released).
    #[pyo3(signature = (parts, timeout=None))]
    fn _send_parts(
        &mut self,
        py: Python<'_>,
        parts: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let timeout = seconds(timeout)?;
        let bufs = parts
            .try_iter()?
            .map(|o| Buffer::get(&o?, false))
            .collect::<PyResult<Vec<_>>>()?;
        let spans: Vec<_> = bufs.iter().map(|b| b.span()).collect();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut msg = std::mem::take(&mut self.scratch);
        let tx = self.tx(py)?;
        if total > tx.max_message() {
            // SAFETY: `bufs` are held until this returns.
            return unsafe { send_sealed(py, tx, &spans, total, timeout) }?.ok_or_else(|| timed_out("send"));
        }
        let gather = |v: &mut Vec<u8>| {
            v.clear();
            v.reserve(total);
            for s in &spans {
                // SAFETY: `bufs` are held until this returns.
                v.extend_from_slice(unsafe { s.bytes() });
            }
        };
        if total >= LARGE {
            py.detach(|| gather(&mut msg));
        } else {
            gather(&mut msg);
        }
        let sent = if total < LARGE && tx.try_send(&msg).py_err()? {
            Ok(Some(()))
        } else {
            blocking(py, timeout, |slice| {
                Ok(tx.send_timeout(&msg, slice)?.then_some(()))
            })
        };
        if msg.capacity() <= SCRATCH_KEPT {
            self.scratch = msg;
        }
        sent?.ok_or_else(|| timed_out("send"))
    }

    /// The largest message.
    #[getter]
    fn max_message(&mut self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.tx(py)?.max_message())
    }

    /// The channel's name.
    #[getter]
    fn name(&self) -> &str {
        &self.end.name
    }

    /// Detach: the receiver sees `Disconnected` once every sender is gone.
    fn close(&mut self) {
        self.end.close();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&mut self, _t: Py<PyAny>, _v: Py<PyAny>, _tb: Py<PyAny>) -> bool {
        self.close();
        false
    }

    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<(Py<PyAny>, (String,))> {
        let open = slf.get_type().getattr("_open")?.unbind();
        Ok((open, (slf.borrow().end.name.clone(),)))
    }
}

/// The receiving end of a `Channel`.
#[pyclass(module = "mman._mman", name = "Receiver")]
pub struct Receiver {
    end: End<channel::Channel, channel::Receiver>,
    /// A message `recv_into` could not fit: the next call returns it.
    pending: Option<Message>,
    /// The allocation messages of bytes are received into, given back by the calls that
    /// copy them out (`recv`, `recv_into`; up to `SCRATCH_KEPT`), so that a large message
    /// does not cost fresh pages each time.
    scratch: Vec<u8>,
}

impl Receiver {
    /// The next message (`None`: timed out), waiting in slices.
    pub fn take(&mut self, py: Python<'_>, timeout: Timeout) -> PyResult<Option<Message>> {
        if let Some(m) = self.pending.take() {
            return Ok(Some(m));
        }
        let rx = self.end.get(py, |c| c.receiver())?;
        let scratch = &mut self.scratch;
        // A message already there is taken without letting go of the GIL.
        if let Some(m) = rx.recv_message_timeout_in(Duration::ZERO, scratch).py_err()? {
            return Ok(Some(m));
        }
        if timeout == Some(Duration::ZERO) {
            return Ok(None);
        }
        blocking(py, timeout, |slice| rx.recv_message_timeout_in(slice, scratch))
    }

    /// Keep the allocation of a message of bytes copied out, for the next one.
    fn give_back(&mut self, m: Message) {
        if let Message::Bytes(v) = m {
            if v.capacity() <= SCRATCH_KEPT {
                self.scratch = v;
            }
        }
    }
}

#[pymethods]
impl Receiver {
    /// Open the receiver of the channel `name` (attached on first use).
    #[staticmethod]
    fn _open(name: String) -> Receiver {
        Receiver {
            end: End::new(name, None),
            pending: None,
            scratch: Vec::new(),
        }
    }

    /// The next message as bytes, waiting (at most `timeout` seconds: then `TimeoutError`).
    /// `mman.Disconnected` once every sender is gone and every message was taken.
    #[pyo3(signature = (timeout=None))]
    fn recv<'py>(&mut self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyBytes>> {
        let timeout = seconds(timeout)?;
        let m = self.take(py, timeout)?.ok_or_else(|| timed_out("recv"))?;
        let out = bytes_of(py, m.as_bytes());
        self.give_back(m);
        out
    }

    /// The next message if there is one now, else None.
    fn try_recv<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let Some(m) = self.take(py, Some(Duration::ZERO))? else {
            return Ok(None);
        };
        let out = bytes_of(py, m.as_bytes());
        self.give_back(m);
        out.map(Some)
    }

    /// Copy the next message into the writable bytes-like `buffer`; its length. A message
    /// longer than the buffer raises `ValueError` and stays for the next call.
    #[pyo3(signature = (buffer, timeout=None))]
    fn recv_into(
        &mut self,
        py: Python<'_>,
        buffer: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let timeout = seconds(timeout)?;
        let dst = Buffer::get(buffer, true)?;
        let m = self.take(py, timeout)?.ok_or_else(|| timed_out("recv"))?;
        let n = m.as_bytes().len();
        if n > dst.len() {
            self.pending = Some(m);
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "recv_into: the message is {n} bytes and the buffer {}: it stays for the next call",
                dst.len()
            )));
        }
        // SAFETY: `dst` was got writable and is held until this returns; nothing else here
        // refers to its bytes.
        let out = unsafe { dst.span().bytes_mut() };
        let src = m.as_bytes();
        if n >= LARGE {
            py.detach(|| out[..n].copy_from_slice(src));
        } else {
            out[..n].copy_from_slice(src);
        }
        self.give_back(m);
        Ok(n)
    }

    /// Up to `max` messages: waits for the first (at most `timeout`), then takes those
    /// already there until the batch holds `BATCH_BYTES` (4 MiB): a sender that keeps up
    /// with a batch of large messages must not grow it without bound.
    #[pyo3(signature = (max=1024, timeout=None))]
    fn recv_batch<'py>(
        &mut self,
        py: Python<'py>,
        max: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let timeout = seconds(timeout)?;
        let out = PyList::empty(py);
        if max == 0 {
            return Ok(out);
        }
        let first = self.take(py, timeout)?.ok_or_else(|| timed_out("recv"))?;
        let mut bytes = first.as_bytes().len();
        out.append(bytes_of(py, first.as_bytes())?)?;
        self.give_back(first);
        while out.len() < max && bytes < BATCH_BYTES {
            let rx = self.end.get(py, |c| c.receiver())?;
            match rx.recv_message_timeout_in(Duration::ZERO, &mut self.scratch) {
                Ok(Some(m)) => {
                    bytes += m.as_bytes().len();
                    out.append(bytes_of(py, m.as_bytes())?)?;
                    self.give_back(m);
                }
                Ok(None) => break,
                // Messages taken so far are returned; the error comes at the next call.
                Err(e) if e.kind() == ErrorKind::Disconnected => break,
                Err(e) => return Err(crate::errors::to_py(e)),
            }
        }
        Ok(out)
    }

    /// The next object sent with `send_obj`: its out-of-band buffers (numpy arrays) are
    /// views of the received message, not copies.
    #[pyo3(signature = (timeout=None))]
    fn recv_obj<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        slf.py()
            .import("mman._obj")?
            .call_method1("recv_obj", (slf, timeout))
    }

    /// A coroutine: the next message as bytes (`await rx.recv_async()`).
    #[pyo3(signature = (timeout=None))]
    fn recv_async<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        slf.py()
            .import("mman._obj")?
            .call_method1("recv_async", (slf, timeout))
    }

    /// The next message: bytes when small, else (owner, address, length, read-only) of a
    /// buffer mman owns, for a memoryview without a copy into `bytes`.
    #[pyo3(signature = (timeout=None))]
    fn _recv_raw(&mut self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let timeout = seconds(timeout)?;
        let m = self.take(py, timeout)?.ok_or_else(|| timed_out("recv"))?;
        let bytes = m.as_bytes();
        if bytes.len() < LARGE {
            return Ok(PyBytes::new(py, bytes).into_any().unbind());
        }
        // A sealed memfd's view is immutable: read-only for Python too.
        let readonly = matches!(m, Message::Sealed(_));
        let (addr, len) = (bytes.as_ptr() as usize, bytes.len());
        let owner = Py::new(py, Owned { _msg: m })?;
        Ok((owner, addr, len, readonly)
            .into_pyobject(py)?
            .into_any()
            .unbind())
    }

    #[getter]
    fn name(&self) -> &str {
        &self.end.name
    }

    /// Detach: senders see `Disconnected`.
    fn close(&mut self) {
        self.end.close();
        self.pending = None;
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&mut self, _t: Py<PyAny>, _v: Py<PyAny>, _tb: Py<PyAny>) -> bool {
        self.close();
        false
    }

    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<(Py<PyAny>, (String,))> {
        let open = slf.get_type().getattr("_open")?.unbind();
        Ok((open, (slf.borrow().end.name.clone(),)))
    }
}

/// A received message (a copy, or a sealed memfd's mapping), kept alive by the
/// memoryviews made of it.
#[pyclass(module = "mman._mman", name = "_Owned", frozen)]
pub struct Owned {
    _msg: Message,
}
