//! Commit latency of `mman::persist::Durable<T>` (process-crash-safe and durable modes)
//! against write()+fdatasync of the same bytes and LMDB (heed) putting one key per
//! committed transaction, for T of 8 B, 4 KiB and 1 MiB. One run, rotated, medians; ratios
//! only mean something within this run.

use std::fs::File;
use std::time::Instant;

use heed::types::Bytes;
use heed::{Database, EnvOpenOptions};
use mman::persist::{write_and_fdatasync, Commit, Durable, Writer};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Out of line: large `T` returned by value inside closures makes LLVM crawl. Through a
/// held `Writer` (the writer lock taken once, as a long-lived writer would), as LMDB's
/// environment stays open.
#[inline(never)]
fn commit<const N: usize>(w: &mut Writer<'_, [u8; N]>, mode: Commit)
where
    [u8; N]: bytemuck::Pod,
{
    w.update(mode, |v| v[0] = v[0].wrapping_add(1)).unwrap();
}

/// One run of `rounds` rounds on fresh files; prints its table and returns each contender's
/// time over write+fdatasync's.
fn run<const N: usize>(label: &str, rounds: usize, pair: bool) -> Vec<f64>
where
    [u8; N]: bytemuck::Pod,
{
    let dir = tempfile::Builder::new()
        .prefix("persist-peers")
        .tempdir_in(".")
        .unwrap();
    // One file a mode: process-crash-safe commits leave dirty pages that a durable commit's
    // sync would otherwise have to write too.
    let mut d = Durable::<[u8; N]>::open(dir.path().join("durable"), *b"peerbnch", [0u8; N]).unwrap();
    let mut fast = Durable::<[u8; N]>::open(dir.path().join("fast"), *b"peerbnch", [0u8; N]).unwrap();
    let plain = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("plain"))
        .unwrap();
    let buf = vec![7u8; N];
    std::fs::create_dir(dir.path().join("lmdb")).unwrap();
    // SAFETY (heed's contract): this process opens the environment once and nobody else uses it.
    let env = unsafe {
        EnvOpenOptions::new()
            .map_size(64 << 20)
            .max_dbs(1)
            .open(dir.path().join("lmdb"))
            .unwrap()
    };
    let mut wtxn = env.write_txn().unwrap();
    let db: Database<Bytes, Bytes> = env.create_database(&mut wtxn, None).unwrap();
    wtxn.commit().unwrap();

    let mut w = d.writer().unwrap();
    let mut wf = fast.writer().unwrap();
    let names = [
        "durable",
        "write+fdatasync",
        "lmdb put+commit",
        "process-crash-safe",
    ];
    // `pair`: durable and write+fdatasync only, nothing else touching the disk between them.
    let names = if pair { &names[..2] } else { &names[..] };
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    // Rotate the order every round so drift hits every contender alike.
    for r in 0..rounds {
        for k in 0..names.len() {
            let which = (r + k) % names.len();
            let reps = if which == 3 { 1000 } else { 1 };
            let t = Instant::now();
            for _ in 0..reps {
                match which {
                    0 => commit(&mut w, Commit::Durable),
                    1 => write_and_fdatasync(&plain, &buf).unwrap(),
                    2 => {
                        let mut w = env.write_txn().unwrap();
                        db.put(&mut w, b"value", &buf).unwrap();
                        w.commit().unwrap();
                    }
                    _ => commit(&mut wf, Commit::ProcessCrashSafe),
                }
            }
            samples[which].push(t.elapsed().as_secs_f64() / reps as f64);
        }
    }
    let med: Vec<f64> = samples.into_iter().map(median).collect();
    let base = med[1];
    for (name, m) in names.iter().zip(&med) {
        println!(
            "{label:>6}  {name:<20} {:>12.1} us {:>12.0} commits/s   write+fdatasync/this {:>7.2}x",
            m * 1e6,
            1.0 / m,
            base / m
        );
    }
    med.iter().map(|m| m / base).collect()
}

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (rounds, runs) = (arg(1, 200), arg(2, 1).max(1));
    let pair = std::env::args().nth(3).as_deref() == Some("pair");
    println!("# medians of {rounds} rounds, rotated; the file system of the current directory");
    // Each run has fresh files, so each lands elsewhere on the disk: on a virtual disk the
    // place alone moved a contender's time by up to 15%. Over several runs, the median of
    // the per-run ratios is the figure to quote.
    let names = ["durable", "lmdb put+commit"];
    let mut ratios: Vec<[Vec<f64>; 2]> = vec![
        [Vec::new(), Vec::new()],
        [Vec::new(), Vec::new()],
        [Vec::new(), Vec::new()],
    ];
    for r in 0..runs {
        if runs > 1 {
            println!("# run {} of {runs}", r + 1);
        }
        for (i, t) in [
            run::<8>("8 B", rounds, pair),
            run::<4096>("4 KiB", rounds, pair),
            run::<1048576>("1 MiB", rounds / 4, pair),
        ]
        .into_iter()
        .enumerate()
        {
            ratios[i][0].push(t[0]);
            ratios[i][1].push(t.get(2).copied().unwrap_or(f64::NAN));
        }
    }
    if runs > 1 {
        println!("# time / write+fdatasync's, per run (sorted), and the median of the {runs} runs");
        for (label, r) in ["8 B", "4 KiB", "1 MiB"].iter().zip(ratios) {
            for (name, mut v) in names.iter().zip(r).take(if pair { 1 } else { 2 }) {
                v.sort_by(f64::total_cmp);
                let list: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
                println!(
                    "{label:>6}  {name:<16} median {:.3}   [{}]",
                    v[v.len() / 2],
                    list.join(" ")
                );
            }
        }
    }
}
