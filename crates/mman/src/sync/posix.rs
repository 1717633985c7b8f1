//! glibc's `sem_t`, so a Rust process and a C process can share one semaphore: unnamed
//! ones inside a mapping (`sem_init(sem, 1, value)`), and named ones (`sem_open`).

use std::cell::UnsafeCell;
use std::time::Duration;

use super::slot;
use crate::error::{Error, ErrorKind, Result};
use crate::map::Mapping;
use crate::sys::sync as raw;

/// A glibc `sem_t` living in shared memory, byte-compatible with C's.
///
/// ```
/// # fn main() -> mman::Result<()> {
/// use mman::sync::PosixSemaphore;
/// let shared = mman::shm::anonymous(4096)?;
/// // SAFETY: nobody else uses this fresh memory yet.
/// let sem = unsafe { PosixSemaphore::init_in(&shared, 0, 1)? };
/// assert!(sem.try_wait()?);
/// sem.post()?;
/// # Ok(()) }
/// ```
#[repr(C)]
pub struct PosixSemaphore {
    raw: UnsafeCell<libc::sem_t>,
}

// SAFETY: sem_t is made for concurrent use by threads and processes.
unsafe impl Sync for PosixSemaphore {}

/// The operations both kinds share, over `raw()` (a semaphore valid as long as `&self`) and
/// `context()` (what an error names: the address, or the name).
macro_rules! semaphore_ops {
    ($t:ty) => {
        impl $t {
            /// `sem_post`.
            pub fn post(&self) -> Result<()> {
                // SAFETY: `raw()` is a live semaphore for as long as `self` is borrowed.
                unsafe { raw::sem_post(self.raw()) }.map_err(|e| self.context(Error::os("sem_post", e)))
            }
            /// `sem_wait`.
            pub fn wait(&self) -> Result<()> {
                // SAFETY: as in post.
                unsafe { raw::sem_wait(self.raw(), None) }
                    .map(|_| ())
                    .map_err(|e| self.context(Error::os("sem_wait", e)))
            }
            /// `sem_trywait`: whether a permit was taken.
            pub fn try_wait(&self) -> Result<bool> {
                // SAFETY: as in post.
                unsafe { raw::sem_wait(self.raw(), Some(None)) }
                    .map_err(|e| self.context(Error::os("sem_trywait", e)))
            }
            /// `sem_clockwait` on CLOCK_MONOTONIC: whether a permit was taken within `timeout`.
            pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
                let d = raw::monotonic_deadline(timeout);
                // SAFETY: as in post.
                unsafe { raw::sem_wait(self.raw(), Some(Some(&d))) }
                    .map_err(|e| self.context(Error::os("sem_clockwait", e)))
            }
        }
    };
}

semaphore_ops!(PosixSemaphore);
semaphore_ops!(NamedSemaphore);

impl PosixSemaphore {
    /// `sem_init(sem, 1, value)` at `offset` of `map`.
    ///
    /// # Safety
    /// No process or thread may be using a semaphore at that place: re-initialising one in
    /// use is undefined behaviour in POSIX. (A C peer then opens it the same way, with a
    /// `sem_t *` into its mapping.)
    pub unsafe fn init_in(map: &Mapping, offset: usize, value: u32) -> Result<&Self> {
        let p = slot::<Self>(map, offset, "sem_init")?;
        // SAFETY: in bounds, aligned, read-write (slot); unused by anyone (caller's contract).
        unsafe { raw::sem_init((*p).raw.get(), value) }.map_err(|e| {
            Error::os("sem_init", e).with_addr(p as usize, std::mem::size_of::<libc::sem_t>())
        })?;
        // SAFETY: initialised just now.
        Ok(unsafe { &*p })
    }

    /// The semaphore another process initialised at `offset` of `map`. (glibc treats
    /// all-zero bytes as a shared semaphore with value 0, so an uninitialised place is a
    /// semaphore nobody has posted yet, not undefined behaviour.)
    pub fn open_in(map: &Mapping, offset: usize) -> Result<&Self> {
        let p = slot::<Self>(map, offset, "sem_open")?;
        // SAFETY: in bounds, aligned, read-write; a sem_t is used only through glibc calls.
        Ok(unsafe { &*p })
    }

    fn raw(&self) -> *mut libc::sem_t {
        self.raw.get()
    }
    fn context(&self, e: Error) -> Error {
        e.with_addr(self.raw.get() as usize, std::mem::size_of::<libc::sem_t>())
    }
    /// `sem_getvalue`.
    pub fn value(&self) -> i32 {
        // SAFETY: as in post.
        unsafe { raw::sem_value(self.raw.get()) }
    }
}

/// A named POSIX semaphore (`sem_open`), shared with any process, C or Rust, that opens the
/// same name. Closed on drop; the name stays until [`unlink`](Self::unlink).
#[derive(Debug)]
pub struct NamedSemaphore {
    sem: *mut libc::sem_t,
    name: String,
}

// SAFETY: sem_t is made for concurrent use; the pointer is glibc's mapping, valid until
// sem_close in drop.
unsafe impl Send for NamedSemaphore {}
// SAFETY: as above.
unsafe impl Sync for NamedSemaphore {}

fn check_name(name: &str) -> Result<()> {
    if !name.starts_with('/') || name.len() < 2 || name[1..].contains('/') {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "sem_open",
            format!("{name:?} is not a semaphore name"),
        )
        .with_hint("names look like /name: one leading slash and no other"));
    }
    Ok(())
}

impl NamedSemaphore {
    /// Open `name` (like `/ready`), creating it with `value` (mode 0600) if it does not exist.
    pub fn create(name: &str, value: u32) -> Result<Self> {
        check_name(name)?;
        let sem = raw::sem_open(name, true, value)
            .map_err(|e| Error::os("sem_open", e).with_path(Some(name.as_ref())))?;
        Ok(NamedSemaphore {
            sem,
            name: name.to_string(),
        })
    }
    /// Open an existing `name`.
    pub fn open(name: &str) -> Result<Self> {
        check_name(name)?;
        let sem = raw::sem_open(name, false, 0)
            .map_err(|e| Error::os("sem_open", e).with_path(Some(name.as_ref())))?;
        Ok(NamedSemaphore {
            sem,
            name: name.to_string(),
        })
    }
    /// Remove `name` (open handles stay valid).
    pub fn unlink(name: &str) -> Result<()> {
        check_name(name)?;
        raw::sem_unlink(name).map_err(|e| Error::os("sem_unlink", e).with_path(Some(name.as_ref())))
    }
    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
    fn raw(&self) -> *mut libc::sem_t {
        self.sem
    }
    fn context(&self, e: Error) -> Error {
        e.with_path(Some(self.name.as_ref()))
    }
}

impl Drop for NamedSemaphore {
    fn drop(&mut self) {
        // SAFETY: opened by sem_open, closed once, never used after.
        unsafe { raw::sem_close(self.sem) };
    }
}
