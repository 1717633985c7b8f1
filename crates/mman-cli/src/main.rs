//! `mman`: the command line of the mman toolkit. Thin: every piece of work is done by the
//! `mman` library; this file parses arguments and prints.

#[macro_use]
mod out;

mod args;
mod bench;
mod cache;
mod cat;
mod children;
mod cleanup;
mod maps;
mod persist;
mod philosophers;
mod share;
mod shm;
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

/// The subcommands. Each one's arguments are built only when it runs (`defer`): building the
/// whole tree was 0.2 ms of every start, more than `vmtouch -e` takes in all (bench/RESULTS.md).
/// So the argument structs carry plain comments, not doc comments: added last, a doc comment
/// would replace the subcommand's about text (a test checks every one).
#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum Command {
    /// Concatenate files to standard output, through mmap, vmsplice, splice or read.
    Cat(cat::CatArgs),
    /// A guided tour of mmap, mprotect, mlock and msync, with the kernel's own numbers.
    Tour(tour::TourArgs),
    /// Parent and child sharing memory: a child writes 0..9 into an anonymous mapping, the
    /// parent reads them (--private: each gets its own copy).
    Share(share::ShareArgs),
    /// A semaphore inside shared memory: the parent waits on it until the child posts.
    Semaphore,
    /// Dining Philosophers with processes; the forks are semaphores in a shared file.
    Philosophers(philosophers::PhilosophersArgs),
    /// A persistent variable: a 4096-byte page that lives in a file (--write, --read).
    Persist(persist::PersistArgs),
    /// A durable, crash-consistent counter: --add N transactions, or --check.
    Counter(persist::CounterArgs),
    /// The page cache: status, touch, evict, lock files (vmtouch, fincore).
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// A process's mappings and their memory: size, RSS, PSS, dirty, swap, locked (pmap -x).
    Maps(maps::MapsArgs),
    /// Named shared-memory objects: create, list, remove.
    #[command(subcommand)]
    Shm(shm::ShmCommand),
    /// Benchmarks run side by side in one process tree: `mman bench ipc`, `mman bench channel`.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Internal: the peer of `mman bench ipc`.
    #[command(hide = true, name = "__ipc-peer")]
    IpcPeer {
        kind: String,
        file: std::path::PathBuf,
        rounds: u32,
    },
    /// Internal: the peer of `mman bench channel`.
    #[command(hide = true, name = "__channel-peer")]
    ChannelPeer {
        mode: String,
        name: String,
        size: u64,
        rounds: u64,
        count: u64,
    },
    /// Internal: one philosopher process.
    #[command(hide = true, name = "__philosopher")]
    Philosopher {
        file: std::path::PathBuf,
        n: usize,
        i: usize,
        meals: u64,
        /// No rule at the table (see `mman philosophers --greedy`).
        #[arg(long)]
        greedy: bool,
    },
    /// Internal: the child processes the tour spawns.
    #[command(hide = true, name = "__tour-child")]
    TourChild { what: String },
    /// Internal: a CPU-bound process for `mman bench --placement busy`.
    #[command(hide = true, name = "__hog")]
    Hog,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(e),
    };
    // `cache lock` waits for these signals itself; the internal children are killed by
    // their parents.
    let own_signals = matches!(
        cli.command,
        Command::Cache(_)
            | Command::IpcPeer { .. }
            | Command::ChannelPeer { .. }
            | Command::Philosopher { .. }
            | Command::TourChild { .. }
            | Command::Hog
    );
    if !own_signals {
        cleanup::handle_signals();
    }
    cleanup::file_size_limit_is_an_error();
    let code = run(cli.command);
    cleanup::hold_if_dying();
    code
}

/// What clap says instead of running a command: `--help` and `--version` to standard
/// output, checked like every other write (`mman --help >/dev/full` is a write error, exit
/// 1, as GNU tools have it); a usage error to standard error, exit 2.
fn usage(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    use std::io::IsTerminal;
    let to_stdout = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
    // Styled only for a terminal, and not when NO_COLOR asks otherwise (as clap itself does).
    let terminal = if to_stdout {
        std::io::stdout().is_terminal()
    } else {
        std::io::stderr().is_terminal()
    };
    let styled = e.render();
    let text = if terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) {
        styled.ansi().to_string()
    } else {
        styled.to_string()
    };
    if to_stdout {
        report(std::io::Write::write_all(&mut out::stdout(), text.as_bytes()).map_err(Into::into))
    } else {
        errtext!("{text}");
        ExitCode::from(2)
    }
}

fn run(command: Command) -> ExitCode {
    match command {
        Command::Cat(args) => cat::run(args),
        Command::Cache(cmd) => match cache::run(cmd) {
            // Its own status (1 when files were skipped), unless flushing the output fails.
            Ok(code) if report(Ok(())) == ExitCode::SUCCESS => code,
            Ok(_) => ExitCode::FAILURE,
            Err(e) => report(Err(e)),
        },
        Command::Maps(args) => report(maps::run(args)),
        Command::Tour(args) => report(tour::run(args)),
        Command::TourChild { what } => report(tour::child(&what)),
        Command::Hog => bench::hog_main(),
        Command::Bench(cmd) => report(bench::run(cmd)),
        Command::IpcPeer { kind, file, rounds } => report(bench::peer_main(&kind, &file, rounds)),
        Command::ChannelPeer {
            mode,
            name,
            size,
            rounds,
            count,
        } => report(bench::channel_peer_main(&mode, &name, size, rounds, count)),
        Command::Persist(args) => report(persist::persist(args)),
        Command::Counter(args) => report(persist::counter(args)),
        Command::Share(args) => report(share::share(args)),
        Command::Semaphore => report(share::semaphore()),
        Command::Philosophers(args) => report(philosophers::philosophers(args)),
        Command::Shm(cmd) => report(shm::shm(cmd)),
        Command::Philosopher {
            file,
            n,
            i,
            meals,
            greedy,
        } => report(philosophers::philosopher(file, n, i, meals, greedy)),
    }
}

/// Print an error the way every mman subcommand does: `mman: <what went wrong>`. Standard
/// output is flushed first: what it still holds must reach it, or be reported.
fn report(r: anyhow::Result<()>) -> ExitCode {
    let r = r.and_then(|()| Ok(std::io::Write::flush(&mut out::stdout())?));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // An error the interruption caused (a file the cleanup removed) is not reported.
            cleanup::hold_if_dying();
            // Each cause once: mman errors carry their OS error in their own message and do
            // not repeat it as a source.
            let mut msg = e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ");
            if let Some(hint) = cleanup::limit_hint(&e).filter(|_| !msg.contains("hint:")) {
                msg = format!("{msg} ({hint})");
            }
            errln!("mman: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// `pow`, defined here so that the binary does not load libm.so at all.
///
/// indicatif's rate estimate (`f64::powf`) is the binary's only use of libm, and loading that
/// shared library cost every start of `mman` about 0.07 ms (the dynamic loader opens, maps,
/// relocates and binds it; `perf stat -r 400`, bench/RESULTS.md), against vmtouch's whole
/// run of 0.5 ms. The symbol the binary defines is the one its own references bind to, so
/// the linker (with `--as-needed`) drops libm; it is also exported, so a library loaded into
/// the process that asks for `pow` gets this one (glibc's own libraries do not). This is the
/// `libm` crate's `pow`, a port of musl's, which is the algorithm glibc has used since 2.28
/// (it does not set `errno`, which nothing here reads); a test checks libm stays out.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// clap's own checks of the whole command tree, deferred parts included (a `mut_arg` of
    /// an argument that a deferred part adds later panics here, not in a user's hands); every
    /// visible subcommand has an about text, and it is still its own once the deferred
    /// arguments are added (a doc comment on an argument struct would replace it).
    /// The `pow` the binary defines (for indicatif) is the real function: exact cases, and
    /// `f64::powf` (which binds to it) agreeing with it.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn pow_is_pow() {
        assert_eq!(pow(2.0, 10.0), 1024.0);
        assert_eq!(pow(2.0, 0.5), 2f64.sqrt());
        assert_eq!(pow(0.5, -3.0), 8.0);
        assert!(pow(-1.0, 0.5).is_nan());
        for (x, y) in [(0.9f64, 7.25f64), (1e-3, 0.33), (123.0, -1.5)] {
            assert_eq!(x.powf(y), pow(x, y));
        }
    }

    #[test]
    fn the_command_tree_is_consistent_and_each_subcommand_says_what_it_does() {
        fn abouts(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let name = format!("{path} {}", sub.get_name());
                let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
                out.push((name.clone(), about));
                abouts(sub, &name, out);
            }
        }
        let (mut declared, mut built) = (Vec::new(), Vec::new());
        let mut cli = Cli::command();
        abouts(&cli, "mman", &mut declared);
        cli.build();
        cli.clone().debug_assert();
        abouts(&cli, "mman", &mut built);
        assert!(declared.len() >= 20, "{declared:?}");
        // Building adds clap's `help` subcommands; nothing else may change.
        built.retain(|(name, _)| !name.split(' ').any(|w| w == "help"));
        assert_eq!(
            declared, built,
            "an about text changed when the arguments were added"
        );
        for (name, about) in &built {
            assert!(!about.is_empty(), "{name} has no about text");
        }
    }
}
