//! The course notes' parent/child program grown into a channel: the shared page becomes a
//! ring of messages. The parent makes the channel in anonymous shared memory and forks;
//! after the fork each side attaches its own end (an end attached before the fork belongs
//! to the parent, and refuses to work in the child). The parent sends a few lines and
//! closes its end; the child prints each line until it learns the sender left.
//!
//! `cargo run --example channel_fork`

use std::io::Write;
use std::process::ExitCode;

use mman::channel::Channel;
use mman::ErrorKind;

const LINES: [&str; 4] = [
    "Hello, child.",
    "This line went through a ring in shared memory:",
    "I copied it in, you copy it out.",
    "Goodbye.",
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("channel_fork: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    // MAP_SHARED | MAP_ANONYMOUS: the child created by fork shares it.
    let chan = Channel::anonymous(4096)?;
    // SAFETY: this program has one thread, so the child may run ordinary code after fork.
    match unsafe { libc::fork() } {
        0 => {
            let code = match child(&chan) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("channel_fork: child: {e}");
                    1
                }
            };
            let _ = std::io::stdout().flush();
            // SAFETY: end the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error()).into()),
        pid => {
            let sent = parent(&chan);
            if sent.is_err() {
                // The child would wait for a sender that never comes.
                // SAFETY: signal our own child.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let mut status = 0;
            // SAFETY: wait for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            let n = sent?;
            println!("parent: sent {n} lines; the child exited with status {status}");
            if status != 0 {
                return Err("the child failed".into());
            }
            Ok(())
        }
    }
}

fn parent(chan: &Channel) -> mman::Result<usize> {
    let mut tx = chan.sender()?; // attached here, after the fork: the parent's own
    for line in LINES {
        tx.send(line.as_bytes())?;
    }
    // `tx` is dropped here: the sending end closes, and the child gets Disconnected once
    // it has taken every line.
    Ok(LINES.len())
}

fn child(chan: &Channel) -> mman::Result<()> {
    let mut rx = chan.receiver()?; // attached here, after the fork: the child's own
    let mut n = 0;
    loop {
        match rx.recv() {
            Ok(line) => {
                n += 1;
                println!("child: {}", String::from_utf8_lossy(&line));
            }
            Err(e) if e.kind() == ErrorKind::Disconnected => break,
            Err(e) => return Err(e),
        }
    }
    println!("child: the parent closed the channel after {n} lines");
    Ok(())
}
