//! `mman cache status|touch|evict|lock`: the jobs of vmtouch and fincore, over the library's
//! `mman::cache`.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use mman::cache::{self, CachedFile, PageRange, Visit, WalkOptions};
use serde::Serialize;

/// `mman cache ...`.
#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// How much of each file sits in the page cache (like vmtouch, fincore).
    #[command(mut_arg("verbose", |a| a.help("Print each file with a bar of its resident pages")))]
    Status(WalkArgs),
    /// Read into the page cache what is not there (like vmtouch -t).
    #[command(mut_arg("verbose", |a| a.help("Print each file with the pages touched and now resident")))]
    Touch(WalkArgs),
    /// Drop files from the page cache and report what stayed (like vmtouch -e).
    #[command(mut_arg("verbose", |a| a.help("Print each file with the pages evicted and the pages that stayed")))]
    Evict {
        #[command(flatten)]
        walk: WalkArgs,
        /// Write dirty pages back first (fdatasync), so they can be dropped too.
        #[arg(long)]
        flush: bool,
    },
    /// Lock files in memory until SIGTERM or SIGINT (like vmtouch -l).
    #[command(mut_arg("verbose", |a| a.help("Accepted as vmtouch does; lock prints its summary only")))]
    Lock {
        #[command(flatten)]
        walk: WalkArgs,
        /// Detach and hold the lock in the background.
        #[arg(long)]
        daemon: bool,
        /// Write the process id of the holder here (removed on release).
        #[arg(long, value_name = "FILE")]
        pidfile: Option<PathBuf>,
    },
}

/// What every `mman cache` subcommand takes.
#[derive(Args, Debug)]
pub struct WalkArgs {
    /// Files and directories (directories are walked recursively).
    paths: Vec<PathBuf>,
    /// Print each file (what it shows depends on the subcommand).
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Follow symbolic links found in directories.
    #[arg(short = 'f', long = "follow")]
    follow: bool,
    /// Ignore files and directories whose name matches GLOB (repeatable).
    #[arg(short = 'i', long = "ignore", value_name = "GLOB")]
    ignore: Vec<String>,
    /// Only files whose name matches GLOB (repeatable).
    #[arg(short = 'I', long = "include", value_name = "GLOB")]
    include: Vec<String>,
    /// Skip files larger than SIZE (such as 500M, 4k, 1.5G).
    #[arg(short = 'm', long = "max-size", value_name = "SIZE", value_parser = crate::args::size)]
    max_size: Option<u64>,
    /// Only this byte range of each file: A-B, A- or -B (such as 4k-10M).
    #[arg(short = 'p', long = "range", value_name = "RANGE")]
    range: Option<String>,
    /// Read the list of files from FILE ("-": standard input), one a line.
    #[arg(short = 'b', long = "batch", value_name = "FILE")]
    batch: Option<PathBuf>,
    /// With -b: the list is NUL-separated.
    #[arg(short = '0', requires = "batch")]
    nul: bool,
    /// Threads for the walk, 0 to 256 (default, or 0: one a core). Page-cache work is
    /// bound by the kernel, not by threads: more than a few per core only adds overhead.
    #[arg(long, value_parser = clap::value_parser!(u16).range(0..=256))]
    threads: Option<u16>,
}

#[derive(Serialize, Default)]
struct Entry {
    /// The path as text; a name that is not UTF-8 shows U+FFFD here, and its exact bytes in
    /// `path_bytes`.
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_bytes: Option<Vec<u8>>,
    size: u64,
    pages: u64,
    resident_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dirty_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    writeback_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    evicted_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recently_evicted_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    touched_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stayed_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    locked_pages: Option<u64>,
    #[serde(skip)]
    bar: Option<String>,
}

/// Totals over a walk; one mutex, taken once a file.
#[derive(Default)]
struct Sums {
    pages: u64,
    resident: u64,
    unknown_files: u64,
    unknown_pages: u64,
    touched: u64,
    evicted: u64,
    stayed: u64,
    stayed_dirty: u64,
    stayed_writeback: u64,
    entries: Vec<Entry>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Job {
    Status,
    Touch,
    Evict { flush: bool },
}

/// `mman cache ...`.
pub fn run(cmd: CacheCommand) -> Result<std::process::ExitCode> {
    match cmd {
        CacheCommand::Status(w) => walk_job(w, Job::Status),
        CacheCommand::Touch(w) => walk_job(w, Job::Touch),
        CacheCommand::Evict { walk, flush } => walk_job(walk, Job::Evict { flush }),
        CacheCommand::Lock {
            walk,
            daemon,
            pidfile,
        } => lock(walk, daemon, pidfile),
    }
}

/// The roots, the options and the page range a `WalkArgs` asks for.
fn prepare(w: &WalkArgs) -> Result<(Vec<PathBuf>, WalkOptions, PageRange)> {
    let mut roots = w.paths.clone();
    if let Some(list) = &w.batch {
        let mut text = Vec::new();
        if list.as_os_str() == "-" {
            std::io::stdin().lock().read_to_end(&mut text)?;
        } else {
            text = std::fs::read(list).with_context(|| format!("read the file list {}", list.display()))?;
        }
        let sep = if w.nul { b'\0' } else { b'\n' };
        for item in text.split(|&b| b == sep).filter(|s| !s.is_empty()) {
            roots.push(PathBuf::from(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(item),
            ));
        }
    }
    if roots.is_empty() {
        bail!("no files or directories given (name them, or -b FILE for a list)");
    }
    let globs = |pats: &[String]| -> Result<Option<globset::GlobSet>> {
        if pats.is_empty() {
            return Ok(None);
        }
        let mut b = globset::GlobSetBuilder::new();
        for p in pats {
            b.add(globset::Glob::new(p).with_context(|| format!("bad pattern {p:?}"))?);
        }
        Ok(Some(b.build()?))
    };
    let ignore = globs(&w.ignore)?;
    let include = globs(&w.include)?;
    let filter: Option<cache::WalkFilter> = if ignore.is_none() && include.is_none() {
        None
    } else {
        Some(Box::new(move |p: &Path, is_dir: bool| {
            let name = p.file_name().map(Path::new).unwrap_or(p);
            if ignore.as_ref().is_some_and(|g| g.is_match(name)) {
                return false;
            }
            is_dir || include.as_ref().is_none_or(|g| g.is_match(name))
        }))
    };
    let max_size = w.max_size;
    let range = match &w.range {
        None => PageRange::ALL,
        Some(r) => {
            let (a, b) = r
                .split_once('-')
                .with_context(|| format!("bad range {r:?}: expected A-B, A- or -B"))?;
            let a = if a.is_empty() {
                0
            } else {
                crate::args::size(a).map_err(anyhow::Error::msg)?
            };
            let b = if b.is_empty() {
                None
            } else {
                Some(crate::args::size(b).map_err(anyhow::Error::msg)?)
            };
            if b.is_some_and(|b| b < a) {
                bail!("bad range {r:?}: the end comes before the start");
            }
            PageRange::bytes(a, b)
        }
    };
    let mut opts = WalkOptions {
        follow_symlinks: w.follow,
        max_size,
        filter,
        ..WalkOptions::default()
    };
    if let Some(t) = w.threads {
        opts.threads = t as usize;
    }
    Ok((roots, opts, range))
}

fn progress(enabled: bool) -> Option<indicatif::ProgressBar> {
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} files {msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(pb)
}

fn report_skip(e: &mman::Error, pb: Option<&indicatif::ProgressBar>) {
    let line = format!("mman: {e}");
    match pb {
        Some(pb) => pb.println(line),
        None => eprintln!("{line}"),
    }
}

const BAR: usize = 60;

fn bar(f: &CachedFile, range: PageRange) -> Option<String> {
    let buckets = f.buckets(range, BAR).ok()??;
    let mut s = String::with_capacity(BAR + 2);
    s.push('[');
    for (r, n) in buckets {
        s.push(if n == 0 || r == 0 {
            ' '
        } else if r == n {
            'O'
        } else {
            'o'
        });
    }
    s.push(']');
    Some(s)
}

fn walk_job(w: WalkArgs, job: Job) -> Result<std::process::ExitCode> {
    let (roots, opts, range) = prepare(&w)?;
    let start = Instant::now();
    let pb = progress(!w.json);
    let sums = Mutex::new(Sums::default());
    let write_failed: Mutex<Option<std::io::Error>> = Mutex::new(None);
    let failed = AtomicBool::new(false);
    let verbose = w.verbose;
    let visit = |v: Visit<'_>| {
        let f = match v {
            Visit::File(f) => f,
            Visit::Skipped(e) => {
                report_skip(&e, pb.as_ref());
                return;
            }
        };
        let mut entry = Entry {
            path: f.path().display().to_string(),
            path_bytes: f
                .path()
                .to_str()
                .is_none()
                .then(|| f.path().as_os_str().as_encoded_bytes().to_vec()),
            size: f.size(),
            ..Entry::default()
        };
        let status = match job {
            Job::Status => f.status(range),
            Job::Touch => f.touch(range).map(|t| {
                entry.touched_pages = Some(t.touched);
                t.after
            }),
            Job::Evict { flush } => f.evict(range, flush).map(|e| {
                entry.evicted_pages = e.evicted();
                entry.stayed_pages = e.after.resident;
                e.after
            }),
        };
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                report_skip(&e, pb.as_ref());
                return;
            }
        };
        if verbose && job == Job::Status && !w.json {
            entry.bar = bar(f, range);
        }
        entry.pages = status.pages;
        entry.resident_pages = status.resident;
        entry.unknown_reason = status.unknown.clone();
        if job == Job::Status {
            entry.dirty_pages = status.dirty;
            entry.writeback_pages = status.writeback;
            entry.evicted_pages = status.evicted;
            entry.recently_evicted_pages = status.recently_evicted;
        }
        let mut s = sums.lock().unwrap_or_else(|e| e.into_inner());
        s.pages += status.pages;
        match status.resident {
            Some(r) => s.resident += r,
            None => {
                s.unknown_files += 1;
                s.unknown_pages += status.pages;
            }
        }
        s.touched += entry.touched_pages.unwrap_or(0);
        if let Job::Evict { .. } = job {
            s.evicted += entry.evicted_pages.unwrap_or(0);
            s.stayed += status.resident.unwrap_or(0);
            s.stayed_dirty += status.dirty.unwrap_or(0);
            s.stayed_writeback += status.writeback.unwrap_or(0);
        }
        if verbose {
            if w.json {
                s.entries.push(entry);
            } else {
                drop(s);
                if let Err(e) = print_entry(&entry, job, pb.as_ref()) {
                    // The walk goes on in other threads; the first write error is reported.
                    let mut first = write_failed.lock().unwrap_or_else(|p| p.into_inner());
                    first.get_or_insert(e);
                }
            }
        }
        if let Some(pb) = &pb {
            pb.inc(1);
        }
    };
    let totals = cache::walk(&roots, &opts, &visit);
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    if let Some(e) = write_failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e.into());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let s = sums.into_inner().unwrap_or_else(|e| e.into_inner());
    let ps = mman::page_size() as u64;
    let mut out = crate::out::stdout();
    if w.json {
        let mut v = serde_json::json!({
            "files": totals.files,
            "directories": totals.directories,
            "resident_pages": s.resident,
            "total_pages": s.pages,
            "page_size": ps,
            "elapsed_s": elapsed,
            "unknown_files": s.unknown_files,
            "unknown_pages": s.unknown_pages,
            "skipped": totals.skipped,
        });
        match job {
            Job::Touch => v["touched_pages"] = s.touched.into(),
            Job::Evict { .. } => {
                v["evicted_pages"] = s.evicted.into();
                v["stayed_pages"] = s.stayed.into();
                v["stayed_dirty_pages"] = s.stayed_dirty.into();
                v["stayed_writeback_pages"] = s.stayed_writeback.into();
            }
            Job::Status => {}
        }
        if verbose {
            v["entries"] = serde_json::to_value(&s.entries)?;
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        let known = s.pages - s.unknown_pages;
        let pct = if known == 0 {
            100.0
        } else {
            s.resident as f64 * 100.0 / known as f64
        };
        writeln!(out, "           Files: {}", totals.files)?;
        writeln!(out, "     Directories: {}", totals.directories)?;
        match job {
            Job::Status if known == 0 && s.unknown_files > 0 => {
                writeln!(out, "  Resident Pages: unknown (see below)")?
            }
            Job::Status => writeln!(
                out,
                "  Resident Pages: {}/{}  {}/{}  {:.3}%",
                s.resident,
                known,
                cache::human(s.resident * ps),
                cache::human(known * ps),
                pct
            )?,
            Job::Touch => {
                writeln!(
                    out,
                    "   Touched Pages: {} ({})",
                    s.touched,
                    cache::human(s.touched * ps)
                )?;
                writeln!(out, "  Resident Pages: {}/{}  {:.3}%", s.resident, known, pct)?;
            }
            Job::Evict { .. } => {
                writeln!(
                    out,
                    "   Evicted Pages: {} ({})",
                    s.evicted,
                    cache::human(s.evicted * ps)
                )?;
                writeln!(
                    out,
                    "    Stayed Pages: {} (dirty {}, under writeback {}{})",
                    s.stayed,
                    s.stayed_dirty,
                    s.stayed_writeback,
                    if s.stayed > s.stayed_dirty + s.stayed_writeback {
                        "; the rest mapped or locked by a process"
                    } else {
                        ""
                    }
                )?;
            }
        }
        if s.unknown_files > 0 {
            writeln!(
                out,
                "         Unknown: {} files, {} pages: the kernel does not report their residency to this user (not the owner, no write permission); run as the owner or root",
                s.unknown_files, s.unknown_pages
            )?;
        }
        if totals.skipped > 0 {
            writeln!(out, "         Skipped: {} (reported above)", totals.skipped)?;
        }
        writeln!(out, "         Elapsed: {elapsed:.6} seconds")?;
    }
    out.flush()?;
    Ok(if totals.skipped > 0 || failed.load(Ordering::Relaxed) {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}

fn print_entry(e: &Entry, job: Job, pb: Option<&indicatif::ProgressBar>) -> std::io::Result<()> {
    let line = match (job, e.resident_pages) {
        (Job::Status, Some(r)) => format!(
            "{}\n{} {}/{}",
            e.path,
            e.bar.clone().unwrap_or_default(),
            r,
            e.pages
        ),
        (Job::Status, None) => format!(
            "{}\n[{}] unknown/{} ({})",
            e.path,
            "?".repeat(BAR),
            e.pages,
            e.unknown_reason.as_deref().unwrap_or("")
        ),
        (Job::Touch, r) => format!(
            "{}: touched {} of {} pages, resident {}",
            e.path,
            e.touched_pages.unwrap_or(0),
            e.pages,
            r.map_or("unknown".to_string(), |r| r.to_string())
        ),
        (Job::Evict { .. }, r) => format!(
            "{}: evicted {}, stayed {} of {} pages",
            e.path,
            e.evicted_pages.map_or("unknown".to_string(), |r| r.to_string()),
            r.map_or("unknown".to_string(), |r| r.to_string()),
            e.pages
        ),
    };
    match pb {
        Some(pb) => pb.println(line),
        None => outln!("{line}")?,
    }
    Ok(())
}

/// `mman cache lock`: lock every file, then wait for SIGTERM or SIGINT.
fn lock(w: WalkArgs, daemon: bool, pidfile: Option<PathBuf>) -> Result<std::process::ExitCode> {
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

/// A pid file mman created (O_EXCL, O_NOFOLLOW), removed on drop only if the path still
/// names that same file: an existing file is never overwritten, and a file someone put in
/// its place is never removed.
struct PidFile {
    path: PathBuf,
    id: (u64, u64),
}

impl PidFile {
    fn create(path: &Path) -> Result<PidFile> {
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

fn lock_and_hold(
    w: &WalkArgs,
    pidfile: Option<&Path>,
    notify: &mut Option<std::os::fd::OwnedFd>,
) -> Result<std::process::ExitCode> {
    let daemon = notify.is_some();
    let signals = block_stop_signals();
    let (roots, opts, range) = prepare(w)?;
    let start = Instant::now();
    // First the walk, keeping paths and sizes only (not the open files: a big tree would
    // exhaust RLIMIT_NOFILE), so the limits are checked before anything is locked; then
    // each file is opened again and locked.
    let found = Mutex::new(Vec::new());
    let totals = cache::walk(&roots, &opts, &|v| match v {
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
    });
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
    let mut summary = format!(
        "           Files: {}\n     Directories: {}\n    Locked Pages: {} ({})\n",
        totals.files,
        totals.directories,
        locked,
        cache::human(locked * ps),
    );
    if skipped > 0 {
        summary += &format!("         Skipped: {skipped} (reported above)\n");
    }
    summary += &format!("         Elapsed: {:.6} seconds\n", start.elapsed().as_secs_f64());
    if held.is_empty() {
        bail!(
            "cache lock: nothing was locked ({skipped} skipped, {} files found with pages to lock)",
            found.len()
        );
    }
    let _pid = pidfile.map(PidFile::create).transpose()?;
    match notify.take() {
        Some(n) => {
            let _ = rustix::io::write(&n, summary.as_bytes());
            let _ = rustix::io::write(
                &n,
                format!("holding the pages in process {}\n", std::process::id()).as_bytes(),
            );
            detach_stdio();
            // Closing the pipe lets the parent exit.
            drop(n);
        }
        None => {
            let mut out = crate::out::stdout();
            write!(out, "{summary}")?;
            writeln!(
                out,
                "LOCKED: holding {} pages until SIGTERM or SIGINT (Ctrl-C)",
                locked
            )?;
            out.flush()?;
        }
    }
    let sig = signals.wait();
    drop(held);
    if !daemon {
        eprintln!("mman: released the pages (signal {sig})");
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// SIGTERM, SIGINT and SIGHUP, blocked in this thread (and every thread it starts) so that
/// [`StopSignals::wait`] takes them.
struct StopSignals(libc::sigset_t);

fn block_stop_signals() -> StopSignals {
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
    fn wait(&self) -> i32 {
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
fn daemonize() -> Result<std::os::fd::OwnedFd> {
    let (r, w) = rustix::pipe::pipe().context("lock --daemon: pipe")?;
    crate::out::stdout().flush()?;
    // SAFETY: no other thread exists yet (the walk's pool is started later), so the child
    // may do anything the parent could.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("lock --daemon: fork: {}", std::io::Error::last_os_error());
    }
    if pid > 0 {
        drop(w);
        let mut text = String::new();
        let _ = std::fs::File::from(r).read_to_string(&mut text);
        let failed = text.is_empty() || text.starts_with("mman:");
        if failed {
            eprint!(
                "{}",
                if text.is_empty() {
                    "mman: the lock holder exited without a report\n"
                } else {
                    &text
                }
            );
            std::process::exit(1);
        }
        out!("{text}")?;
        crate::out::stdout().flush()?;
        std::process::exit(0);
    }
    drop(r);
    let _ = rustix::process::setsid();
    Ok(w)
}

fn detach_stdio() {
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
