//! `mman bench channel`: messages between two processes, side by side in one run: mman's
//! SPSC channel, a pipe, a Unix stream socket, and iceoryx2 (a peer program built outside
//! the workspace, `bench/channel.sh`), with two processes spinning on one cache line as the
//! floor (and on two, a request line and a reply line, as the floor of any pair of one-way
//! channels). For each size: the round trip (median, p99) and one-way throughput; then what a
//! blocked receiver costs when idle, and the sealed hand-off of large messages.
//! The peer of each measurement, `mman __channel-peer`, is in `channel_peer.rs`.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};

use crate::cleanup::Tracked;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use mman::channel::{Channel, Options, Receiver, Sender};

use super::placement::{Placed, Placement};

mod pool;
use super::{measure, summarize, Latency};
pub(super) use pool::peer_main as pool_peer_main;

// Arguments of `mman bench channel` (a plain comment: as a doc comment it would replace the
// subcommand's about text, the arguments being added last, see `Command` in main.rs).
#[derive(Args, Debug)]
pub struct ChannelArgs {
    /// Message size in bytes; repeat for several (default: 64, 4096 and 1048576).
    #[arg(long = "size", value_parser = crate::args::message_size)]
    sizes: Vec<u64>,
    /// Messages sent one way for the throughput figure (at most 2000 for sizes of 1 MiB and
    /// more).
    #[arg(long, default_value_t = 100_000, value_parser = crate::args::messages)]
    messages: u64,
    /// Round trips timed one by one for the latency figures (at most 1000 for sizes of
    /// 1 MiB and more).
    #[arg(long, default_value_t = 20_000, value_parser = crate::args::rounds)]
    rounds: u64,
    /// Where the two processes run: both on one CPU, on two pinned CPUs, unpinned, or
    /// unpinned beside a CPU-bound process on every CPU; `all` measures each in turn
    /// (iceoryx2, whose peer program starts both of its sides, only unpinned).
    #[arg(long, value_enum, default_value_t = Placement::Free)]
    placement: Placement,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The untimed round trips before the timed ones (`measure` makes them; the peers answer them).
const WARMUP: u64 = super::WARMUP as u64;
const BIG: u64 = 1 << 20;

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
struct Row {
    /// Where the two processes ran (`--placement`).
    #[serde(default)]
    placement: String,
    method: String,
    size: u64,
    rtt_median_ns: u64,
    rtt_p99_ns: u64,
    msgs_per_s: u64,
    gib_per_s: f64,
}

fn row(method: &str, size: u64, rtt: Latency, count: u64, elapsed: Duration) -> Row {
    let secs = elapsed.as_secs_f64().max(1e-9);
    Row {
        placement: String::new(),
        method: method.into(),
        size,
        rtt_median_ns: rtt.median_ns,
        rtt_p99_ns: rtt.p99_ns,
        msgs_per_s: (count as f64 / secs) as u64,
        gib_per_s: count as f64 * size as f64 / secs / (1u64 << 30) as f64,
    }
}

/// A name for this run's objects, unlinked if the run is interrupted.
fn unique(tag: &str) -> String {
    let name = format!("bench-{}-{tag}", std::process::id());
    crate::cleanup::unlink_on_signal(&name);
    name
}

/// The peer: `mman __channel-peer MODE NAME SIZE ROUNDS COUNT`: it answers `ROUNDS` round
/// trips, then takes `COUNT` messages one way and answers their number.
fn peer(
    mode: &str,
    name: &str,
    size: u64,
    rounds: u64,
    count: u64,
    io: Option<(OwnedFd, OwnedFd)>,
) -> Result<Tracked> {
    let mut c = Command::new(std::env::current_exe()?);
    c.args([
        "__channel-peer",
        mode,
        name,
        &size.to_string(),
        &rounds.to_string(),
        &count.to_string(),
    ]);
    match io {
        Some((i, o)) => c.stdin(Stdio::from(i)).stdout(Stdio::from(o)),
        None => c.stdin(Stdio::null()).stdout(Stdio::null()),
    };
    super::placement::prepare_peer(&mut c);
    crate::cleanup::spawn(&mut c).with_context(|| format!("bench channel: start the {mode} peer"))
}

fn finish(mut child: Tracked, what: &str) -> Result<()> {
    let st = child.wait()?;
    if !st.success() {
        bail!(
            "bench channel: the {what} peer (pid {}) {}",
            child.id(),
            crate::cleanup::how(st)
        );
    }
    Ok(())
}

/// A pair of named channels, ping (to the peer) and pong (back), big enough for `size`,
/// and this side's ends of them: the sender of ping, the receiver of pong. `spin`: the
/// spin budget, when not the default.
fn channels(tag: &str, size: u64, spin: Option<Duration>) -> Result<(Sender, Receiver)> {
    let cap = (4 * (size + 8)).max(1 << 20).next_power_of_two() as usize;
    let mut o = Options::new();
    o.capacity(cap);
    if let Some(spin) = spin {
        o.spin(spin);
    }
    let ping = o.create(&unique(&format!("{tag}-ping")))?;
    let pong = o.create(&unique(&format!("{tag}-pong")))?;
    Ok((ping.sender()?, pong.receiver()?))
}

/// Unlink the names of the channel pair `tag` (see [`channels`]) as soon as the peer has
/// opened both (its first answer says so): from then on the endpoints hold the memory, and
/// a SIGKILL of this run leaves no name behind.
fn unlink_pair(tag: &str) {
    for dir in ["ping", "pong"] {
        let _ = mman::shm::SharedMemory::unlink(&format!("bench-{}-{tag}-{dir}", std::process::id()));
    }
}

/// `rounds` timed round trips of `size` bytes through the peer of the pair `tag`, whose
/// names are unlinked after the first.
fn round_trips(tag: &str, tx: &mut Sender, rx: &mut Receiver, size: u64, rounds: u64) -> Result<Latency> {
    let msg = vec![0x5au8; size as usize];
    let mut back = Vec::new();
    let mut opened = false;
    measure(rounds, || {
        tx.send(&msg)?;
        rx.recv_into(&mut back)?;
        if !std::mem::replace(&mut opened, true) {
            unlink_pair(tag);
        }
        Ok(())
    })
}

fn mman(size: u64, rounds: u64, count: u64) -> Result<Row> {
    let tag = format!("mman{size}");
    let (mut tx, mut rx) = channels(&tag, size, None)?;
    let mut child = peer("mman", &unique(&tag), size, rounds + WARMUP, count, None)?;
    let rtt = round_trips(&tag, &mut tx, &mut rx, size, rounds);
    let rtt = child.check(rtt, "bench channel: the mman peer")?;
    let msg = vec![0x5au8; size as usize];
    let mut back = Vec::new();
    // One way: batches of up to 256 messages, the peer counts and answers once.
    let t0 = Instant::now();
    let mut left = count;
    let one_way = (|| -> Result<()> {
        while left > 0 {
            let k = left.min(256);
            tx.send_batch(std::iter::repeat_n(msg.as_slice(), k as usize))?;
            left -= k;
        }
        rx.recv_into(&mut back)?;
        Ok(())
    })();
    child.check(one_way, "bench channel: the mman peer")?;
    let elapsed = t0.elapsed();
    if back != count.to_le_bytes() {
        bail!("bench channel: the mman peer counted {back:?}, not {count}");
    }
    drop(tx);
    finish(child, "mman")?;
    Ok(row("mman", size, rtt, count, elapsed))
}

/// Round trips of `size` bytes written and read in place (`send_in_place`,
/// `recv_in_place`: no copy on this side, one from ring to ring in the peer).
fn in_place(size: u64, rounds: u64) -> Result<InPlace> {
    let tag = format!("inplace{size}");
    let (mut tx, mut rx) = channels(&tag, size, None)?;
    let mut child = peer("mman-in-place", &unique(&tag), size, rounds + WARMUP, 0, None)?;
    let mut opened = false;
    let rtt = measure(rounds, || {
        // SAFETY: as in the peer: the benchmark's own channels, used by it and its peer.
        unsafe {
            tx.send_in_place(size as usize, |m| m.fill(0x5a))?;
            rx.recv_in_place(|m| std::hint::black_box(m.len()))?;
        }
        if !std::mem::replace(&mut opened, true) {
            unlink_pair(&tag);
        }
        Ok(())
    });
    let rtt = child.check(rtt, "bench channel: the mman in-place peer")?;
    drop(tx);
    finish(child, "mman in place")?;
    Ok(InPlace {
        placement: "",
        size,
        rtt_median_ns: rtt.median_ns,
        rtt_p99_ns: rtt.p99_ns,
    })
}

/// The round trip of messages written and read in place, at one size.
#[derive(serde::Serialize)]
struct InPlace {
    placement: &'static str,
    size: u64,
    rtt_median_ns: u64,
    rtt_p99_ns: u64,
}

/// A pipe or a Unix stream socket: the peer reads its stdin, answers on its stdout.
fn stream(method: &str, size: u64, rounds: u64, count: u64) -> Result<Row> {
    let (mut to, mut from, mut child): (Box<dyn Write>, Box<dyn Read>, Tracked) = if method == "pipe" {
        // Close-on-exec, all four ends: the peer gets its two as its standard input and
        // output (dup2 clears the flag there) and must not inherit ours, or it would hold
        // the write end of its own input and never see it end.
        let pipe =
            || rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("bench channel: pipe");
        let (r1, w1) = pipe()?;
        let (r2, w2) = pipe()?;
        let child = peer("stream", "-", size, rounds + WARMUP, count, Some((r1, w2)))?;
        (
            Box::new(std::fs::File::from(w1)),
            Box::new(std::fs::File::from(r2)),
            child,
        )
    } else {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        let b2 = b.try_clone()?;
        let child = peer(
            "stream",
            "-",
            size,
            rounds + WARMUP,
            count,
            Some((b.into(), b2.into())),
        )?;
        (Box::new(a.try_clone()?), Box::new(a), child)
    };
    let msg = vec![0x5au8; size as usize];
    let mut back = vec![0u8; size as usize];
    let what = format!("bench channel: the {method} peer");
    let rtt = measure(rounds, || {
        to.write_all(&msg)?;
        from.read_exact(&mut back)?;
        Ok(())
    });
    let rtt = child.check(rtt, &what)?;
    // One way: one write per message; the peer reads everything, then answers 8 bytes.
    let mut total = [0u8; 8];
    let t0 = Instant::now();
    let one_way = (|| -> Result<()> {
        for _ in 0..count {
            to.write_all(&msg)?;
        }
        from.read_exact(&mut total)?;
        Ok(())
    })();
    child.check(one_way, &what)?;
    drop(to);
    let elapsed = t0.elapsed();
    if u64::from_le_bytes(total) != count * size {
        bail!(
            "bench channel: the {method} peer read {} bytes, not {}",
            u64::from_le_bytes(total),
            count * size
        );
    }
    finish(child, method)?;
    Ok(row(method, size, rtt, count, elapsed))
}

/// iceoryx2, through the peer program named by `MMAN_ICEORYX2_PEER`.
fn iceoryx2(size: u64, count: u64) -> Result<Option<Row>> {
    let Some(program) = std::env::var_os("MMAN_ICEORYX2_PEER") else {
        return Ok(None);
    };
    let out = crate::cleanup::output(Command::new(&program).args([
        "iceoryx2",
        "--size",
        &size.to_string(),
        "--messages",
        &count.to_string(),
    ]))
    .with_context(|| {
        format!(
            "bench channel: run the iceoryx2 peer {}",
            program.to_string_lossy()
        )
    })?;
    if !out.status.success() {
        bail!(
            "bench channel: the iceoryx2 peer failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let r: Row = serde_json::from_str(line.trim())
        .with_context(|| format!("bench channel: the iceoryx2 peer printed {:?}", line.trim()))?;
    Ok(Some(r))
}

/// Round trip of mman with spinning off (futex sleeps only), and the CPU of a receiver
/// blocked for one second.
fn futex_only(size: u64, rounds: u64) -> Result<Latency> {
    let tag = "futex";
    let (mut tx, mut rx) = channels(tag, size, Some(Duration::ZERO))?;
    let mut child = peer("mman-futex", &unique(tag), size, rounds + WARMUP, 0, None)?;
    let rtt = round_trips(tag, &mut tx, &mut rx, size, rounds);
    let rtt = child.check(rtt, "bench channel: the mman-futex peer")?;
    drop(tx);
    finish(child, "mman-futex")?;
    Ok(rtt)
}

fn idle_receiver(idle: Duration) -> Result<f64> {
    let name = unique("idle");
    let chan = Channel::create(&name, 4096)?;
    let mut tx = chan.sender()?;
    let child = peer("idle", &name, 0, 0, 0, None)?;
    std::thread::sleep(idle);
    tx.send(b"wake")?;
    super::child_cpu_percent(child, idle, "bench channel")
}

#[derive(serde::Serialize)]
struct Handoff {
    size: u64,
    /// Sealing the filled memfd (the kernel checks every page for pins).
    seal_median_ns: u64,
    /// `send_sealed` of the sealed memfd to the receiver's acknowledgement.
    rtt_median_ns: u64,
    rtt_p99_ns: u64,
}

/// A sealed memfd handed over and acknowledged, for each size: the time from `send_sealed`
/// to the acknowledgement (filling the memfd is the sender's work and not counted).
fn sealed(sizes: &[u64], rounds: u64) -> Result<Vec<Handoff>> {
    let tag = "sealed";
    let (mut tx, mut rx) = channels(tag, 64, None)?;
    let mut child = peer("sealed", &unique(tag), 0, 0, 0, None)?;
    let out = sealed_rounds(tag, sizes, rounds, &mut tx, &mut rx);
    let out = child.check(out, "bench channel: the sealed peer")?;
    drop(tx);
    finish(child, "sealed")?;
    Ok(out)
}

fn sealed_rounds(
    tag: &str,
    sizes: &[u64],
    rounds: u64,
    tx: &mut Sender,
    rx: &mut Receiver,
) -> Result<Vec<Handoff>> {
    let mut out = Vec::new();
    let mut back = Vec::new();
    for &size in sizes {
        let mut v = Vec::new();
        let mut seals = Vec::new();
        for _ in 0..rounds {
            let fd = mman::shm::Memfd::create("frame", size)?;
            fd.map()?.write_at(0, b"frame")?;
            // Sealing is part of making the frame (its cost grows with the pages); the
            // hand-off of a sealed memfd is what the channel does.
            let t0 = Instant::now();
            use mman::shm::Seals;
            fd.add_seals(Seals::WRITE | Seals::SHRINK | Seals::GROW | Seals::SEAL)?;
            seals.push(t0.elapsed().as_nanos() as u64);
            let t0 = Instant::now();
            tx.send_sealed(fd)?;
            rx.recv_into(&mut back)?;
            v.push(t0.elapsed().as_nanos() as u64);
            if v.len() == 1 {
                unlink_pair(tag);
            }
            // Close the memfd the peer has taken (freeing its pages is not the hand-off).
            tx.flush()?;
        }
        let l = summarize(v);
        out.push(Handoff {
            size,
            seal_median_ns: summarize(seals).median_ns,
            rtt_median_ns: l.median_ns,
            rtt_p99_ns: l.p99_ns,
        });
    }
    Ok(out)
}

/// The spin floors measured under one placement.
#[derive(serde::Serialize)]
struct Floors {
    placement: &'static str,
    one_line: Latency,
    two_lines: Latency,
}

/// `mman bench channel`.
pub fn run(args: ChannelArgs) -> Result<()> {
    let sizes = if args.sizes.is_empty() {
        vec![64, 4096, BIG]
    } else {
        args.sizes.clone()
    };
    let floor_rounds = args.rounds.min(u32::MAX as u64) as u32;
    // Asked before any placement pins this process: of the CPUs it was given.
    let skipped = super::floor_skipped();
    let mut floors = Vec::new();
    let mut rows = Vec::new();
    let mut in_place_rows = Vec::new();
    let mut memcpys = Vec::new();
    let mut notes = vec![pool::TOUCHES.to_string()];
    for p in args.placement.each() {
        let _placed = match Placed::enter(p)? {
            Ok(placed) => placed,
            Err(why) => {
                notes.push(format!("placement {} skipped: {why}", p.name()));
                continue;
            }
        };
        if p.floors_apply() && skipped.is_none() {
            floors.push(Floors {
                placement: p.name(),
                one_line: super::spin_floor("bench channel", floor_rounds, false)?,
                two_lines: super::spin_floor("bench channel", floor_rounds, true)?,
            });
        } else if skipped.is_none() {
            notes.push(format!(
                "placement {}: no spin floors (two spinning processes cannot both run there)",
                p.name()
            ));
        }
        for &size in &sizes {
            let (rounds, count) = if size >= BIG {
                (args.rounds.min(1000), args.messages.min(2000))
            } else {
                (args.rounds, args.messages)
            };
            if !args.json {
                errln!(
                    "bench channel: placement {}, {size} bytes: {rounds} round trips, {count} messages one way, each method...",
                    p.name()
                );
            }
            let start = rows.len();
            rows.push(mman(size, rounds, count)?);
            let mut ip = in_place(size, rounds)?;
            ip.placement = p.name();
            in_place_rows.push(ip);
            rows.extend(pool::rows(size, rounds, count)?);
            memcpys.push((
                p.name(),
                size,
                pool::memcpy(size, count),
                pool::handoff_memcpy(size, count),
            ));
            rows.push(stream("pipe", size, rounds, count)?);
            rows.push(stream("unix_socket", size, rounds, count)?);
            if p == Placement::Free {
                match iceoryx2(size, count) {
                    Ok(Some(r)) => rows.push(r),
                    Ok(None) => {}
                    Err(e) => notes.push(format!("iceoryx2 at {size} bytes: {e:#}")),
                }
            }
            for r in &mut rows[start..] {
                r.placement = p.name().into();
            }
        }
    }
    let floor_of = |placement: &str| floors.iter().find(|f| f.placement == placement);
    if std::env::var_os("MMAN_ICEORYX2_PEER").is_none() {
        notes.push(
            "iceoryx2 not measured: run bench/channel.sh, which builds its peer program (bench/channel-peers) and sets MMAN_ICEORYX2_PEER".into(),
        );
    }
    let futex = futex_only(64, args.rounds)?;
    let idle = idle_receiver(Duration::from_secs(1))?;
    let handoff = sealed(&[4096, BIG, 64 * BIG], 200)?;
    if args.json {
        let first = floors.first();
        let v = serde_json::json!({
            "spin_floor_ns": first.map(|f| f.one_line.median_ns),
            "two_line_floor_ns": first.map(|f| f.two_lines.median_ns),
            "spin_floor_skipped": skipped,
            "floors": floors,
            "results": rows,
            "mman_in_place": in_place_rows,
            "mman_futex_only_64b_rtt": futex,
            "idle_receiver_cpu_percent": idle,
            "sealed_handoff": handoff,
            "memcpy_gib_per_s": memcpys.iter().map(|(p, s, g, h)| serde_json::json!({"placement": p, "size": s, "gib_per_s": g, "two_threads_gib_per_s": h})).collect::<Vec<_>>(),
            "notes": notes,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    for f in &floors {
        outln!(
            "placement {}: two processes spinning on one cache line (the floor): median {} ns, p99 {} ns; on two, a request line and a reply line (the floor of two one-way channels): median {} ns, p99 {} ns",
            f.placement,
            f.one_line.median_ns,
            f.one_line.p99_ns,
            f.two_lines.median_ns,
            f.two_lines.p99_ns
        )?;
    }
    if let Some(why) = &skipped {
        outln!("{why}; the \"x floor\" column is left empty")?;
    }
    outln!(
        "  {:<9} {:<12} {:>9} {:>11} {:>11} {:>9} {:>13} {:>9} {:>9} {:>10}",
        "placement",
        "method",
        "size",
        "rtt med ns",
        "rtt p99 ns",
        "x floor",
        "msgs/s",
        "GiB/s",
        "rtt/mman",
        "mman x tput"
    )?;
    for r in &rows {
        let mine = rows
            .iter()
            .find(|m| m.method == "mman" && m.size == r.size && m.placement == r.placement)
            .unwrap_or(r);
        let x_floor = floor_of(&r.placement).map_or("-".to_string(), |f| {
            format!(
                "{:.2}",
                r.rtt_median_ns as f64 / f.one_line.median_ns.max(1) as f64
            )
        });
        outln!(
            "  {:<9} {:<12} {:>9} {:>11} {:>11} {:>9} {:>13} {:>9.3} {:>9.2} {:>10.2}",
            r.placement,
            r.method,
            r.size,
            r.rtt_median_ns,
            r.rtt_p99_ns,
            x_floor,
            r.msgs_per_s,
            r.gib_per_s,
            r.rtt_median_ns as f64 / mine.rtt_median_ns.max(1) as f64,
            mine.msgs_per_s as f64 / r.msgs_per_s.max(1) as f64,
        )?;
    }
    for p in &in_place_rows {
        let copying = rows
            .iter()
            .find(|r| r.method == "mman" && r.size == p.size && r.placement == p.placement)
            .map_or(0, |r| r.rtt_median_ns);
        outln!(
            "placement {}: mman in place (send_in_place, recv_in_place: no copy here, one in the peer), {} B: round trip median {} ns, p99 {} ns ({:.2}x the copying round trip)",
            p.placement,
            p.size,
            p.rtt_median_ns,
            p.rtt_p99_ns,
            p.rtt_median_ns as f64 / copying.max(1) as f64
        )?;
    }
    for (p, size, gib, two) in &memcpys {
        outln!(
            "placement {p}: a single-threaded memcpy of {size} B between two warm buffers: {gib:.3} GiB/s; \
             two threads handing such messages over through 4 buffers, one memcpy in and one out each (no mman): {two:.3} GiB/s"
        )?;
    }
    outln!(
        "mman, 64 B, unpinned, futex sleeps only (Wait::Block): round trip median {} ns, p99 {} ns",
        futex.median_ns,
        futex.p99_ns
    )?;
    outln!("a receiver blocked for 1 s used {idle:.2}% of a CPU (start-up included)")?;
    for h in &handoff {
        outln!(
            "sealed hand-off of {} bytes: send_sealed to the receiver's acknowledgement median {} ns, p99 {} ns (sealing it first: {} ns)",
            h.size,
            h.rtt_median_ns,
            h.rtt_p99_ns,
            h.seal_median_ns
        )?;
    }
    for n in &notes {
        outln!("note: {n}")?;
    }
    Ok(())
}
