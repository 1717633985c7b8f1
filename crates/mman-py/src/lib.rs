//! `mman._mman`: the native part of the Python package `mman`, a thin layer over the Rust
//! crate (no logic of its own beyond Python's conventions: arguments, exceptions, the GIL,
//! signals). The package's Python files (`python/mman`) add the memoryviews, pickling of
//! objects and the benchmark.

mod broadcast;
mod buffer;
mod cache;
mod channel;
mod errors;
mod lazy;
mod mapping;
mod shm;
mod sync;
mod wait;

use pyo3::prelude::*;

#[pymodule]
fn _mman(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<mapping::Mapping>()?;
    m.add_class::<mapping::Export>()?;
    m.add_function(wrap_pyfunction!(mapping::map_file, m)?)?;
    m.add_class::<shm::SharedMemory>()?;
    m.add_function(wrap_pyfunction!(shm::shm_list, m)?)?;
    m.add_function(wrap_pyfunction!(shm::shm_remove_stale, m)?)?;
    m.add_class::<sync::Lock>()?;
    m.add_class::<sync::Condition>()?;
    m.add_class::<sync::Semaphore>()?;
    m.add_class::<channel::Channel>()?;
    m.add_class::<channel::Sender>()?;
    m.add_class::<channel::Receiver>()?;
    m.add_class::<channel::Owned>()?;
    m.add_class::<broadcast::Broadcast>()?;
    m.add_class::<broadcast::Publisher>()?;
    m.add_class::<broadcast::Subscriber>()?;
    m.add_function(wrap_pyfunction!(lazy::_after_fork_in_child, m)?)?;
    m.add_class::<cache::Locks>()?;
    m.add_function(wrap_pyfunction!(cache::cache_file, m)?)?;
    m.add_function(wrap_pyfunction!(cache::cache_tree, m)?)?;
    Ok(())
}
