//! `mman`: the command line of the mman toolkit. Thin: every piece of work is done by the
//! `mman` library; this file parses arguments and prints.

mod cat;
mod tour;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mman: the Unix memory-mapping API, from the command line.
#[derive(Parser, Debug)]
#[command(name = "mman", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Concatenate files to standard output, through mmap, vmsplice, splice or read.
    Cat(cat::CatArgs),
    /// A guided tour of mmap, mprotect, mlock and msync, with the kernel's own numbers.
    Tour(tour::TourArgs),
    /// Internal: the child processes the tour spawns.
    #[command(hide = true, name = "__tour-child")]
    TourChild { what: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Cat(args) => cat::run(args),
        Command::Tour(args) => report(tour::run(args)),
        Command::TourChild { what } => report(tour::child(&what)),
    }
}

/// Print an error the way every mman subcommand does: `mman: <what went wrong>`.
fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mman: {e:#}");
            ExitCode::FAILURE
        }
    }
}
