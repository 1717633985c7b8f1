//! `mman.Broadcast` and its endpoints `Publisher`/`Subscriber`: the Rust crate's broadcast
//! (one publisher, many subscribers, each seeing every message at its own pace), with
//! endpoints that attach lazily in the process that uses them (see `lazy`).

use std::sync::Arc;
use std::time::Duration;

use mman::channel::broadcast::{self, Delivery, Options};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::buffer::Buffer;
use crate::channel::timed_out;
use crate::errors::IntoPy;
use crate::lazy::End;
use crate::shm::fresh_name;
use crate::wait::{blocking, seconds, Timeout};

/// A broadcast by name: make endpoints with `publisher()` and `subscriber()`.
#[pyclass(module = "mman._mman", name = "Broadcast")]
pub struct Broadcast {
    bus: Arc<broadcast::Broadcast>,
    name: String,
}

#[pymethods]
impl Broadcast {
    /// Create the broadcast `name` (a fresh name when None): `slots` messages kept (a power
    /// of two), each up to `message_size` bytes, up to `subscribers` subscribers at once.
    #[new]
    #[pyo3(signature = (name=None, slots=64, message_size=4096, subscribers=32))]
    fn new(
        py: Python<'_>,
        name: Option<String>,
        slots: u64,
        message_size: usize,
        subscribers: usize,
    ) -> PyResult<Self> {
        let name = name.unwrap_or_else(|| fresh_name("bcast_"));
        let bus = py
            .detach(|| {
                Options::new()
                    .slots(slots)
                    .message_size(message_size)
                    .subscribers(subscribers)
                    .create(&name)
            })
            .py_err()?;
        Ok(Broadcast {
            bus: Arc::new(bus),
            name,
        })
    }

    /// Open the broadcast `name` another process created.
    #[staticmethod]
    fn open(py: Python<'_>, name: String) -> PyResult<Self> {
        let bus = py.detach(|| broadcast::Broadcast::open(&name)).py_err()?;
        Ok(Broadcast {
            bus: Arc::new(bus),
            name,
        })
    }

    /// The publishing endpoint (attached on first use; one live publisher at a time).
    fn publisher(&self) -> Publisher {
        Publisher {
            end: End::new(self.name.clone(), Some(self.bus.clone())),
        }
    }

    /// A subscribing endpoint, attached now: it sees the messages published from now on.
    /// With `wait_for_me`, the publisher waits for it rather than overtake it, so it never
    /// misses one; else one that falls more than `slots` behind is told what it missed.
    /// (Unpickled in another process, it attaches there on first use.)
    #[pyo3(signature = (wait_for_me=false))]
    fn subscriber(&self, py: Python<'_>, wait_for_me: bool) -> PyResult<Subscriber> {
        let mut s = Subscriber {
            end: End::new(self.name.clone(), Some(self.bus.clone())),
            wait_for_me,
            missed: 0,
        };
        s.sub(py)?;
        Ok(s)
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// How many messages the region keeps.
    #[getter]
    fn slots(&self) -> u64 {
        self.bus.slots()
    }

    /// The largest message.
    #[getter]
    fn message_size(&self) -> usize {
        self.bus.message_size()
    }

    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<(Py<PyAny>, (String,))> {
        let open = slf.get_type().getattr("open")?.unbind();
        Ok((open, (slf.borrow().name.clone(),)))
    }

    fn __repr__(&self) -> String {
        format!(
            "<mman.Broadcast {:?} slots={} message_size={}>",
            self.name,
            self.bus.slots(),
            self.bus.message_size()
        )
    }
}

/// The publishing end of a `Broadcast`.
#[pyclass(module = "mman._mman", name = "Publisher")]
pub struct Publisher {
    end: End<broadcast::Broadcast, broadcast::Publisher>,
}

#[pymethods]
impl Publisher {
    /// Open the publisher of the broadcast `name` (attached on first use).
    #[staticmethod]
    fn _open(name: String) -> Publisher {
        Publisher {
            end: End::new(name, None),
        }
    }

    /// Publish the bytes-like `data` to every subscriber; its sequence number. Waits only
    /// for subscribers made with `wait_for_me` a full ring behind (at most `timeout`
    /// seconds: then `TimeoutError`).
    #[pyo3(signature = (data, timeout=None))]
    fn publish(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<u64> {
        let timeout = seconds(timeout)?;
        let msg = Buffer::get(data, false)?;
        let p = self.end.get(py, |b| b.publisher())?;
        if let Some(seq) = p.try_publish(msg.as_slice()).py_err()? {
            return Ok(seq);
        }
        let span = msg.span();
        blocking(py, timeout, |slice| {
            // SAFETY: `msg` is held until this returns.
            p.publish_timeout(unsafe { span.bytes() }, slice)
        })?
        .ok_or_else(|| timed_out("publish"))
    }

    /// The broadcast's name.
    #[getter]
    fn name(&self) -> &str {
        &self.end.name
    }

    /// Detach: subscribers see `Disconnected` once they have read everything.
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

/// A subscribing end of a `Broadcast`.
#[pyclass(module = "mman._mman", name = "Subscriber")]
pub struct Subscriber {
    end: End<broadcast::Broadcast, broadcast::Subscriber>,
    wait_for_me: bool,
    missed: u64,
}

impl Subscriber {
    fn sub(&mut self, py: Python<'_>) -> PyResult<&mut broadcast::Subscriber> {
        let waited = self.wait_for_me;
        self.end.get(py, |b| {
            if waited {
                b.subscriber_waited_for()
            } else {
                b.subscriber()
            }
        })
    }

    fn take(&mut self, py: Python<'_>, timeout: Timeout) -> PyResult<Delivery> {
        let s = self.sub(py)?;
        let d = blocking(py, timeout, |slice| {
            if slice.is_zero() {
                s.try_recv()
            } else {
                s.recv_timeout(slice)
            }
        })?
        .ok_or_else(|| timed_out("recv"))?;
        self.missed += d.missed;
        Ok(d)
    }
}

#[pymethods]
impl Subscriber {
    /// Open a subscriber of the broadcast `name` (attached on first use).
    #[staticmethod]
    #[pyo3(signature = (name, wait_for_me=false))]
    fn _open(name: String, wait_for_me: bool) -> Subscriber {
        Subscriber {
            end: End::new(name, None),
            wait_for_me,
            missed: 0,
        }
    }

    /// The next message as bytes, waiting (at most `timeout` seconds: then
    /// `TimeoutError`). `mman.Disconnected` once the publisher is gone and everything it
    /// published was read.
    #[pyo3(signature = (timeout=None))]
    fn recv<'py>(&mut self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyBytes>> {
        let d = self.take(py, seconds(timeout)?)?;
        Ok(PyBytes::new(py, &d.data))
    }

    /// The next message if there is one now, else None.
    fn try_recv<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        match self.take(py, Some(Duration::ZERO)) {
            Ok(d) => Ok(Some(PyBytes::new(py, &d.data))),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyTimeoutError>(py) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The next message as `(seq, missed, data)`: its sequence number, how many this
    /// subscriber missed just before it (overtaken), and its bytes.
    #[pyo3(signature = (timeout=None))]
    fn recv_delivery<'py>(
        &mut self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<(u64, u64, Bound<'py, PyBytes>)> {
        let d = self.take(py, seconds(timeout)?)?;
        Ok((d.seq, d.missed, PyBytes::new(py, &d.data)))
    }

    /// How many messages this subscriber missed in all (overtaken by the publisher).
    #[getter]
    fn missed(&self) -> u64 {
        self.missed
    }

    /// The broadcast's name.
    #[getter]
    fn name(&self) -> &str {
        &self.end.name
    }

    /// Leave: frees the subscriber's place (and a publisher waiting for it).
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

    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<(Py<PyAny>, (String, bool))> {
        let open = slf.get_type().getattr("_open")?.unbind();
        let me = slf.borrow();
        Ok((open, (me.end.name.clone(), me.wait_for_me)))
    }
}
