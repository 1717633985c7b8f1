//! The SIGSEGV side of `mman::fault`: a registry of guard pages and a handler that names the
//! guard that was hit before the process dies of the signal as it would have anyway.
//!
//! Installing, chaining and the test of a signal's origin are `sys/signal.rs`'s, shared
//! with the SIGBUS handler.
//!
//! Async-signal-safety audit of [`on_sigsegv`]: `signal::kernel_fault` and `Ranges::find`
//! (atomics only), `write(2)` of a message formatted into a stack buffer, and
//! `signal::die` or `Hook::chain` (`sigaction(2)`, `sigpending(2)`, `sigismember(3)`,
//! `raise(3)`, the previous handler). No allocation, no lock.

use std::ffi::c_void;
use std::io;

use super::signal::{self, Hook, Ranges};

/// What a guard protects.
pub const BUFFER_BELOW: u32 = 1;
pub const BUFFER_ABOVE: u32 = 2;
pub const STACK_BELOW: u32 = 3;
pub const STACK_ABOVE: u32 = 4;

/// How many guards the table holds (two a guarded buffer or stack).
const SLOTS: usize = 8192;
/// Guard pages `[start, end)`, with what they guard: its kind, and the object's first byte
/// and length, for the message.
static GUARDS: Ranges<SLOTS, 3> = Ranges::new();
static SIGSEGV: Hook = Hook::new(libc::SIGSEGV);

/// Register guard pages `[start, end)` protecting the object `[object, object + len)`.
/// `None` when the table is full, or when the handler cannot be installed: either way a hit
/// still kills the process with SIGSEGV, only without naming the guard.
pub fn register(start: usize, end: usize, kind: u32, object: usize, len: usize) -> Option<usize> {
    SIGSEGV.install(on_sigsegv, 0).ok()?;
    GUARDS.insert(start, end, [kind as usize, object, len])
}

/// Forget a guard (before its pages are unmapped).
pub fn unregister(i: usize) {
    GUARDS.remove(i);
}

/// An alternate signal stack for the calling thread, so the handler can run after a stack
/// overflow. Returns the mapping to free with [`drop_alt_stack`] when the thread ends.
pub fn alt_stack() -> io::Result<(usize, usize)> {
    let len = 64 * 1024;
    // SAFETY: a fresh anonymous mapping chosen by the kernel; nothing is replaced.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(super::errno());
    }
    let ss = libc::stack_t {
        ss_sp: p,
        ss_flags: 0,
        ss_size: len,
    };
    // SAFETY: `ss` describes the mapping just made, which outlives its use by this thread.
    if unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) } != 0 {
        let e = super::errno();
        // SAFETY: our own fresh mapping, unused.
        unsafe { libc::munmap(p, len) };
        return Err(e);
    }
    Ok((p as usize, len))
}

/// Disable and free an alternate stack made by [`alt_stack`] (on the same thread).
pub fn drop_alt_stack(stack: (usize, usize)) {
    let off = libc::stack_t {
        ss_sp: std::ptr::null_mut(),
        ss_flags: libc::SS_DISABLE,
        ss_size: 0,
    };
    // SAFETY: disable this thread's alternate stack, then unmap it: no handler runs on it
    // any more.
    unsafe {
        libc::sigaltstack(&off, std::ptr::null_mut());
        libc::munmap(stack.0 as *mut c_void, stack.1);
    }
}

struct Msg {
    buf: [u8; 256],
    len: usize,
}

impl Msg {
    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
    }
    fn hex(&mut self, mut v: usize) {
        let mut digits = [0u8; 16];
        let mut n = 0;
        loop {
            digits[n] = b"0123456789abcdef"[v & 15];
            n += 1;
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.push(b"0x");
        for i in (0..n).rev() {
            self.push(&[digits[i]]);
        }
    }
    fn dec(&mut self, mut v: usize) {
        let mut digits = [0u8; 20];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for i in (0..n).rev() {
            self.push(&[digits[i]]);
        }
    }
}

extern "C" fn on_sigsegv(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let fault = unsafe { signal::kernel_fault(info) };
    // Only a fault the kernel raised is reported as a guard hit: a SIGSEGV queued by
    // another process carries an address of its choosing.
    if let Some((addr, hit)) = fault.and_then(|f| Some((f.addr, GUARDS.find(f.addr)?))) {
        let [kind, object, len] = hit.data;
        let kind = kind as u32;
        let mut m = Msg {
            buf: [0; 256],
            len: 0,
        };
        m.push(b"mman: guard page hit at ");
        m.hex(addr);
        m.push(match kind {
            BUFFER_BELOW => b": underflow before the start of a guarded buffer of ",
            BUFFER_ABOVE => b": overflow past the end of a guarded buffer of ",
            STACK_BELOW => b": stack overflow of a guarded stack of ",
            _ => b": access above the top of a guarded stack of ",
        });
        m.dec(len);
        m.push(b" bytes at ");
        m.hex(object);
        m.push(match kind {
            BUFFER_BELOW | STACK_BELOW => b" (lower guard)\n",
            _ => b" (upper guard)\n",
        });
        // SAFETY: write(2) of our stack buffer to stderr.
        unsafe { libc::write(2, m.buf.as_ptr().cast(), m.len) };
        // A handler installed before ours (a crash reporter) sees the fault too; if it
        // returns, the process dies of the signal here (returning would retry the access
        // and fault again, for ever).
        // SAFETY: this hook's handler, with what the kernel passed it.
        unsafe { SIGSEGV.chain(sig, info, ctx) };
        signal::die(sig);
        return;
    }
    // SAFETY: this hook's handler, with what the kernel passed it.
    unsafe { SIGSEGV.chain(sig, info, ctx) };
}

/// Run `job` on a new thread whose stack is `[lo, lo + len)`, with an alternate signal
/// stack so a guard-page hit can be reported, and wait for it.
///
/// # Safety
/// `[lo, lo + len)` must be readable and writable memory the caller owns, used by nothing
/// else until this returns.
pub unsafe fn run_on_stack(lo: usize, len: usize, job: Box<dyn FnOnce() + Send>) -> io::Result<()> {
    extern "C" fn trampoline(arg: *mut c_void) -> *mut c_void {
        // SAFETY: `arg` is the Box leaked below, passed to exactly this one thread.
        let job = unsafe { Box::from_raw(arg as *mut Box<dyn FnOnce() + Send>) };
        let alt = alt_stack().ok();
        // A panic must not unwind out of an extern "C" function; the job reports it itself.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        if let Some(a) = alt {
            drop_alt_stack(a);
        }
        std::ptr::null_mut()
    }
    let arg = Box::into_raw(Box::new(job)) as *mut c_void;
    // SAFETY: the attr is initialised before use and destroyed after; the stack range is the
    // caller's (contract); the thread is joined before returning, so the stack outlives it.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        let r = libc::pthread_attr_init(&mut attr);
        if r != 0 {
            drop(Box::from_raw(arg as *mut Box<dyn FnOnce() + Send>));
            return Err(io::Error::from_raw_os_error(r));
        }
        let r = libc::pthread_attr_setstack(&mut attr, lo as *mut c_void, len);
        let mut thread: libc::pthread_t = std::mem::zeroed();
        let r = if r == 0 {
            libc::pthread_create(&mut thread, &attr, trampoline, arg)
        } else {
            r
        };
        libc::pthread_attr_destroy(&mut attr);
        if r != 0 {
            drop(Box::from_raw(arg as *mut Box<dyn FnOnce() + Send>));
            return Err(io::Error::from_raw_os_error(r));
        }
        let r = libc::pthread_join(thread, std::ptr::null_mut());
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
    }
    Ok(())
}

/// `memfd_secret(2)` (Linux 5.14+, when the kernel enables secretmem).
pub fn memfd_secret() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: a plain system call with a flags argument; on success it returns a new fd that
    // we own from here on.
    let r = unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC) };
    if r < 0 {
        return Err(super::errno());
    }
    // SAFETY: `r` is a fresh descriptor owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(r as i32) })
}
