//! Tour section: the course notes' parent and child, talking through a channel instead of
//! a page and a semaphore, with the round trip measured beside a pipe's.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mman::channel::{Channel, Options};

use super::Tour;

const ROUNDS: usize = 20_000;

pub(super) fn section(t: &Tour) -> Result<()> {
    outln!(
        "section 7's parent and child passed ten numbers through one shared page, a semaphore beside them."
    )?;
    outln!("mman::channel grows that page into a ring of messages, with the waiting built in:")?;
    let base = format!("tour-{}", std::process::id());
    for dir in ["ping", "pong"] {
        crate::cleanup::unlink_on_signal(&format!("{base}-{dir}"));
    }
    let ping = Options::new().capacity(1 << 16).create(&format!("{base}-ping"))?;
    let pong = Options::new().capacity(1 << 16).create(&format!("{base}-pong"))?;
    let (mut tx, mut rx) = (ping.sender()?, pong.receiver()?);
    let mut child = crate::cleanup::spawn(
        Command::new(&t.exe)
            .args(["__tour-child", &format!("channel-echo:{base}")])
            .stdin(Stdio::null()),
    )
    .context("start the echoing child")?;
    for (i, line) in ["hello, child", "the page became a ring", "goodbye"]
        .iter()
        .enumerate()
    {
        tx.send(line.as_bytes())?;
        let answer = rx.recv()?;
        if i == 0 {
            // The child has opened both: the names can go (a SIGKILL then leaves none).
            for dir in ["ping", "pong"] {
                let _ = mman::shm::SharedMemory::unlink(&format!("{base}-{dir}"));
            }
        }
        outln!(
            "  parent -> child: {line:<24} child -> parent: {}",
            String::from_utf8_lossy(&answer)
        )?;
    }
    let msg = [b'x'; 64];
    let mut back = Vec::new();
    let mut times = Vec::with_capacity(ROUNDS);
    let before = mman::sync::wait::Stats::this_thread();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        tx.send(&msg)?;
        rx.recv_into(&mut back)?;
        times.push(t0.elapsed().as_nanos() as u64);
    }
    let after = mman::sync::wait::Stats::this_thread();
    drop(tx);
    let status = child.wait()?;
    if !status.success() {
        bail!("the echoing child {}", crate::cleanup::how(status));
    }
    let channel = median(times);
    let pipe = pipe_round_trip(t)?;
    outln!(
        "{ROUNDS} round trips of 64 bytes: median {channel} ns through the channel, {pipe} ns through a pipe ({:.0}x)",
        pipe as f64 / channel.max(1) as f64
    )?;
    outln!(
        "how the receiver's waits ended here: {} answered while spinning, {} after yielding the CPU, {} asleep ({} at once)",
        after.spun - before.spun,
        after.yielded - before.yielded,
        (after.gave_up - before.gave_up) + (after.slept_at_once - before.slept_at_once),
        after.slept_at_once - before.slept_at_once
    )?;
    outln!("a receiver spins only while its peer runs on another CPU (a reply then comes within a cache-line transfer),")?;
    outln!("yields to a peer that shares its CPU (never beside CPU-bound load), then sleeps on a futex: idle, it costs nothing.")?;
    outln!("each placement measured: `mman bench channel --placement all`; figures in bench/RESULTS.md.")?;
    outln!(
        "a peer that dies is noticed within 100 ms (Disconnected), never a hang. More: `mman bench channel`."
    )?;
    Ok(())
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The same 64-byte round trip through a pair of pipes, with the benchmark's stream peer.
fn pipe_round_trip(t: &Tour) -> Result<u64> {
    let mut child = crate::cleanup::spawn(
        Command::new(&t.exe)
            .args(["__channel-peer", "stream", "-", "64", &ROUNDS.to_string(), "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
    .context("start the pipe peer")?;
    let mut to = child.stdin.take().context("the pipe peer's stdin")?;
    let mut from = child.stdout.take().context("the pipe peer's stdout")?;
    let msg = [b'x'; 64];
    let mut back = [0u8; 64];
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        to.write_all(&msg)?;
        from.read_exact(&mut back)?;
        times.push(t0.elapsed().as_nanos() as u64);
    }
    drop(to);
    let mut rest = [0u8; 8];
    from.read_exact(&mut rest)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("the pipe peer {}", crate::cleanup::how(status));
    }
    Ok(median(times))
}

/// `mman __tour-child channel-echo:BASE`: answer each message on BASE-ping, uppercased, on
/// BASE-pong, until the parent leaves.
pub(super) fn echo(base: &str) -> Result<()> {
    let mut rx = Channel::open(&format!("{base}-ping"))?.receiver()?;
    let mut tx = Channel::open(&format!("{base}-pong"))?.sender()?;
    let mut buf = Vec::new();
    loop {
        match rx.recv_into(&mut buf) {
            Ok(()) => {
                buf.make_ascii_uppercase();
                tx.send(&buf)?;
            }
            Err(e) if e.kind() == mman::ErrorKind::Disconnected => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}
