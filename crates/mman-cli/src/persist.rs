//! `mman persist` (the course notes' persistent-variable program) and `mman counter` (a
//! durable, crash-consistent record).

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use mman::persist::{Commit, Durable, Persistent};

// Arguments of `mman persist` (a plain comment: as a doc comment it would replace the
// subcommand's about text, the arguments being added last, see `Command` in main.rs).
#[derive(Args, Debug)]
pub struct PersistArgs {
    /// Print the stored page up to its first NUL (the default).
    #[arg(long, conflicts_with = "write")]
    read: bool,
    /// Store standard input (up to 4096 bytes) in the page, zero-filling the rest.
    #[arg(long)]
    write: bool,
    /// The file: exactly 4096 bytes, the same format as the notes' C program.
    #[arg(long, default_value = ".persistent_data")]
    file: PathBuf,
}

const PAGE: usize = 4096;

/// `mman persist`.
pub fn persist(args: PersistArgs) -> Result<()> {
    let file = &args.file;
    if args.write {
        // Input first, all of it: what does not fit is refused before anything is stored.
        if crate::out::stdin_closed() {
            return Err(crate::out::stdin_closed_error()).context("persist --write: read standard input");
        }
        let mut input = Vec::with_capacity(PAGE + 1);
        std::io::stdin()
            .lock()
            .take(PAGE as u64 + 1)
            .read_to_end(&mut input)
            .context("persist --write: read standard input")?;
        if input.len() > PAGE {
            bail!(
                "persist --write {}: standard input holds more than {PAGE} bytes, the size of the page; nothing was stored",
                file.display()
            );
        }
        check_format(file, true)?;
        let mut page = [0u8; PAGE];
        page[..input.len()].copy_from_slice(&input);
        let data = Persistent::<[u8; PAGE]>::open_wait(file)?;
        data.set(&page)?;
        data.flush()?;
    } else {
        // Reading never writes: the file is opened read-only and never created.
        check_format(file, false)?;
        let map = mman::MapOptions::new().len(PAGE).map_path(file)?;
        let page: [u8; PAGE] = map.load(0)?;
        let end = page.iter().position(|&b| b == 0).unwrap_or(PAGE);
        crate::out::stdout()
            .write_all(&page[..end])
            .context("persist: write standard output")?;
    }
    Ok(())
}

/// An existing file is used only if it has the format: a regular file of exactly 4096 bytes
/// (what the notes' C program makes), or of 4096 bytes rounded up to this system's page
/// (what `Persistent` makes where pages are larger). A missing one is created by `--write`
/// only.
fn check_format(file: &std::path::Path, may_create: bool) -> Result<()> {
    let ours = (PAGE as u64).next_multiple_of(mman::page_size() as u64);
    match std::fs::symlink_metadata(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_create => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(e).with_context(|| {
            format!(
                "persist --read {}: nothing stored yet (store a value with --write)",
                file.display()
            )
        }),
        Err(e) => Err(e).with_context(|| format!("persist {}", file.display())),
        Ok(m) if !m.file_type().is_file() => bail!(
            "persist {}: not a regular file (a persistent page is a regular file of {PAGE} bytes)",
            file.display()
        ),
        Ok(m) if m.len() != PAGE as u64 && m.len() != ours => bail!(
            "persist {}: {} bytes, not a persistent page (exactly {PAGE} bytes); refusing to touch it",
            file.display(),
            m.len()
        ),
        Ok(_) => Ok(()),
    }
}

/// The durable record of `mman counter`: a count and a check value derived from it, so a
/// torn or foreign record is recognised.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Counter {
    count: u64,
    check: u64,
}

const TAG: [u8; 8] = *b"COUNTER1";

fn check_of(count: u64) -> u64 {
    count.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x6D6D_616E_636F_756E
}

impl Counter {
    fn is_intact(&self) -> bool {
        self.check == check_of(self.count)
    }
}

// Arguments of `mman counter` (a plain comment: as a doc comment it would replace the
// subcommand's about text, the arguments being added last, see `Command` in main.rs).
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("action").required(true).args(["add", "check"]))]
pub struct CounterArgs {
    /// The counter's file (created when adding, if missing).
    #[arg(long)]
    file: PathBuf,
    /// Run this many transactions, each adding 1.
    #[arg(long, conflicts_with = "check", value_parser = crate::args::count)]
    add: Option<u64>,
    /// Make every transaction durable (msync) instead of process-crash-safe only.
    #[arg(long, requires = "add")]
    durable: bool,
    /// Print each committed count (one line per transaction).
    #[arg(long, requires = "add")]
    verbose: bool,
    /// Verify the record and print the count.
    #[arg(long)]
    check: bool,
}

/// `mman counter`.
pub fn counter(args: CounterArgs) -> Result<()> {
    match (args.add, args.check) {
        (Some(n), false) => {
            let mut d = Durable::open(
                &args.file,
                TAG,
                Counter {
                    count: 0,
                    check: check_of(0),
                },
            )?;
            let mode = if args.durable {
                Commit::Durable
            } else {
                Commit::ProcessCrashSafe
            };
            let mut w = d.writer()?;
            if !w.value().is_intact() {
                bail!(
                    "counter {}: the record's check value is wrong: it is corrupted",
                    args.file.display()
                );
            }
            let mut out = crate::out::stdout();
            for _ in 0..n {
                let c = w.update(mode, |c| {
                    c.count += 1;
                    c.check = check_of(c.count);
                })?;
                if args.verbose {
                    writeln!(out, "{}", c.count)
                        .and_then(|_| out.flush())
                        .context("counter: write")?;
                }
            }
            Ok(())
        }
        (None, true) => {
            // Reading never writes: a read-only file can be checked.
            let d = Durable::<Counter>::open_read_only(&args.file, TAG)
                .with_context(|| format!("counter --check {}", args.file.display()))?;
            let c = d.read()?;
            if !c.is_intact() {
                bail!(
                    "counter --check {}: count {} has check value {:#x}, expected {:#x}: the record is corrupted",
                    args.file.display(),
                    c.count,
                    c.check,
                    check_of(c.count)
                );
            }
            outln!("{}", c.count)?;
            Ok(())
        }
        // The parser requires exactly one of them (a usage error, status 2).
        _ => bail!("counter: give --add N or --check"),
    }
}
