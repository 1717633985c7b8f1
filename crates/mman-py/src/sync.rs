//! Process-shared `Lock`, `Semaphore` and `Condition` by name, with `threading`'s API: each
//! lives in a named object `/mman.<kind>.<name>` of one page, created by whoever comes first
//! (the Rust crate's `init_once` makes the others wait until it is ready).
//!
//! A `Lock` is the crate's robust `Mutex`: when its owner dies holding it, the next
//! `acquire` takes it over (within about 100 ms) and sets `owner_died`.

use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use mman::shm;
use mman::sync::{Condvar, Mutex, MutexGuard, Semaphore as RawSemaphore};
use mman::ErrorKind;
use pyo3::prelude::*;

use crate::errors::{usage, IntoPy};
use crate::shm::fresh_name;
use crate::wait::{blocking, timeout_of, SLICE};

/// The size of each object: one page.
const OBJECT: u64 = 4096;
/// Where a `Condition`'s condition variable lies (its mutex is at 0).
const CONDVAR_AT: usize = 64;

/// An object opened or created by name, mapped. `created`: this process made it.
struct Named {
    map: Arc<mman::Mapping>,
    _obj: shm::SharedMemory,
    name: String,
    created: bool,
}

/// Open `/mman.KIND.NAME`, or create it (mode 0600, kept after this process) if it does
/// not exist. A creator still sizing it, or one that removed it meanwhile, is waited for or
/// raced again (for about a second).
fn open_or_create(py: Python<'_>, kind: &str, name: &str) -> PyResult<Named> {
    let full = format!("{kind}.{name}");
    let mut tries = 0;
    loop {
        let got = py.detach(|| match shm::SharedMemory::create(&full, OBJECT) {
            Ok(mut obj) => {
                obj.keep();
                Ok((obj, true))
            }
            Err(e) if e.kind() == ErrorKind::AddressInUse => {
                shm::SharedMemory::open(&full, OBJECT).map(|o| (o, false))
            }
            Err(e) => Err(e),
        });
        match got {
            Ok((obj, created)) => {
                let map = obj.map().py_err()?;
                return Ok(Named {
                    map: Arc::new(map),
                    _obj: obj,
                    name: name.to_owned(),
                    created,
                });
            }
            // Unlinked between our create and open, or not yet sized by its creator.
            Err(e)
                if tries < 100
                    && matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidInput)
                    && !name.contains('/') =>
            {
                tries += 1;
                py.detach(|| std::thread::sleep(Duration::from_millis(10)));
                py.check_signals()?;
            }
            Err(e) => return Err(crate::errors::to_py(e)),
        }
    }
}

/// Remove `/mman.KIND.NAME`.
fn unlink(py: Python<'_>, kind: &str, name: &str) -> PyResult<()> {
    let full = format!("{kind}.{name}");
    py.detach(|| shm::SharedMemory::unlink(&full)).py_err()
}

/// A held lock: the crate's guard and the thread that took it.
struct Held {
    guard: MutexGuard<'static, ()>,
    thread: ThreadId,
}

// SAFETY: a guard names the thread that took it; `Robust` only releases it on that thread
// (`release` checks), and one dropped elsewhere (the object collected by another thread) is
// forgotten instead, leaving the lock to be taken over as a dead owner's.
unsafe impl Send for Held {}

/// A robust mutex in a mapping, and this object's hold of it.
struct Robust {
    held: std::sync::Mutex<Option<Held>>,
    /// Borrowed from `named.map`, which outlives it (declared after: dropped after).
    mutex: &'static Mutex<()>,
    owner_died: std::sync::atomic::AtomicBool,
    named: Named,
}

impl Robust {
    fn new(named: Named) -> PyResult<Robust> {
        let m: &Mutex<()> = Mutex::open(&named.map, 0, || ()).py_err()?;
        // SAFETY: the mutex lies in `named.map`, an Arc'd mapping this struct owns and drops
        // after `held` (field order); the reference never leaves the struct.
        let mutex: &'static Mutex<()> = unsafe { &*(m as *const Mutex<()>) };
        Ok(Robust {
            held: std::sync::Mutex::new(None),
            mutex,
            owner_died: Default::default(),
            named,
        })
    }

    fn acquire(&self, py: Python<'_>, blocking_: bool, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = timeout_of(blocking_, timeout)?;
        let mine = matches!(&*self.held.lock().unwrap_or_else(|p| p.into_inner()), Some(h) if h.thread == std::thread::current().id());
        if mine {
            // threading.Lock would wait for itself: wait out a timeout, refuse to wait forever.
            let Some(t) = timeout else {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                    "acquire: this thread already holds the lock {:?}: waiting for it would never end",
                    self.named.name
                )));
            };
            blocking(py, Some(t), |slice| {
                std::thread::sleep(slice);
                Ok(None::<()>)
            })?;
            return Ok(false);
        }
        let mutex = self.mutex;
        struct SendGuard(MutexGuard<'static, ()>);
        // SAFETY: made and unwrapped on this same thread (detach runs the closure here).
        unsafe impl Send for SendGuard {}
        let got = blocking(py, timeout, |slice| {
            let g = if slice.is_zero() {
                mutex.try_lock()?
            } else {
                mutex.lock_timeout(slice)?
            };
            Ok(g.map(SendGuard))
        })?;
        let Some(SendGuard(guard)) = got else {
            return Ok(false);
        };
        self.owner_died
            .store(guard.owner_died(), std::sync::atomic::Ordering::Relaxed);
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(Held {
            guard,
            thread: std::thread::current().id(),
        });
        Ok(true)
    }

    fn take(&self, op: &str) -> PyResult<MutexGuard<'static, ()>> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.take() {
            Some(h) if h.thread == std::thread::current().id() => Ok(h.guard),
            Some(h) => {
                *held = Some(h);
                Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                    "{op}: the lock {:?} is held by another thread (a process-shared lock is released by the thread that took it)",
                    self.named.name
                )))
            }
            None => Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                "{op}: cannot release un-acquired lock"
            ))),
        }
    }

    fn put(&self, guard: MutexGuard<'static, ()>) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(Held {
            guard,
            thread: std::thread::current().id(),
        });
    }

    fn release(&self) -> PyResult<()> {
        let mut g = self.take("release")?;
        // The owner had its look at `owner_died`: the lock is consistent again.
        g.make_consistent().py_err()?;
        self.owner_died.store(false, std::sync::atomic::Ordering::Relaxed);
        drop(g);
        Ok(())
    }
}

impl Drop for Robust {
    fn drop(&mut self) {
        let held = self.held.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = held {
            if h.thread == std::thread::current().id() {
                let mut g = h.guard;
                let _ = g.make_consistent();
                drop(g);
            } else {
                std::mem::forget(h.guard);
            }
        }
    }
}

/// A process-shared lock by name, with `threading.Lock`'s API; robust to its owner's death.
#[pyclass(module = "mman._mman", name = "Lock")]
pub struct Lock {
    inner: Robust,
}

#[pymethods]
impl Lock {
    /// Open the lock `name` (created unlocked if it does not exist; None: a fresh name, for
    /// processes that inherit or unpickle this object).
    #[new]
    #[pyo3(signature = (name=None))]
    fn new(py: Python<'_>, name: Option<String>) -> PyResult<Self> {
        let name = name.unwrap_or_else(|| fresh_name("lock_"));
        Ok(Lock {
            inner: Robust::new(open_or_create(py, "lock", &name)?)?,
        })
    }

    /// Take the lock: wait (at most `timeout` seconds) unless `blocking` is False; whether
    /// it was taken. A dead owner's lock is taken over and `owner_died` is set.
    #[pyo3(signature = (blocking=true, timeout=None))]
    fn acquire(&self, py: Python<'_>, blocking: bool, timeout: Option<f64>) -> PyResult<bool> {
        self.inner.acquire(py, blocking, timeout)
    }

    /// Release the lock (from the thread that took it).
    fn release(&self) -> PyResult<()> {
        self.inner.release()
    }

    /// Whether the previous owner died holding the lock this process holds now (the
    /// state it guards may be half-updated). Cleared by `release`.
    #[getter]
    fn owner_died(&self) -> bool {
        self.inner.owner_died.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The name to open it by.
    #[getter]
    fn name(&self) -> &str {
        &self.inner.named.name
    }

    /// Whether this object created it.
    #[getter]
    fn created(&self) -> bool {
        self.inner.named.created
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.inner.acquire(py, true, None)
    }

    fn __exit__(&self, _t: Py<PyAny>, _v: Py<PyAny>, _tb: Py<PyAny>) -> PyResult<bool> {
        self.inner.release()?;
        Ok(false)
    }

    /// Remove the name `name` (processes holding it keep using theirs).
    #[staticmethod]
    fn unlink(py: Python<'_>, name: &str) -> PyResult<()> {
        unlink(py, "lock", name)
    }

    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<(Py<PyAny>, (String,))> {
        Ok((
            slf.get_type().into_any().unbind(),
            (slf.borrow().inner.named.name.clone(),),
        ))
    }

    fn __repr__(&self) -> String {
        format!("<mman.Lock {:?}>", self.inner.named.name)
    }
}

/// A process-shared condition variable by name, with its own lock, with
/// `threading.Condition`'s API.
#[pyclass(module = "mman._mman", name = "Condition")]
pub struct Condition {
    cond: &'static Condvar,
    inner: Robust,
}

#[pymethods]
impl Condition {
    #[new]
    #[pyo3(signature = (name=None))]
    fn new(py: Python<'_>, name: Option<String>) -> PyResult<Self> {
        let name = name.unwrap_or_else(|| fresh_name("cond_"));
        let inner = Robust::new(open_or_create(py, "cond", &name)?)?;
        let c: &Condvar = Condvar::open(&inner.named.map, CONDVAR_AT).py_err()?;
        // SAFETY: in `inner.named.map`, which this object owns and which outlives the field.
        let cond: &'static Condvar = unsafe { &*(c as *const Condvar) };
        Ok(Condition { cond, inner })
    }

    #[pyo3(signature = (blocking=true, timeout=None))]
    fn acquire(&self, py: Python<'_>, blocking: bool, timeout: Option<f64>) -> PyResult<bool> {
        self.inner.acquire(py, blocking, timeout)
    }

    fn release(&self) -> PyResult<()> {
        self.inner.release()
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.inner.acquire(py, true, None)
    }

    fn __exit__(&self, _t: Py<PyAny>, _v: Py<PyAny>, _tb: Py<PyAny>) -> PyResult<bool> {
        self.inner.release()?;
        Ok(false)
    }

    /// Release the lock, wait for a notification (at most `timeout` seconds), take the lock
    /// again. False when the timeout passed. Like a POSIX condition variable it may return
    /// True without a notification (it does so at least every 50 ms, to let Ctrl-C in):
    /// check the condition in a loop, or use `wait_for`.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = crate::wait::seconds(timeout)?;
        let slice = timeout.map_or(SLICE, |t| t.min(SLICE));
        let guard = self.inner.take("wait")?;
        struct SendGuard(MutexGuard<'static, ()>);
        // SAFETY: made and unwrapped on this same thread (detach runs the closure here).
        unsafe impl Send for SendGuard {}
        let cond = self.cond;
        let g = SendGuard(guard);
        let got = py.detach(move || {
            let g = g; // the whole wrapper moves in (not its !Send field alone)
            cond.wait_timeout(g.0, slice).map(|(g, t)| (SendGuard(g), t))
        });
        match got {
            Ok((SendGuard(g), timed_out)) => {
                if g.owner_died() {
                    self.inner
                        .owner_died
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                self.inner.put(g);
                py.check_signals()?;
                // Timed out within the caller's timeout: a spurious wake-up, allowed.
                Ok(!(timed_out && timeout.is_some_and(|t| t <= SLICE)))
            }
            Err(e) => Err(crate::errors::to_py(e)),
        }
    }

    /// Wake one waiter (or `n`).
    #[pyo3(signature = (n=1))]
    fn notify(&self, n: usize) {
        if n >= 1 {
            for _ in 0..n {
                self.cond.notify_one();
            }
        }
    }

    /// Wake every waiter.
    fn notify_all(&self) {
        self.cond.notify_all();
    }

    #[getter]
    fn owner_died(&self) -> bool {
        self.inner.owner_died.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[getter]
    fn name(&self) -> &str {
        &self.inner.named.name
    }

    #[staticmethod]
    fn unlink(py: Python<'_>, name: &str) -> PyResult<()> {
        unlink(py, "cond", name)
    }

    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<(Py<PyAny>, (String,))> {
        Ok((
            slf.get_type().into_any().unbind(),
            (slf.borrow().inner.named.name.clone(),),
        ))
    }
}

/// A process-shared counting semaphore by name, with `threading.Semaphore`'s API.
#[pyclass(module = "mman._mman", name = "Semaphore")]
pub struct Semaphore {
    sem: &'static RawSemaphore,
    value: u32,
    named: Named,
}

#[pymethods]
impl Semaphore {
    /// Open the semaphore `name`; if this call creates it, it starts with `value` permits.
    #[new]
    #[pyo3(signature = (name=None, value=1))]
    fn new(py: Python<'_>, name: Option<String>, value: u32) -> PyResult<Self> {
        if value > mman::sync::SEMAPHORE_MAX {
            return Err(usage(
                ErrorKind::InvalidInput,
                "semaphore",
                &format!(
                    "{value} permits is more than a semaphore counts ({})",
                    mman::sync::SEMAPHORE_MAX
                ),
                None,
            ));
        }
        let name = name.unwrap_or_else(|| fresh_name("sem_"));
        let named = open_or_create(py, "sem", &name)?;
        let s: &RawSemaphore = mman::sync::place(&named.map, 0).py_err()?;
        // SAFETY: in `named.map`, owned by this object and outliving the field.
        let sem: &'static RawSemaphore = unsafe { &*(s as *const RawSemaphore) };
        if named.created {
            for _ in 0..value {
                sem.post().py_err()?;
            }
        }
        Ok(Semaphore { sem, value, named })
    }

    /// Take a permit: wait (at most `timeout` seconds) unless `blocking` is False; whether
    /// one was taken.
    #[pyo3(signature = (blocking=true, timeout=None))]
    fn acquire(&self, py: Python<'_>, blocking: bool, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = timeout_of(blocking, timeout)?;
        let sem = self.sem;
        let got = crate::wait::blocking(py, timeout, |slice| {
            Ok(if slice.is_zero() {
                sem.try_wait()
            } else {
                sem.wait_timeout(slice)
            }
            .then_some(()))
        })?;
        Ok(got.is_some())
    }

    /// Give back `n` permits.
    #[pyo3(signature = (n=1))]
    fn release(&self, n: u32) -> PyResult<()> {
        for _ in 0..n {
            self.sem.post().py_err()?;
        }
        Ok(())
    }

    /// The permits now (a snapshot).
    #[getter]
    fn value(&self) -> u32 {
        self.sem.value()
    }

    #[getter]
    fn name(&self) -> &str {
        &self.named.name
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.acquire(py, true, None)
    }

    fn __exit__(&self, _t: Py<PyAny>, _v: Py<PyAny>, _tb: Py<PyAny>) -> PyResult<bool> {
        self.release(1)?;
        Ok(false)
    }

    #[staticmethod]
    fn unlink(py: Python<'_>, name: &str) -> PyResult<()> {
        unlink(py, "sem", name)
    }

    fn __reduce__(slf: &Bound<'_, Self>) -> PyResult<(Py<PyAny>, (String, u32))> {
        let me = slf.borrow();
        Ok((
            slf.get_type().into_any().unbind(),
            (me.named.name.clone(), me.value),
        ))
    }
}
