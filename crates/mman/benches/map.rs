//! Criterion benchmarks of the mapping core:
//! * sequential: read() into a 128 KiB buffer vs a mapping read through `read_at` (atomic
//!   copies) vs a mapping read through the `unsafe` slice, summing every byte;
//! * random: 4 KiB blocks at random offsets by pread() vs `read_at` on a mapping;
//! * map + unmap cost, with and without MAP_POPULATE.
//!
//! Sizes 4 KiB to 1 GiB (set `MMAN_BENCH_MAX` to a smaller byte count to skip the large ones).
//! The file lives in the page cache (warmed first), so these measure the CPU side.

use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mman::MapOptions;

const SIZES: &[usize] = &[4 << 10, 1 << 20, 64 << 20, 1 << 30];

fn max_size() -> usize {
    std::env::var("MMAN_BENCH_MAX")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 30)
}

fn make_file(dir: &tempfile::TempDir, size: usize) -> File {
    let path = dir.path().join(format!("f{size}"));
    let mut f = File::create(&path).unwrap();
    let mut block = vec![0u8; 1 << 20];
    let mut x = 0x9e3779b97f4a7c15u64;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len());
        f.write_all(&block[..n]).unwrap();
        left -= n;
    }
    f.sync_all().unwrap();
    let f = File::open(&path).unwrap();
    // Warm the page cache.
    let mut sink = Vec::new();
    (&f).read_to_end(&mut sink).unwrap();
    f
}

fn sum(bytes: &[u8]) -> u64 {
    bytes.iter().map(|&b| b as u64).sum()
}

fn sequential(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("sequential");
    for &size in SIZES.iter().filter(|&&s| s <= max_size()) {
        let mut f = make_file(&dir, size);
        g.throughput(Throughput::Bytes(size as u64));
        if size >= 64 << 20 {
            g.sample_size(10);
        }
        g.bench_with_input(BenchmarkId::new("read", size), &size, |b, _| {
            let mut buf = vec![0u8; 128 << 10];
            b.iter(|| {
                f.seek(SeekFrom::Start(0)).unwrap();
                let mut total = 0;
                loop {
                    let n = f.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    total += sum(&buf[..n]);
                }
                black_box(total)
            })
        });
        g.bench_with_input(BenchmarkId::new("map_read_at", size), &size, |b, _| {
            let mut buf = vec![0u8; 128 << 10];
            b.iter(|| {
                let m = MapOptions::new().map(&f).unwrap();
                let mut total = 0;
                let mut off = 0;
                while off < m.len() {
                    let n = (m.len() - off).min(buf.len());
                    m.read_at(off, &mut buf[..n]).unwrap();
                    total += sum(&buf[..n]);
                    off += n;
                }
                black_box(total)
            })
        });
        g.bench_with_input(BenchmarkId::new("map_slice", size), &size, |b, _| {
            b.iter(|| {
                let m = MapOptions::new().map(&f).unwrap();
                // SAFETY: the benchmark's private temporary file; nothing else writes or
                // truncates it while the slice lives.
                let s = unsafe { m.as_slice() }.unwrap();
                black_box(sum(s))
            })
        });
    }
    g.finish();
}

fn random(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("random_4k");
    const READS: usize = 1024;
    for &size in SIZES.iter().filter(|&&s| s >= 1 << 20 && s <= max_size()) {
        let f = make_file(&dir, size);
        let blocks = size / 4096;
        let offsets: Vec<usize> = (0..READS)
            .map(|i| (i.wrapping_mul(2654435761) % blocks) * 4096)
            .collect();
        g.throughput(Throughput::Bytes((READS * 4096) as u64));
        g.bench_with_input(BenchmarkId::new("pread", size), &size, |b, _| {
            let mut buf = [0u8; 4096];
            b.iter(|| {
                for &o in &offsets {
                    f.read_exact_at(&mut buf, o as u64).unwrap();
                    black_box(&buf);
                }
            })
        });
        let m = MapOptions::new().map(&f).unwrap();
        g.bench_with_input(BenchmarkId::new("map_read_at", size), &size, |b, _| {
            let mut buf = [0u8; 4096];
            b.iter(|| {
                for &o in &offsets {
                    m.read_at(o, &mut buf).unwrap();
                    black_box(&buf);
                }
            })
        });
    }
    g.finish();
}

fn map_unmap(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("map_unmap");
    for &size in SIZES.iter().filter(|&&s| s <= max_size().min(64 << 20)) {
        let f = make_file(&dir, size);
        for populate in [false, true] {
            let name = if populate { "populate" } else { "lazy" };
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.iter(|| black_box(MapOptions::new().populate(populate).map(&f).unwrap()))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, sequential, random, map_unmap);
criterion_main!(benches);
