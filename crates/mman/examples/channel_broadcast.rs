//! A broadcast of frames to subscribers that come and go. The publisher creates the named
//! broadcast `/mman.NAME` (16 slots), publishes a frame (its number and the time) every
//! 2 ms for a second, and starts three copies of itself as subscribers, at different times:
//! * `waited` joins first and is waited for: the publisher never overwrites a frame it
//!   has not read, so it misses none;
//! * `slow` sleeps 10 ms per frame: the publisher overtakes it, and each frame it gets
//!   says how many it missed just before (`Delivery::missed`);
//! * `leaver` joins last and leaves after 50 frames.
//!
//! Each subscriber prints a line: the frame it joined at, the first and last it got, how
//! many it got and missed. The others end when the publisher closes (`Disconnected`).
//!
//! `cargo run --example channel_broadcast`

use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mman::channel::broadcast::{self, Broadcast};
use mman::ErrorKind;

const FRAMES: u64 = 500;
const PERIOD: Duration = Duration::from_millis(2);
/// Who joins before which frame.
const PLAN: [(u64, &str); 3] = [(0, "waited"), (100, "slow"), (250, "leaver")];

/// A frame, published as its bytes (`bytemuck::Pod`).
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Frame {
    number: u64,
    /// When it was published, in µs since the epoch (a clock all processes share).
    micros: u64,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => publisher(),
        [role @ ("waited" | "slow" | "leaver"), name] => subscriber(role, name),
        _ => Err("usage: channel_broadcast [waited|slow|leaver NAME]".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("channel_broadcast: {e}");
            ExitCode::FAILURE
        }
    }
}

fn publisher() -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("example-bcast-{}", std::process::id());
    let bus = broadcast::Options::new()
        .slots(16)
        .message_size(size_of::<Frame>())
        .create(&name)?;
    let mut publisher = bus.publisher()?;
    println!("publisher: /mman.{name}, 16 slots, a frame every {PERIOD:?} for {FRAMES} frames");
    let mut subscribers: Vec<Child> = Vec::new();
    let t0 = Instant::now();
    for number in 0..FRAMES {
        for (_, role) in PLAN.iter().filter(|(at, _)| *at == number) {
            subscribers.push(
                Command::new(std::env::current_exe()?)
                    .args([role, name.as_str()])
                    .spawn()?,
            );
        }
        publisher.publish_value(&Frame {
            number,
            micros: now_micros(),
        })?;
        // Keep the rate: sleep until the next frame is due.
        let due = t0 + PERIOD * (number + 1) as u32;
        if let Some(left) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
    }
    // Closing the publisher: subscribers read what is left, then get Disconnected.
    drop(publisher);
    println!("publisher: {FRAMES} frames in {:.2?}; closed", t0.elapsed());
    let mut failed = 0;
    for mut s in subscribers {
        failed += usize::from(!s.wait()?.success());
    }
    if failed > 0 {
        return Err(format!("{failed} subscribers failed").into());
    }
    Ok(())
}

fn subscriber(role: &str, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let bus = Broadcast::open(name)?;
    let mut sub = if role == "waited" {
        bus.subscriber_waited_for()?
    } else {
        bus.subscriber()?
    };
    let joined = sub.next_seq();
    let (mut first, mut last, mut received, mut missed, mut age) = (None, None, 0u64, 0, 0);
    let why = loop {
        let d = match sub.recv() {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::Disconnected => break "the publisher closed",
            Err(e) => return Err(e.into()),
        };
        let frame: Frame = bytemuck::try_pod_read_unaligned(&d.data).map_err(|_| "not a frame")?;
        if frame.number != d.seq {
            return Err(format!("frame {} arrived as message {}", frame.number, d.seq).into());
        }
        age += now_micros().saturating_sub(frame.micros);
        first.get_or_insert(d.seq);
        last = Some(d.seq);
        received += 1;
        missed += d.missed;
        if role == "slow" {
            std::thread::sleep(Duration::from_millis(10));
        }
        if role == "leaver" && received == 50 {
            break "left early";
        }
    };
    let show = |s: Option<u64>| s.map_or("-".to_string(), |s| s.to_string());
    println!(
        "{role}: joined at {joined}, first {}, last {}, received {received}, missed {missed}, \
         mean age {} us ({why})",
        show(first),
        show(last),
        age / received.max(1)
    );
    Ok(())
}
