//! `mman tour`: the course notes' ideas, one short section each, with the kernel's numbers.
//!
//! Each section is a function in [`SECTIONS`]; later features add theirs to the list. The
//! sections live in the submodules, grouped by topic; [`child`] runs the processes they
//! start.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use mman::{MapOptions, Protection};

mod calls;
mod channel;
mod files;
mod performance;
mod processes;
mod safety;

// Arguments of `mman tour` (a plain comment: as a doc comment it would replace the
// subcommand's about text, the arguments being added last, see `Command` in main.rs).
#[derive(Args, Debug)]
pub struct TourArgs {
    /// Run only this section; all when omitted. The sections: 1 mapping a file; 2
    /// MAP_PRIVATE vs MAP_SHARED; 3 mprotect; 4 mlock and mlockall; 5 msync; 6 when mmap
    /// pays; 7 parent and child sharing memory; 8 a semaphore in the mapping; 9 two
    /// unrelated processes; 10 dining philosophers; 11 a truncated file survived; 12 guard
    /// pages and secrets; 13 persistent variables; 14 the page cache and our own mappings;
    /// 15 parent and child talking through a channel.
    #[arg(long, value_parser = section)]
    section: Option<usize>,
}

struct Tour {
    dir: tempfile::TempDir,
    exe: PathBuf,
}

type Section = (&'static str, fn(&Tour) -> Result<()>);

const SECTIONS: &[Section] = &[
    ("Mapping a file and reading it", calls::map_a_file),
    (
        "MAP_PRIVATE copy-on-write vs MAP_SHARED",
        calls::private_vs_shared,
    ),
    ("mprotect: a write to a read-only page", calls::protection),
    ("mlock and mlockall: keeping pages in RAM", calls::locking),
    ("msync: from the page cache to the disk", calls::syncing),
    (
        "When mmap pays: read() vs mapping vs vmsplice vs splice",
        performance::when_mmap_pays,
    ),
    ("Parent and child sharing anonymous memory", processes::sharing),
    ("A semaphore inside the mapping", processes::semaphore),
    (
        "Two unrelated processes sharing a file",
        processes::file_between_processes,
    ),
    ("Dining philosophers with processes", processes::philosophers),
    ("A file truncated under a mapping, survived", safety::truncation),
    ("Guard pages and locked secrets", safety::guards_and_secrets),
    (
        "Persistent variables: a value that outlives its process",
        files::persistence,
    ),
    (
        "The page cache, and a look at our own mappings",
        files::page_cache,
    ),
    ("Parent and child talking through a channel", channel::section),
];

/// A section number, 1 to the number of sections (a usage error otherwise).
fn section(s: &str) -> Result<usize, String> {
    let last = SECTIONS.len();
    match crate::args::whole_in(s, "section", 1, last as u64) {
        Ok(n) => Ok(n as usize),
        Err(_) if !s.trim().is_empty() && s.trim().bytes().all(|b| b.is_ascii_digit()) => Err(format!(
            "there is no section {}; sections are 1 to {last}",
            s.trim()
        )),
        Err(e) => Err(e),
    }
}

/// `mman tour`.
pub fn run(args: TourArgs) -> Result<()> {
    let tour = Tour {
        dir: tempfile::Builder::new()
            .prefix("mman-tour")
            .tempdir_in(crate::cleanup::temp_root())
            .context("tour: create a temporary directory (in $TMPDIR, which must be a writable directory)")?,
        exe: std::env::current_exe().context("tour: find the mman executable")?,
    };
    crate::cleanup::remove_on_signal(tour.dir.path());
    outln!("mman tour: the Unix memory-mapping API, one idea at a time.")?;
    outln!(
        "(page size {} bytes; working in {}, removed at the end)",
        mman::page_size(),
        tour.dir.path().display()
    )?;
    for (i, (title, section)) in SECTIONS.iter().enumerate() {
        if args.section.is_some_and(|s| s != i + 1) {
            continue;
        }
        outln!("\n== {}. {title} ==", i + 1)?;
        section(&tour).with_context(|| format!("tour section {}: {title}", i + 1))?;
        tour.clear();
    }
    outln!("\nThat was the tour. `mman --help` lists the commands; the README has the library.")?;
    Ok(())
}

impl Tour {
    /// Remove what a section left in the working directory, as soon as it is done with it:
    /// a tour killed (SIGKILL, which nothing can clean up after) leaves at most the files of
    /// the section it was in (the 128 MiB of section 6 only while section 6 runs). Failures
    /// are left to the directory's own removal at the end.
    fn clear(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
                _ => std::fs::remove_file(&p),
            };
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Run `mman ARGS` and return its output, or an error when it failed: every section
    /// shows what its children printed, and a child that failed (a full disk, a limit, a
    /// signal) must not be shown as empty values of a tour that ends with status 0.
    fn mman(&self, args: &[&str]) -> Result<std::process::Output> {
        let out = self.run_child(args)?;
        if !out.status.success() {
            bail!(
                "mman {} {}: {}",
                args.join(" "),
                crate::cleanup::how(out.status),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// Run `mman ARGS`, a child that is meant to die of signal `sig`; its output, or an
    /// error when it ended any other way.
    fn mman_killed(&self, args: &[&str], sig: i32) -> Result<std::process::Output> {
        use std::os::unix::process::ExitStatusExt;
        let out = self.run_child(args)?;
        if out.status.signal() != Some(sig) {
            bail!(
                "mman {} was to be killed by signal {sig}, and {}: {}",
                args.join(" "),
                crate::cleanup::how(out.status),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    fn run_child(&self, args: &[&str]) -> Result<std::process::Output> {
        // Its temporary files go in the tour's directory, so that they go with it even if
        // the child is killed before it removes them.
        crate::cleanup::output(Command::new(&self.exe).args(args).env("TMPDIR", self.dir.path()))
            .with_context(|| format!("run mman {}", args.join(" ")))
    }
}

/// The lines of a child's standard output, or an error naming `what` when it printed
/// fewer than `at_least`.
fn lines_of(out: &std::process::Output, what: &str, at_least: usize) -> Result<Vec<String>> {
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.trim().is_empty())
        .collect();
    if lines.len() < at_least {
        bail!(
            "{what} printed {} line(s) where {at_least} were expected: {:?}",
            lines.len(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(lines)
}

/// `mman __tour-child WHAT`: the throwaway processes the tour demonstrates with.
pub fn child(what: &str) -> Result<()> {
    match what.split_once(':').unwrap_or((what, "")) {
        ("protect-write", _) => {
            let mut map = MapOptions::new().len(mman::page_size()).map_anonymous()?;
            map.protect(Protection::READ)?;
            let p = map.as_mut_ptr();
            // SAFETY: deliberately unsound for the demonstration: this throwaway child writes
            // to a read-only page so the kernel kills it with SIGSEGV.
            unsafe { std::ptr::write_volatile(p, 1) };
            bail!("the write to a read-only page was not stopped")
        }
        ("channel-echo", base) => channel::echo(base),
        ("file-writer", path) => {
            let map = MapOptions::new().read_write().shared().map_path(path)?;
            map.atomic_u64(0)?
                .store(0x00C0_FFEE_u64, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
        ("guard-overflow", _) => {
            let mut buf = mman::fault::GuardedBuffer::new(100)?;
            let p = buf.as_mut_ptr();
            // SAFETY: deliberately out of bounds for the demonstration: the byte past the end
            // is in the guard page, and the fault kills this throwaway child.
            unsafe { std::ptr::write_volatile(p.add(100), 1) };
            bail!("the guard page did not stop the overflow")
        }
        _ => bail!("unknown tour child {what:?}"),
    }
}
