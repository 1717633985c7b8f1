//! Criterion: Durable<T> commits (process-crash-safe and durable) against write() +
//! fdatasync() of the same bytes, for T of 8 B, 4 KiB and 1 MiB; and the cost of a read.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mman::persist::{write_and_fdatasync, Commit, Durable, Persistent, Writer};

/// One commit, out of line: returning a large `T` by value inside criterion's closures makes
/// LLVM's compile time explode (minutes for 64 KiB), so the routines return nothing.
#[inline(never)]
fn commit<const N: usize>(w: &mut Writer<'_, [u8; N]>, mode: Commit)
where
    [u8; N]: bytemuck::Pod,
{
    w.update(mode, |v| v[0] = v[0].wrapping_add(1)).unwrap();
}

#[inline(never)]
fn read_first<const N: usize>(d: &Durable<[u8; N]>) -> u8
where
    [u8; N]: bytemuck::Pod,
{
    d.read().unwrap()[0]
}

fn commits<const N: usize>(c: &mut Criterion, name: &str)
where
    [u8; N]: bytemuck::Pod,
{
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group(format!("commit_{name}"));
    g.sample_size(20);
    let mut d = Durable::<[u8; N]>::open(dir.path().join("d"), *b"benchval", [0u8; N]).unwrap();
    {
        let mut w = d.writer().unwrap();
        g.bench_function(BenchmarkId::new("process_crash_safe", N), |b| {
            b.iter(|| commit(&mut w, Commit::ProcessCrashSafe))
        });
        g.bench_function(BenchmarkId::new("durable", N), |b| {
            b.iter(|| commit(&mut w, Commit::Durable))
        });
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("plain"))
        .unwrap();
    let buf = vec![7u8; N];
    g.bench_function(BenchmarkId::new("write_fdatasync", N), |b| {
        b.iter(|| write_and_fdatasync(&f, &buf).unwrap())
    });
    g.bench_function(BenchmarkId::new("durable_read", N), |b| {
        b.iter(|| black_box(read_first(&d)))
    });
    g.finish();
}

fn all(c: &mut Criterion) {
    commits::<8>(c, "8B");
    commits::<4096>(c, "4KiB");
    commits::<1048576>(c, "1MiB");
    let dir = tempfile::tempdir().unwrap();
    let p = Persistent::<u64>::open(dir.path().join("raw")).unwrap();
    // SAFETY: nothing else touches the benchmark's file while the reference lives.
    c.bench_function("persistent_read_u64", |b| {
        b.iter(|| black_box(*unsafe { black_box(&p).as_ref() }.unwrap()))
    });
    c.bench_function("persistent_get_u64", |b| {
        b.iter(|| black_box(black_box(&p).get().unwrap()))
    });
    c.bench_function("persistent_set_u64", |b| {
        b.iter(|| black_box(&p).set(&7).unwrap())
    });
}

criterion_group!(benches, all);
criterion_main!(benches);
