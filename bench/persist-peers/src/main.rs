//! Commit latency of `mman::persist::Durable<T>` (process-crash-safe and durable modes)
//! against write()+fdatasync of the same bytes and LMDB (heed) putting one key per
//! committed transaction, for T of 8 B, 4 KiB and 1 MiB. One run, rotated, medians; ratios
//! only mean something within this run. `parts` mode: a 1 MiB durable commit beside the same
//! system calls built up one part of the protocol at a time (two places, the head's page, the
//! checksum), to show where its time over write+fdatasync goes. `same` mode: durable commits
//! against write+fdatasync into the durable variable's own file.

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
    let mode = std::env::args().nth(3);
    if mode.as_deref() == Some("parts") {
        for r in 0..runs {
            println!(
                "# run {} of {runs}: 1 MiB, medians of {rounds} rounds, rotated",
                r + 1
            );
            parts(rounds);
        }
        return;
    }
    if mode.as_deref() == Some("same") {
        println!("# durable commits against write+fdatasync into the same file, medians of {rounds} rounds");
        let mut ratios: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        for r in 0..runs {
            println!("# run {} of {runs}", r + 1);
            ratios[0].push(same_file::<8>("8 B", rounds));
            ratios[1].push(same_file::<4096>("4 KiB", rounds));
            ratios[2].push(same_file::<1048576>("1 MiB", rounds / 4));
        }
        println!("# durable / write+fdatasync, per run (sorted), and the median of the {runs} runs");
        for (label, mut v) in ["8 B", "4 KiB", "1 MiB"].into_iter().zip(ratios) {
            v.sort_by(f64::total_cmp);
            let list: Vec<String> = v.iter().map(|x| format!("{x:.3}")).collect();
            println!("{label:>6}  median {:.3}   [{}]", v[v.len() / 2], list.join(" "));
        }
        return;
    }
    let pair = mode.as_deref() == Some("pair");
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

/// `same` mode: a durable commit against write+fdatasync of the same bytes into a region of
/// the durable variable's own file, past its end (`Durable` uses only its layout's length),
/// written in full and synced first. On this virtual disk where a file lands moves its write
/// time by up to 15% (two fresh files side by side), which one file takes out of the ratio.
/// Returns the run's ratio of the medians.
fn same_file<const N: usize>(label: &str, rounds: usize) -> f64
where
    [u8; N]: bytemuck::Pod,
{
    let dir = tempfile::Builder::new()
        .prefix("persist-same")
        .tempdir_in(".")
        .unwrap();
    let path = dir.path().join("durable");
    let mut d = Durable::<[u8; N]>::open(&path, *b"peerbnch", [0u8; N]).unwrap();
    let f = File::options().read(true).write(true).open(&path).unwrap();
    let at = f.metadata().unwrap().len().next_multiple_of(1 << 20);
    let buf = vec![7u8; N];
    std::os::unix::fs::FileExt::write_all_at(&f, &buf, at).unwrap();
    f.sync_all().unwrap();
    let mut w = d.writer().unwrap();
    let mut samples = [Vec::new(), Vec::new()];
    for r in 0..rounds {
        for k in 0..2 {
            let which = (r + k) % 2;
            let t = Instant::now();
            if which == 0 {
                commit(&mut w, Commit::Durable);
            } else {
                std::os::unix::fs::FileExt::write_all_at(&f, &buf, at).unwrap();
                // SAFETY: fdatasync on a descriptor this function owns.
                assert_eq!(unsafe { libc::fdatasync(std::os::fd::AsRawFd::as_raw_fd(&f)) }, 0);
            }
            samples[which].push(t.elapsed().as_secs_f64());
        }
    }
    let [d, b] = samples.map(median);
    println!(
        "{label:>6}  durable {:>9.1} us   write+fdatasync {:>9.1} us   ratio {:.3}",
        d * 1e6,
        b * 1e6,
        d / b
    );
    d / b
}

/// A 1 MiB durable commit beside its parts rebuilt from raw system calls, each on a file of
/// its own written in full and synced first (as `Durable::open` leaves one), each with a value
/// buffer of its own (so each reads its value as cold or as warm as the others):
/// write+fdatasync at one place; the same alternating between two places a slot apart; plus
/// the 16-byte head and its page in the same `pwritev`, as a slot is written; plus the slot's
/// checksum (XXH3-64 seeded by the sequence number, the format's version 2) computed first.
fn parts(rounds: usize) {
    const N: usize = 1 << 20;
    const PAGE: usize = 4096;
    const SLOT: u64 = (PAGE + N) as u64;
    let dir = tempfile::Builder::new()
        .prefix("persist-parts")
        .tempdir_in(".")
        .unwrap();
    let mut d = Durable::<[u8; N]>::open(dir.path().join("durable"), *b"peerbnch", [0u8; N]).unwrap();
    let mut w = d.writer().unwrap();
    let file = |name: &str| {
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join(name))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &vec![1u8; PAGE + 2 * SLOT as usize], 0).unwrap();
        f.sync_all().unwrap();
        f
    };
    let names = [
        "durable (mman)",
        "write+fdatasync",
        "+ two places",
        "+ head and its page",
        "+ checksum",
        "+ msync, not fdatasync",
    ];
    let files: Vec<File> = names[1..]
        .iter()
        .enumerate()
        .map(|(i, _)| file(&format!("raw{i}")))
        .collect();
    let mut values: Vec<Vec<u8>> = vec![vec![7u8; N]; files.len()];
    let total = PAGE + 2 * SLOT as usize;
    // SAFETY: a fresh shared mapping of the last file, only msync'ed, unmapped at the end.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&files[4]),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    let map = map.cast::<u8>();
    let pad = [0u8; PAGE - 16];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for r in 0..rounds {
        let seq = r as u64 + 1;
        let off = if r % 2 == 0 {
            PAGE as u64
        } else {
            PAGE as u64 + SLOT
        };
        for k in 0..names.len() {
            let which = (r + k) % names.len();
            let t = Instant::now();
            let c = thread_cpu();
            if which == 0 {
                commit(&mut w, Commit::Durable);
            } else {
                let (f, v) = (&files[which - 1], &mut values[which - 1]);
                v[0] = v[0].wrapping_add(1);
                let mut head = [0u8; 16];
                head[..8].copy_from_slice(&seq.to_le_bytes());
                if which >= 4 {
                    head[8..].copy_from_slice(&xxhash_rust::xxh3::xxh3_64_with_seed(v, seq).to_le_bytes());
                }
                let (bufs, at): (Vec<&[u8]>, u64) = match which {
                    1 => (vec![v], 0),
                    2 => (vec![v], off + PAGE as u64),
                    _ => (vec![&head, &pad, v], off),
                };
                pwritev_all(f, &bufs, at);
                if which == 5 {
                    let len = PAGE + N;
                    // SAFETY: msync of whole pages of a live mapping of this file.
                    let rc = unsafe { libc::msync(map.add(off as usize).cast(), len, libc::MS_SYNC) };
                    assert_eq!(rc, 0);
                } else {
                    // SAFETY: fdatasync on a descriptor this function owns.
                    assert_eq!(unsafe { libc::fdatasync(std::os::fd::AsRawFd::as_raw_fd(f)) }, 0);
                }
            }
            samples[which].push(t.elapsed().as_secs_f64());
            cpu[which].push(thread_cpu() - c);
        }
    }
    // SAFETY: the mapping made above, no longer used.
    unsafe { libc::munmap(map.cast(), total) };
    let med: Vec<f64> = samples.into_iter().map(median).collect();
    let cpu: Vec<f64> = cpu.into_iter().map(median).collect();
    for ((name, m), c) in names.iter().zip(&med).zip(&cpu) {
        println!(
            "{name:<22} {:>9.1} us   this/write+fdatasync {:>6.3}x   CPU {:>6.1} us ({:+6.1} us)",
            m * 1e6,
            m / med[1],
            c * 1e6,
            (c - cpu[1]) * 1e6
        );
    }
}

/// This thread's CPU time (user and system) in seconds: unlike the wall time, it does not
/// depend on where on the virtual disk a file landed, so it shows what each part of the
/// protocol costs the processor.
fn thread_cpu() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec for the kernel to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// One `pwritev` of `bufs` at `at`, all of it (a short write here would be a bench failure).
fn pwritev_all(f: &File, bufs: &[&[u8]], at: u64) {
    let iov: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut _,
            iov_len: b.len(),
        })
        .collect();
    let want: usize = bufs.iter().map(|b| b.len()).sum();
    // SAFETY: every iovec points into a live slice of its length; the kernel only reads them.
    let n = unsafe {
        libc::pwritev(
            std::os::fd::AsRawFd::as_raw_fd(f),
            iov.as_ptr(),
            iov.len() as i32,
            at as libc::off_t,
        )
    };
    assert_eq!(n, want as isize, "pwritev: {}", std::io::Error::last_os_error());
}
