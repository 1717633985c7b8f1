//! # mman: the Unix memory-mapping API, sound and fast
//!
//! `mman` wraps `mmap(2)` and its companions (`munmap`, `mprotect`, `mlock`, `mlockall`,
//! `msync`, `madvise`, `mincore`, `mremap`) in safe Rust, and uses them to move file data
//! as fast as the kernel allows ([`transfer`], what `cat(1)` does).
//!
//! ## The model: who else can touch the memory?
//!
//! A Rust reference (`&[u8]`, `&mut [u8]`) promises that nobody changes the bytes while it
//! lives. A mapping of a file, or of memory shared with other processes, cannot keep that
//! promise by itself: another process may write the file, or truncate it (and then a touch
//! of the vanished pages raises SIGBUS). So mman sorts memory by who can reach it:
//!
//! | memory | type | safe access |
//! |---|---|---|
//! | private anonymous: only this process | [`ExclusiveMap`] | `Deref`/`DerefMut` to `[u8]` |
//! | a file (shared or private), shared anonymous memory | [`Mapping`] | copies: [`Mapping::read_at`], [`Mapping::write_at`], [`Mapping::load`]/[`Mapping::store`] (atomic accesses), [`Mapping::write_to`] (the kernel copies), atomics in place ([`Mapping::atomic_u64`]) |
//! | the same, when the caller can vouch nobody interferes | [`Mapping`] | `unsafe` [`Mapping::as_slice`] / [`Mapping::as_mut_slice`], whose contracts say what to guarantee |
//!
//! Side by side with memmap2:
//!
//! | | memmap2 | mman |
//! |---|---|---|
//! | map a file | `unsafe { Mmap::map(&file) }`, then `&[u8]` everywhere | `MapOptions::new().map(&file)` is safe; the copies are safe; only slices are `unsafe` |
//! | where the danger is stated | at construction, once, far from the use | at the slice, where the assumption is made |
//! | anonymous memory | `MmapMut::map_anon` derefs (shared or not) | only *private* anonymous memory derefs; shared anonymous memory is a `Mapping` |
//! | offset | must be handled by the caller for some calls | any byte offset; aligned internally, exact bytes handed back |
//! | zero length / empty file | error | an empty mapping |
//! | pipes, `/proc` files | an OS error | [`ErrorKind::NotMappable`], to fall back to `read()` |
//! | errors | `io::Error` | [`Error`]: the operation, path, address and length, OS error, and a hint (for example `RLIMIT_MEMLOCK` and how to raise it) |
//!
//! ## Example
//!
//! ```
//! use mman::{MapOptions, FlushMode, Protection};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("data");
//! std::fs::write(&path, b"hello, mapped world")?;
//!
//! // Read: map the file, copy out exactly the bytes asked for (any offset).
//! let map = MapOptions::new().offset(7).len(6).map_path(&path)?;
//! let mut word = [0u8; 6];
//! map.read_at(0, &mut word)?;
//! assert_eq!(&word, b"mapped");
//!
//! // Write through a shared mapping; read() sees it; msync makes it durable.
//! let map = MapOptions::new().read_write().shared().map_path(&path)?;
//! map.write_at(0, b"HELLO")?;
//! map.flush(.., FlushMode::Sync)?;
//! assert_eq!(&std::fs::read(&path)?[..5], b"HELLO");
//!
//! // Private anonymous memory is this process's alone: it is a plain slice.
//! let mut scratch = mman::ExclusiveMap::new(4096)?;
//! scratch[0] = 42;
//! assert_eq!(scratch[0], 42);
//!
//! // Protection is tracked: a write to a read-only mapping is an error, not a SIGSEGV.
//! let mut anon = MapOptions::new().len(4096).map_anonymous()?;
//! anon.protect(Protection::READ)?;
//! assert!(anon.write_at(0, b"x").is_err());
//! # Ok(()) }
//! ```
//!
//! ## Soundness
//!
//! **The rule.** A safe function never hands out `&`/`&mut` to bytes that any party can
//! change or shrink while the reference lives: "any party" includes this very process
//! (through `std::fs`, another mman handle, another mapping of the same file) and every
//! process with access. References are handed out only where mman makes mutation
//! impossible; everywhere else mman copies (with atomics, or lets the kernel copy), uses
//! atomics in place, or offers an `unsafe fn` whose contract says what the caller vouches
//! for. Advisory locks (`flock`) exclude nobody and are never part of the argument.
//!
//! **One atomic scheme.** Racing atomic accesses of different sizes to the same bytes are
//! undefined behaviour, so every Rust access mman makes to memory others can reach is an
//! aligned 8-byte atomic: copies move whole words (a word only partly copied into is updated
//! by compare-and-swap), and every object mman places in shared memory is made of
//! `AtomicU64`s. Futexes wait on the low half of a word, handed to the kernel only.
//!
//! **Where references are handed out, and why that is sound:**
//! * [`ExclusiveMap`] (`Deref`/`DerefMut` to `[u8]`): private anonymous memory only this
//!   process reaches; its protection cannot change, advice that would change its bytes or
//!   withhold them from a child (`DontFork`, `WipeOnFork`, `Free`, `Remove`) is not offered,
//!   `discard` needs `&mut self`, and lazily taken huge pages are populated at creation (an
//!   empty pool is an error then, not a SIGBUS at the first touch).
//! * `shm::SealedMap` (`Deref` to `[u8]`): a memfd whose `F_SEAL_WRITE` and `F_SEAL_SHRINK`
//!   were verified before mapping it read-only: the kernel refuses every write and
//!   truncation, from anyone; the SIGBUS handler never remaps it on a signal it did not raise.
//!   A memfd of huge pages is refused: a read of a page never written needs a huge page, and
//!   with none left its SIGBUS could only be answered by changing the bytes after it.
//! * `fault::Secret<T>` (`expose`): memory only this process maps (`memfd_secret` or
//!   private), aligned for `T` (types aligned beyond a page are refused).
//! * [`Mapping::atomic_u64`], `sync::place` and the `sync` objects (`&AtomicU64`,
//!   `&Semaphore`, `&Mutex<T>`, ...): references to atomics, which tolerate every
//!   concurrent change; the borrow of the mapping keeps it mapped and its protection
//!   unchanged (`protect`, `resize` and destructive advice take `&mut self`).
//! * `sync::MutexGuard` derefs to a *copy* of the data taken under the lock and written back
//!   when the guard drops (unless its thread is panicking: then the copy is dropped and the
//!   next owner sees `owner_died`); `persist::Writer::value` and `Durable` values are copies
//!   too.
//!
//! **Where copies are made:** [`Mapping::read_at`]/[`Mapping::write_at`]/`load`/`store`
//! (8-byte atomics), [`Mapping::write_to`] and the `transfer` module (the kernel copies:
//! a vanished page is `EFAULT`, not a signal), `persist::Persistent::{get, set, update}`,
//! `persist::Durable` (atomic copies and `pread`/`pwrite`, checked by CRC).
//!
//! **`unsafe` for the caller to vouch:** [`Mapping::as_slice`]/`as_mut_slice`,
//! `Persistent::{as_ref, as_mut}`, [`MapOptions::map_fixed_replace`], `persist_fixed`, and the
//! glibc semaphores (`PosixSemaphore::{init_in, open_in}`, `NamedSemaphore::{create, open}`):
//! glibc trusts the bytes of a `sem_t` and aborts or blocks forever on garbage, which no
//! check made once can rule out. `open_in` still refuses bytes that are not a
//! process-shared semaphore (all-zero bytes are a *private* one to glibc), and a named
//! semaphore's file is checked (owner, mode, size) and its mapping protected from truncation.
//!
//! **Signals.** The SIGBUS handler acts only on faults the kernel raised for an access to a
//! vanished page (`si_code == BUS_ADRERR`) inside a registered mapping; a signal sent with
//! `kill` or `rt_sigqueueinfo` goes to the previous handler (or has its default effect), and
//! if that handler sets the default action and returns (std's stack-overflow handler does),
//! the disposition it replaced is put back (mman's handler, or one installed over it that
//! called mman's), so a sent signal cannot switch the protection off. The
//! registry is read under a per-slot seqlock, a mapping that moves is hidden from it during
//! `mremap`, and a mapping that cannot be registered is refused, never left unprotected.
//! The guard-page SIGSEGV handler reports only kernel faults (`si_code > 0`).
//!
//! **What a hostile peer can do** (a process that can write the shared memory or the file):
//! change the bytes of shared data (readers see some mix of old and new words, never
//! undefined behaviour); truncate a file (accesses to vanished pages become
//! [`ErrorKind::Truncated`]; a truncation ending inside a page reads as zeros there, which
//! [`Mapping::verify_file_size`] and `Persistent::flush` report); write garbage over a `Semaphore` (some
//! count), a `Mutex` lock word (read as a dead owner and recovered within about 100 ms, or as
//! an unrecoverable mutex: an error), an init word (an error). **What it cannot do:** make
//! this process crash, read or write outside the region, follow a pointer (none is stored
//! in shared memory), or change bytes under a reference this process holds.
//!
//! ## Modules
//! * [`map`]: mappings and their operations.
//! * `cache` (Linux): page-cache residency of files: status, touch, evict, lock, tree walks
//!   (the jobs of vmtouch and fincore).
//! * `maps` (Linux): a process's mappings from `/proc/PID/smaps`, typed (the job of pmap).
//! * `fault` (Linux): truncation turned into errors, guard pages, locked secret memory.
//! * [`persist`]: persistent variables: the notes' `persist()`, typed, and crash-consistent
//!   `Durable<T>` transactions.
//! * [`shm`]: shared memory between processes: anonymous, named POSIX objects, sealed
//!   memfds, descriptor passing.
//! * `sync` (Linux): process-shared semaphores and locks that live inside mappings; how
//!   many CPUs the process can use (`usable_cpus`: whether a waiter may spin).
//! * [`transfer`]: copying a file to a descriptor by `read`, mapping, `vmsplice`, `splice`
//!   or `copy_file_range`.
//!
//! Linux is the full target; the mapping core also builds on macOS and FreeBSD, where the
//! Linux-only calls report [`ErrorKind::Unsupported`].

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(clippy::missing_errors_doc)]

#[cfg(all(linux_like, feature = "cache"))]
pub mod cache;
#[cfg(all(linux_like, feature = "channel"))]
pub mod channel;
mod error;
#[cfg(all(linux_like, feature = "fault"))]
pub mod fault;
mod flags;
pub mod map;
#[cfg(all(linux_like, feature = "maps"))]
pub mod maps;
#[cfg(feature = "persist")]
pub mod persist;
pub mod shm;
#[cfg(all(linux_like, feature = "sync"))]
pub mod sync;
mod sys;
pub mod transfer;

pub use error::{Error, ErrorKind, Result};
pub use map::{
    lock_all, memlock_limit, page_size, unlock_all, Advice, DestructiveAdvice, ExclusiveMap, FileEnd,
    FlushMode, LockAll, MapOptions, Mapping, Protection, Residency,
};

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(all(doctest, feature = "cache", feature = "persist", feature = "sync"))]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// Resource usage of this process, as `getrusage(RUSAGE_SELF)` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// Page faults served without I/O.
    pub minor_faults: u64,
    /// Page faults that needed I/O.
    pub major_faults: u64,
    /// CPU seconds in user mode.
    pub user_seconds: f64,
    /// CPU seconds in the kernel.
    pub system_seconds: f64,
}

impl Usage {
    /// The figures now.
    pub fn now() -> Usage {
        let (minor_faults, major_faults, user_seconds, system_seconds) = sys::rusage_self();
        Usage {
            minor_faults,
            major_faults,
            user_seconds,
            system_seconds,
        }
    }
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            minor_faults: self.minor_faults - earlier.minor_faults,
            major_faults: self.major_faults - earlier.major_faults,
            user_seconds: self.user_seconds - earlier.user_seconds,
            system_seconds: self.system_seconds - earlier.system_seconds,
        }
    }
}
