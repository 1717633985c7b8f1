//! Where the benches put their two processes: `--placement same|split|free|busy|all`.
//!
//! A claim about waiting holds only if it holds wherever the scheduler puts the processes,
//! so each bench runs every method under each placement asked for, in the same run:
//! - `same`: both pinned to one CPU (as `taskset -c 0`, a one-CPU container, a busy host);
//! - `split`: pinned to two different CPUs;
//! - `free`: not pinned (the scheduler often wakes a peer on its waker's CPU);
//! - `busy`: not pinned, beside a CPU-bound process pinned to each CPU.
//!
//! This process pins itself (`sched_setaffinity`) and each peer is pinned as it starts (in
//! the child, before it runs the peer program); the CPU-bound processes are `mman __hog`,
//! ended when the placement ends.

use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result};
use rustix::thread::CpuSet;

use crate::cleanup::Tracked;

/// A placement of the two processes of a bench.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Both processes pinned to one CPU.
    Same,
    /// Pinned to two different CPUs.
    Split,
    /// Not pinned.
    Free,
    /// Not pinned, beside a CPU-bound process on every CPU.
    Busy,
    /// Each of the above in turn.
    All,
}

impl Placement {
    /// The placements `self` stands for, in the order they are measured.
    pub fn each(self) -> Vec<Placement> {
        match self {
            Placement::All => vec![
                Placement::Same,
                Placement::Split,
                Placement::Free,
                Placement::Busy,
            ],
            p => vec![p],
        }
    }

    /// Its name, as `--placement` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Same => "same",
            Placement::Split => "split",
            Placement::Free => "free",
            Placement::Busy => "busy",
            Placement::All => "all",
        }
    }

    /// Whether two processes spinning can both run at once here (the spin floors are
    /// measured only then: on one CPU a spinning round trip takes a scheduler tick, and
    /// beside CPU-bound load it waits for the load's time slices).
    pub fn floors_apply(self) -> bool {
        matches!(self, Placement::Split | Placement::Free)
    }
}

/// The CPUs this process may run on, in order.
fn allowed() -> Vec<usize> {
    let set = rustix::thread::sched_getaffinity(None).unwrap_or_else(|_| CpuSet::new());
    (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect()
}

fn set_of(cpus: &[usize]) -> CpuSet {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    set
}

/// The CPUs of the peers started while a placement is in force ([`prepare_peer`]).
static PEER: Mutex<Option<CpuSet>> = Mutex::new(None);

/// A placement in force: this process pinned, the CPUs its peers get, the CPU-bound load.
/// Dropping it ends the load and gives this process back every CPU it had.
pub struct Placed {
    before: CpuSet,
    hogs: Vec<Tracked>,
}

impl Placed {
    /// Put this process where `placement` says, and start its load. `Ok(Err(why))` when the
    /// placement cannot be had here (`split` with one CPU).
    pub fn enter(placement: Placement) -> Result<std::result::Result<Placed, String>> {
        let cpus = allowed();
        let before = set_of(&cpus);
        if cpus.is_empty() {
            return Ok(Err("the CPUs this process may use cannot be read".into()));
        }
        let (own, peer) = match placement {
            Placement::Same => (set_of(&cpus[..1]), set_of(&cpus[..1])),
            Placement::Split if cpus.len() < 2 => {
                return Ok(Err(format!(
                    "split needs two CPUs; this process may use only CPU {}",
                    cpus[0]
                )))
            }
            Placement::Split => (set_of(&cpus[..1]), set_of(&cpus[1..2])),
            Placement::Free | Placement::Busy | Placement::All => (before, before),
        };
        rustix::thread::sched_setaffinity(None, &own).context("bench: sched_setaffinity")?;
        *PEER.lock().unwrap_or_else(|e| e.into_inner()) = Some(peer);
        let mut placed = Placed {
            before,
            hogs: Vec::new(),
        };
        if placement == Placement::Busy {
            for &c in &cpus {
                let mut cmd = Command::new(std::env::current_exe()?);
                cmd.arg("__hog")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null());
                pin(&mut cmd, set_of(&[c]));
                let hog = crate::cleanup::spawn(&mut cmd)
                    .context("bench: start a CPU-bound process (--placement busy)")?;
                placed.hogs.push(hog);
            }
            // Let the load take its CPUs before anything is measured.
            std::thread::sleep(std::time::Duration::from_millis(1000));
        }
        Ok(Ok(placed))
    }
}

/// Make `cmd`, a peer about to be started, run on the CPUs the placement in force gives the
/// peer (nothing when none is in force).
pub fn prepare_peer(cmd: &mut Command) {
    if let Some(set) = *PEER.lock().unwrap_or_else(|e| e.into_inner()) {
        pin(cmd, set);
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        for hog in &mut self.hogs {
            let _ = hog.kill();
            let _ = hog.wait();
        }
        *PEER.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let _ = rustix::thread::sched_setaffinity(None, &self.before);
    }
}

/// Pin `cmd`'s process to `set` as it starts, before it runs its program.
fn pin(cmd: &mut Command, set: CpuSet) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and makes one system call
    // (sched_setaffinity on the child itself), which is async-signal-safe; it allocates
    // nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || rustix::thread::sched_setaffinity(None, &set).map_err(std::io::Error::from));
    }
}

/// `mman __hog`: burn a CPU until killed (or until the parent is gone).
pub fn hog_main() -> ! {
    let parent = rustix::process::getppid();
    let mut n: u64 = 0;
    loop {
        n = n.wrapping_add(1);
        std::hint::black_box(n);
        if n.is_multiple_of(1 << 26) && rustix::process::getppid() != parent {
            std::process::exit(0);
        }
    }
}
