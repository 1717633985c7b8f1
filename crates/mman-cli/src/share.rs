//! `mman share` and `mman semaphore`: the course notes' parent/child programs on memory
//! shared between processes, and the fork helper they use.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use clap::Args;
use mman::sync::{place, Semaphore};
use mman::{MapOptions, Mapping};

// Arguments of `mman share` (a plain comment: as a doc comment it would replace the
// subcommand's about text, the arguments being added last, see `Command` in main.rs).
#[derive(Args, Debug)]
pub struct ShareArgs {
    /// Map the page MAP_PRIVATE: the child's writes go to its own copy.
    #[arg(long)]
    private: bool,
}

/// Fork; the child runs `child` and exits with its status, never returning.
///
/// Only called while the CLI's one other thread is the signal thread, parked in sigwait and
/// holding no lock (see `cleanup::handle_signals`), so the child may run ordinary Rust code.
fn fork_child(child: impl FnOnce() -> i32) -> Result<libc::pid_t> {
    let parent = std::process::id();
    // SAFETY: the only other thread holds no lock while it waits in sigwait, so the child
    // inherits no lock held by another thread.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(crate::cleanup::spawn_error(
            std::io::Error::last_os_error(),
            "fork".into(),
        )),
        0 => {
            // The child has no signal thread: Ctrl-C must act on it directly (a clean mask);
            // and it dies with its parent.
            crate::children::in_child(parent);
            let code = child();
            // SAFETY: _exit ends the child without running the parent's atexit handlers or
            // flushing its inherited stdio buffers twice.
            unsafe { libc::_exit(code) }
        }
        pid => {
            crate::cleanup::kill_on_signal(pid as u32);
            Ok(pid)
        }
    }
}

/// Wait for child `pid` (`block`), or only look whether it has ended; its status once it has.
fn reap(pid: libc::pid_t, block: bool) -> Result<Option<std::process::ExitStatus>> {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, if block { 0 } else { libc::WNOHANG }) };
        if r == pid {
            crate::cleanup::forget_child(pid as u32);
            return Ok(Some(std::process::ExitStatus::from_raw(status)));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e).context(format!("waitpid {pid}"));
        }
    }
}

/// Wait for child `pid`; an error unless it exited with status 0.
fn wait_for(pid: libc::pid_t, what: &str) -> Result<()> {
    let status = reap(pid, true)?.expect("a blocking waitpid returns the child's status");
    if !status.success() {
        anyhow::bail!("{what}: the child process {}", crate::cleanup::how(status));
    }
    Ok(())
}

fn numbers(map: &Mapping, base: usize) -> Result<String> {
    let mut s = String::new();
    for i in 0..10 {
        let v: i32 = map.load(base + 4 * i)?;
        let _ = write!(s, "{}{v}", if i > 0 { " " } else { "" });
    }
    Ok(s)
}

/// `mman share [--private]`: the course notes' parent/child program.
pub fn share(args: ShareArgs) -> Result<()> {
    let page = mman::page_size();
    let mut opts = MapOptions::new();
    opts.len(page).read_write();
    if args.private {
        opts.private();
    } else {
        opts.shared();
    }
    let map = opts.map_anonymous()?;
    outln!("Memory mapped at {:p}", map.as_ptr())?;
    let pid = fork_child(|| {
        for i in 0..10 {
            if map.store(4 * i, &(i as i32)).is_err() {
                return 1;
            }
        }
        0
    })?;
    wait_for(pid, "share")?;
    outln!("{}", numbers(&map, 0)?)?;
    Ok(())
}

/// `mman semaphore`: the course notes' program with a process-shared semaphore in the mapping.
pub fn semaphore() -> Result<()> {
    let page = mman::page_size();
    let map = MapOptions::new()
        .len(page)
        .read_write()
        .shared()
        .map_anonymous()?;
    let sem: &Semaphore = place(&map, 0)?;
    let base = std::mem::size_of::<Semaphore>();
    let pid = fork_child(|| {
        for i in 0..10 {
            if map.store(base + 4 * i, &(i as i32)).is_err() {
                return 1;
            }
        }
        if sem.post().is_err() {
            return 1;
        }
        0
    })?;
    // No wait() for the child before reading: the semaphore is the only hand-off. But a
    // child that ends without posting (killed, or failing) would leave a plain wait() here
    // for ever, so the child is looked at between waits of 100 ms.
    while !sem.wait_timeout(std::time::Duration::from_millis(100)) {
        if let Some(status) = reap(pid, false)? {
            if sem.try_wait() {
                break; // it posted just before it ended
            }
            anyhow::bail!(
                "semaphore: the child process {} before it posted the semaphore: there is nothing to read",
                crate::cleanup::how(status)
            );
        }
    }
    outln!("{}", numbers(&map, base)?)?;
    if let Some(status) = reap(pid, true)?.filter(|s| !s.success()) {
        anyhow::bail!("semaphore: the child process {}", crate::cleanup::how(status));
    }
    Ok(())
}
