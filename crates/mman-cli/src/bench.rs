//! `mman bench ipc`: cross-process ping-pong round trips of mman's Semaphore, glibc's
//! process-shared `sem_t`, a pipe, and two processes spinning on one cache line (the floor),
//! all in one run; plus the CPU an idle waiter burns.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::cleanup::Tracked;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use mman::sync::{place, PosixSemaphore, Semaphore};
use mman::{MapOptions, Mapping};

mod channel;

/// `mman bench ...`.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum BenchCommand {
    /// Cross-process round trip: mman Semaphore vs glibc sem_t vs a pipe vs spinning.
    Ipc(IpcArgs),
    /// Messages between processes: mman channel vs pipe vs Unix socket vs iceoryx2.
    Channel(channel::ChannelArgs),
}

// Arguments of `mman bench ipc` (a plain comment: as a doc comment it would replace the
// subcommand's about text, the arguments being added last, see `Command` in main.rs).
#[derive(Args, Debug)]
pub struct IpcArgs {
    /// Round trips measured per method (after 1000 of warm-up).
    #[arg(long, default_value_t = 100_000, value_parser = crate::args::rounds)]
    rounds: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

const WARMUP: u32 = 1000;

/// The command the helpers below run for, named in their errors.
const IPC: &str = "bench ipc";

#[derive(serde::Serialize, Clone, Copy)]
pub(crate) struct Latency {
    median_ns: u64,
    p99_ns: u64,
}

pub(crate) fn summarize(mut v: Vec<u64>) -> Latency {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
    Latency {
        median_ns: at(0.5),
        p99_ns: at(0.99),
    }
}

/// The errors of the helpers below name `op`, the command they run for (`bench ipc`, or
/// `bench channel`, whose floors they measure too).
fn table_file(op: &str, dir: &Path) -> Result<(std::path::PathBuf, Mapping)> {
    let path = dir.join("ipc");
    std::fs::write(&path, vec![0u8; 4096]).with_context(|| format!("{op}: create the shared file"))?;
    let map = MapOptions::new().read_write().shared().map_path(&path)?;
    Ok((path, map))
}

fn peer(op: &str, kind: &str, path: &Path, rounds: u32) -> Result<Tracked> {
    crate::cleanup::spawn(
        Command::new(std::env::current_exe()?)
            .args(["__ipc-peer", kind])
            .arg(path)
            .arg(rounds.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
    .with_context(|| format!("{op}: start the {kind} peer"))
}

fn finish(op: &str, child: Tracked, kind: &str) -> Result<()> {
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{op}: the {kind} peer failed: {}", out.status);
    }
    Ok(())
}

/// Time `rounds` calls of `one`, each on its own, after `WARMUP` untimed ones.
pub(crate) fn measure(rounds: u64, mut one: impl FnMut() -> Result<()>) -> Result<Latency> {
    for _ in 0..WARMUP {
        one()?;
    }
    let mut v = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let t0 = Instant::now();
        one()?;
        v.push(t0.elapsed().as_nanos() as u64);
    }
    Ok(summarize(v))
}

fn semaphores(dir: &Path, rounds: u32) -> Result<Latency> {
    let (path, map) = table_file(IPC, dir)?;
    let (ping, pong): (&Semaphore, &Semaphore) = (place(&map, 0)?, place(&map, 64)?);
    let child = peer(IPC, "semaphore", &path, rounds + WARMUP)?;
    let r = measure(rounds as u64, || {
        ping.post()?;
        if !pong.wait_timeout(Duration::from_secs(10)) {
            bail!("bench ipc: the semaphore peer stopped answering");
        }
        Ok(())
    })?;
    finish(IPC, child, "semaphore")?;
    Ok(r)
}

fn sem_t(dir: &Path, rounds: u32) -> Result<Latency> {
    let (path, map) = table_file(IPC, dir)?;
    // SAFETY: a fresh file no process uses yet.
    let (ping, pong) = unsafe {
        (
            PosixSemaphore::init_in(&map, 0, 0)?,
            PosixSemaphore::init_in(&map, 64, 0)?,
        )
    };
    let child = peer(IPC, "sem_t", &path, rounds + WARMUP)?;
    let r = measure(rounds as u64, || {
        ping.post()?;
        if !pong.wait_timeout(Duration::from_secs(10))? {
            bail!("bench ipc: the sem_t peer stopped answering");
        }
        Ok(())
    })?;
    finish(IPC, child, "sem_t")?;
    Ok(r)
}

/// The word the spinning peer answers in: the request's own word (one cache line both
/// ways, the floor), or one 128 bytes away (a request line and a reply line, as any pair
/// of one-way channels has).
const REPLY_WORD: [usize; 2] = [0, 16];

fn spin(op: &str, dir: &Path, rounds: u32, two_lines: bool) -> Result<Latency> {
    let (path, map) = table_file(op, dir)?;
    let ping = map.atomic_u64(0)?;
    let pong = map.atomic_u64(REPLY_WORD[two_lines as usize] * 8)?;
    let child = peer(
        op,
        if two_lines { "spin2" } else { "spin" },
        &path,
        rounds + WARMUP,
    )?;
    let mut k = 0u64;
    let r = measure(rounds as u64, || {
        ping.store(2 * k + 1, Ordering::Release);
        let t0 = Instant::now();
        while pong.load(Ordering::Acquire) != 2 * k + 2 {
            std::hint::spin_loop();
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("{op}: the spinning peer stopped answering");
            }
        }
        k += 1;
        Ok(())
    })?;
    finish(op, child, "spin")?;
    Ok(r)
}

fn pipe(dir: &Path, rounds: u32) -> Result<Latency> {
    let (path, _map) = table_file(IPC, dir)?;
    let mut child = peer(IPC, "pipe", &path, rounds + WARMUP)?;
    let mut to = child.stdin.take().context("bench ipc: peer stdin")?;
    let mut from = child.stdout.take().context("bench ipc: peer stdout")?;
    let mut b = [0u8; 1];
    let r = measure(rounds as u64, || {
        to.write_all(b"x")?;
        from.read_exact(&mut b)?;
        Ok(())
    })?;
    drop(to);
    finish(IPC, child, "pipe")?;
    Ok(r)
}

/// CPU used by a peer blocked in `Semaphore::wait` for `idle`, in percent of that time.
fn idle_waiter(dir: &Path, idle: Duration) -> Result<f64> {
    let (path, map) = table_file(IPC, dir)?;
    let sem: &Semaphore = place(&map, 0)?;
    let child = peer(IPC, "idle", &path, 1)?;
    std::thread::sleep(idle);
    sem.post()?;
    child_cpu_percent(child, idle, "bench ipc")
}

/// Reap `child` and return the CPU it used (user + system) in percent of `idle`: what a
/// waiter idle for that long cost, its start-up included (an upper bound).
pub(crate) fn child_cpu_percent(child: Tracked, idle: Duration, op: &str) -> Result<f64> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our child; the pointers are to our locals.
    if unsafe { libc::wait4(pid, &mut status, 0, &mut ru) } != pid {
        bail!(
            "{op}: wait4 of the idle peer (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    // Reaped here: nobody may wait for it, or kill its number, again.
    child.reaped_elsewhere();
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((secs(ru.ru_utime) + secs(ru.ru_stime)) / idle.as_secs_f64() * 100.0)
}

/// Two processes spinning on one cache line: the floor of any cross-process hand-off.
/// Two processes handing a value back and forth through one cache line (`two_lines`
/// false: the floor of any cross-process round trip), or through two, a request line and
/// a reply line (the floor of a pair of one-way channels).
/// Errors name `op`, the command measuring it.
pub(crate) fn spin_floor(op: &str, rounds: u32, two_lines: bool) -> Result<Latency> {
    let dir = tempdir(op)?;
    spin(op, dir.path(), rounds, two_lines)
}

fn tempdir(op: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("mman-bench-ipc")
        .tempdir_in(crate::cleanup::temp_root())
        .with_context(|| {
            format!("{op}: create a temporary directory (in $TMPDIR, which must be a writable directory)")
        })?;
    crate::cleanup::remove_on_signal(dir.path());
    Ok(dir)
}

/// `mman bench ...`.
pub fn run(cmd: BenchCommand) -> Result<()> {
    let args = match cmd {
        BenchCommand::Ipc(args) => args,
        BenchCommand::Channel(args) => return channel::run(args),
    };
    // At most MAX_ROUNDS (the parser's bound): with the warm-up, it fits the peers' u32.
    let rounds = u32::try_from(args.rounds).context("bench ipc: --rounds")?;
    let dir = tempdir(IPC)?;
    let mman_semaphore = semaphores(dir.path(), rounds)?;
    let sem_t = sem_t(dir.path(), rounds)?;
    let pipe = pipe(dir.path(), rounds)?;
    let spin_floor = spin(IPC, dir.path(), rounds, false)?;
    let idle = idle_waiter(dir.path(), Duration::from_secs(1))?;
    if args.json {
        let v = serde_json::json!({
            "rounds": args.rounds,
            "mman_semaphore": mman_semaphore,
            "sem_t": sem_t,
            "pipe": pipe,
            "spin_floor": spin_floor,
            "idle_waiter_cpu_percent": idle,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    outln!(
        "cross-process round trip, {} rounds each after {WARMUP} of warm-up:",
        args.rounds
    )?;
    outln!(
        "  {:<28} {:>10} {:>10} {:>10} {:>12}",
        "method",
        "median ns",
        "p99 ns",
        "x sem_t",
        "x spin floor"
    )?;
    for (name, l) in [
        ("mman Semaphore (futex)", mman_semaphore),
        ("glibc sem_t (pshared)", sem_t),
        ("pipe (1 byte each way)", pipe),
        ("spinning on a cache line", spin_floor),
    ] {
        outln!(
            "  {name:<28} {:>10} {:>10} {:>10.3} {:>12.2}",
            l.median_ns,
            l.p99_ns,
            l.median_ns as f64 / sem_t.median_ns.max(1) as f64,
            l.median_ns as f64 / spin_floor.median_ns.max(1) as f64
        )?;
    }
    outln!("an mman Semaphore waiter whose peer is idle for 1 s used {idle:.2}% of a CPU")?;
    Ok(())
}

pub use channel::peer_main as channel_peer_main;

/// `mman __ipc-peer KIND FILE ROUNDS`: the other side of each ping-pong.
pub fn peer_main(kind: &str, path: &Path, rounds: u32) -> Result<()> {
    let map = MapOptions::new().read_write().shared().map_path(path)?;
    match kind {
        "semaphore" => {
            let (ping, pong): (&Semaphore, &Semaphore) = (place(&map, 0)?, place(&map, 64)?);
            for _ in 0..rounds {
                if !ping.wait_timeout(Duration::from_secs(10)) {
                    bail!("no ping");
                }
                pong.post()?;
            }
        }
        "sem_t" => {
            // SAFETY: the table file is this benchmark's own, and both processes touch these
            // bytes only through sem_* calls.
            let (ping, pong) = unsafe {
                (
                    PosixSemaphore::open_in(&map, 0)?,
                    PosixSemaphore::open_in(&map, 64)?,
                )
            };
            for _ in 0..rounds {
                if !ping.wait_timeout(Duration::from_secs(10))? {
                    bail!("no ping");
                }
                pong.post()?;
            }
        }
        "spin" | "spin2" => {
            let ping = map.atomic_u64(0)?;
            let pong = map.atomic_u64(REPLY_WORD[(kind == "spin2") as usize] * 8)?;
            for k in 0..rounds as u64 {
                let t0 = Instant::now();
                while ping.load(Ordering::Acquire) != 2 * k + 1 {
                    std::hint::spin_loop();
                    if t0.elapsed() > Duration::from_secs(10) {
                        bail!("no ping");
                    }
                }
                pong.store(2 * k + 2, Ordering::Release);
            }
        }
        "pipe" => {
            let (mut i, mut o) = (std::io::stdin().lock(), std::io::stdout().lock());
            let mut b = [0u8; 1];
            for _ in 0..rounds {
                i.read_exact(&mut b)?;
                o.write_all(&b)?;
                o.flush()?;
            }
        }
        "idle" => {
            let sem: &Semaphore = place(&map, 0)?;
            sem.wait();
        }
        other => bail!("unknown ipc peer {other:?}"),
    }
    Ok(())
}
