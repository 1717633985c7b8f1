//! `mman cache status|touch|evict|lock`: the jobs of vmtouch and fincore, over the library's
//! `mman::cache`.
//!
//! The arguments live here, and what they select; the rest by concept: [`jobs`] walks for
//! status, touch and evict, [`output`] prints what they found (text or JSON), [`lock`](mod@lock)
//! locks files and holds them, with the process machinery of holding (stop signals, pid
//! file, daemon) in [`holder`].

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use mman::cache::{self, DirtyPages, PageRange, WalkOptions, WalkTotals};

mod holder;
mod jobs;
mod list;
mod lock;
mod output;

use list::Roots;

use jobs::{walk_job, Job};
use lock::lock;

/// `mman cache ...`.
///
/// Each subcommand's arguments are built only when it runs (`defer`): building all of them
/// was most of what clap did at every start of `mman cache evict` (see bench/RESULTS.md).
/// So `--verbose`, whose help differs from one subcommand to the next, is a field of each.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum CacheCommand {
    /// How much of each file sits in the page cache (like vmtouch, fincore).
    Status {
        #[command(flatten)]
        walk: WalkArgs,
        /// Print each file with a bar of its resident pages.
        #[arg(short = 'v', long)]
        verbose: bool,
    },
    /// Read into the page cache what is not there (like vmtouch -t).
    Touch {
        #[command(flatten)]
        walk: WalkArgs,
        /// Print each file with the pages touched and now resident.
        #[arg(short = 'v', long)]
        verbose: bool,
    },
    /// Drop files from the page cache and report what stayed (like vmtouch -e).
    Evict {
        #[command(flatten)]
        walk: WalkArgs,
        /// Print each file with the pages evicted and the pages that stayed.
        #[arg(short = 'v', long)]
        verbose: bool,
        /// Write dirty pages back first (fdatasync), so they can be dropped too.
        #[arg(long)]
        flush: bool,
    },
    /// Lock files in memory until SIGTERM or SIGINT (like vmtouch -l).
    Lock {
        #[command(flatten)]
        walk: WalkArgs,
        /// Accepted as vmtouch does; lock prints its summary only.
        #[arg(short = 'v', long)]
        verbose: bool,
        /// Detach and hold the lock in the background.
        #[arg(long)]
        daemon: bool,
        /// Write the process id of the holder here (removed on release).
        #[arg(long, value_name = "FILE")]
        pidfile: Option<PathBuf>,
    },
}

// What every `mman cache` subcommand takes (a plain comment: a doc comment here would
// become the about text of each subcommand, as the arguments are added last).
#[derive(Args, Debug)]
pub struct WalkArgs {
    /// Files and directories (directories are walked recursively).
    #[arg(required_unless_present = "batch")]
    paths: Vec<PathBuf>,
    /// `-v`, given to the subcommand (each says what it prints).
    #[arg(skip)]
    verbose: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Follow symbolic links found in directories.
    #[arg(short = 'f', long = "follow")]
    follow: bool,
    /// Ignore files and directories whose name matches GLOB (repeatable).
    #[arg(short = 'i', long = "ignore", value_name = "GLOB", value_parser = crate::args::glob)]
    ignore: Vec<globset::Glob>,
    /// Only files whose name matches GLOB (repeatable).
    #[arg(short = 'I', long = "include", value_name = "GLOB", value_parser = crate::args::glob)]
    include: Vec<globset::Glob>,
    /// Skip files larger than SIZE (such as 500M, 4k, 1.5G).
    #[arg(short = 'm', long = "max-size", value_name = "SIZE", value_parser = crate::args::size)]
    max_size: Option<u64>,
    /// Only this byte range of each file: A-B, A- or -B (such as 4k-10M).
    #[arg(short = 'p', long = "range", value_name = "RANGE", allow_hyphen_values = true, value_parser = crate::args::range)]
    range: Option<PageRange>,
    /// Read the list of files from FILE ("-": standard input), one a line.
    #[arg(short = 'b', long = "batch", value_name = "FILE")]
    batch: Option<PathBuf>,
    /// With -b: the list is NUL-separated.
    #[arg(short = '0', requires = "batch")]
    nul: bool,
    /// Threads for the walk, 0 to 256 (default, or 0: one a core); evict also drops a file
    /// with a GiB or more resident on up to this many threads (default 8). Page-cache work is
    /// bound by the kernel, not by threads: more than a few per core only adds overhead.
    #[arg(long, value_parser = crate::args::threads)]
    threads: Option<u16>,
}

/// `mman cache ...`.
pub fn run(cmd: CacheCommand) -> Result<std::process::ExitCode> {
    match cmd {
        CacheCommand::Status { walk, verbose } => walk_job(WalkArgs { verbose, ..walk }, Job::Status),
        CacheCommand::Touch { walk, verbose } => walk_job(WalkArgs { verbose, ..walk }, Job::Touch),
        CacheCommand::Evict { walk, verbose, flush } => {
            let walk = WalkArgs { verbose, ..walk };
            let dirty = if flush {
                DirtyPages::WriteBackFirst
            } else {
                DirtyPages::Stay
            };
            walk_job(walk, Job::Evict { dirty })
        }
        CacheCommand::Lock {
            walk,
            verbose,
            daemon,
            pidfile,
        } => lock(WalkArgs { verbose, ..walk }, daemon, pidfile),
    }
}

/// The roots (a batch at a time), the options and the page range a `WalkArgs` asks for.
/// Everything the arguments alone decide was checked by the parser (a usage error).
fn prepare(w: &WalkArgs) -> Result<(Roots, WalkOptions, PageRange)> {
    let roots = Roots::new(w.paths.clone(), w.batch.as_deref(), w.nul)?;
    let globs = |pats: &[globset::Glob]| -> Result<Option<globset::GlobSet>> {
        if pats.is_empty() {
            return Ok(None);
        }
        let mut b = globset::GlobSetBuilder::new();
        for p in pats {
            b.add(p.clone());
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
    let mut opts = WalkOptions {
        follow_symlinks: w.follow,
        max_size: w.max_size,
        filter,
        ..WalkOptions::default()
    };
    if let Some(t) = w.threads {
        opts.threads = t as usize;
    }
    Ok((roots, opts, w.range.unwrap_or(PageRange::ALL)))
}

/// `a` plus the totals of one more walk.
fn add_totals(a: &mut WalkTotals, b: WalkTotals) {
    a.files += b.files;
    a.directories += b.directories;
    a.skipped += b.skipped;
}
