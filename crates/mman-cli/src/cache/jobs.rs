//! `mman cache status|touch|evict`: one walk over the files, one visitor doing the job of
//! the subcommand on each; [`output`](super::output) prints the sums.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Result;
use mman::cache::{self, DirtyPages, Visit};

use super::output::{bar, print_entry, progress, report_skip, summary, Entry};
use super::{add_totals, prepare, WalkArgs};

/// Totals over a walk; one mutex, taken once a file.
#[derive(Default)]
pub(super) struct Sums {
    pub(super) pages: u64,
    pub(super) resident: u64,
    pub(super) unknown_files: u64,
    pub(super) unknown_pages: u64,
    pub(super) touched: u64,
    pub(super) evicted: u64,
    pub(super) stayed: u64,
    pub(super) stayed_dirty: u64,
    pub(super) stayed_writeback: u64,
    pub(super) entries: Vec<Entry>,
}

/// Which subcommand a walk does on each file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Job {
    Status,
    Touch,
    Evict { dirty: DirtyPages },
}

/// `mman cache status|touch|evict`: do `job` on every file of the walk and print the summary;
/// the status is a failure when a file was skipped or its job failed.
pub(super) fn walk_job(w: WalkArgs, job: Job) -> Result<std::process::ExitCode> {
    let (mut roots, opts, range) = prepare(&w)?;
    let start = Instant::now();
    let pb = progress(!w.json);
    let sums = Mutex::new(Sums::default());
    let write_failed: Mutex<Option<std::io::Error>> = Mutex::new(None);
    let failed = AtomicBool::new(false);
    let verbose = w.verbose;
    let threads = usize::from(w.threads.unwrap_or(0));
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
            // --threads bounds the threads a large file is dropped with too.
            Job::Evict { dirty } => f.evict_with(range, dirty, threads).map(|e| {
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
    // The list is read as it is walked, a batch at a time.
    let mut totals = cache::WalkTotals::default();
    while let Some(batch) = roots.next_batch()? {
        add_totals(&mut totals, cache::walk(&batch, &opts, &visit));
    }
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    if let Some(e) = write_failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e.into());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let s = sums.into_inner().unwrap_or_else(|e| e.into_inner());
    summary(job, &totals, &s, elapsed, w.json, verbose)?;
    Ok(if totals.skipped > 0 || failed.load(Ordering::Relaxed) {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}
