//! Persistent and durable variables: the file format, bad files, locking, and a simulated
//! power loss at every instant of the commit protocol.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use mman::persist::{commit_slot, newest_valid, Commit, Durable, Layout, Persistent, Storage};
use mman::{ErrorKind, MapOptions};

#[test]
fn a_persistent_page_is_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("page");
    {
        let v = Persistent::<[u8; 4096]>::open(&p).unwrap();
        assert!(
            v.get().unwrap().iter().all(|&b| b == 0),
            "new files are zero-filled"
        );
        v.update(|page| page[..5].copy_from_slice(b"hello")).unwrap();
        v.flush().unwrap();
        let again = Persistent::<[u8; 4096]>::open(&p).unwrap_err();
        assert_eq!(again.kind(), ErrorKind::PermissionDenied, "{again}");
    }
    let meta = std::fs::metadata(&p).unwrap();
    assert_eq!(meta.len(), 4096);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        &std::fs::read(&p).unwrap()[..5],
        b"hello",
        "the bytes are the file"
    );
    let v = Persistent::<[u8; 4096]>::open(&p).unwrap();
    assert_eq!(v.get().unwrap()[..5], *b"hello");
    // SAFETY: nothing else touches this test's file while the reference lives.
    assert_eq!(&unsafe { v.as_ref() }.unwrap()[..5], b"hello");
    drop(v);
    // A u64 in a file rounded to the page; a file too short for the type is refused.
    let small = dir.path().join("small");
    std::fs::write(&small, [1u8; 4]).unwrap();
    let e = Persistent::<u64>::open(&small).unwrap_err();
    assert!(e.to_string().contains("the value needs 8"), "{e}");
}

#[test]
fn persist_fixed_maps_over_the_callers_memory() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fixed");
    std::fs::write(&p, b"from the file").unwrap();
    let region = MapOptions::new().len(4096).map_anonymous().unwrap();
    let addr = region.as_ptr() as *mut u8;
    // The range now belongs to the mapping persist_fixed returns: do not unmap it twice.
    std::mem::forget(region);
    // SAFETY: `addr..addr+4096` is a page this test owns and nothing else uses.
    let m = unsafe { mman::persist::persist_fixed(&p, addr, 4096) }.unwrap();
    assert_eq!(m.as_ptr(), addr as *const u8);
    let mut buf = [0u8; 13];
    m.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"from the file");
    m.write_at(0, b"FROM").unwrap();
    assert_eq!(&std::fs::read(&p).unwrap()[..4], b"FROM");
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 4096);
}

#[test]
fn durable_values_survive_reopening_and_bad_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d");
    let mut d = Durable::<[u64; 4]>::open(&p, *b"test-arr", [1, 2, 3, 4]).unwrap();
    assert_eq!(d.read().unwrap(), [1, 2, 3, 4]);
    for i in 0..10 {
        d.update(Commit::ProcessCrashSafe, |v| v[0] += i).unwrap();
    }
    d.update(Commit::Durable, |v| v[3] = 99).unwrap();
    drop(d);
    let d = Durable::<[u64; 4]>::open(&p, *b"test-arr", [0; 4]).unwrap();
    assert_eq!(d.read().unwrap(), [46, 2, 3, 99], "opened, not re-created");
    drop(d);
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);

    let e = Durable::<[u64; 4]>::open(&p, *b"othertag", [0; 4]).unwrap_err();
    assert!(e.to_string().contains("type tag"), "{e}");
    let e = Durable::<u64>::open(&p, *b"test-arr", 0).unwrap_err();
    assert!(e.to_string().contains("32-byte value"), "{e}");
    let bytes = std::fs::read(&p).unwrap();

    let cut = dir.path().join("cut");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let e = Durable::<[u64; 4]>::open(&cut, *b"test-arr", [0; 4]).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");

    let corrupt = dir.path().join("corrupt");
    let mut c = bytes.clone();
    let l = Durable::<[u64; 4]>::layout();
    for s in 0..2 {
        let at = (l.slot(s) + l.data_off) as usize;
        c[at] ^= 0xFF;
    }
    std::fs::write(&corrupt, &c).unwrap();
    let e = Durable::<[u64; 4]>::open(&corrupt, *b"test-arr", [0; 4]).unwrap_err();
    assert!(e.to_string().contains("both copies are corrupted"), "{e}");

    let mut one_bad = bytes.clone();
    let newest = if u64::from_le_bytes(bytes[l.slot(1) as usize..][..8].try_into().unwrap())
        > u64::from_le_bytes(bytes[l.slot(0) as usize..][..8].try_into().unwrap())
    {
        1
    } else {
        0
    };
    one_bad[(l.slot(newest) + l.data_off) as usize] ^= 1;
    let one = dir.path().join("one-bad");
    std::fs::write(&one, &one_bad).unwrap();
    let d = Durable::<[u64; 4]>::open(&one, *b"test-arr", [0; 4]).unwrap();
    assert_eq!(
        d.read().unwrap(),
        [46, 2, 3, 4],
        "falls back to the previous commit"
    );

    let header = dir.path().join("header");
    let mut h = bytes.clone();
    h[20] ^= 1;
    std::fs::write(&header, &h).unwrap();
    assert!(Durable::<[u64; 4]>::open(&header, *b"test-arr", [0; 4]).is_err());
    for (name, content) in [
        (
            "random",
            (0..9000u32).map(|i| (i * 7919) as u8).collect::<Vec<u8>>(),
        ),
        ("empty", vec![]),
    ] {
        let f = dir.path().join(name);
        std::fs::write(&f, content).unwrap();
        let e = Durable::<[u64; 4]>::open(&f, *b"test-arr", [0; 4]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
}

/// A file that remembers what reached the disk: `disk` holds synced bytes, `cache` what was
/// written, `dirty` the 512-byte sectors written since their last sync.
struct PowerLossSim {
    disk: Vec<u8>,
    cache: Vec<u8>,
    dirty: BTreeSet<usize>,
}

const SECTOR: usize = 512;

impl Storage for PowerLossSim {
    fn write(&mut self, offset: u64, data: &[u8]) -> mman::Result<()> {
        let o = offset as usize;
        self.cache[o..o + data.len()].copy_from_slice(data);
        for s in o / SECTOR..(o + data.len()).div_ceil(SECTOR) {
            self.dirty.insert(s);
        }
        Ok(())
    }
    fn sync(&mut self, offset: u64, len: u64) -> mman::Result<()> {
        // msync works on whole pages.
        let a = (offset as usize) / 4096 * 4096;
        let b = ((offset + len) as usize)
            .next_multiple_of(4096)
            .min(self.cache.len());
        self.disk[a..b].copy_from_slice(&self.cache[a..b]);
        self.dirty.retain(|&s| s * SECTOR < a || s * SECTOR >= b);
        Ok(())
    }
}

impl PowerLossSim {
    /// Every (or, past 2^12, a sample of) disk images a power loss could leave now: each
    /// dirty sector old or new.
    fn crash_images(&self, rng: &mut u64) -> Vec<Vec<u8>> {
        let dirty: Vec<usize> = self.dirty.iter().copied().collect();
        let combos: Vec<u64> = if dirty.len() <= 12 {
            (0..1u64 << dirty.len()).collect()
        } else {
            (0..64)
                .map(|_| {
                    *rng ^= *rng << 13;
                    *rng ^= *rng >> 7;
                    *rng ^= *rng << 17;
                    *rng
                })
                .collect()
        };
        combos
            .into_iter()
            .map(|mask| {
                let mut img = self.disk.clone();
                for (k, &s) in dirty.iter().enumerate() {
                    let new = if k < 64 {
                        mask >> k & 1 == 1
                    } else {
                        (mask.rotate_left(k as u32)) & 1 == 1
                    };
                    if new {
                        let r = s * SECTOR..((s + 1) * SECTOR).min(img.len());
                        img[r.clone()].copy_from_slice(&self.cache[r]);
                    }
                }
                img
            })
            .collect()
    }
}

/// Commit `values` one after another in durable mode; after every write and every sync,
/// "lose power" in every possible way and recover: the result must be the last committed
/// value or the one in flight, never anything else.
fn power_loss_at_every_instant(size: usize, commits: usize) {
    let layout = Layout::new(size as u64, 8, 4096);
    let value = |k: usize| -> Vec<u8> { (0..size).map(|i| (i * 31 + k * 7 + 1) as u8).collect() };
    let mut sim = PowerLossSim {
        disk: vec![0; layout.file_len() as usize],
        cache: vec![0; layout.file_len() as usize],
        dirty: BTreeSet::new(),
    };
    // The initial value, committed and synced (as creation does).
    commit_slot(&mut sim, &layout, 0, 1, &value(0), Commit::Durable).unwrap();
    let mut rng = 0x1234_5678_9abc_def1u64;
    let mut checked = 0usize;
    let (mut slot, mut seq) = (0u64, 1u64);
    for k in 1..=commits {
        let v = value(k);
        let (last, next) = (value(k - 1), v.clone());
        // Wrap the simulator so every write/sync is followed by a crash check.
        struct Checked<'a> {
            sim: &'a mut PowerLossSim,
            layout: Layout,
            ok: [Vec<u8>; 2],
            rng: &'a mut u64,
            checked: &'a mut usize,
        }
        impl Checked<'_> {
            fn crash_now(&mut self) {
                for img in self.sim.crash_images(self.rng) {
                    let mut out = vec![0u8; self.layout.size as usize];
                    let got = newest_valid(
                        &self.layout,
                        |off, buf| {
                            buf.copy_from_slice(&img[off as usize..off as usize + buf.len()]);
                            Ok(())
                        },
                        &mut out,
                    )
                    .unwrap();
                    assert!(got.is_some(), "nothing recoverable");
                    assert!(
                        out == self.ok[0] || out == self.ok[1],
                        "recovered a value never committed"
                    );
                    *self.checked += 1;
                }
            }
        }
        impl Storage for Checked<'_> {
            fn write(&mut self, offset: u64, data: &[u8]) -> mman::Result<()> {
                self.sim.write(offset, data)?;
                self.crash_now();
                Ok(())
            }
            fn sync(&mut self, offset: u64, len: u64) -> mman::Result<()> {
                self.sim.sync(offset, len)?;
                self.crash_now();
                Ok(())
            }
        }
        let mut c = Checked {
            sim: &mut sim,
            layout,
            ok: [last, next],
            rng: &mut rng,
            checked: &mut checked,
        };
        slot = 1 - slot;
        seq += 1;
        commit_slot(&mut c, &layout, slot, seq, &v, Commit::Durable).unwrap();
        // After the commit returns, only the new value may come back.
        assert!(sim.dirty.is_empty(), "a durable commit left unsynced sectors");
    }
    assert!(checked > commits, "checked {checked} crash states");
}

#[test]
fn power_loss_exhaustive_for_a_small_value() {
    power_loss_at_every_instant(8, 20);
}

#[test]
fn power_loss_exhaustive_for_a_page() {
    power_loss_at_every_instant(4096, 4);
}

#[test]
fn power_loss_sampled_for_a_mebibyte() {
    power_loss_at_every_instant(1 << 20, 2);
}

#[test]
fn a_panic_inside_a_transaction_commits_nothing_and_the_writer_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d");
    let mut d = Durable::<[u64; 2]>::open(&p, *b"panicky!", [5, 5]).unwrap();
    let mut w = d.writer().unwrap();
    assert_eq!(*w.update(Commit::ProcessCrashSafe, |v| v[0] = 6).unwrap(), [6, 5]);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        w.update(Commit::ProcessCrashSafe, |v| {
            v[1] = 1000; // half-done when the panic strikes
            panic!("in the middle of a transaction");
        })
        .unwrap();
    }));
    assert!(r.is_err());
    // The half-modified copy is not committed: the next transaction starts from the file.
    assert_eq!(*w.update(Commit::Durable, |v| v[0] += 1).unwrap(), [7, 5]);
    drop(w);
    assert_eq!(d.read().unwrap(), [7, 5]);
}
