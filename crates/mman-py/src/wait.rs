//! Blocking calls the Python way: the GIL released while waiting, the wait cut into slices
//! of at most [`SLICE`] so that a signal handler (Ctrl-C's `KeyboardInterrupt`) runs between
//! them, and `threading`'s `blocking`/`timeout` arguments.

use std::time::{Duration, Instant};

use mman::ErrorKind;
use pyo3::prelude::*;

use crate::errors::{usage, IntoPy};

/// The longest wait made without the GIL before checking for signals: Ctrl-C is answered
/// within this (plus the time one slice's work takes).
pub const SLICE: Duration = Duration::from_millis(50);

/// How long a call may wait: `None` for as long as it takes.
pub type Timeout = Option<Duration>;

/// `threading`'s pair: `blocking=False` is a zero timeout; `timeout` None or -1 waits as
/// long as it takes; any other negative number, NaN or infinity is refused.
pub fn timeout_of(blocking: bool, timeout: Option<f64>) -> PyResult<Timeout> {
    if !blocking {
        if timeout.is_some_and(|t| t != -1.0) {
            return Err(usage(
                ErrorKind::InvalidInput,
                "acquire",
                "can't specify a timeout for a non-blocking call",
                None,
            ));
        }
        return Ok(Some(Duration::ZERO));
    }
    seconds(timeout)
}

/// A timeout in seconds (None or -1: no limit).
pub fn seconds(timeout: Option<f64>) -> PyResult<Timeout> {
    match timeout {
        None => Ok(None),
        Some(-1.0) => Ok(None),
        Some(t) => Duration::try_from_secs_f64(t).map(Some).map_err(|_| {
            usage(
                ErrorKind::InvalidInput,
                "timeout",
                &format!("{t} is not a number of seconds"),
                Some("give None (no limit) or a number >= 0"),
            )
        }),
    }
}

/// Call `step(slice)` with the GIL released until it gives a value (`Some`), the timeout
/// passes (`None`), or a signal handler raises (Ctrl-C: `KeyboardInterrupt`) between two
/// slices. `step` waits at most the slice it is given; a zero slice is a try.
pub fn blocking<T, F>(py: Python<'_>, timeout: Timeout, mut step: F) -> PyResult<Option<T>>
where
    T: Send,
    F: FnMut(Duration) -> mman::Result<Option<T>> + Send,
{
    // A timeout past what an Instant holds waits as long as it takes.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
            None => SLICE,
        };
        let got = py.detach(|| step(slice)).py_err()?;
        if got.is_some() {
            return Ok(got);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        py.check_signals()?;
    }
}
