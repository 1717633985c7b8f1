//! The signal side of `mman::fault`: a registry of mman's file mappings that a SIGBUS
//! handler can read without locks, the handler itself, and its chaining to whatever handler
//! was installed before.
//!
//! Async-signal-safety audit of [`on_sigbus`]: it reads atomics and a `OnceLock` that was
//! set before the handler was installed, calls `mmap(2)` (a plain system call on Linux, no
//! allocation, no lock), `sigaction(2)` and `raise(3)` (both async-signal-safe), and calls
//! the previous handler. It allocates nothing, takes no lock, and touches no `std` I/O.

use std::ffi::c_void;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// One registered mapping: `[start, end)` and its protection. `start == 0` is a free slot,
/// `usize::MAX` a slot being filled or moved. `seq` is odd while the fields change (a
/// seqlock): the handler uses a slot only if it read the same even `seq` before and after
/// the fields, so it never acts on a half-updated range.
struct Slot {
    seq: AtomicUsize,
    start: AtomicUsize,
    end: AtomicUsize,
    prot: AtomicU32,
    poisoned: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            seq: AtomicUsize::new(0),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            prot: AtomicU32::new(0),
            poisoned: AtomicBool::new(false),
        }
    }
}

/// As many slots as a process can have mappings (vm.max_map_count defaults to 65530). Pages
/// of the table the process never reaches are never touched, so cost nothing.
const SLOTS: usize = 65536;
static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// One past the highest slot ever used: the handler scans no further.
static HIGH: AtomicUsize = AtomicUsize::new(0);
/// Where the next registration starts looking for a free slot.
static NEXT: AtomicUsize = AtomicUsize::new(0);
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static INSTALL: std::sync::Once = std::sync::Once::new();
static INSTALL_ERROR: AtomicU32 = AtomicU32::new(0);

/// Install the SIGBUS handler once per process, remembering the previous one to chain to.
pub fn install() -> io::Result<()> {
    INSTALL.call_once(|| {
        // SAFETY: sigaction with a zeroed struct to read the current action, then with our
        // handler; both structs are ours and fully initialised. PREVIOUS is set before our
        // handler can run, so the handler always finds it.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
                INSTALL_ERROR.store(
                    io::Error::last_os_error().raw_os_error().unwrap_or(1) as u32,
                    Ordering::SeqCst,
                );
                return;
            }
            let _ = PREVIOUS.set(old);
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_sigbus as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
            libc::sigemptyset(&mut new.sa_mask);
            if libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) != 0 {
                INSTALL_ERROR.store(
                    io::Error::last_os_error().raw_os_error().unwrap_or(1) as u32,
                    Ordering::SeqCst,
                );
            }
        }
    });
    match INSTALL_ERROR.load(Ordering::SeqCst) {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e as i32)),
    }
}

/// Register `[start, end)` (page-aligned) with protection bits `prot` (PROT_*). Fails when
/// the handler cannot be installed or the table is full: a mapping is never left
/// unprotected without the caller knowing.
pub fn register(start: usize, end: usize, prot: i32) -> io::Result<usize> {
    install()?;
    // Scan from just past the last slot taken, wrapping: registering is O(1) while the table
    // has room, not O(mappings registered).
    let from = NEXT.load(Ordering::Relaxed);
    for k in 0..SLOTS {
        let i = (from + k) % SLOTS;
        let slot = &TABLE[i];
        if slot
            .start
            .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            NEXT.store((i + 1) % SLOTS, Ordering::Relaxed);
            HIGH.fetch_max(i + 1, Ordering::AcqRel);
            write(slot, start, end, prot, false);
            return Ok(i);
        }
    }
    Err(io::Error::other(format!(
        "the SIGBUS handler's table of file mappings is full ({SLOTS} mappings)"
    )))
}

/// Fill a slot under its seqlock.
fn write(slot: &Slot, start: usize, end: usize, prot: i32, keep_poison: bool) {
    slot.seq.fetch_add(1, Ordering::AcqRel);
    slot.start.store(usize::MAX, Ordering::Release);
    slot.end.store(end, Ordering::Relaxed);
    slot.prot.store(prot as u32, Ordering::Relaxed);
    if !keep_poison {
        slot.poisoned.store(false, Ordering::Relaxed);
    }
    slot.start.store(start, Ordering::Release);
    slot.seq.fetch_add(1, Ordering::AcqRel);
}

/// Take a registration out of the handler's view while its mapping moves (before mremap):
/// no fault can be matched against the old range meanwhile.
pub fn suspend(i: usize) {
    let slot = &TABLE[i];
    slot.seq.fetch_add(1, Ordering::AcqRel);
    slot.start.store(usize::MAX, Ordering::Release);
    slot.seq.fetch_add(1, Ordering::AcqRel);
}

/// Move a registration (after mremap or mprotect), keeping its poisoned mark.
pub fn update(i: usize, start: usize, end: usize, prot: i32) {
    write(&TABLE[i], start, end, prot, true);
}

/// Forget a registration (before the mapping is unmapped).
pub fn unregister(i: usize) {
    TABLE[i].start.store(0, Ordering::Release);
}

/// Whether a fault past the end of the file hit the registered mapping.
#[inline]
pub fn poisoned(i: usize) -> bool {
    TABLE[i].poisoned.load(Ordering::Acquire)
}

/// The registered range holding `addr`, read consistently: `(slot, end, prot)`.
fn find(addr: usize) -> Option<(&'static Slot, usize, i32)> {
    let high = HIGH.load(Ordering::Acquire);
    TABLE[..high].iter().find_map(|s| {
        let seq = s.seq.load(Ordering::Acquire);
        if seq % 2 == 1 {
            return None;
        }
        let start = s.start.load(Ordering::Acquire);
        let end = s.end.load(Ordering::Acquire);
        let prot = s.prot.load(Ordering::Acquire) as i32;
        let inside = start != 0 && start != usize::MAX && addr >= start && addr < end;
        (inside && s.seq.load(Ordering::Acquire) == seq).then_some((s, end, prot))
    })
}

/// `BUS_ADRERR`: the kernel's code for an access to a page with nothing behind it, the
/// fault a truncated file mapping raises.
const BUS_ADRERR: libc::c_int = 2;

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // Only a fault the kernel raised is acted on: a SIGBUS sent with kill(2) or
    // rt_sigqueueinfo(2) has si_code <= 0 and an si_addr of the sender's choosing, and
    // must never make us map anything (it goes to the previous handler, or kills us as
    // SIGBUS does by default). A hardware memory error (BUS_MCEERR_*) is not ours either.
    if code == BUS_ADRERR {
        if let Some((slot, end, prot)) = find(addr) {
            let page = crate::sys::page_size();
            let from = addr & !(page - 1);
            // SAFETY: `from..end` lies inside a mapping mman owns and registered (the
            // registry holds only mman's own mappings, unregistered before they are
            // unmapped, and suspended while they move). Replacing its vanished file pages
            // with zero pages lets the faulting access complete; the mapping is marked
            // poisoned so every API reports the truncation.
            let p = unsafe {
                libc::mmap(
                    from as *mut c_void,
                    end - from,
                    prot,
                    libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                slot.poisoned.store(true, Ordering::Release);
                return;
            }
        }
    }
    chain(PREVIOUS.get(), sig, info, ctx);
}

/// Hand a fault that is not ours to `prev`, the handler installed before mman's (shared by
/// the SIGBUS and SIGSEGV handlers).
pub(crate) fn chain(
    prev: Option<&libc::sigaction>,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut c_void,
) {
    let Some(prev) = prev else {
        die(sig);
        return;
    };
    let handler = prev.sa_sigaction;
    if handler == libc::SIG_IGN {
        // SAFETY: valid siginfo from the kernel. A fault (si_code > 0) cannot be ignored:
        // returning would fault again forever.
        if unsafe { (*info).si_code } <= 0 {
            return;
        }
        die(sig);
    } else if handler == libc::SIG_DFL {
        die(sig);
    } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this type.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the previous handler was installed without SA_SIGINFO: a plain handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

/// Restore the default action and re-raise: the signal is delivered, with its default
/// effect, when the handler returns.
pub(crate) fn die(sig: libc::c_int) {
    // SAFETY: sigaction and raise are async-signal-safe; the struct is ours.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &dfl, std::ptr::null_mut());
        libc::raise(sig);
    }
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
