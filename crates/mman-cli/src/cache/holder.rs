//! The process that holds locked pages: the signals that end the hold, its pid file, and
//! detaching it as a daemon.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A pid file mman created (O_EXCL, O_NOFOLLOW), removed on drop only if the path still
/// names that same file: an existing file is never overwritten, and a file someone put in
/// its place is never removed.
pub(super) struct PidFile {
    path: PathBuf,
    id: (u64, u64),
}

impl PidFile {
    pub(super) fn create(path: &Path) -> Result<PidFile> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let what = || format!("lock --pidfile {}", path.display());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(path)
            .map_err(|e| {
                let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
                    ": the file exists, and mman never overwrites one (remove it if it is a stale pid file)"
                } else {
                    ""
                };
                anyhow::anyhow!("{}: {e}{hint}", what())
            })?;
        let m = f.metadata().with_context(what)?;
        let pid = PidFile {
            path: path.to_path_buf(),
            id: (m.dev(), m.ino()),
        };
        writeln!(f, "{}", std::process::id()).with_context(what)?;
        Ok(pid)
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// SIGTERM, SIGINT and SIGHUP, blocked in this thread (and every thread it starts) so that
/// [`StopSignals::wait`] takes them.
pub(super) struct StopSignals(libc::sigset_t);

pub(super) fn block_stop_signals() -> StopSignals {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the calls only edit it and this thread's mask.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    StopSignals(set)
}

impl StopSignals {
    pub(super) fn wait(&self) -> i32 {
        let mut sig = 0;
        loop {
            // SAFETY: a valid set and a valid out-pointer.
            if unsafe { libc::sigwait(&self.0, &mut sig) } == 0 {
                return sig;
            }
        }
    }
}

/// Fork; the parent waits for the child's report on a pipe, prints it and exits; the child
/// returns the pipe's write end, in a new session.
pub(super) fn daemonize() -> Result<std::os::fd::OwnedFd> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("lock --daemon: pipe")?;
    crate::out::stdout().flush()?;
    // SAFETY: no other thread exists yet (the walk's pool is started later), so the child
    // may do anything the parent could.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(crate::children::spawn_error(
            std::io::Error::last_os_error(),
            "lock --daemon: fork".into(),
        ));
    }
    if pid > 0 {
        drop(w);
        let mut text = String::new();
        let _ = std::fs::File::from(r).read_to_string(&mut text);
        let failed = text.is_empty() || text.starts_with("mman:");
        if failed {
            errtext!(
                "{}",
                if text.is_empty() {
                    "mman: the lock holder exited without a report\n"
                } else {
                    &text
                }
            );
            std::process::exit(1);
        }
        // Printed through the checked writer's rules, but the holder is released first if
        // the report cannot be given: a caller told "write error" (status 1) must not be
        // left with a holder it does not know of, pages locked in the background.
        let printed = if crate::out::stdout_closed() {
            Err(std::io::Error::from_raw_os_error(libc::EBADF))
        } else {
            let mut o = std::io::stdout().lock();
            o.write_all(text.as_bytes()).and_then(|()| o.flush())
        };
        if let Err(e) = printed {
            // SAFETY: kill(2) and waitpid(2) of our own child; `status` is a valid out-pointer.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
                let mut status = 0;
                while libc::waitpid(pid, &mut status, 0) == -1
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
                {}
            }
            // Dies of SIGPIPE for a reader that went away, as everywhere else.
            return Err(crate::out::write_error(e).into());
        }
        std::process::exit(0);
    }
    drop(r);
    let _ = rustix::process::setsid();
    Ok(w)
}

pub(super) fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = rustix::stdio::dup2_stdin(&null);
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
}
