//! The SIGBUS side of `mman::fault`: a registry of mman's file mappings that the handler
//! searches without locks, and the handler. A fault in a registered mapping is one of two
//! things, told apart by the file's size (`fstat` of the descriptor the mapping keeps):
//!
//! * **A truncation**: the page lies wholly past the file's end. The vanished pages, from
//!   the faulting one to the end of the mapping, are replaced with zero pages.
//! * **A backing failure**: the page lies inside the file, so its size did not shrink past
//!   it, but the file system could not give the page a block or a page of memory (a full
//!   disk or tmpfs, a quota: `ENOSPC`, `EDQUOT`), or could not read it (`EIO`). Only that
//!   page is replaced with a zero page, so that the faulting access completes; the rest of
//!   the mapping, and every word placed in it, stays the file's.
//!
//! Either way the mapping is marked with the kind and the faulting page's offset, and every
//! API that touches it then fails with an error that says which ([`caught`]): the write
//! that landed in the zero page is reported, never passed off as stored in the file.
//! Installing, chaining to the previous handler and the test of a signal's origin are
//! `sys/signal.rs`'s, shared with the SIGSEGV handler of guard pages.
//!
//! Async-signal-safety audit of [`on_sigbus`]: it calls `signal::kernel_fault`,
//! `Ranges::find` and `Ranges::mark` (atomics only), reads the page size (a `OnceLock` set
//! before any mapping exists), calls `fstat(2)` and `mmap(2)` (async-signal-safe system
//! calls, no allocation, no lock) and `Hook::chain` (`sigaction(2)`, `sigpending(2)`,
//! `sigismember(3)`, `raise(3)`, the previous handler). It allocates nothing, takes no
//! lock, and touches no `std` I/O.

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::signal::{self, Hook, Ranges};

/// As many slots as a process can have mappings (vm.max_map_count defaults to 65530).
const SLOTS: usize = 65536;
/// mman's file mappings: `[start, end)` and four words: the protection bits (`PROT_*`) to
/// map zero pages with, the descriptor of the mapped file plus one (0: none known), and the
/// file offset of `start` (its low and high 32 bits: a word is 32 bits on some targets). The mark is a [`caught`] fault: the offset of the faulting page
/// from `start`, or'ed with [`TRUNCATED`] or [`UNBACKED`].
static MAPPINGS: Ranges<SLOTS, 4> = Ranges::new();
static SIGBUS: Hook = Hook::new(libc::SIGBUS);

/// The mark of a fault past the end of the file.
const TRUNCATED: usize = 1;
/// The mark of a fault on a page inside the file that could not be backed.
const UNBACKED: usize = 2;

/// Install the SIGBUS handler once per process, remembering the previous one to chain to.
pub fn install() -> io::Result<()> {
    SIGBUS.install(on_sigbus, libc::SA_RESTART)
}

/// The words a registration holds: `file` is the mapped file's descriptor and the file
/// offset of `start`, when known (without it, every fault counts as a truncation).
fn words(prot: i32, file: Option<(BorrowedFd<'_>, u64)>) -> [usize; 4] {
    match file {
        Some((fd, offset)) => [
            prot as usize,
            fd.as_raw_fd() as usize + 1,
            (offset & 0xFFFF_FFFF) as usize,
            (offset >> 32) as usize,
        ],
        None => [prot as usize, 0, 0, 0],
    }
}

/// Register `[start, end)` (page-aligned) with protection bits `prot` (PROT_*) and, for a
/// file mapping, the file's descriptor and the file offset of `start`: the descriptor must
/// stay open until [`unregister`]. Fails when the handler cannot be installed or the table
/// is full: a mapping is never left unprotected without the caller knowing.
pub fn register(
    start: usize,
    end: usize,
    prot: i32,
    file: Option<(BorrowedFd<'_>, u64)>,
) -> io::Result<usize> {
    install()?;
    MAPPINGS.insert(start, end, words(prot, file)).ok_or_else(|| {
        io::Error::other(format!(
            "the SIGBUS handler's table of file mappings is full ({SLOTS} mappings)"
        ))
    })
}

/// Take a registration out of the handler's view while its mapping moves (before mremap):
/// no fault can be matched against the old range meanwhile.
pub fn suspend(i: usize) {
    MAPPINGS.suspend(i);
}

/// Move a registration (after mremap or mprotect), keeping its mark.
pub fn update(i: usize, start: usize, end: usize, prot: i32, file: Option<(BorrowedFd<'_>, u64)>) {
    MAPPINGS.update(i, start, end, words(prot, file));
}

/// Forget a registration (before the mapping is unmapped).
pub fn unregister(i: usize) {
    MAPPINGS.remove(i);
}

/// Whether a fault was caught in the registered mapping.
#[inline]
#[cfg(feature = "sync")]
pub fn poisoned(i: usize) -> bool {
    MAPPINGS.marked(i) != 0
}

/// The first fault caught in a registered mapping: the offset of the faulting page from the
/// start of the mapping (its first page), and whether the page lay inside the file (a
/// backing failure: `true`) rather than past its end (a truncation).
#[inline]
pub fn caught(i: usize) -> Option<(usize, bool)> {
    match MAPPINGS.marked(i) {
        0 => None,
        m => Some((m & !(TRUNCATED | UNBACKED), m & UNBACKED != 0)),
    }
}

/// `BUS_ADRERR`: the kernel's code for an access to a page with nothing behind it, the
/// fault a truncated file mapping, or a page the file system could not back, raises.
const BUS_ADRERR: libc::c_int = 2;

/// Whether the page at `page_offset` (a file offset) starts inside the file open as
/// `fd_plus_one - 1`: then the fault on it was no truncation. Async-signal-safe (`fstat`).
fn inside_file(fd_plus_one: usize, page_offset: u64) -> bool {
    if fd_plus_one == 0 {
        return false;
    }
    // SAFETY: all-zero is a valid `stat`; fstat (async-signal-safe) writes only into it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is the mapping's own, open until it is unregistered; a bad
    // one only makes fstat fail.
    let ok = unsafe { libc::fstat((fd_plus_one - 1) as libc::c_int, &mut st) } == 0;
    ok && (st.st_size as u64) > page_offset
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let fault = unsafe { signal::kernel_fault(info) };
    // Only a fault the kernel raised is acted on: a SIGBUS sent with kill(2) or
    // rt_sigqueueinfo(2) carries an si_addr of the sender's choosing, and must never make
    // us map anything (it goes to the previous handler, or kills us as SIGBUS does by
    // default). A hardware memory error (BUS_MCEERR_*) is not ours either.
    if let Some(fault) = fault.filter(|f| f.code == BUS_ADRERR) {
        if let Some(hit) = MAPPINGS.find(fault.addr) {
            let page = crate::sys::page_size();
            let from = fault.addr & !(page - 1);
            let offset = from - hit.start;
            // A page inside the file: the file system could not back it. Only that page is
            // replaced; the others are still the file's. Past the end: every page from here on
            // is gone.
            let start_offset = (hit.data[3] as u64) << 32 | hit.data[2] as u64;
            let unbacked = inside_file(hit.data[1], start_offset + offset as u64);
            let to = if unbacked { from + page } else { hit.end };
            // SAFETY: `from..to` lies inside a mapping mman owns and registered (the registry
            // holds only mman's own mappings, unregistered before they are unmapped, and
            // suspended while they move). Replacing its pages with zero pages lets the
            // faulting access complete; the mapping is marked so that every API reports the
            // fault, and the write that landed in the zero page is never taken for stored.
            let p = unsafe {
                libc::mmap(
                    from as *mut c_void,
                    to - from,
                    hit.data[0] as i32,
                    libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                MAPPINGS.mark(hit.slot, offset | if unbacked { UNBACKED } else { TRUNCATED });
                return;
            }
        }
    }
    // SAFETY: this hook's handler, with what the kernel passed it.
    unsafe { SIGBUS.chain(sig, info, ctx) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a child process of its own (the table is process-wide): fill the registry, then
    /// check that one more registration, and a real file mapping, are refused.
    #[test]
    fn a_full_registry_refuses_instead_of_leaving_a_mapping_unprotected() {
        if std::env::var_os("MMAN_FILL_REGISTRY").is_some() {
            let mut taken = Vec::new();
            while let Ok(i) = register(0x1000, 0x2000, 0, None) {
                taken.push(i);
            }
            assert_eq!(taken.len(), SLOTS);
            let file = tempfile::tempfile().unwrap();
            file.set_len(4096).unwrap();
            let e = crate::MapOptions::new().map(&file).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::ResourceLimit, "{e}");
            assert!(e.to_string().contains("table of file mappings is full"), "{e}");
            unregister(taken[0]);
            crate::MapOptions::new().map(&file).unwrap();
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sys::fault::tests::a_full_registry_refuses_instead_of_leaving_a_mapping_unprotected",
            ])
            .env("MMAN_FILL_REGISTRY", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
}
