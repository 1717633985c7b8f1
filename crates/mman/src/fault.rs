//! Faults, protection and secrets (Linux).
//!
//! * **Truncation survived.** A mapped file that another process truncates kills the reader
//!   with SIGBUS in C, in memmap2 users and in Python. mman installs a process-wide SIGBUS
//!   handler (once, chaining to any earlier handler for faults that are not its own) that
//!   knows every file [`Mapping`](crate::Mapping): a fault past the file's new end is
//!   answered by replacing the vanished pages with zero pages, and every API that touches the
//!   mapping then returns [`ErrorKind::Truncated`] with the sizes. Data the kernel copies
//!   out of a mapping (`write()`, `vmsplice()`) fails with `EFAULT` instead of a signal, and
//!   is reported as the same error. The kernel faults only on pages wholly past the new end:
//!   a truncation that ends inside a page zeroes the rest of that page without a fault, so a
//!   read of those bytes returns zeros; `Mapping::verify_file_size` (one `fstat`; also made by
//!   `Persistent::flush`) reports it. Only faults the kernel raised are handled: a SIGBUS sent by
//!   another process (`si_code <= 0`) goes to the previous handler, and cannot uninstall
//!   mman's (a previous handler that sets the default action on it, as std's does, is
//!   followed by the handler it replaced put back: mman's, or one installed over mman's).
//!   A file mapping that
//!   cannot be registered with the handler is refused with an error.
//! * **Full disks told apart.** A fault on a page *inside* the file's size is no truncation:
//!   the file system could not back the page (a full disk or tmpfs, a quota: `ENOSPC`,
//!   `EDQUOT`; or a read error, `EIO`). The handler measures the file (`fstat`) to tell;
//!   then only that page is replaced, every other page stays shared, and every API that
//!   touches the mapping returns [`ErrorKind::StorageFull`] with the page's offset
//!   ([`Error::unbacked_offset`](crate::Error::unbacked_offset)). The write that faulted is
//!   reported, never passed off as stored. [`Mapping::allocate`](crate::Mapping::allocate)
//!   backs pages ahead of use, so the error comes before anything is written; mman does that
//!   for the memory it places objects, channels and persistent values in.
//! * **Guard pages.** [`GuardedBuffer`] and [`GuardedStack`] put `PROT_NONE` pages around
//!   memory; a touch of one is reported with the faulting address and which guard was hit
//!   before the process dies of the SIGSEGV it would have died of anyway.
//! * **Secrets.** [`Secret`] keeps keys and passwords in locked memory left out of core
//!   dumps, wiped in (or withheld from) children, zeroed on drop, and in `memfd_secret`
//!   memory (removed from the kernel's direct map) when the kernel allows it; it reports which
//!   protections are in force.
//!
//! ```
//! # #[cfg(target_os = "linux")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use mman::{ErrorKind, MapOptions};
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("data");
//! std::fs::write(&path, vec![7u8; 64 << 10])?;
//! let map = MapOptions::new().map_path(&path)?;
//!
//! // Another party truncates the file under the mapping: in C the next read is a SIGBUS.
//! std::fs::File::options().write(true).open(&path)?.set_len(0)?;
//! let mut buf = [0u8; 16];
//! let err = map.read_at(32 << 10, &mut buf).unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Truncated);
//!
//! // A key kept out of swap, core dumps and children.
//! let mut key = mman::fault::Secret::<[u8; 32]>::zeroed()?;
//! key.expose_mut()?.copy_from_slice(&[1u8; 32]);
//! assert_eq!(key.expose()?[0], 1);
//! # Ok(()) }
//! # #[cfg(not(target_os = "linux"))]
//! # fn main() {}
//! ```

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::os::fd::AsFd;
use std::ptr::NonNull;

use crate::error::{Error, ErrorKind, Result};
use crate::map::Protection;
use crate::sys;
use crate::sys::guard::{BUFFER_ABOVE, BUFFER_BELOW, STACK_ABOVE, STACK_BELOW};

/// Install mman's SIGBUS handler now (it is otherwise installed with the first file
/// mapping). Idempotent.
///
/// # Errors
/// The error of `sigaction(SIGBUS)`. The first attempt's outcome is kept: a failure is
/// reported again by every later call, and every file mapping is then refused.
pub fn install_sigbus_handler() -> Result<()> {
    sys::fault::install().map_err(|e| Error::os("sigaction(SIGBUS)", e))
}

/// A private anonymous region `[guard page][pages][guard page]`, all `PROT_NONE` but the
/// middle.
#[derive(Debug)]
struct Guarded {
    base: usize,
    total: usize,
    lo: usize,
    hi: usize,
    guards: [Option<usize>; 2],
}

impl Guarded {
    fn new(
        op: &'static str,
        len: usize,
        kinds: [u32; 2],
        object: impl Fn(usize, usize) -> usize,
    ) -> Result<Self> {
        let ps = sys::page_size();
        // Checked: rounding up or adding the guards must not wrap (a release build would
        // have made a buffer of `len` bytes over two pages). At most isize::MAX bytes in
        // all, as a slice of the middle needs.
        let inner = len.max(1).checked_next_multiple_of(ps);
        let total = inner
            .and_then(|i| i.checked_add(2 * ps))
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    op,
                    format!("{len} bytes and two guard pages do not fit in the address space"),
                )
            })?;
        let inner = total - 2 * ps;
        let req = sys::MapRequest::PRIVATE;
        let none = Protection::NONE;
        // SAFETY: a fresh mapping placed by the kernel; nothing is replaced.
        let p = unsafe { sys::mmap(std::ptr::null_mut(), total, none, &req, None, 0) }
            .map_err(|e| Error::os_limited("mmap", e).with_range(0, Some(total)))?;
        let base = p as usize;
        let mut g = Guarded {
            base,
            total,
            lo: base + ps,
            hi: base + ps + inner,
            guards: [None, None],
        };
        let rw = Protection::READ_WRITE;
        // SAFETY: the middle pages of our own fresh mapping, referenced by nothing yet.
        unsafe { sys::mprotect(g.lo as *mut _, inner, rw) }
            .map_err(|e| Error::os("mprotect", e).with_addr(g.lo, inner))?;
        let obj = object(g.lo, g.hi);
        g.guards = [
            sys::guard::register(base, g.lo, kinds[0], obj, len),
            sys::guard::register(g.hi, g.hi + ps, kinds[1], obj, len),
        ];
        Ok(g)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        for g in self.guards.iter().flatten() {
            sys::guard::unregister(*g);
        }
        // SAFETY: our own mapping; the owner's `&mut self` proves no borrow of it lives.
        let _ = unsafe { sys::munmap(self.base as *mut _, self.total) };
    }
}

/// A buffer with a `PROT_NONE` guard page on each side; its end is placed right against the
/// upper guard, so writing even one byte past the end faults. The fault is reported as
/// `mman: guard page hit at 0x…: overflow past the end of a guarded buffer of N bytes at
/// 0x… (upper guard)` before the process dies of SIGSEGV.
///
/// Safe Rust cannot overflow it (slices are bounds-checked); it catches raw-pointer and FFI
/// bugs. An underflow is caught from the start of the first page on.
#[derive(Debug)]
pub struct GuardedBuffer {
    region: Guarded,
    start: usize,
    len: usize,
}

// SAFETY: private anonymous memory owned by the value; no shared state.
unsafe impl Send for GuardedBuffer {}
// SAFETY: `&self` gives only shared reads of memory nobody else writes.
unsafe impl Sync for GuardedBuffer {}

impl GuardedBuffer {
    /// `len` zeroed bytes between two guard pages.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `len` and the guard pages overflow; else the error of
    /// `mmap` ([`ErrorKind::ResourceLimit`] when memory or address space run out) or of
    /// `mprotect` opening the middle pages.
    pub fn new(len: usize) -> Result<Self> {
        let region = Guarded::new("guarded buffer", len, [BUFFER_BELOW, BUFFER_ABOVE], |_, hi| {
            hi - len
        })?;
        let start = region.hi - len;
        Ok(GuardedBuffer { region, start, len })
    }
    /// The first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.start as *const u8
    }
    /// The first byte, for writing.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.start as *mut u8
    }
    /// The address range of the lower and upper guard pages.
    pub fn guards(&self) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let ps = sys::page_size();
        (
            self.region.base..self.region.lo,
            self.region.hi..self.region.hi + ps,
        )
    }
}

impl Deref for GuardedBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` readable bytes of private anonymous memory owned by self.
        unsafe { std::slice::from_raw_parts(self.start as *const u8, self.len) }
    }
}

impl DerefMut for GuardedBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref; `&mut self` makes it unique.
        unsafe { std::slice::from_raw_parts_mut(self.start as *mut u8, self.len) }
    }
}

/// A thread stack with a `PROT_NONE` guard page below (where a stack overflows into) and
/// above. [`run`](Self::run) runs a closure on a thread using it; an overflow is reported as
/// `mman: guard page hit at 0x…: stack overflow of a guarded stack of N bytes …` before the
/// process dies of SIGSEGV.
#[derive(Debug)]
pub struct GuardedStack {
    region: Guarded,
    len: usize,
}

impl GuardedStack {
    /// A stack of `len` bytes (rounded up to pages; at least 64 KiB).
    ///
    /// # Errors
    /// As [`GuardedBuffer::new`].
    pub fn new(len: usize) -> Result<Self> {
        let len = len
            .max(64 << 10)
            .checked_next_multiple_of(sys::page_size())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    "guarded stack",
                    format!("{len} bytes do not fit in the address space"),
                )
            })?;
        let region = Guarded::new("guarded stack", len, [STACK_BELOW, STACK_ABOVE], |lo, _| lo)?;
        Ok(GuardedStack { region, len })
    }

    /// The usable stack range.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.region.lo..self.region.hi
    }

    /// Run `f` on a new thread that uses this stack, and return its result. The result is
    /// built on that stack too: a large `R` needs room there (box it otherwise).
    ///
    /// # Errors
    /// * The error of `pthread_attr_setstack`, `pthread_create` or `pthread_join`
    ///   ([`ErrorKind::ResourceLimit`] for `EAGAIN`, when threads run out); `f` did not run.
    /// * [`ErrorKind::Os`] when `f` panicked (the panic is caught on its thread).
    pub fn run<R: Send + 'static>(&mut self, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
        let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
        let out = slot.clone();
        let job = Box::new(move || {
            let r = f();
            if let Ok(mut g) = out.lock() {
                *g = Some(r);
            }
        });
        // SAFETY: the stack pages are ours, readable and writable, and `&mut self` keeps
        // anyone else from using them until the thread is joined inside run_on_stack.
        unsafe { sys::guard::run_on_stack(self.region.lo, self.len, job) }.map_err(|e| {
            Error::os_limited(
                "run on the guarded stack (pthread_attr_setstack, pthread_create, pthread_join)",
                e,
            )
            .with_addr(self.region.lo, self.len)
        })?;
        let r = slot.lock().ok().and_then(|mut g| g.take());
        r.ok_or_else(|| Error::new(ErrorKind::Os, "guarded stack", "the closure panicked"))
    }
}

/// Whether one protection of a [`Secret`] is in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// In force.
    Active,
    /// Not in force, and why.
    Unavailable(String),
}

impl Status {
    /// Whether the protection is in force.
    pub fn is_active(&self) -> bool {
        *self == Status::Active
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Active => f.write_str("yes"),
            Status::Unavailable(why) => write!(f, "no ({why})"),
        }
    }
}

/// The protections a [`Secret`] has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protections {
    /// Locked in RAM: never written to swap (`mlock`, or secretmem pages, always locked).
    pub locked: Status,
    /// Left out of core dumps (`MADV_DONTDUMP`).
    pub excluded_from_core_dumps: Status,
    /// A child created by `fork` sees zeros (`MADV_WIPEONFORK`) or nothing (`MADV_DONTFORK`).
    pub hidden_from_children: Status,
    /// In `memfd_secret` memory: removed from the kernel's direct map, so even the kernel
    /// (and a process that could read /proc/PID/mem) cannot read it.
    pub secret_memory: Status,
}

/// A value kept in protected memory: locked, out of core dumps, hidden from children,
/// zeroed on drop, and in `memfd_secret` memory when the kernel allows it.
///
/// ```
/// # fn main() -> mman::Result<()> {
/// let mut key = mman::fault::Secret::<[u8; 32]>::zeroed()?;
/// key.expose_mut()?.copy_from_slice(&[7u8; 32]);  // fill it in place, not via the stack
/// assert_eq!(key.expose()?[0], 7);
/// println!("locked: {}", key.protections().locked);
/// # Ok(()) }
/// ```
pub struct Secret<T: bytemuck::Pod> {
    ptr: NonNull<T>,
    len: usize,
    /// The process that made it: its PID and fork generation ([`sys::forks`]). In a child
    /// created by `fork`, `memfd_secret` memory is not mapped (MADV_DONTFORK): the range is
    /// free there, and may hold the child's own mappings since.
    creator: (u32, u64),
    secretmem: bool,
    protections: Protections,
    _owns: PhantomData<T>,
}

// SAFETY: the memory is owned by the value and reached only through &self/&mut self.
unsafe impl<T: bytemuck::Pod + Send> Send for Secret<T> {}
// SAFETY: as above; `&self` only reads.
unsafe impl<T: bytemuck::Pod + Sync> Sync for Secret<T> {}

impl<T: bytemuck::Pod> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("value", &"<redacted>")
            .field("protections", &self.protections)
            .finish()
    }
}

impl<T: bytemuck::Pod> Secret<T> {
    /// A zeroed secret, in `memfd_secret` memory if possible. Fill it with
    /// [`expose_mut`](Self::expose_mut) so the secret never passes through the stack.
    ///
    /// # Errors
    /// As [`zeroed_with`](Self::zeroed_with).
    pub fn zeroed() -> Result<Self> {
        Self::zeroed_with(true)
    }

    /// A zeroed secret; `secret_memory: false` skips `memfd_secret` (then the memory is
    /// private, `MADV_WIPEONFORK`, so a child sees zeros).
    ///
    /// # Errors
    /// * [`ErrorKind::InvalidInput`] when `T` is aligned beyond a page.
    /// * In `memfd_secret` memory, the error of `ftruncate` or `mmap` with a hint on
    ///   `RLIMIT_MEMLOCK`, which that memory counts against (`ENOMEM`, `EAGAIN`:
    ///   [`ErrorKind::ResourceLimit`]). Without `memfd_secret`, the memory is private instead.
    /// * In private memory, the error of `mmap`. A failed `mlock` or `madvise` is no error: the
    ///   protection is reported unavailable in [`protections`](Self::protections).
    pub fn zeroed_with(secret_memory: bool) -> Result<Self> {
        if std::mem::align_of::<T>() > sys::page_size() {
            // The memory is page-aligned and no more: a T aligned beyond a page would be
            // handed out as a misaligned reference.
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "secret",
                format!(
                    "the type is aligned to {} bytes, beyond the page ({} bytes)",
                    std::mem::align_of::<T>(),
                    sys::page_size()
                ),
            ));
        }
        let len = std::mem::size_of::<T>().max(1).next_multiple_of(sys::page_size());
        if secret_memory {
            match sys::guard::memfd_secret() {
                Ok(fd) => return Self::in_secretmem(fd, len),
                Err(e) => return Self::in_private(len, Status::Unavailable(format!("memfd_secret: {e}"))),
            }
        }
        Self::in_private(len, Status::Unavailable("not asked for".into()))
    }

    fn in_secretmem(fd: std::os::fd::OwnedFd, len: usize) -> Result<Self> {
        sys::shm::set_len(fd.as_fd(), len as u64)
            .map_err(|e| secret_memlock_hint(Error::os("ftruncate", e), len))?;
        let req = sys::MapRequest::SHARED;
        let rw = Protection::READ_WRITE;
        // SAFETY: a fresh mapping placed by the kernel; nothing is replaced.
        let p = unsafe { sys::mmap(std::ptr::null_mut(), len, rw, &req, Some(fd.as_fd()), 0) }
            .map_err(|e| secret_memlock_hint(Error::os("mmap(memfd_secret)", e), len))?;
        let mut s = Secret {
            ptr: NonNull::new(p.cast()).ok_or_else(|| Error::new(ErrorKind::Os, "mmap", "address 0"))?,
            len,
            creator: creator(),
            secretmem: true,
            protections: Protections {
                locked: Status::Active,
                excluded_from_core_dumps: Status::Active,
                hidden_from_children: Status::Active,
                secret_memory: Status::Active,
            },
            _owns: PhantomData,
        };
        // A shared mapping would be shared with a child: withhold it from children instead.
        // SAFETY: our own mapping; DONTFORK changes nothing in this process.
        if let Err(e) = unsafe { sys::madvise(p, len, libc::MADV_DONTFORK) } {
            s.protections.hidden_from_children = Status::Unavailable(format!("MADV_DONTFORK: {e}"));
        }
        Ok(s)
    }

    fn in_private(len: usize, secret_memory: Status) -> Result<Self> {
        let req = sys::MapRequest::PRIVATE;
        let rw = Protection::READ_WRITE;
        // SAFETY: a fresh mapping placed by the kernel; nothing is replaced.
        let p = unsafe { sys::mmap(std::ptr::null_mut(), len, rw, &req, None, 0) }
            .map_err(|e| Error::os_limited("mmap", e).with_range(0, Some(len)))?;
        // SAFETY: our own fresh mapping.
        let locked = match unsafe { sys::mlock(p, len, false) } {
            Ok(()) => Status::Active,
            Err(e) => Status::Unavailable(format!(
                "mlock: {e}; {}",
                crate::error::memlock_hint(Some(len as u64))
            )),
        };
        let advise = |advice: i32, name: &str| {
            // SAFETY: our own private mapping; these advices change dumping and fork
            // behaviour only, not the contents seen by this process.
            match unsafe { sys::madvise(p, len, advice) } {
                Ok(()) => Status::Active,
                Err(e) => Status::Unavailable(format!("{name}: {e}")),
            }
        };
        let excluded = advise(libc::MADV_DONTDUMP, "MADV_DONTDUMP");
        let wiped = advise(libc::MADV_WIPEONFORK, "MADV_WIPEONFORK");
        Ok(Secret {
            ptr: NonNull::new(p.cast()).ok_or_else(|| Error::new(ErrorKind::Os, "mmap", "address 0"))?,
            len,
            creator: creator(),
            secretmem: false,
            protections: Protections {
                locked,
                excluded_from_core_dumps: excluded,
                hidden_from_children: wiped,
                secret_memory,
            },
            _owns: PhantomData,
        })
    }

    /// Which protections are in force.
    pub fn protections(&self) -> &Protections {
        &self.protections
    }

    /// Whether the memory is mapped in this process: always for private memory (a child has
    /// its copy, zeroed); for `memfd_secret` memory, only in the process that made it.
    fn mapped_here(&self) -> bool {
        !self.secretmem || creator() == self.creator
    }

    fn check_process(&self) -> Result<()> {
        if !self.mapped_here() {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                "secret",
                "secret memory is withheld from child processes (MADV_DONTFORK)",
            ));
        }
        Ok(())
    }

    /// Read the secret. In a child created by `fork`, secret memory is absent (an error) and
    /// private memory reads as zeros.
    ///
    /// # Errors
    /// [`ErrorKind::PermissionDenied`] in a child created by `fork`, when the secret is in
    /// `memfd_secret` memory (withheld from children).
    pub fn expose(&self) -> Result<&T> {
        self.check_process()?;
        // SAFETY: `size_of::<T>()` bytes of memory owned by self, mapped in this process
        // (checked for secretmem), aligned to the page, and T is Pod.
        Ok(unsafe { self.ptr.as_ref() })
    }

    /// Change the secret in place.
    ///
    /// # Errors
    /// As [`expose`](Self::expose).
    pub fn expose_mut(&mut self) -> Result<&mut T> {
        self.check_process()?;
        // SAFETY: as in expose; `&mut self` makes the borrow unique.
        Ok(unsafe { self.ptr.as_mut() })
    }
}

/// Secret memory counts against `RLIMIT_MEMLOCK`: say so, and how to raise it.
fn secret_memlock_hint(e: Error, len: usize) -> Error {
    e.with_hint(format!(
        "secret memory counts against RLIMIT_MEMLOCK; {}",
        crate::error::memlock_hint(Some(len as u64))
    ))
}

impl<T: bytemuck::Pod> Secret<T> {
    /// Overwrite the secret with zeros now (drop does this too), with volatile stores the
    /// compiler cannot drop as dead.
    pub fn wipe(&mut self) {
        if !self.mapped_here() {
            return;
        }
        let p = self.ptr.as_ptr() as *mut u8;
        for i in 0..self.len {
            // SAFETY: our own writable memory, mapped in this process (checked above).
            unsafe { std::ptr::write_volatile(p.add(i), 0) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// This process, as [`Secret::creator`] records it.
fn creator() -> (u32, u64) {
    (sys::shm::pid(), sys::forks::generation())
}

impl<T: bytemuck::Pod> Drop for Secret<T> {
    /// In a child created by `fork`, a secret in `memfd_secret` memory is not mapped: its
    /// range is left alone (unmapping it would take whatever the child mapped there since).
    /// Async-signal-safe then (getpid, an atomic load), as a child of a threaded process
    /// needs.
    fn drop(&mut self) {
        if !self.mapped_here() {
            return;
        }
        self.wipe();
        // SAFETY: our own mapping.
        let _ = unsafe { sys::munlock(self.ptr.as_ptr().cast(), self.len) };
        // SAFETY: our own mapping; `&mut self` proves no borrow lives.
        let _ = unsafe { sys::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
