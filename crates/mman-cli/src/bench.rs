//! `mman bench ipc`: cross-process ping-pong round trips of mman's Semaphore, glibc's
//! process-shared `sem_t`, a pipe, and two processes spinning on one cache line (the floor),
//! all in one run; plus the CPU an idle waiter burns.

use std::io::{Read, Write};
use std::os::fd::AsFd;
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
mod channel_peer;
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

/// The page both sides of one measurement share: a memfd, handed to the peer as its
/// descriptor 3, so that no file exists anywhere (a SIGKILL leaves nothing behind).
fn table() -> Result<(mman::shm::Memfd, Mapping)> {
    let fd =
        mman::shm::Memfd::create("mman-bench-ipc", 4096).context("bench: create the shared page (memfd)")?;
    let map = fd.map()?;
    Ok((fd, map))
}

/// Where the peer finds the table: its descriptor 3 (see [`table`]).
const PEER_TABLE: &str = "/proc/self/fd/3";

/// Start the peer `kind` (`op`, "bench ipc", names the command in errors).
fn peer(op: &str, kind: &str, table: &mman::shm::Memfd, rounds: u32) -> Result<Tracked> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["__ipc-peer", kind, PEER_TABLE])
        .arg(rounds.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    crate::children::pass_fd(&mut cmd, table.as_fd(), 3);
    placement::prepare_peer(&mut cmd);
    crate::cleanup::spawn(&mut cmd).with_context(|| format!("{op}: start the {kind} peer"))
}

/// Wait for the peer `kind`: an error naming it unless it exited with status 0.
fn finish(op: &str, child: Tracked, kind: &str) -> Result<()> {
    let pid = child.id();
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{op}: the {kind} peer (pid {pid}) {}",
            crate::cleanup::how(out.status)
        );
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

/// How long a live peer is given to answer.
const PATIENCE: Duration = Duration::from_secs(10);
/// How often, while it has not answered, the peer is looked at: a dead one is noticed at
/// once, not after [`PATIENCE`].
const LOOK: Duration = Duration::from_millis(100);

/// Wait for the answer of `child` (`what`: "bench ipc: the sem_t peer"): `answered(slice)`
/// waits up to `slice` and says whether the answer came. Between slices the peer is looked
/// at; the error names it if it has ended (see `Tracked::check`), or says it stopped
/// answering after [`PATIENCE`].
fn await_answer(
    child: &mut Tracked,
    what: &str,
    mut answered: impl FnMut(Duration) -> Result<bool>,
) -> Result<()> {
    let t0 = Instant::now();
    while !answered(LOOK)? {
        if child.try_wait()?.is_some() {
            // `check` puts the peer and how it ended above this.
            bail!("no answer to the round trip");
        }
        if t0.elapsed() > PATIENCE {
            bail!("{what} stopped answering");
        }
    }
    Ok(())
}

fn semaphores(rounds: u32) -> Result<Latency> {
    let (fd, map) = table()?;
    let (ping, pong): (&Semaphore, &Semaphore) = (place(&map, 0)?, place(&map, 64)?);
    let mut child = peer("bench ipc", "semaphore", &fd, rounds + WARMUP)?;
    let what = "bench ipc: the semaphore peer";
    let r = measure(rounds as u64, || {
        ping.post()?;
        await_answer(&mut child, what, |t| Ok(pong.wait_timeout(t)))
    });
    let r = child.check(r, what)?;
    finish("bench ipc", child, "semaphore")?;
    Ok(r)
}

fn sem_t(rounds: u32) -> Result<Latency> {
    let (fd, map) = table()?;
    // SAFETY: a fresh file no process uses yet.
    let (ping, pong) = unsafe {
        (
            PosixSemaphore::init_in(&map, 0, 0)?,
            PosixSemaphore::init_in(&map, 64, 0)?,
        )
    };
    let mut child = peer("bench ipc", "sem_t", &fd, rounds + WARMUP)?;
    let what = "bench ipc: the sem_t peer";
    let r = measure(rounds as u64, || {
        ping.post()?;
        await_answer(&mut child, what, |t| Ok(pong.wait_timeout(t)?))
    });
    let r = child.check(r, what)?;
    finish("bench ipc", child, "sem_t")?;
    Ok(r)
}

/// The word the spinning peer answers in: the request's own word (one cache line both
/// ways, the floor), or one 128 bytes away (a request line and a reply line, as any pair
/// of one-way channels has).
const REPLY_WORD: [usize; 2] = [0, 16];

fn spin(op: &str, rounds: u32, two_lines: bool) -> Result<Latency> {
    let (fd, map) = table()?;
    let ping = map.atomic_u64(0)?;
    let pong = map.atomic_u64(REPLY_WORD[two_lines as usize] * 8)?;
    let kind = if two_lines { "spin2" } else { "spin" };
    let mut child = peer(op, kind, &fd, rounds + WARMUP)?;
    let mut k = 0u64;
    let what = format!("{op}: the spinning peer");
    let r = measure(rounds as u64, || {
        ping.store(2 * k + 1, Ordering::Release);
        let want = 2 * k + 2;
        await_answer(&mut child, &what, |slice| {
            let t0 = Instant::now();
            while pong.load(Ordering::Acquire) != want {
                std::hint::spin_loop();
                if t0.elapsed() > slice {
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        k += 1;
        Ok(())
    });
    let r = child.check(r, &what)?;
    finish(op, child, "spin")?;
    Ok(r)
}

fn pipe(rounds: u32) -> Result<Latency> {
    let (fd, _map) = table()?;
    let mut child = peer("bench ipc", "pipe", &fd, rounds + WARMUP)?;
    let mut to = child.stdin.take().context("bench ipc: peer stdin")?;
    let mut from = child.stdout.take().context("bench ipc: peer stdout")?;
    let mut b = [0u8; 1];
    let r = measure(rounds as u64, || {
        to.write_all(b"x")?;
        from.read_exact(&mut b)?;
        Ok(())
    });
    let r = child.check(r, "bench ipc: the pipe peer")?;
    drop(to);
    finish("bench ipc", child, "pipe")?;
    Ok(r)
}

/// CPU used by a peer blocked in `Semaphore::wait` for `idle`, in percent of that time.
fn idle_waiter(idle: Duration) -> Result<f64> {
    let (fd, map) = table()?;
    let sem: &Semaphore = place(&map, 0)?;
    let child = peer("bench ipc", "idle", &fd, 1)?;
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
/// `op` names the command in errors.
pub(crate) fn spin_floor(op: &str, rounds: u32, two_lines: bool) -> Result<Latency> {
    spin(op, rounds, two_lines)
}

/// Why the spin floors are not measured here, when they are not: with one usable CPU
/// (`taskset -c 0`, a cgroup quota under two CPUs) the two spinning processes never run at
/// once, and each hand-off waits for the scheduler to switch: a time slice, milliseconds a
/// round trip (`bench ipc`'s defaults would have run for 13 minutes), not a floor.
pub(crate) fn floor_skipped() -> Option<String> {
    let cpus = mman::sync::usable_cpus();
    (cpus < 2).then(|| {
        format!(
            "spin floor skipped: this process can use only {cpus} CPU (its affinity mask and cgroup CPU limit), \
             where two spinning processes take turns a scheduler time slice at a time, milliseconds a round trip"
        )
    })
}

/// One method's round trip under one placement.
#[derive(serde::Serialize)]
struct IpcRow {
    placement: &'static str,
    method: &'static str,
    median_ns: u64,
    p99_ns: u64,
}

/// `mman bench ...`.
pub fn run(cmd: BenchCommand) -> Result<()> {
    let args = match cmd {
        BenchCommand::Ipc(args) => args,
        BenchCommand::Channel(args) => return channel::run(args),
    };
    // At most MAX_ROUNDS (the parser's bound): with the warm-up, it fits the peers' u32.
    let rounds = u32::try_from(args.rounds).context("bench ipc: --rounds")?;
    // Asked before any placement pins this process: of the CPUs it was given.
    let skipped = floor_skipped();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for p in args.placement.each() {
        if !args.json && args.placement == Placement::All {
            errln!("bench ipc: placement {}...", p.name());
        }
        let _placed = match Placed::enter(p)? {
            Ok(placed) => placed,
            Err(why) => {
                notes.push(format!("placement {} skipped: {why}", p.name()));
                continue;
            }
        };
        let mut add = |method, l: Latency| {
            rows.push(IpcRow {
                placement: p.name(),
                method,
                median_ns: l.median_ns,
                p99_ns: l.p99_ns,
            })
        };
        add("mman_semaphore", semaphores(rounds)?);
        add("sem_t", sem_t(rounds)?);
        add("pipe", pipe(rounds)?);
        if p.floors_apply() && skipped.is_none() {
            add("spin_floor", spin("bench ipc", rounds, false)?);
        } else if skipped.is_none() {
            notes.push(format!(
                "placement {}: no spin floor (two spinning processes cannot both run there)",
                p.name()
            ));
        }
    }
    let idle = idle_waiter(Duration::from_secs(1))?;
    if args.json {
        // The first placement's figures also under their methods' names, as before
        // placements were measured.
        let first = |m: &str| {
            rows.iter()
                .find(|r| r.method == m && r.placement == rows[0].placement)
                .map(|r| serde_json::json!({"median_ns": r.median_ns, "p99_ns": r.p99_ns}))
        };
        let v = serde_json::json!({
            "rounds": args.rounds,
            "mman_semaphore": first("mman_semaphore"),
            "sem_t": first("sem_t"),
            "pipe": first("pipe"),
            "spin_floor": first("spin_floor"),
            "spin_floor_skipped": skipped,
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
        let x_floor = of("spin_floor").map_or("-".to_string(), |f| format!("{:.2}", r.median_ns as f64 / f));
        let name = match r.method {
            "mman_semaphore" => "mman Semaphore (futex)",
            "sem_t" => "glibc sem_t (pshared)",
            "pipe" => "pipe (1 byte each way)",
            _ => "spinning on a cache line",
        };
        outln!(
            "  {:<9} {name:<28} {:>10} {:>10} {:>9.3} {:>9.3} {x_floor:>12}",
            r.placement,
            r.median_ns,
            r.p99_ns,
            r.median_ns as f64 / of("sem_t").unwrap_or(1.0),
            r.median_ns as f64 / best,
        )?;
    }
    if let Some(why) = &skipped {
        outln!("  {why}")?;
    }
    for n in &notes {
        outln!("note: {n}")?;
    }
    outln!("an mman Semaphore waiter whose peer is idle for 1 s used {idle:.2}% of a CPU")?;
    Ok(())
}

pub use channel_peer::peer_main as channel_peer_main;

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
