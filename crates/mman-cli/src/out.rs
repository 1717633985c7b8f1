//! Standard output and input, checked, the way GNU tools treat them.
//!
//! * Every write to standard output goes through [`stdout`] (or the `outln!`
//!   macro): a failed write is an error, `mman: write error: <reason>`, exit 1 — never a
//!   panic as `println!` gives on `/dev/full`.
//! * A reader that went away (`| head`): mman dies of SIGPIPE, as GNU tools do, so a shell
//!   with `set -o pipefail` sees status 141.
//! * A standard stream closed when mman started (`>&-`, `<&-`) is detected. Rust's runtime
//!   reopens closed descriptors 0-2 on `/dev/null` before `main`, which would make output
//!   vanish without a word; a constructor that runs before the runtime records which were
//!   closed, and writing to a closed stdout (or reading a closed stdin) is an error with
//!   `Bad file descriptor`.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU8, Ordering};

/// Bit `fd` is set when descriptor `fd` (0, 1, 2) was closed at exec.
static CLOSED: AtomicU8 = AtomicU8::new(0);

#[cfg(target_os = "linux")]
extern "C" fn probe_standard_streams() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only reads the descriptor's flags; an unused number is EBADF.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            CLOSED.fetch_or(1 << fd, Ordering::Relaxed);
        }
    }
}

// Runs from the ELF constructors, before Rust's runtime initialisation reopens closed
// standard descriptors on /dev/null.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static PROBE: extern "C" fn() = probe_standard_streams;

/// Whether standard input was closed when mman started.
pub fn stdin_closed() -> bool {
    CLOSED.load(Ordering::Relaxed) & 1 != 0
}

/// Whether standard output was closed when mman started.
pub fn stdout_closed() -> bool {
    CLOSED.load(Ordering::Relaxed) & 2 != 0
}

/// The error for standard input closed at start: what GNU cat says for `cat <&-`.
pub fn stdin_closed_error() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

/// A write error on standard output: `write error: <reason>`, the kind kept.
#[derive(Debug)]
struct WriteError(io::Error);

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.to_string();
        let reason = s.find(" (os error").map_or(s.as_str(), |i| &s[..i]);
        write!(f, "write error: {reason}")
    }
}

impl std::error::Error for WriteError {}

/// Turn a failed write to standard output into the error mman reports, or die of SIGPIPE
/// when the reader is gone.
pub fn write_error(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        die_of_sigpipe();
    }
    io::Error::new(e.kind(), WriteError(e))
}

/// The OS error code of `e`, a write error made by [`write_error`] included (its message
/// drops the code).
pub fn raw_os_error(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
        .or_else(|| e.get_ref()?.downcast_ref::<WriteError>()?.0.raw_os_error())
}

/// End the process as GNU tools do when their reader has gone: killed by SIGPIPE (Rust
/// ignores SIGPIPE, so the default action is restored first).
pub fn die_of_sigpipe() -> ! {
    crate::cleanup::run();
    // SAFETY: restoring a signal's default action and raising it; no Rust state is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // Only if SIGPIPE is blocked: the status a shell would report.
    std::process::exit(128 + libc::SIGPIPE)
}

/// Standard output, locked, with every failure checked (see the module docs).
pub struct Stdout(io::StdoutLock<'static>);

/// Standard output for writing.
pub fn stdout() -> Stdout {
    Stdout(io::stdout().lock())
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if stdout_closed() {
            return Err(write_error(io::Error::from_raw_os_error(libc::EBADF)));
        }
        self.0.write(buf).map_err(write_error)
    }
    fn flush(&mut self) -> io::Result<()> {
        if stdout_closed() {
            return Ok(());
        }
        self.0.flush().map_err(write_error)
    }
    /// Formatted first, then written whole: one write(2) for a line. (Formatting straight
    /// into the line-buffered stdout writes the text, then the newline: two system calls.)
    fn write_fmt(&mut self, args: std::fmt::Arguments<'_>) -> io::Result<()> {
        match args.as_str() {
            Some(s) => self.write_all(s.as_bytes()),
            None => self.write_all(std::fmt::format(args).as_bytes()),
        }
    }
}

/// `println!` to standard output, checked: evaluates to `std::io::Result<()>`.
macro_rules! outln {
    () => {
        std::io::Write::write_all(&mut $crate::out::stdout(), b"\n")
    };
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(&mut $crate::out::stdout(), format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// A diagnostic to standard error, as GNU tools write theirs: one write of the whole
/// message, and a failure to write it (stderr on a full disk, a closed pipe) ignored rather
/// than a panic, so the exit status stays the one the error earned.
pub fn diagnostic(args: std::fmt::Arguments<'_>) {
    let text = std::fmt::format(args);
    let _ = io::Write::write_all(&mut io::stderr().lock(), text.as_bytes());
}

/// A one-line diagnostic (see [`diagnostic`]), made terminal-safe: a file name can hold a
/// newline or an escape sequence, and whoever named the file must not be able to forge
/// lines of mman's output or drive the user's terminal (see [`terminal_safe`]).
pub fn diagnostic_line(args: std::fmt::Arguments<'_>) {
    diagnostic(format_args!("{}\n", terminal_safe(&std::fmt::format(args))));
}

/// `text` with its control characters escaped (`\n`, `\t`, `\r`, `\e`, else `\xNN` or
/// `\u{NN}` for the C1 controls): what a file name may hold, shown as GNU tools quote it,
/// unambiguously and harmlessly.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    escaped(text, false)
}

/// A name (a path, an object's name) as printed in mman's output: [`terminal_safe`], and
/// its backslashes doubled, so that a name holding a backslash and an `n` is told from one
/// holding a newline. (Diagnostics keep their backslashes: they quote strings with `{:?}`,
/// whose escapes must not be doubled.)
pub fn name_safe(text: &str) -> std::borrow::Cow<'_, str> {
    escaped(text, true)
}

fn escaped(text: &str, backslashes: bool) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() || (backslashes && c == '\\')) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' if backslashes => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{1b}' => out.push_str("\\e"),
            c if (c as u32) < 0x80 && c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `eprintln!` that never panics, for one line (see [`diagnostic_line`]).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::out::diagnostic_line(format_args!($($arg)*))
    };
}

/// `eprint!` that never panics (see [`diagnostic`]).
macro_rules! errtext {
    ($($arg:tt)*) => {
        $crate::out::diagnostic(format_args!($($arg)*))
    };
}
