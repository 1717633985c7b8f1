//! The SIGBUS side of `mman::fault`: a registry of mman's file mappings that the handler
//! searches without locks, and the handler, which replaces the vanished pages of a truncated
//! file with zero pages. Installing, chaining to the previous handler and the test of a
//! signal's origin are `sys/signal.rs`'s, shared with the SIGSEGV handler of guard pages.
//!
//! Async-signal-safety audit of [`on_sigbus`]: it calls `signal::kernel_fault`,
//! `Ranges::find` and `Ranges::mark` (atomics only), reads the page size (a `OnceLock` set
//! before any mapping exists), calls `mmap(2)` (a plain system call on Linux, no
//! allocation, no lock) and `Hook::chain` (`sigaction(2)`, `sigpending(2)`,
//! `sigismember(3)`, `raise(3)`, the previous handler). It allocates nothing, takes no lock, and touches no `std` I/O.

use std::ffi::c_void;
use std::io;

use super::signal::{self, Hook, Ranges};

/// As many slots as a process can have mappings (vm.max_map_count defaults to 65530).
const SLOTS: usize = 65536;
/// mman's file mappings: `[start, end)` and the protection bits (`PROT_*`) to map zero
/// pages with; the mark says the mapping took a fault past the end of its file.
static MAPPINGS: Ranges<SLOTS, 1> = Ranges::new();
static SIGBUS: Hook = Hook::new(libc::SIGBUS);

/// Install the SIGBUS handler once per process, remembering the previous one to chain to.
pub fn install() -> io::Result<()> {
    SIGBUS.install(on_sigbus, libc::SA_RESTART)
}

/// Register `[start, end)` (page-aligned) with protection bits `prot` (PROT_*). Fails when
/// the handler cannot be installed or the table is full: a mapping is never left
/// unprotected without the caller knowing.
pub fn register(start: usize, end: usize, prot: i32) -> io::Result<usize> {
    install()?;
    MAPPINGS.insert(start, end, [prot as usize]).ok_or_else(|| {
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

/// Move a registration (after mremap or mprotect), keeping its poisoned mark.
pub fn update(i: usize, start: usize, end: usize, prot: i32) {
    MAPPINGS.update(i, start, end, [prot as usize]);
}

/// Forget a registration (before the mapping is unmapped).
pub fn unregister(i: usize) {
    MAPPINGS.remove(i);
}

/// Whether a fault past the end of the file hit the registered mapping.
#[inline]
pub fn poisoned(i: usize) -> bool {
    MAPPINGS.marked(i)
}

/// `BUS_ADRERR`: the kernel's code for an access to a page with nothing behind it, the
/// fault a truncated file mapping raises.
const BUS_ADRERR: libc::c_int = 2;

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
            // SAFETY: `from..end` lies inside a mapping mman owns and registered (the
            // registry holds only mman's own mappings, unregistered before they are
            // unmapped, and suspended while they move). Replacing its vanished file pages
            // with zero pages lets the faulting access complete; the mapping is marked
            // poisoned so every API reports the truncation.
            let p = unsafe {
                libc::mmap(
                    from as *mut c_void,
                    hit.end - from,
                    hit.data[0] as i32,
                    libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                MAPPINGS.mark(hit.slot);
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
            while let Ok(i) = register(0x1000, 0x2000, 0) {
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
