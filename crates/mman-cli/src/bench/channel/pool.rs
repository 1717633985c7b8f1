//! The pool rows of `mman bench channel`: large messages through the channel's slot pool
//! (`Sender::loan`, `Receiver::recv_borrowed`), with the work the iceoryx2 contender does:
//! the sender writes every byte of each message once (a copy from a buffer, as iceoryx2's
//! `write_from_slice`), the receiver reads the first 8 bytes (the sequence number, as
//! iceoryx2's receiver does); in the round trip the peer copies the message into its reply
//! (as iceoryx2's peer). A third row has the receiver read every byte (a copy into a
//! buffer), beside a single-threaded memcpy of the same size measured in the same run.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use mman::channel::{Channel, Options, Receiver, Sender};

use super::{finish, measure, peer, row, unique, Row, WARMUP};

/// The three ways: (row name, peer mode, in place, receiver reads every byte).
const WAYS: [(&str, &str, bool, bool); 3] = [
    ("pool", "pool", false, false),
    ("pool_in_place", "pool-in-place", true, false),
    ("pool_read_all", "pool-read-all", false, true),
];

/// What each side touches, for the output.
pub const TOUCHES: &str = "pool rows: the sender writes every byte of each message once (pool: Loan::write_at from a buffer; pool_in_place: a copy into Loan::as_mut_slice); the receiver reads its first 8 bytes (Borrowed::read_at; in place: as_slice), as iceoryx2's does; pool_read_all: the receiver copies every byte out (read_at into a buffer); in round trips the peer copies each message into its reply (Loan::copy_from; in place: slice to slice), as iceoryx2's peer does; both sides of the pool rows spin up to 1 ms before sleeping (Options::spin; iceoryx2's busy-poll)";

/// A ping and pong channel whose pools hold messages of `size` bytes.
fn channels(tag: &str, size: u64) -> Result<(Sender, Receiver)> {
    let mut o = Options::new();
    o.pool(4, (size as usize).next_multiple_of(4096).max(4096))
        .spin(SPIN);
    let ping = o.create(&unique(&format!("{tag}-ping")))?;
    let pong = o.create(&unique(&format!("{tag}-pong")))?;
    Ok((ping.sender()?, pong.receiver()?))
}

fn open(name: &str, dir: &str) -> Result<Channel> {
    Ok(Options::new().spin(SPIN).open(&format!("{name}-{dir}"))?)
}

/// How long each side spins before it sleeps: iceoryx2's sides busy-poll, and a round trip
/// of 1 MiB outlasts the default 50 µs.
const SPIN: Duration = Duration::from_millis(1);

/// Loan a slot of `tx`'s pool, write `msg` into it (every byte), send it.
fn send(tx: &mut Sender, msg: &[u8], in_place: bool) -> Result<()> {
    let mut l = tx.loan(msg.len())?;
    if in_place {
        // SAFETY: the benchmark's own channels (mode 0600, names only it knows), used by
        // it and its peer, which follow the protocol.
        unsafe { l.as_mut_slice() }.copy_from_slice(msg);
    } else {
        l.write_at(0, msg)?;
    }
    l.send()?;
    Ok(())
}

/// Take a message from `rx`, read its first 8 bytes (or all of them into `all`): its
/// sequence number.
fn take(rx: &mut Receiver, in_place: bool, all: Option<&mut Vec<u8>>) -> Result<u64> {
    let m = rx.recv_borrowed()?;
    let mut seq = [0u8; 8];
    match all {
        Some(buf) => {
            buf.resize(m.len(), 0);
            m.read_at(0, buf);
            let k = buf.len().min(8);
            seq[..k].copy_from_slice(&buf[..k]);
        }
        None if in_place => {
            // SAFETY: as in `send`.
            let s = unsafe { m.as_slice() };
            let k = s.len().min(8);
            seq[..k].copy_from_slice(&s[..k]);
        }
        None => {
            m.read_at(0, &mut seq);
        }
    }
    Ok(u64::from_le_bytes(seq))
}

/// The pool rows at `size`.
pub fn rows(size: u64, rounds: u64, count: u64) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    for (method, mode, in_place, read_all) in WAYS {
        let tag = format!("{mode}{size}");
        let (mut tx, mut rx) = channels(&tag, size)?;
        let child = peer(mode, &unique(&tag), size, rounds + WARMUP, count, None)?;
        let mut msg = vec![0x5au8; size as usize];
        let mut all = read_all.then(Vec::new);
        let rtt = measure(rounds, || {
            send(&mut tx, &msg, in_place)?;
            take(&mut rx, in_place, all.as_mut())?;
            Ok(())
        })?;
        let t0 = Instant::now();
        for n in 0..count {
            let k = msg.len().min(8);
            msg[..k].copy_from_slice(&n.to_le_bytes()[..k]);
            send(&mut tx, &msg, in_place)?;
        }
        let back = rx.recv()?;
        let elapsed = t0.elapsed();
        if back != count.to_le_bytes() {
            bail!("bench channel: the {mode} peer counted {back:?}, not {count}");
        }
        drop(tx);
        finish(child, mode)?;
        out.push(row(method, size, rtt, count, elapsed));
    }
    Ok(out)
}

/// A single-threaded memcpy of `size` bytes, `count` times between two warm buffers: GiB/s.
pub fn memcpy(size: u64, count: u64) -> f64 {
    let src = vec![0x5au8; size as usize];
    let mut dst = vec![0u8; size as usize];
    dst.copy_from_slice(&src);
    let t0 = Instant::now();
    for _ in 0..count {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    count as f64 * size as f64 / secs / (1u64 << 30) as f64
}

/// Two threads of this process handing `count` messages of `size` bytes over through 4
/// buffers with plain memcpys and no mman: the sender copies each message in, the receiver
/// copies it out (`pool_read_all`'s work, in the same placement). The ceiling of a one-way
/// stream whose receiver reads every byte on this machine: GiB/s.
pub fn handoff_memcpy(size: u64, count: u64) -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    const BUFS: u64 = 4;
    let bufs: Vec<Mutex<Vec<u8>>> = (0..BUFS).map(|_| Mutex::new(vec![0u8; size as usize])).collect();
    let (filled, emptied) = (AtomicU64::new(0), AtomicU64::new(0));
    // Spin a little, then yield: where a placement pins this process to one CPU, both
    // threads share it, and a spin would only burn the other's turn.
    let wait_for = |word: &AtomicU64, at_least: u64| {
        let mut spins = 0u32;
        while word.load(Ordering::Acquire) < at_least {
            if spins < 1000 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    };
    let t0 = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            let src = vec![0x5au8; size as usize];
            for n in 0..count {
                wait_for(&emptied, (n + 1).saturating_sub(BUFS));
                bufs[(n % BUFS) as usize]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .copy_from_slice(std::hint::black_box(&src));
                filled.store(n + 1, Ordering::Release);
            }
        });
        let mut dst = vec![0u8; size as usize];
        for n in 0..count {
            wait_for(&filled, n + 1);
            dst.copy_from_slice(
                &bufs[(n % BUFS) as usize]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
            std::hint::black_box(&mut dst);
            emptied.store(n + 1, Ordering::Release);
        }
    });
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    count as f64 * size as f64 / secs / (1u64 << 30) as f64
}

/// The peer of the pool rows: answers `rounds` round trips (a copy of each message into
/// its reply), then takes `count` messages one way, checks their sequence numbers, and
/// answers their number.
pub fn peer_main(mode: &str, name: &str, size: u64, rounds: u64, count: u64) -> Result<()> {
    let (in_place, read_all) = match mode {
        "pool" => (false, false),
        "pool-in-place" => (true, false),
        "pool-read-all" => (false, true),
        other => bail!("unknown channel peer {other:?}"),
    };
    let (mut rx, mut tx) = (open(name, "ping")?.receiver()?, open(name, "pong")?.sender()?);
    for _ in 0..rounds {
        let m = rx.recv_borrowed()?;
        let mut l = tx.loan(m.len())?;
        if in_place {
            // SAFETY: the benchmark's own channels, used by it and this peer, which follow
            // the protocol.
            unsafe { l.as_mut_slice().copy_from_slice(m.as_slice()) };
        } else {
            l.copy_from(&m)?;
        }
        drop(m);
        l.send()?;
    }
    let mut all = read_all.then(Vec::new);
    for n in 0..count {
        let seq = take(&mut rx, in_place, all.as_mut())?;
        if size >= 8 && seq != n {
            bail!("message {n} carried the sequence number {seq}");
        }
    }
    tx.send(&count.to_le_bytes())?;
    tx.flush()?;
    Ok(())
}
