//! Tests of `Durable` against real files: older formats, readers racing writers, peers
//! scribbling on the heads.

use super::*;

/// A file of format version 1 (CRC-32 slots, before XXH3) written by an older mman still
/// opens, reads, takes commits of both kinds and stays version 1, readable as before.
#[test]
fn a_version_1_file_is_read_and_committed_to_as_version_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1");
    let v1 = Layout {
        sum: SlotSum::Crc32,
        ..Durable::<[u64; 4]>::layout()
    };
    let mut img = Durable::<[u64; 4]>::image(&v1, *b"v1 file\0", &[1, 2, 3, 4]);
    let mut h: Header = bytemuck::pod_read_unaligned(&img[..64]);
    h.version = 1;
    h.crc = header_crc(&h);
    img[..64].copy_from_slice(bytemuck::bytes_of(&h));
    std::fs::write(&path, &img).unwrap();

    let mut d = Durable::<[u64; 4]>::open_existing(&path, *b"v1 file\0").unwrap();
    assert_eq!(d.layout.sum, SlotSum::Crc32);
    assert_eq!(d.read().unwrap(), [1, 2, 3, 4]);
    d.update(Commit::Durable, |v| v[0] = 10).unwrap();
    d.update(Commit::ProcessCrashSafe, |v| v[1] = 20).unwrap();
    drop(d);
    let raw = std::fs::read(&path).unwrap();
    let h: Header = bytemuck::pod_read_unaligned(&raw[..64]);
    assert_eq!(h.version, 1, "the file keeps its version");
    // Its slots carry CRC-32 as version 1 does: a reader of version 1 finds the value.
    let mut out = [0u64; 4];
    let found = newest_valid(
        &v1,
        |off, buf| {
            buf.copy_from_slice(&raw[off as usize..off as usize + buf.len()]);
            Ok(())
        },
        bytemuck::bytes_of_mut(&mut out),
    )
    .unwrap();
    assert_eq!(found.map(|(_, seq)| seq), Ok(3));
    assert_eq!(out, [10, 20, 3, 4]);
    let d = Durable::<[u64; 4]>::open_existing(&path, *b"v1 file\0").unwrap();
    assert_eq!(d.read().unwrap(), [10, 20, 3, 4]);

    // A version this mman does not know is refused, and says which it reads.
    let mut raw = raw;
    let mut h: Header = bytemuck::pod_read_unaligned(&raw[..64]);
    h.version = 3;
    h.crc = header_crc(&h);
    raw[..64].copy_from_slice(bytemuck::bytes_of(&h));
    std::fs::write(&path, &raw).unwrap();
    let e = Durable::<[u64; 4]>::open_existing(&path, *b"v1 file\0").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains("format version 3, this mman reads 1 to 2"),
        "{e}"
    );
}

/// Readers racing a writer that commits as fast as it can (process-crash-safe commits of
/// a small value: tens of nanoseconds each, so both copies change under a reader) always
/// get a committed value, never a false "corrupted".
#[test]
fn readers_racing_a_fast_writer_never_report_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hot");
    let mut d = Durable::<[u64; 2]>::open(&path, *b"hot pair", [0, u64::MAX]).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let r = Durable::<[u64; 2]>::open_read_only(&path, *b"hot pair").unwrap();
            let mut last = 0;
            for _ in 0..20_000 {
                let v = r.read().unwrap();
                assert_eq!(v[1], !v[0], "a torn value");
                assert!(v[0] >= last, "went back from {last} to {}", v[0]);
                last = v[0];
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let mut w = d.writer().unwrap();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            w.update(Commit::ProcessCrashSafe, |v| {
                v[0] += 1;
                v[1] = !v[0];
            })
            .unwrap();
        }
        drop(w);
        reader.join().unwrap();
    });
}

/// A peer that keeps scribbling over both heads makes a reader fail in bounded time (as
/// corrupted, or as a writer too fast to read), never hang; a file whose copies are
/// garbage while nobody writes is reported corrupted at once.
#[test]
fn a_peer_scribbling_on_both_heads_fails_a_reader_in_bounded_time() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scribbled");
    drop(Durable::<[u64; 2]>::open(&path, *b"scribble", [1, 2]).unwrap());
    let layout = Durable::<[u64; 2]>::layout();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let map = MapOptions::new().read_write().shared().map(&file).unwrap();
    let d = Durable::<[u64; 2]>::open_read_only(&path, *b"scribble").unwrap();
    let (stop, rounds) = (AtomicBool::new(false), AtomicU64::new(0));
    // Stops the scribbler however the test ends (a failed assertion included).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Relaxed);
        }
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 1u64;
            while !stop.load(Relaxed) {
                for slot in 0..2 {
                    n = n.wrapping_mul(6364136223846793005).wrapping_add(1);
                    map.write_at(layout.slot(slot) as usize, &n.to_le_bytes())
                        .unwrap();
                }
                rounds.fetch_add(1, Relaxed);
            }
        });
        let _stop = Stop(&stop);
        while rounds.load(Relaxed) == 0 {
            std::thread::yield_now();
        }
        let t = std::time::Instant::now();
        let e = d.read().unwrap_err();
        assert!(
            t.elapsed() < READ_PATIENCE + std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
        // Garbage seen twice alike is corruption; garbage changing all the time, a writer
        // too fast to read: either way an error, in bounded time.
        let timed_out = e.kind() == ErrorKind::Os && e.to_string().contains("faster than they could be read");
        assert!(e.kind() == ErrorKind::Corrupted || timed_out, "{e}");
    });
    // Nobody writes now: the garbage is corruption, reported without waiting.
    let t = std::time::Instant::now();
    let e = d.read().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupted, "{e}");
    assert!(t.elapsed() < std::time::Duration::from_millis(100));
}

/// A file whose newest copy carries sequence number u64::MAX (a peer's garbage, checksum
/// and all): reading works, a commit fails as corrupted, without a panic and without a
/// "successful" commit that wrapped to sequence 0 and vanished.
#[test]
fn a_sequence_number_at_its_maximum_fails_a_commit_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maxed");
    let layout = Durable::<u64>::layout();
    let mut img = Durable::<u64>::image(&layout, *b"max seq\0", &7);
    commit_slot(
        &mut Img(&mut img),
        &layout,
        1,
        u64::MAX,
        &9u64.to_le_bytes(),
        Commit::Durable,
    )
    .unwrap();
    std::fs::write(&path, &img).unwrap();
    let mut d = Durable::<u64>::open_existing(&path, *b"max seq\0").unwrap();
    assert_eq!(d.read().unwrap(), 9);
    for mode in [Commit::ProcessCrashSafe, Commit::Durable] {
        let e = d.update(mode, |v| *v += 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupted, "{e}");
        assert!(e.to_string().contains("sequence number"), "{e}");
    }
    assert_eq!(d.read().unwrap(), 9, "nothing was committed");
}

/// A value of 64 KiB or more is read with `pread`, which stops short at the end of a file
/// another party cut: that is the truncation, reported as such (with the sizes), as the
/// mapping's copies of smaller values report it.
#[test]
fn a_large_value_cut_short_by_a_truncation_is_truncated_not_an_end_of_file() {
    const N: usize = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large");
    let mut d = Durable::<[u8; N]>::open(&path, *b"large\0\0\0", [1; N]).unwrap();
    d.update(Commit::ProcessCrashSafe, |v| v[0] = 2).unwrap();
    let layout = Durable::<[u8; N]>::layout();
    // Slot 1 holds the newest copy: keep its head, cut its data.
    let cut = layout.slot(1) + page();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let e = d.read().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Truncated, "{e}");
    assert_eq!(e.truncation(), Some((layout.file_len(), cut)), "{e}");
    assert_eq!(e.path(), Some(path.as_path()), "{e}");
}
