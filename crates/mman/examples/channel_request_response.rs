//! Request and response between two unrelated processes: two named channels, one each way.
//! Run without arguments, this is the server: it creates `/mman.NAME-req` and
//! `/mman.NAME-resp`, starts a copy of itself as the client (`client NAME`, a new program,
//! not a fork), and answers every number with its square until the client leaves. The
//! client opens both channels by name, asks, checks each answer, and says how it went.
//! Both directions carry plain values (`send_value` / `recv_value`), copied in and out.
//!
//! `cargo run --example channel_request_response`

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use mman::channel::Channel;
use mman::ErrorKind;

/// How many requests the client makes.
const REQUESTS: u64 = 1000;

/// An answer, sent as its bytes: a `repr(C)` struct of plain integers (`bytemuck::Pod`).
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Answer {
    n: u64,
    square: u64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => server(),
        ["client", name] => client(name),
        _ => Err("usage: channel_request_response [client NAME]".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("channel_request_response: {e}");
            ExitCode::FAILURE
        }
    }
}

fn server() -> Result<(), Box<dyn std::error::Error>> {
    // Named objects are system-wide: the pid keeps two servers apart.
    let name = format!("example-rr-{}", std::process::id());
    let req = Channel::create(&format!("{name}-req"), 4096)?;
    let resp = Channel::create(&format!("{name}-resp"), 4096)?;
    let mut requests = req.receiver()?;
    let mut answers = resp.sender()?;
    println!("server: channels /mman.{name}-req and /mman.{name}-resp");
    let mut client = Command::new(std::env::current_exe()?)
        .args(["client", &name])
        .spawn()?;
    let mut served = 0;
    loop {
        // A client that left says so (Disconnected); one that died before it attached
        // its end never will, so look at the process too now and then.
        let n: u64 = match requests.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(msg)) => bytemuck::try_pod_read_unaligned(&msg).map_err(|_| "a request is not a u64")?,
            Ok(None) if client.try_wait()?.is_some() => break,
            Ok(None) => continue,
            Err(e) if e.kind() == ErrorKind::Disconnected => break,
            Err(e) => return Err(e.into()),
        };
        answers.send_value(&Answer {
            n,
            square: n.wrapping_mul(n),
        })?;
        served += 1;
    }
    println!("server: answered {served} requests; the client left");
    let status = client.wait()?;
    println!("server: the client exited ({status})");
    if !status.success() {
        return Err("the client failed".into());
    }
    // The last handle to go (here) removes the names: nobody is attached any more.
    Ok(())
}

fn client(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut requests = Channel::open(&format!("{name}-req"))?.sender()?;
    let mut answers = Channel::open(&format!("{name}-resp"))?.receiver()?;
    let t0 = Instant::now();
    let mut right = 0;
    for i in 0..REQUESTS {
        let n = 1_000 + 7 * i;
        requests.send_value(&n)?;
        let a: Answer = answers.recv_value()?;
        if a.n == n && a.square == n * n {
            right += 1;
        } else {
            eprintln!("client: asked {n}, got {} for {}", a.square, a.n);
        }
    }
    let per = t0.elapsed() / REQUESTS as u32;
    println!("client: {REQUESTS} requests, {right} right answers, {per:?} per round trip");
    if right != REQUESTS {
        return Err("wrong answers".into());
    }
    // Leaving closes `requests`: the server gets Disconnected.
    Ok(())
}
