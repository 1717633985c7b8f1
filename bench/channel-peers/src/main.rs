//! Benchmark peer for `mman bench channel`: iceoryx2 publish-subscribe between two processes.
//!
//! `channel-peers iceoryx2 --size BYTES [--messages N]` re-executes itself as the peer process
//! (hidden `__peer` role), then measures, each message a `[u8]` slice of BYTES written in full
//! by the sender (sequence number in its first 8 bytes when BYTES >= 8):
//!   * round trip, busy-polling: A publishes on `ping`, B busy-polls, copies the payload into
//!     a reply on `pong`, A busy-polls for it; 1000 warm-up trips, then N timed one by one;
//!   * one-way throughput: A publishes N messages back to back (the publisher retries rather
//!     than drops when B's buffer is full: safe overflow off, RetryUntilDelivered), B checks
//!     every sequence number in place (zero-copy, it reads 8 bytes) and answers "done" on `pong`;
//!     timed from A's first send to that answer;
//!   * round trip with blocking waits: as the first, but each side sleeps in an iceoryx2 event
//!     `Listener::timed_wait` (1 s, to notice a dead peer) woken by the other's `Notifier`.
//! Prints one JSON line on stdout; errors go to stderr with exit code 1. Service names carry
//! the leader's pid, so concurrent runs do not collide.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::{BackpressureAction, BackpressureInfo};
use iceoryx2::prelude::*;
use iceoryx2::sample::Sample;
use iceoryx2::service::port_factory::{event, publish_subscribe};

type Res<T> = Result<T, String>;
type Msg = Sample<ipc::Service, [u8], ()>;

const WARMUP: usize = 1000;
/// Sequence number of the message that tells the peer to leave.
const BYE: u64 = u64::MAX;

fn err<E: std::fmt::Debug>(what: &'static str) -> impl FnOnce(E) -> String {
    move |e| format!("iceoryx2: {what}: {e:?}")
}

/// The peer process, killed (if still running) whenever the leader leaves.
struct Peer(Child);

impl Peer {
    fn check(&mut self) -> Res<()> {
        match self.0.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(st)) => Err(format!("peer process exited early ({st})")),
            Err(e) => Err(format!("peer process: {e}")),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// What a busy or blocking wait checks now and then: is the other process still there?
enum Other {
    Child(Peer),
    Parent(u32),
}

impl Other {
    fn check(&mut self) -> Res<()> {
        match self {
            Other::Child(p) => p.check(),
            Other::Parent(pp) if std::os::unix::process::parent_id() != *pp => {
                Err("leader process went away".into())
            }
            Other::Parent(_) => Ok(()),
        }
    }
}

/// One side's ports: publishes on `tx`, subscribes to `rx`, wakes the other side through
/// `notifier`, sleeps on `listener`. The factories are kept so the services outlive the ports.
struct Ports {
    tx: Publisher<ipc::Service, [u8], ()>,
    rx: Subscriber<ipc::Service, [u8], ()>,
    notifier: Notifier<ipc::Service>,
    listener: Listener<ipc::Service>,
    _pubsub: [publish_subscribe::PortFactory<ipc::Service, [u8], ()>; 2],
    _events: [event::PortFactory<ipc::Service>; 2],
}

/// Subscriber buffer: room for about 64 MiB of messages, between 16 and 1024 of them.
fn buffer_for(size: usize) -> usize {
    ((64usize << 20) / size).clamp(16, 1024)
}

fn ports(node: &Node<ipc::Service>, tag: &str, leader: bool, size: usize) -> Res<Ports> {
    let buf = buffer_for(size);
    let pubsub = |suffix: &str| -> Res<_> {
        let name = ServiceName::new(&format!("{tag}/{suffix}")).map_err(err("service name"))?;
        let b = node
            .service_builder(&name)
            .publish_subscribe::<[u8]>()
            .max_publishers(1)
            .max_subscribers(1)
            .history_size(0)
            .subscriber_max_buffer_size(buf)
            .subscriber_max_borrowed_samples(2)
            .enable_safe_overflow(false);
        if leader {
            b.create().map_err(err("create publish-subscribe service"))
        } else {
            b.open().map_err(err("open publish-subscribe service"))
        }
    };
    let ev = |suffix: &str| -> Res<_> {
        let name = ServiceName::new(&format!("{tag}/{suffix}")).map_err(err("service name"))?;
        let b = node.service_builder(&name).event().max_notifiers(1).max_listeners(1);
        if leader {
            b.create().map_err(err("create event service"))
        } else {
            b.open().map_err(err("open event service"))
        }
    };
    let (ping, pong) = (pubsub("ping")?, pubsub("pong")?);
    let (ping_ev, pong_ev) = (ev("ping-ev")?, ev("pong-ev")?);
    let (out, inp, out_ev, in_ev) = if leader {
        (&ping, &pong, &ping_ev, &pong_ev)
    } else {
        (&pong, &ping, &pong_ev, &ping_ev)
    };
    // Retry while the peer's buffer is full, but give up rather than spin forever.
    let handler = |i: &BackpressureInfo| {
        if i.elapsed_time > Duration::from_secs(30) {
            BackpressureAction::DiscardDataAndFail
        } else {
            BackpressureAction::Retry
        }
    };
    let tx = out
        .publisher_builder()
        .initial_max_slice_len(size)
        .max_loaned_samples(2)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .set_backpressure_handler(handler)
        .create()
        .map_err(err("create publisher"))?;
    let rx = inp
        .subscriber_builder()
        .buffer_size(buf)
        .create()
        .map_err(err("create subscriber"))?;
    let notifier = out_ev.notifier_builder().create().map_err(err("create notifier"))?;
    let listener = in_ev.listener_builder().create().map_err(err("create listener"))?;
    Ok(Ports { tx, rx, notifier, listener, _pubsub: [ping, pong], _events: [ping_ev, pong_ev] })
}

fn seq_of(payload: &[u8]) -> Option<u64> {
    payload.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap()))
}

impl Ports {
    /// Publishes `buf` (all of it), sequence number `seq` written into its first 8 bytes.
    fn send(&self, buf: &mut [u8], seq: u64) -> Res<()> {
        if buf.len() >= 8 {
            buf[..8].copy_from_slice(&seq.to_le_bytes());
        }
        let s = self.tx.loan_slice_uninit(buf.len()).map_err(err("loan"))?;
        s.write_from_slice(buf).send().map_err(err("send"))?;
        Ok(())
    }

    /// Publishes a copy of a received payload.
    fn echo(&self, m: &Msg) -> Res<()> {
        let s = self.tx.loan_slice_uninit(m.payload().len()).map_err(err("loan"))?;
        s.write_from_slice(m.payload()).send().map_err(err("send"))?;
        Ok(())
    }

    fn recv_busy(&self, other: &mut Other) -> Res<Msg> {
        let mut spins = 0u32;
        loop {
            if let Some(m) = self.rx.receive().map_err(err("receive"))? {
                return Ok(m);
            }
            spins = spins.wrapping_add(1);
            if spins % (1 << 20) == 0 {
                other.check()?;
            }
            std::hint::spin_loop();
        }
    }

    fn recv_blocking(&self, other: &mut Other) -> Res<Msg> {
        loop {
            if let Some(m) = self.rx.receive().map_err(err("receive"))? {
                return Ok(m);
            }
            let woken = self
                .listener
                .timed_wait(|_| {}, Duration::from_secs(1))
                .map_err(err("listener wait"))?;
            if woken == 0 {
                other.check()?;
            }
        }
    }

    fn notify(&self) -> Res<()> {
        self.notifier.notify().map_err(err("notify"))?;
        Ok(())
    }
}

fn node() -> Res<Node<ipc::Service>> {
    set_log_level_from_env_or(LogLevel::Error);
    NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .map_err(err("create node"))
}

fn check_seq(m: &Msg, want: u64) -> Res<()> {
    match seq_of(m.payload()) {
        Some(got) if got != want => Err(format!("message {want} arrived as {got}: lost or reordered")),
        _ => Ok(()),
    }
}

/// Timed round trips after the warm-up ones; nanoseconds, sorted.
fn round_trips(p: &Ports, o: &mut Other, buf: &mut [u8], n: usize, blocking: bool) -> Res<Vec<u64>> {
    let mut t = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        let start = Instant::now();
        p.send(buf, i as u64)?;
        let m = if blocking {
            p.notify()?;
            p.recv_blocking(o)?
        } else {
            p.recv_busy(o)?
        };
        let ns = start.elapsed().as_nanos() as u64;
        check_seq(&m, i as u64)?;
        if i >= WARMUP {
            t.push(ns);
        }
    }
    t.sort_unstable();
    Ok(t)
}

fn leader(size: usize, n: usize) -> Res<String> {
    let node = node()?;
    let tag = format!("mman-bench-channel-{}", std::process::id());
    let p = ports(&node, &tag, true, size)?;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let child = Command::new(exe)
        .args(["__peer", "iceoryx2", &tag, &size.to_string(), &n.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawning the peer process: {e}"))?;
    let mut o = Other::Child(Peer(child));
    p.recv_busy(&mut o)?; // the peer's "ready": its ports exist
    let mut buf = vec![0xA5u8; size];

    let rtt = round_trips(&p, &mut o, &mut buf, n, false)?;

    let start = Instant::now();
    for i in 0..n {
        p.send(&mut buf, i as u64)?;
    }
    p.recv_busy(&mut o)?; // "done"
    let secs = start.elapsed().as_secs_f64();

    let blocking = round_trips(&p, &mut o, &mut buf, n, true)?;
    p.send(&mut buf, BYE)?;
    p.notify()?;
    if let Other::Child(peer) = &mut o {
        // Let it leave by itself (removing its ports); Drop kills it if it does not.
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(peer.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    let pct = |v: &[u64], q: usize| v[(v.len() * q / 100).min(v.len() - 1)];
    Ok(format!(
        "{{\"method\":\"iceoryx2\",\"size\":{size},\"rtt_median_ns\":{},\"rtt_p99_ns\":{},\
         \"msgs_per_s\":{:.0},\"gib_per_s\":{:.4},\"rtt_blocking_median_ns\":{}}}",
        pct(&rtt, 50),
        pct(&rtt, 99),
        n as f64 / secs,
        (n * size) as f64 / secs / (1u64 << 30) as f64,
        pct(&blocking, 50),
    ))
}

fn peer(tag: &str, size: usize, n: usize) -> Res<()> {
    let mut o = Other::Parent(std::os::unix::process::parent_id());
    let node = node()?;
    let p = ports(&node, tag, false, size)?;
    p.send(&mut vec![0u8; size], 0)?; // ready

    for _ in 0..WARMUP + n {
        let m = p.recv_busy(&mut o)?;
        p.echo(&m)?;
    }
    for i in 0..n {
        check_seq(&p.recv_busy(&mut o)?, i as u64)?;
    }
    p.send(&mut vec![0u8; size], 0)?; // done
    for _ in 0..WARMUP + n {
        let m = p.recv_blocking(&mut o)?;
        p.echo(&m)?;
        p.notify()?;
    }
    p.recv_blocking(&mut o)?; // bye: the leader has every reply, leaving is safe
    Ok(())
}

fn usage() -> String {
    "usage: channel-peers iceoryx2 --size BYTES [--messages N]".into()
}

fn run(args: &[String]) -> Res<Option<String>> {
    let num = |s: &str| s.parse::<usize>().map_err(|_| format!("not a number: {s}"));
    match args {
        [role, method, tag, size, n] if role == "__peer" && method == "iceoryx2" => {
            peer(tag, num(size)?, num(n)?).map(|()| None)
        }
        [method, rest @ ..] if method == "iceoryx2" => {
            let (mut size, mut n) = (None, 100_000);
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                let v = it.next().ok_or_else(usage)?;
                match a.as_str() {
                    "--size" => size = Some(num(v)?),
                    "--messages" => n = num(v)?,
                    _ => return Err(usage()),
                }
            }
            let size = size.ok_or_else(usage)?;
            if size == 0 || n == 0 {
                return Err("--size and --messages must be at least 1".into());
            }
            leader(size, n).map(Some)
        }
        _ => Err(usage()),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(Some(line)) => println!("{line}"),
        Ok(None) => {}
        Err(e) => {
            eprintln!("channel-peers: {e}");
            std::process::exit(1);
        }
    }
}
