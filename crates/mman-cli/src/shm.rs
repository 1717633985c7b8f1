//! `mman shm`: named POSIX shared-memory objects, mman's and other programs'.

use anyhow::{bail, Result};
use clap::Subcommand;

/// `mman shm ...`.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum ShmCommand {
    /// Create /dev/shm/mman.NAME of the given size (mode 0600), kept until removed by name.
    Create {
        /// The name (without the mman. prefix).
        name: String,
        /// Size: bytes, or with a unit (4k, 1M, 1.5G).
        #[arg(long, value_parser = crate::args::size)]
        size: u64,
    },
    /// List the objects mman created, with size, owner, creator, and whether they are kept,
    /// in use or stale.
    List {
        /// Every object in /dev/shm, other programs' too (marked "foreign", named verbatim).
        #[arg(long)]
        all: bool,
    },
    /// Remove objects by name, or every stale object (--stale).
    Rm {
        /// Names to remove.
        #[arg(required_unless_present = "stale")]
        names: Vec<String>,
        /// Remove the stale objects: mman's, not kept, held by no running process (never one
        /// made by `mman shm create`, which is kept).
        #[arg(long)]
        stale: bool,
        /// The names are other programs' objects, given verbatim (`/ring`, `psm_1a2b`): no
        /// `mman.` prefix is added.
        #[arg(long)]
        foreign: bool,
    },
}

/// A name as one table cell: control characters (a newline would break the table) and
/// backslashes escaped, as `\n`, `\e`, `\\`, as every name mman prints.
fn printable(name: &str) -> std::borrow::Cow<'_, str> {
    crate::out::name_safe(name)
}

/// A library error with its hint in this command's terms: the library's hints name its
/// functions (`SharedMemory::unlink`, `shm::remove_stale`), which a user of the command
/// line cannot call; the commands that do the same are named instead.
fn command_hint(e: mman::Error, name: &str) -> anyhow::Error {
    let hint = if e.kind() == mman::ErrorKind::AddressInUse {
        Some(format!(
            "the name is taken: remove it with `mman shm rm {name}` (`mman shm list` shows whose it is), or choose another"
        ))
    } else {
        e.hint()
            .filter(|h| h.contains("shm::remove_stale"))
            .map(|h| h.replace("(shm::remove_stale)", "(`mman shm rm --stale`)"))
    };
    match hint {
        Some(h) => {
            let text = e.to_string();
            let base = text.split("; hint: ").next().unwrap_or(&text).to_string();
            anyhow::anyhow!("{base}; hint: {h}")
        }
        None => e.into(),
    }
}

/// `mman shm create|list|rm`.
pub fn shm(cmd: ShmCommand) -> Result<()> {
    use mman::shm::{self, SharedMemory};
    match cmd {
        ShmCommand::Create { name, size } => {
            let obj = SharedMemory::create_kept(&name, size, 0o600).map_err(|e| command_hint(e, &name))?;
            outln!("created {} ({size} bytes, mode 0600, kept)", obj.name())?;
        }
        ShmCommand::List { all } => {
            let objs = if all { shm::list_all()? } else { shm::list()? };
            outln!(
                "{:<24} {:>12} {:>6} {:>5} {:>8} STATE",
                "NAME",
                "SIZE",
                "UID",
                "MODE",
                "PID"
            )?;
            for o in objs {
                let pid = o.creator.map_or("-".to_string(), |p| p.to_string());
                let alive = match o.in_use {
                    _ if !o.mman => "foreign",
                    _ if o.kept => "kept",
                    Some(true) => "in use",
                    _ if o.is_stale() => "unused (stale)",
                    _ => "unknown",
                };
                outln!(
                    "{:<24} {:>12} {:>6} {:>5o} {:>8} {alive}",
                    printable(&o.name),
                    o.size,
                    o.uid,
                    o.mode,
                    pid
                )?;
            }
        }
        ShmCommand::Rm {
            names,
            stale,
            foreign,
        } => {
            // Like rm: every name is tried; a failure is reported and the status is 1.
            let mut failed = 0;
            for name in &names {
                let removed = if foreign {
                    SharedMemory::unlink_foreign(name).and_then(|()| shm::raw_object_name(name))
                } else {
                    SharedMemory::unlink(name).and_then(|()| shm::object_name(name))
                };
                match removed {
                    Ok(full) => outln!("removed {}", printable(&full))?,
                    Err(e) => {
                        errln!("mman: shm rm: {e}");
                        failed += 1;
                    }
                }
            }
            if stale {
                for name in shm::remove_stale()? {
                    outln!("removed stale /{}{}", shm::PREFIX, printable(&name))?;
                }
            }
            if failed > 0 {
                bail!("shm rm: {failed} of {} names could not be removed", names.len());
            }
        }
    }
    Ok(())
}
