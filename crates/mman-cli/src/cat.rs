//! `mman cat`: the course notes' mmap cat, grown up. Byte-for-byte GNU cat's output and exit status.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, ValueEnum};
use mman::transfer::{Method, Side, Sink, Transfer};

// Arguments of `mman cat` (a plain comment: as a doc comment it would replace the
// subcommand's about text, the arguments being added last, see `Command` in main.rs).
#[derive(Args, Debug)]
pub struct CatArgs {
    /// How to move the bytes: auto picks splice into a pipe, copy_file_range into a file,
    /// read() elsewhere.
    #[arg(long, value_enum, default_value_t = Via::Auto)]
    via: Via,
    /// After the output, print to stderr the method, bytes, time, GiB/s, page faults and
    /// system calls.
    #[arg(long)]
    stats: bool,
    /// Files to print; `-` or none for standard input. (Paths, not strings: a name need not
    /// be UTF-8, as cat's need not.)
    files: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Via {
    Auto,
    Map,
    Vmsplice,
    Splice,
    Read,
    #[value(name = "copy_file_range")]
    CopyFileRange,
}

impl From<Via> for Method {
    fn from(v: Via) -> Method {
        match v {
            Via::Auto => Method::Auto,
            Via::Map => Method::Map,
            Via::Vmsplice => Method::Vmsplice,
            Via::Splice => Method::Splice,
            Via::Read => Method::Read,
            Via::CopyFileRange => Method::CopyFileRange,
        }
    }
}

/// The reason part of an OS error, as cat prints it ("No such file or directory").
fn reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

pub fn run(args: CatArgs) -> ExitCode {
    let stdout = std::io::stdout();
    let out = stdout.as_fd();
    let mut sink = Sink::new(out);
    let method: Method = args.via.into();
    let files = if args.files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        args.files
    };
    if crate::out::stdout_closed() && !all_empty_files(&files) {
        // Rust reopened the closed descriptor on /dev/null: writing would lose everything.
        errln!("mman: cat: write error: Bad file descriptor");
        return ExitCode::FAILURE;
    }
    let before = mman::Usage::now();
    let t0 = Instant::now();
    let mut total = Transfer::default();
    let mut failed = false;
    for name in &files {
        let shown = name.display();
        let result = if name.as_os_str() == "-" {
            if crate::out::stdin_closed() {
                errln!("mman: cat: -: {}", reason(&crate::out::stdin_closed_error()));
                failed = true;
                continue;
            }
            let stdin = std::io::stdin();
            sink.copy_from(stdin.as_fd(), Path::new("-"), method)
        } else {
            match std::fs::File::open(name) {
                Ok(f) => sink.copy_from(f.as_fd(), name, method),
                Err(e) => {
                    errln!("mman: cat: {shown}: {}", reason(&e));
                    failed = true;
                    continue;
                }
            }
        };
        match result {
            Ok(t) => {
                total.bytes += t.bytes;
                total.syscalls += t.syscalls;
                for m in t.methods {
                    if !total.methods.contains(&m) {
                        total.methods.push(m);
                    }
                }
            }
            // The reader is gone: end as GNU cat does, killed by SIGPIPE.
            Err(e) if e.is_broken_pipe() => crate::out::die_of_sigpipe(),
            Err(e) if e.side == Side::Output => {
                let why = e
                    .error
                    .os_error()
                    .map(reason)
                    .unwrap_or_else(|| e.error.to_string());
                errln!("mman: cat: write error: {why}");
                return ExitCode::FAILURE;
            }
            Err(e) if e.error.truncation().is_some() => {
                let (was, now) = e.error.truncation().unwrap_or_default();
                errln!("mman: cat: {shown}: file shrank from {was} to {now} bytes while reading");
                failed = true;
            }
            Err(e) => {
                let why = match e.error.os_error() {
                    Some(os) => reason(os),
                    None => e
                        .error
                        .to_string()
                        .rsplit(": ")
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                };
                errln!("mman: cat: {shown}: {why}");
                failed = true;
            }
        }
    }
    if args.stats {
        print_stats(
            &total,
            t0.elapsed().as_secs_f64(),
            &mman::Usage::now().since(&before),
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Whether standard output is /dev/null (character device 1:3).
fn stdout_is_dev_null() -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::metadata("/dev/stdout")
        .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 3))
}

/// Whether every input is a regular file that is empty now: with those, a closed standard
/// output loses nothing (GNU cat exits 0 then too).
fn all_empty_files(files: &[PathBuf]) -> bool {
    files
        .iter()
        .all(|f| f.as_os_str() != "-" && std::fs::metadata(f).is_ok_and(|m| m.is_file() && m.len() == 0))
}

fn print_stats(t: &Transfer, secs: f64, u: &mman::Usage) {
    let methods: Vec<&str> = t.methods.iter().map(|m| m.name()).collect();
    let method = if methods.is_empty() {
        "none".to_string()
    } else {
        methods.join("+")
    };
    let gib = t.bytes as f64 / (1u64 << 30) as f64;
    // /dev/null takes write() without reading the buffer: from a mapping, no page is even
    // faulted in, and the rate measures no copy at all.
    let discard = if stdout_is_dev_null() {
        ", into /dev/null, which discards without reading: no data was copied"
    } else {
        ""
    };
    let rate = if secs > 0.0 { gib / secs } else { 0.0 };
    let _ = writeln!(
        std::io::stderr(),
        "mman cat: method {method}, {} bytes in {secs:.3} s ({rate:.2} GiB/s){discard}; \
         {} minor + {} major page faults; {} syscalls; cpu {:.3} s user + {:.3} s sys",
        t.bytes,
        u.minor_faults,
        u.major_faults,
        t.syscalls,
        u.user_seconds,
        u.system_seconds
    );
}
