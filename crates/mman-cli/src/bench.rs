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
mod placement;

pub use placement::hog_main;
use placement::{Placed, Placement};

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
    /// Where the two processes run: both on one CPU, on two pinned CPUs, unpinned, or
    /// unpinned beside a CPU-bound process on every CPU; `all` measures each in turn.
    #[arg(long, value_enum, default_value_t = Placement::Free)]
    placement: Placement,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

const WARMUP: u32 = 1000;

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

fn table_file(dir: &Path) -> Result<(std::path::PathBuf, Mapping)> {
    let path = dir.join("ipc");
    std::fs::write(&path, vec![0u8; 4096]).context("bench ipc: create the shared file")?;
    let map = MapOptions::new().read_write().shared().map_path(&path)?;
    Ok((path, map))
}

fn peer(kind: &str, path: &Path, rounds: u32) -> Result<Tracked> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["__ipc-peer", kind])
        .arg(path)
        .arg(rounds.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    placement::prepare_peer(&mut cmd);
    crate::cleanup::spawn(&mut cmd).with_context(|| format!("bench ipc: start the {kind} peer"))
}

fn finish(child: Tracked, kind: &str) -> Result<()> {
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("bench ipc: the {kind} peer failed: {}", out.status);
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
    let (path, map) = table_file(dir)?;
    let (ping, pong): (&Semaphore, &Semaphore) = (place(&map, 0)?, place(&map, 64)?);
    let child = peer("semaphore", &path, rounds + WARMUP)?;
    let r = measure(rounds as u64, || {
        ping.post()?;
        if !pong.wait_timeout(Duration::from_secs(10)) {
            bail!("bench ipc: the semaphore peer stopped answering");
        }
        Ok(())
    })?;
    finish(child, "semaphore")?;
    Ok(r)
}

fn sem_t(dir: &Path, rounds: u32) -> Result<Latency> {
    let (path, map) = table_file(dir)?;
    // SAFETY: a fresh file no process uses yet.
    let (ping, pong) = unsafe {
        (
            PosixSemaphore::init_in(&map, 0, 0)?,
            PosixSemaphore::init_in(&map, 64, 0)?,
        )
    };
    let child = peer("sem_t", &path, rounds + WARMUP)?;
    let r = measure(rounds as u64, || {
        ping.post()?;
        if !pong.wait_timeout(Duration::from_secs(10))? {
            bail!("bench ipc: the sem_t peer stopped answering");
        }
        Ok(())
    })?;
    finish(child, "sem_t")?;
    Ok(r)
}

/// The word the spinning peer answers in: the request's own word (one cache line both
/// ways, the floor), or one 128 bytes away (a request line and a reply line, as any pair
/// of one-way channels has).
const REPLY_WORD: [usize; 2] = [0, 16];

fn spin(dir: &Path, rounds: u32, two_lines: bool) -> Result<Latency> {
    let (path, map) = table_file(dir)?;
    let ping = map.atomic_u64(0)?;
    let pong = map.atomic_u64(REPLY_WORD[two_lines as usize] * 8)?;
    let child = peer(if two_lines { "spin2" } else { "spin" }, &path, rounds + WARMUP)?;
    let mut k = 0u64;
    let r = measure(rounds as u64, || {
        ping.store(2 * k + 1, Ordering::Release);
        let t0 = Instant::now();
        while pong.load(Ordering::Acquire) != 2 * k + 2 {
            std::hint::spin_loop();
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("bench ipc: the spinning peer stopped answering");
            }
        }
        k += 1;
        Ok(())
    })?;
    finish(child, "spin")?;
    Ok(r)
}

fn pipe(dir: &Path, rounds: u32) -> Result<Latency> {
    let (path, _map) = table_file(dir)?;
    let mut child = peer("pipe", &path, rounds + WARMUP)?;
    let mut to = child.stdin.take().context("bench ipc: peer stdin")?;
    let mut from = child.stdout.take().context("bench ipc: peer stdout")?;
    let mut b = [0u8; 1];
    let r = measure(rounds as u64, || {
        to.write_all(b"x")?;
        from.read_exact(&mut b)?;
        Ok(())
    })?;
    drop(to);
    finish(child, "pipe")?;
    Ok(r)
}

/// CPU used by a peer blocked in `Semaphore::wait` for `idle`, in percent of that time.
fn idle_waiter(dir: &Path, idle: Duration) -> Result<f64> {
    let (path, map) = table_file(dir)?;
    let sem: &Semaphore = place(&map, 0)?;
    let child = peer("idle", &path, 1)?;
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
pub(crate) fn spin_floor(rounds: u32, two_lines: bool) -> Result<Latency> {
    let dir = tempdir()?;
    spin(dir.path(), rounds, two_lines)
}

fn tempdir() -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("mman-bench-ipc")
        .tempdir_in(crate::cleanup::temp_root())
        .context("bench: create a temporary directory (in $TMPDIR, which must be a writable directory)")?;
    crate::cleanup::remove_on_signal(dir.path());
    Ok(dir)
}

/// One method's round trip under one placement.
#[derive(serde::Serialize)]
struct IpcRow {
    placement: &'static str,
    method: &'static str,
    median_ns: u64,
    p99_ns: u64,
}

/// The round trips of every method under one placement; the spin floor only where two
/// spinning processes can run at once.
fn ipc_rows(dir: &Path, rounds: u32, placement: Placement) -> Result<Vec<IpcRow>> {
    let mut rows = Vec::new();
    let mut add = |method, l: Latency| {
        rows.push(IpcRow {
            placement: placement.name(),
            method,
            median_ns: l.median_ns,
            p99_ns: l.p99_ns,
        })
    };
    add("mman_semaphore", semaphores(dir, rounds)?);
    add("sem_t", sem_t(dir, rounds)?);
    add("pipe", pipe(dir, rounds)?);
    if placement.floors_apply() {
        add("spin_floor", spin(dir, rounds, false)?);
    }
    Ok(rows)
}

/// `mman bench ...`.
pub fn run(cmd: BenchCommand) -> Result<()> {
    let args = match cmd {
        BenchCommand::Ipc(args) => args,
        BenchCommand::Channel(args) => return channel::run(args),
    };
    // At most MAX_ROUNDS (the parser's bound): with the warm-up, it fits the peers' u32.
    let rounds = u32::try_from(args.rounds).context("bench ipc: --rounds")?;
    let dir = tempdir()?;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for p in args.placement.each() {
        if !args.json {
            errln!("bench ipc: placement {}...", p.name());
        }
        let placed = match Placed::enter(p)? {
            Ok(placed) => placed,
            Err(why) => {
                notes.push(format!("placement {} skipped: {why}", p.name()));
                continue;
            }
        };
        rows.extend(ipc_rows(dir.path(), rounds, placed.placement())?);
        if !p.floors_apply() {
            notes.push(format!(
                "placement {}: no spin floor (two spinning processes cannot both run)",
                p.name()
            ));
        }
    }
    let idle = idle_waiter(dir.path(), Duration::from_secs(1))?;
    if args.json {
        let v = serde_json::json!({
            "rounds": args.rounds,
            "results": rows,
            "idle_waiter_cpu_percent": idle,
            "notes": notes,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    outln!(
        "cross-process round trip, {} rounds each after {WARMUP} of warm-up:",
        args.rounds
    )?;
    outln!(
        "  {:<9} {:<28} {:>10} {:>10} {:>9} {:>9} {:>12}",
        "placement",
        "method",
        "median ns",
        "p99 ns",
        "x sem_t",
        "x best",
        "x spin floor"
    )?;
    for r in &rows {
        let of = |m: &str| {
            rows.iter()
                .find(|o| o.placement == r.placement && o.method == m)
                .map(|o| o.median_ns.max(1) as f64)
        };
        let best = of("sem_t")
            .unwrap_or(f64::MAX)
            .min(of("pipe").unwrap_or(f64::MAX));
        let floor = of("spin_floor").map_or("-".to_string(), |f| format!("{:.2}", r.median_ns as f64 / f));
        let name = match r.method {
            "mman_semaphore" => "mman Semaphore (futex)",
            "sem_t" => "glibc sem_t (pshared)",
            "pipe" => "pipe (1 byte each way)",
            _ => "spinning on a cache line",
        };
        outln!(
            "  {:<9} {name:<28} {:>10} {:>10} {:>9.3} {:>9.3} {floor:>12}",
            r.placement,
            r.median_ns,
            r.p99_ns,
            r.median_ns as f64 / of("sem_t").unwrap_or(1.0),
            r.median_ns as f64 / best,
        )?;
    }
    for n in &notes {
        outln!("note: {n}")?;
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
