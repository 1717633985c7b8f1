//! glibc's `sem_t`, so a Rust process and a C process can share one semaphore: unnamed
//! ones inside a mapping (`sem_init(sem, 1, value)`), and named ones (`sem_open`).

use std::cell::UnsafeCell;
use std::time::Duration;

use super::slot;
use crate::error::{Error, ErrorKind, Result};
use crate::map::Mapping;
use crate::sys::sync::{self as raw, SemWait};

/// A glibc `sem_t` living in shared memory, byte-compatible with C's.
///
/// ```
/// # fn main() -> mman::Result<()> {
/// use mman::sync::PosixSemaphore;
/// let shared = mman::shm::anonymous(4096)?;
/// // SAFETY: nobody else uses this fresh memory yet, and every process that will share it
/// // touches these bytes only through sem_* calls.
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
            ///
            /// # Errors
            /// `sem_post` fails (`EOVERFLOW`), or the semaphore's file was truncated.
            pub fn post(&self) -> Result<()> {
                self.intact("sem_post")?;
                // SAFETY: `raw()` is a live semaphore for as long as `self` is borrowed.
                unsafe { raw::sem_post(self.raw()) }.map_err(|e| self.context(Error::os("sem_post", e)))?;
                self.intact("sem_post")
            }
            /// `sem_wait`.
            ///
            /// # Errors
            /// As [`post`](Self::post).
            pub fn wait(&self) -> Result<()> {
                self.intact("sem_wait")?;
                // SAFETY: as in post.
                unsafe { raw::sem_wait(self.raw(), SemWait::Forever) }
                    .map_err(|e| self.context(Error::os("sem_wait", e)))?;
                self.intact("sem_wait")
            }
            /// `sem_trywait`: whether a permit was taken.
            ///
            /// # Errors
            /// As [`post`](Self::post).
            pub fn try_wait(&self) -> Result<bool> {
                self.intact("sem_trywait")?;
                // SAFETY: as in post.
                let got = unsafe { raw::sem_wait(self.raw(), SemWait::Try) }
                    .map_err(|e| self.context(Error::os("sem_trywait", e)))?;
                self.intact("sem_trywait").map(|_| got)
            }
            /// `sem_clockwait` on CLOCK_MONOTONIC: whether a permit was taken within `timeout`.
            ///
            /// # Errors
            /// As [`post`](Self::post).
            pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
                self.intact("sem_clockwait")?;
                let d = raw::monotonic_deadline(timeout);
                // SAFETY: as in post.
                let got = unsafe { raw::sem_wait(self.raw(), SemWait::Until(&d)) }
                    .map_err(|e| self.context(Error::os("sem_clockwait", e)))?;
                self.intact("sem_clockwait").map(|_| got)
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
    /// use is undefined behaviour in POSIX. And, as for [`open_in`](Self::open_in), every
    /// process with access to these bytes uses them only through `sem_*` calls while the
    /// reference lives: glibc cannot defend itself against garbage in a `sem_t`. (A C peer
    /// then uses it the same way, with a `sem_t *` into its mapping.)
    ///
    /// # Errors
    /// * As [`place`](super::place): [`ErrorKind::InvalidInput`] when a `sem_t` does not fit
    ///   at `offset` or `offset` is not aligned for it; [`ErrorKind::PermissionDenied`] when
    ///   the mapping is not readable and writable; [`ErrorKind::StorageFull`] when its file
    ///   has no room for the semaphore's page.
    /// * The error of `sem_init`: [`ErrorKind::InvalidInput`] for a `value` above
    ///   `SEM_VALUE_MAX` (`EINVAL`).
    pub unsafe fn init_in(map: &Mapping, offset: usize, value: u32) -> Result<&Self> {
        let p = slot::<Self>(map, offset, "sem_init")?;
        // SAFETY: in bounds, aligned, read-write (slot); unused by anyone (caller's contract).
        unsafe { raw::sem_init((*p).raw.get(), value) }.map_err(|e| {
            Error::os("sem_init", e).with_addr(p as usize, std::mem::size_of::<libc::sem_t>())
        })?;
        // SAFETY: initialised just now.
        Ok(unsafe { &*p })
    }

    /// The semaphore another process initialised at `offset` of `map` with
    /// `sem_init(sem, 1, value)` (as [`init_in`](Self::init_in) does).
    ///
    /// All-zero bytes are *not* such a semaphore: glibc reads them as a process-private one,
    /// whose wake-ups never reach another process. So the bytes are checked to be a shared
    /// semaphore first.
    ///
    /// # Safety
    /// glibc trusts the bytes of a `sem_t`: garbage in them makes `sem_post` and `sem_wait`
    /// abort the process or block forever. The caller vouches that every process with
    /// access to these bytes uses them only through `sem_*` calls (or this type) for as long
    /// as the returned reference lives. That cannot be checked once: a peer may write them at
    /// any time.
    ///
    /// # Errors
    /// The place is unusable (as [`place`](super::place)), or the bytes are not a
    /// process-shared glibc semaphore.
    pub unsafe fn open_in(map: &Mapping, offset: usize) -> Result<&Self> {
        let p = slot::<Self>(map, offset, "sem_open")?;
        let mut image = [0u8; std::mem::size_of::<libc::sem_t>()];
        map.read_at(offset, &mut image)?;
        if !raw::sem_is_shared(&image) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "sem_open",
                "the bytes there are not a process-shared glibc semaphore (sem_init with pshared = 1)",
            )
            .with_addr(p as usize, image.len())
            .with_hint("initialise it first with PosixSemaphore::init_in, or sem_init(sem, 1, value) in C"));
        }
        // SAFETY: in bounds, aligned, read-write; a sem_t is used only through glibc calls,
        // and the caller vouches for the bytes.
        Ok(unsafe { &*p })
    }

    fn raw(&self) -> *mut libc::sem_t {
        self.raw.get()
    }
    fn context(&self, e: Error) -> Error {
        e.with_addr(self.raw.get() as usize, std::mem::size_of::<libc::sem_t>())
    }
    /// The mapping holding an unnamed semaphore is the caller's: nothing to check here.
    fn intact(&self, _op: &'static str) -> Result<()> {
        Ok(())
    }
    /// `sem_getvalue`.
    pub fn value(&self) -> i32 {
        // SAFETY: as in post.
        unsafe { raw::sem_value(self.raw.get()) }
    }
}

/// A named POSIX semaphore (`sem_open`), shared with any process, C or Rust, that opens the
/// same name. Closed on drop; the name stays until [`unlink`](Self::unlink).
///
/// glibc keeps it in `/dev/shm/sem.NAME` and maps that file. mman checks the file before
/// glibc opens it (a regular file of this user, writable by nobody else, large enough), and
/// registers glibc's mapping with its SIGBUS handler: a file truncated under it makes every
/// later operation an [`ErrorKind::Truncated`] error instead of killing the process.
#[derive(Debug)]
pub struct NamedSemaphore {
    sem: *mut libc::sem_t,
    name: String,
    /// The registration of glibc's mapping with the SIGBUS handler.
    guard: usize,
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
    ///
    /// # Safety
    /// As [`PosixSemaphore::open_in`]: every process that can write `/dev/shm/sem.NAME` uses
    /// it only through `sem_*` calls while the handle lives (glibc aborts or blocks forever
    /// on garbage). The checks made here keep other users out, not this user's other
    /// programs.
    ///
    /// # Errors
    /// The name is malformed, the existing file fails the checks, or `sem_open` fails.
    pub unsafe fn create(name: &str, value: u32) -> Result<Self> {
        Self::open_with(name, true, value)
    }
    /// Open an existing `name`.
    ///
    /// # Safety
    /// As [`create`](Self::create).
    ///
    /// # Errors
    /// As [`create`](Self::create); also when the name does not exist.
    pub unsafe fn open(name: &str) -> Result<Self> {
        Self::open_with(name, false, 0)
    }

    fn open_with(name: &str, create: bool, value: u32) -> Result<Self> {
        check_name(name)?;
        let named = |e: Error| e.with_path(Some(name.as_ref()));
        raw::check_sem_file(name, create).map_err(|e| {
            named(Error::os("sem_open", e).with_hint(
                "the file /dev/shm/sem.NAME must be a regular file of this user, writable by nobody else, \
             and hold a whole sem_t",
            ))
        })?;
        let sem = raw::sem_open(name, create, value).map_err(|e| named(Error::os("sem_open", e)))?;
        let page = crate::sys::page_size();
        let start = sem as usize & !(page - 1);
        match crate::sys::guard_mapping(start, start + page, crate::map::Protection::READ_WRITE, None) {
            Ok(Some(guard)) => Ok(NamedSemaphore {
                sem,
                name: name.to_string(),
                guard,
            }),
            r => {
                // SAFETY: opened just now and used by nothing else.
                unsafe { raw::sem_close(sem) };
                Err(named(match r {
                    Err(e) => Error::os("register with the SIGBUS handler", e),
                    _ => Error::new(ErrorKind::Unsupported, "sem_open", "no SIGBUS handler here"),
                }))
            }
        }
    }
    /// Remove `name` (open handles stay valid).
    ///
    /// # Errors
    /// The name is malformed or does not exist.
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
    /// A truncated file: glibc's page was replaced by zeros (what a touch past the end
    /// found), so the semaphore is gone.
    fn intact(&self, op: &'static str) -> Result<()> {
        if crate::sys::mapping_poisoned(self.guard) {
            return Err(self.context(Error::truncated(
                op,
                None,
                std::mem::size_of::<libc::sem_t>() as u64,
                0,
            )));
        }
        Ok(())
    }
}

impl Drop for NamedSemaphore {
    fn drop(&mut self) {
        crate::sys::unguard_mapping(self.guard);
        // SAFETY: opened by sem_open, closed once, never used after.
        unsafe { raw::sem_close(self.sem) };
    }
}
