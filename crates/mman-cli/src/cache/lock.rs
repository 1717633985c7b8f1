//! `mman cache lock`: lock every file of a walk in memory, then hold the pages until a
//! stop signal.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Result};
use mman::cache::{self, CachedFile, Visit};

use super::holder::{block_stop_signals, daemonize, detach_stdio, PidFile};
use super::output::{human, report_skip};
use super::{add_totals, prepare, WalkArgs};

/// `mman cache lock`: lock every file, then wait for SIGTERM or SIGINT.
pub(super) fn lock(w: WalkArgs, daemon: bool, pidfile: Option<PathBuf>) -> Result<std::process::ExitCode> {
    // Locks are not inherited across fork: the process that holds them is the one that
    // takes them, so a daemon forks first, before any thread exists.
    let mut notify = if daemon { Some(daemonize()?) } else { None };
    let result = lock_and_hold(&w, pidfile.as_deref(), &mut notify);
    if let (Some(n), Err(e)) = (&notify, &result) {
        // The parent prints the report and exits 1; saying it here too would say it twice.
        let _ = rustix::io::write(n, format!("mman: {e:#}\n").as_bytes());
        std::process::exit(1);
    }
    result
}

fn lock_and_hold(
    w: &WalkArgs,
    pidfile: Option<&Path>,
    notify: &mut Option<std::os::fd::OwnedFd>,
) -> Result<std::process::ExitCode> {
    let daemon = notify.is_some();
    let signals = block_stop_signals();
    let (mut roots, opts, range) = prepare(w)?;
    let start = Instant::now();
    // First the walk, keeping paths and sizes only (not the open files: a big tree would
    // exhaust RLIMIT_NOFILE), so the limits are checked before anything is locked; then
    // each file is opened again and locked.
    let found = Mutex::new(Vec::new());
    let visit = |v: Visit<'_>| match v {
        Visit::File(f) => {
            let ps = mman::page_size() as u64;
            let n = f.pages_in(range);
            if n > 0 {
                found
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((f.path().to_path_buf(), n * ps));
            }
        }
        Visit::Skipped(e) => report_skip(&e, None),
    };
    let mut totals = cache::WalkTotals::default();
    while let Some(batch) = roots.next_batch()? {
        add_totals(&mut totals, cache::walk(&batch, &opts, &visit));
    }
    let mut skipped = totals.skipped;
    let found = found.into_inner().unwrap_or_else(|e| e.into_inner());
    let bytes: u64 = found.iter().map(|(_, b)| b).sum();
    cache::check_lock_limits(bytes, found.len() as u64)?;
    let mut held = Vec::with_capacity(found.len());
    for (path, _) in &found {
        match CachedFile::open(path).and_then(|f| f.lock(range)) {
            Ok(l) => held.push(l),
            Err(e) if e.kind() == mman::ErrorKind::ResourceLimit => return Err(e.into()),
            Err(e) => {
                skipped += 1;
                report_skip(&e, None);
            }
        }
    }
    let locked: u64 = held.iter().map(|l| l.pages()).sum();
    let ps = mman::page_size() as u64;
    let elapsed = start.elapsed().as_secs_f64();
    if held.is_empty() {
        bail!(
            "cache lock: nothing was locked ({skipped} skipped, {} files found with pages to lock)",
            found.len()
        );
    }
    let _pid = pidfile.map(PidFile::create).transpose()?;
    // --json: one JSON object, the pid of the holder in it, and nothing else on the output.
    let summary = if w.json {
        let v = serde_json::json!({
            "files": totals.files,
            "directories": totals.directories,
            "locked_pages": locked,
            "page_size": ps,
            "skipped": skipped,
            "elapsed_s": elapsed,
            "pid": std::process::id(),
        });
        format!("{}\n", serde_json::to_string_pretty(&v)?)
    } else {
        let mut text = format!(
            "           Files: {}\n     Directories: {}\n    Locked Pages: {} ({})\n",
            totals.files,
            totals.directories,
            locked,
            human(locked * ps),
        );
        if skipped > 0 {
            text += &format!("         Skipped: {skipped} (reported above)\n");
        }
        text += &format!("         Elapsed: {elapsed:.6} seconds\n");
        if daemon {
            text += &format!("holding the pages in process {}\n", std::process::id());
        } else {
            text += &format!("LOCKED: holding {locked} pages until SIGTERM or SIGINT (Ctrl-C)\n");
        }
        text
    };
    match notify.take() {
        Some(n) => {
            let _ = rustix::io::write(&n, summary.as_bytes());
            detach_stdio();
            // Closing the pipe lets the parent exit.
            drop(n);
        }
        None => {
            let mut out = crate::out::stdout();
            write!(out, "{summary}")?;
            out.flush()?;
        }
    }
    let sig = signals.wait();
    drop(held);
    if !daemon {
        errln!("mman: released the pages (signal {sig})");
    }
    Ok(std::process::ExitCode::SUCCESS)
}
