//! Endpoints that attach lazily, in the process that uses them: an endpoint made in a
//! parent may be handed to a child (pickled as its region's name for `spawn` and
//! `forkserver`, inherited by `fork`) and attaches there on first use. Shared by the
//! channel's and the broadcast's endpoints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mman::ErrorKind;
use pyo3::prelude::*;

use crate::errors::{usage, IntoPy};

/// Forks of this process's lineage so far: bumped in each child (`os.register_at_fork`, set
/// up by `mman/__init__.py`, which runs for `os.fork`, multiprocessing's fork and
/// forkserver, and subprocess's `preexec_fn`). Cheaper than asking the kernel for the pid
/// at every call (a system call, half the cost of a small send). A fork the hook misses (a C
/// library's own `fork()` running Python afterwards) is still caught by the Rust crate,
/// whose endpoints refuse to work in a process other than their own (an error).
static FORKS: AtomicU64 = AtomicU64::new(0);

/// Called in a child after a fork: endpoints inherited from the parent are left to it.
#[pyfunction]
pub fn _after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// A region opened by name (a channel, a broadcast).
pub trait Open: Sized + Send {
    /// Open the region `name`.
    fn open(name: &str) -> mman::Result<Self>;
}

impl Open for mman::channel::Channel {
    fn open(name: &str) -> mman::Result<Self> {
        mman::channel::Channel::open(name)
    }
}

impl Open for mman::channel::broadcast::Broadcast {
    fn open(name: &str) -> mman::Result<Self> {
        mman::channel::broadcast::Broadcast::open(name)
    }
}

/// An endpoint's attachment: the region (opened by name when not inherited) and the Rust
/// endpoint, made in the process of fork generation `gen`.
pub struct End<C, E> {
    pub name: String,
    region: Option<Arc<C>>,
    inner: Option<(E, u64)>,
    closed: bool,
}

impl<C: Open, E> End<C, E> {
    pub fn new(name: String, region: Option<Arc<C>>) -> Self {
        End {
            name,
            region,
            inner: None,
            closed: false,
        }
    }

    /// The endpoint, attached now if it is not yet attached in this process (an endpoint
    /// inherited across `fork` belongs to the parent: the child makes its own).
    pub fn get(&mut self, py: Python<'_>, attach: impl FnOnce(&C) -> mman::Result<E>) -> PyResult<&mut E> {
        if self.closed {
            return Err(usage(
                ErrorKind::InvalidInput,
                "attach",
                "the endpoint is closed",
                None,
            ));
        }
        let gen = FORKS.load(Ordering::Relaxed);
        if self.inner.as_ref().is_some_and(|(_, g)| *g != gen) {
            // Dropping an inherited endpoint in the child does nothing to the parent's.
            self.inner = None;
        }
        if self.inner.is_none() {
            if self.region.is_none() {
                let name = self.name.clone();
                self.region = Some(Arc::new(py.detach(|| C::open(&name)).py_err()?));
            }
            let region = self.region.as_ref().expect("opened above");
            self.inner = Some((attach(region).py_err()?, gen));
        }
        Ok(&mut self.inner.as_mut().expect("attached above").0)
    }

    /// Detach: later calls raise.
    pub fn close(&mut self) {
        self.inner = None;
        self.region = None;
        self.closed = true;
    }
}
