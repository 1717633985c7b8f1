//! The course notes' first example: two unrelated processes share memory by mapping the same
//! file. Start `wait FILE` in one shell and `say FILE MESSAGE` in another: the waiter sees
//! the message appear in its own mapping (the generation counter tells it when).
//!
//! `cargo run --example unrelated -- wait /tmp/board & cargo run --example unrelated -- say /tmp/board hi`

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const SIZE: u64 = 4096;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["wait", file] => wait(file),
        ["say", file, msg] => say(file, msg),
        _ => Err("usage: unrelated wait FILE | unrelated say FILE MESSAGE".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unrelated: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The board: a generation counter (8 bytes), a length (8 bytes), the message.
fn board(file: &str) -> Result<mman::Mapping, Box<dyn std::error::Error>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(file)?;
    if f.metadata()?.len() < SIZE {
        f.set_len(SIZE)?;
    }
    Ok(mman::MapOptions::new()
        .read_write()
        .shared()
        .len(SIZE as usize)
        .map(&f)?)
}

fn say(file: &str, msg: &str) -> Result<(), Box<dyn std::error::Error>> {
    let map = board(file)?;
    let bytes = &msg.as_bytes()[..msg.len().min(SIZE as usize - 16)];
    map.write_at(16, bytes)?;
    map.store(8, &(bytes.len() as u64))?;
    // Release: the message is visible to whoever sees the new generation.
    map.atomic_u64(0)?.fetch_add(1, Ordering::Release);
    Ok(())
}

fn wait(file: &str) -> Result<(), Box<dyn std::error::Error>> {
    let map = board(file)?;
    let generation = map.atomic_u64(0)?;
    let seen = generation.load(Ordering::Acquire);
    println!("waiting for a message in {file}");
    std::io::Write::flush(&mut std::io::stdout())?;
    let t0 = Instant::now();
    while generation.load(Ordering::Acquire) == seen {
        if t0.elapsed() > Duration::from_secs(10) {
            return Err("nobody said anything for 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let len = map.load::<u64>(8)?.min(SIZE - 16) as usize;
    let mut msg = vec![0u8; len];
    map.read_at(16, &mut msg)?;
    println!("{}", String::from_utf8_lossy(&msg));
    Ok(())
}
