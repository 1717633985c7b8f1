//! The processes mman starts, and the rules every one of them follows. One way in,
//! [`spawn`] (or [`output`]), for every child mman starts with `Command`; [`in_child`] for
//! the ones it forks:
//!
//! * **It dies with mman.** The child asks the kernel for SIGKILL when mman dies
//!   (`PR_SET_PDEATHSIG`), then looks whether mman died before that request (`getppid`): a
//!   SIGKILL of `mman bench ipc` left `__ipc-peer idle` waiting for ever. (The death signal
//!   follows the *thread* that started the child: every child is started from the main
//!   thread, which ends last.)
//! * **It inherits nothing by accident.** Every descriptor mman opens is close-on-exec,
//!   pipes included, except what is handed over on purpose (standard streams,
//!   [`pass_fd`]): a `__channel-peer stream` that inherited its parent's ends of its own
//!   pipes never saw the end of its input when the parent died.
//! * **It starts with a clean signal mask** (mman blocks SIGINT, SIGTERM and SIGHUP for its
//!   signal thread, and a child kept them blocked: an orphan ignored everything but
//!   SIGKILL), and with SIGXFSZ at its default action (mman ignores it, to see `EFBIG`).
//! * **It is killed and reaped on every path.** [`Tracked`] is the child as a value: dropped
//!   on an error path (or any path) before it was waited for, it kills the child and reaps
//!   it; and the child is killed if mman is interrupted (see `cleanup`).
//! * **Its end is reported.** A failure while talking to a child that has died names the
//!   child and how it died ([`Tracked::check`], [`how`]: "was killed by signal 9 (SIGKILL)").
//!   A spawn that fails because this user runs RLIMIT_NPROC processes says so ([`failed`]).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;

/// In a child just made by `fork` (async-signal-safe calls only): die when the process that
/// forked it (`parent`) dies, and unblock every signal.
pub fn in_child(parent: u32) {
    // SAFETY: prctl, getppid, _exit, sigemptyset and sigprocmask are async-signal-safe, and
    // touch only this process and the set on this stack.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // Dead before the request (the child was handed to another parent): die now.
        if libc::getppid() as u32 != parent {
            libc::_exit(1);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Give the child `fd` as descriptor `target` (3 or more; the standard streams are set with
/// `Stdio`), open across `exec`: the one descriptor besides the standard streams a child
/// inherits on purpose. `fd` must stay open until the child is spawned.
pub fn pass_fd(cmd: &mut Command, fd: BorrowedFd<'_>, target: i32) {
    let src = fd.as_raw_fd();
    // SAFETY: dup2 and fcntl are async-signal-safe and touch only descriptors.
    unsafe {
        cmd.pre_exec(move || {
            let r = if src == target {
                // dup2 onto itself keeps close-on-exec: clear it.
                libc::fcntl(src, libc::F_SETFD, 0)
            } else {
                libc::dup2(src, target)
            };
            if r == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Start `cmd` under the rules of the module docs. Every child mman starts with `Command`
/// goes through this (or [`output`]).
///
/// # Errors
/// The spawn's, with the RLIMIT_NPROC hint when the limit is the reason ([`failed`]).
pub fn spawn(cmd: &mut Command) -> Result<Tracked> {
    let parent = std::process::id();
    // SAFETY: in_child and signal are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            in_child(parent);
            libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(failed)?;
    crate::cleanup::kill_on_signal(child.id());
    Ok(Tracked(Some(child)))
}

/// [`spawn`] `cmd` with its standard output and error captured, and wait for it: the
/// `Command::output` of a child that follows the rules of the module docs.
///
/// # Errors
/// The spawn's, or the wait's.
pub fn output(cmd: &mut Command) -> Result<Output> {
    Ok(spawn(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?
    .wait_with_output()?)
}

/// A child process: killed and reaped when dropped before it was waited for (so an error
/// path never leaves it running), killed if mman is interrupted, and forgotten once reaped
/// (its number may go to another process, which must not be killed).
#[derive(Debug)]
pub struct Tracked(Option<std::process::Child>);

impl Tracked {
    /// `Child::wait_with_output`, forgetting the child once it is reaped.
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        let child = self.0.take().expect("a tracked child");
        let pid = child.id();
        let out = child.wait_with_output();
        crate::cleanup::forget_child(pid);
        out
    }

    /// The child was reaped by other means (`wait4` for its resource usage): forget it,
    /// and let go of its pipes.
    pub fn reaped_elsewhere(mut self) {
        if let Some(child) = self.0.take() {
            crate::cleanup::forget_child(child.id());
        }
    }

    /// `r`, unless it failed while the child (`what`, "the pipe peer") has ended
    /// unsuccessfully: then an error that says how it ended (killed by which signal, or its
    /// exit status), `r`'s error below it; or while the child is stopped, which it then
    /// says. A failure to talk to a child is mostly its death; it is given a moment to be
    /// seen. The child is left to the caller (dropping it kills and reaps it).
    ///
    /// # Errors
    /// `r`'s, named for the child's end when it has ended.
    pub fn check<T>(&mut self, r: Result<T>, what: &str) -> Result<T> {
        let Err(e) = r else { return r };
        let Some(child) = self.0.as_mut() else {
            return Err(e);
        };
        let t0 = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if t0.elapsed() < Duration::from_millis(500) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => break None,
            }
        };
        match status {
            Some(status) => {
                crate::cleanup::forget_child(child.id());
                if status.success() {
                    return Err(e);
                }
                Err(e.context(format!("{what} (pid {}) {}", child.id(), how(status))))
            }
            None if is_stopped(child.id()) => Err(e.context(format!(
                "{what} (pid {}) is stopped (SIGSTOP, SIGTSTP or a debugger: state T)",
                child.id()
            ))),
            None => Err(e),
        }
    }
}

impl std::ops::Deref for Tracked {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        self.0.as_ref().expect("a tracked child")
    }
}

impl std::ops::DerefMut for Tracked {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("a tracked child")
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let Some(child) = self.0.as_mut() else { return };
        // `try_wait` on a child already waited for returns its status without a system
        // call; one still running is killed (its number is ours until it is reaped). An
        // error (ECHILD: reaped by other means) kills nothing: the number may be another's.
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
        crate::cleanup::forget_child(child.id());
    }
}

/// The error of a spawn (or `fork`) that failed: with a hint when the reason is a limit:
/// `fork` fails with EAGAIN when this user runs RLIMIT_NPROC processes already.
pub fn failed(e: std::io::Error) -> anyhow::Error {
    if e.raw_os_error() == Some(libc::EAGAIN) {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nproc)
            .current
            .map_or("unlimited".to_string(), |n| n.to_string());
        return anyhow::anyhow!(
            "{e} (hint: this user may run at most {soft} processes, RLIMIT_NPROC; `ulimit -u` shows and raises it)"
        );
    }
    e.into()
}

/// [`failed`], in the context of `what` ("start philosopher 3").
pub fn spawn_error(e: std::io::Error, what: String) -> anyhow::Error {
    failed(e).context(what)
}

/// How a child process ended, for an error message: "exited with status 3", "was killed by
/// signal 9 (SIGKILL)".
pub fn how(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(sig) => format!(
            "was killed by signal {sig}{}{}",
            signal_name(sig).map_or(String::new(), |n| format!(" ({n})")),
            if status.core_dumped() { ", core dumped" } else { "" }
        ),
        None => format!("exited with status {}", status.code().unwrap_or(-1)),
    }
}

/// The name of signal `sig` ("SIGKILL"), for the standard signals.
pub fn signal_name(sig: i32) -> Option<&'static str> {
    const NAMES: &[(i32, &str)] = &[
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGCHLD, "SIGCHLD"),
        (libc::SIGCONT, "SIGCONT"),
        (libc::SIGSTOP, "SIGSTOP"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGTTOU, "SIGTTOU"),
        (libc::SIGURG, "SIGURG"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGWINCH, "SIGWINCH"),
        (libc::SIGIO, "SIGIO"),
        (libc::SIGPWR, "SIGPWR"),
        (libc::SIGSYS, "SIGSYS"),
    ];
    NAMES.iter().find(|(n, _)| *n == sig).map(|(_, name)| *name)
}

/// Whether process `pid` is stopped (state `T` or `t` in `/proc/PID/stat`: SIGSTOP, SIGTSTP,
/// a debugger): alive, but it will not move until it is continued.
pub fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        // The state follows the command name, which is in parentheses and may hold any byte.
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with(['T', 't'])))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_death_is_named_with_its_signal() {
        assert_eq!(how(ExitStatus::from_raw(9)), "was killed by signal 9 (SIGKILL)");
        assert_eq!(
            how(ExitStatus::from_raw(libc::SIGSEGV | 0x80)),
            "was killed by signal 11 (SIGSEGV), core dumped"
        );
        assert_eq!(how(ExitStatus::from_raw(3 << 8)), "exited with status 3");
        assert_eq!(signal_name(libc::SIGXFSZ), Some("SIGXFSZ"));
        assert_eq!(signal_name(64), None);
    }

    #[test]
    fn a_stopped_process_is_seen_as_stopped() {
        let mut c = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = c.id();
        assert!(!is_stopped(pid));
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        let t0 = Instant::now();
        while !is_stopped(pid) && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(is_stopped(pid));
        c.kill().unwrap();
        c.wait().unwrap();
    }
}
