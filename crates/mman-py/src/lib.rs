//! `mman._mman`: the native part of the Python package `mman`, a thin layer over the Rust
//! crate (no logic of its own beyond Python's conventions: arguments, exceptions, the GIL,
//! signals). The package's Python files (`python/mman`) add the memoryviews, pickling of
//! objects and the benchmark.

mod buffer;
mod errors;
mod mapping;
mod wait;

use pyo3::prelude::*;

#[pymodule]
fn _mman(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<mapping::Mapping>()?;
    m.add_class::<mapping::Export>()?;
    m.add_function(wrap_pyfunction!(mapping::map_file, m)?)?;
    Ok(())
}
