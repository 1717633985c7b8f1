//! The durable file's format and commit protocol: a 64-byte header, then two slots (copies
//! of the value), each a 16-byte head (sequence number, checksum of it and the data) and the
//! data. Version 2 checksums a slot with XXH3-64 (seeded with the sequence number), version 1
//! with CRC-32; both are read and written, each file keeping its own. Generic over
//! [`Storage`] so the tests below run it against a simulated disk that can lose power at any
//! instant.

use super::durable::Commit;
use crate::error::Result;

pub(super) const MAGIC: [u8; 8] = *b"MMANDUR\0";
/// The version of a new file.
pub(super) const VERSION: u32 = 2;

/// How a version checksums a slot's sequence number and data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotSum {
    /// Version 1: CRC-32 of the sequence number (8 bytes, little-endian) and the data, in
    /// the head's bytes 8..12 (12..16 zero).
    Crc32,
    /// Version 2: XXH3-64 of the data seeded with the sequence number, in bytes 8..16. Twice
    /// as fast as CRC-32 on this machine's 1 MiB values (63 against 110 µs), and 64 bits.
    Xxh3,
}

impl SlotSum {
    /// The checksum of the files of `version`; `None` for a version this mman does not know.
    pub(super) fn for_version(version: u32) -> Option<SlotSum> {
        match version {
            1 => Some(SlotSum::Crc32),
            2 => Some(SlotSum::Xxh3),
            _ => None,
        }
    }

    /// Bytes 8..16 of the head of a slot holding `data` as sequence number `seq`.
    fn of(self, seq: u64, data: &[u8]) -> [u8; 8] {
        match self {
            SlotSum::Crc32 => {
                let mut h = crc32fast::Hasher::new();
                h.update(&seq.to_le_bytes());
                h.update(data);
                (h.finalize() as u64).to_le_bytes()
            }
            SlotSum::Xxh3 => xxhash_rust::xxh3::xxh3_64_with_seed(data, seq).to_le_bytes(),
        }
    }
}

/// Where things are in a durable file, for a `T` of `size` bytes and `align` alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Bytes of T.
    pub size: u64,
    /// Offset of T inside a slot (after the 16-byte slot header, aligned for T).
    pub data_off: u64,
    /// Offset of slot 0; slot 1 follows at `+ stride`.
    pub first_slot: u64,
    /// Distance between the slots (a whole number of pages).
    pub stride: u64,
    /// How slots are checksummed (by the file's version).
    pub sum: SlotSum,
}

impl Layout {
    /// The layout for `size` bytes aligned to `align`, with pages of `page` bytes, checksummed
    /// as a new file is (the opener sets `sum` for an older file).
    pub fn new(size: u64, align: u64, page: u64) -> Layout {
        let data_off = 16u64.max(align);
        Layout {
            size,
            data_off,
            first_slot: page,
            stride: (data_off + size).next_multiple_of(page),
            sum: SlotSum::Xxh3,
        }
    }
    /// The file's length.
    pub fn file_len(&self) -> u64 {
        self.first_slot + 2 * self.stride
    }
    /// Offset of slot `i` (0 or 1).
    pub fn slot(&self, i: u64) -> u64 {
        self.first_slot + i * self.stride
    }
}

/// The 64-byte header of a durable file.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct Header {
    pub(super) magic: [u8; 8],
    pub(super) version: u32,
    pub(super) align: u32,
    pub(super) size: u64,
    pub(super) tag: [u8; 8],
    pub(super) stride: u64,
    pub(super) created_seq: u64,
    pub(super) crc: u32,
    pub(super) _pad: [u8; 12],
}

pub(super) fn header_crc(h: &Header) -> u32 {
    let mut c = *h;
    c.crc = 0;
    crc32fast::hash(bytemuck::bytes_of(&c))
}

/// The storage a durable commit writes to: the real file's mapping, or a test double that
/// records writes and syncs to simulate power losses.
pub(crate) trait Storage {
    /// Write `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    /// Write a slot at `at`: its 16-byte `head`, and `data` at `at + data_off`. By default the
    /// data first, then the head, for a reader in another process (the checksum catches the
    /// rest).
    fn write_slot(&mut self, at: u64, head: &[u8; 16], data_off: u64, data: &[u8]) -> Result<()> {
        data_then_head(self, at, head, data_off, data)
    }
    /// Make `offset..offset + len` durable.
    fn sync(&mut self, offset: u64, len: u64) -> Result<()>;
}

/// [`Storage::write_slot`] as two writes: the data, then the head.
pub(crate) fn data_then_head<S: Storage + ?Sized>(
    s: &mut S,
    at: u64,
    head: &[u8; 16],
    data_off: u64,
    data: &[u8],
) -> Result<()> {
    // The previous commit's head before this one's data (weakly ordered CPUs): a reader that
    // sees this data sees the heads changed since (see `Durable::current`).
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    s.write(at + data_off, data)?;
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    s.write(at, head)
}

/// Write copy `slot` of a commit: its data and its head (sequence number and checksum of
/// both), then, in durable mode, one sync of exactly the slot's pages. The checksum is
/// computed before anything is written, so the head can go with the data in one write (see
/// [`Storage::write_slot`]); a reader that meets the new head before all the new data fails
/// the checksum and takes the other copy, as after a crash. The protocol, generic so tests can run
/// it against a recording [`Storage`].
pub(crate) fn commit_slot<S: Storage>(
    s: &mut S,
    layout: &Layout,
    slot: u64,
    seq: u64,
    data: &[u8],
    mode: Commit,
) -> Result<()> {
    let at = layout.slot(slot);
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&seq.to_le_bytes());
    head[8..].copy_from_slice(&layout.sum.of(seq, data));
    s.write_slot(at, &head, layout.data_off, data)?;
    if mode == Commit::Durable {
        s.sync(at, layout.data_off + layout.size)?;
    }
    Ok(())
}

/// The two slot heads as read (sequence number, checksum, padding).
pub(crate) type Heads = [[u8; 16]; 2];

/// The newest valid copy in a file image (or mapping) read through `read`: `Ok((slot, seq))`
/// and the bytes copied into `out`; `Err(heads)` if neither copy is valid, with the heads it
/// judged them by (a reader compares them with a second look: see `Durable::current`).
pub(crate) fn newest_valid(
    layout: &Layout,
    mut read: impl FnMut(u64, &mut [u8]) -> Result<()>,
    out: &mut [u8],
) -> Result<std::result::Result<(u64, u64), Heads>> {
    let mut heads: Heads = [[0u8; 16]; 2];
    for (i, h) in heads.iter_mut().enumerate() {
        read(layout.slot(i as u64), h)?;
    }
    std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
    let seq = |h: &[u8; 16]| u64::from_le_bytes(h[..8].try_into().unwrap_or_default());
    // Newest first.
    let order = if seq(&heads[1]) > seq(&heads[0]) {
        [1usize, 0]
    } else {
        [0, 1]
    };
    for i in order {
        let s = seq(&heads[i]);
        if s == 0 {
            continue;
        }
        read(layout.slot(i as u64) + layout.data_off, out)?;
        if layout.sum.of(s, out)[..] == heads[i][8..] {
            return Ok(Ok((i as u64, s)));
        }
    }
    Ok(Err(heads))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A file that remembers what reached the disk: `disk` holds synced bytes, `cache` what was
    /// written, `dirty` the 512-byte sectors written since their last sync.
    struct PowerLossSim {
        disk: Vec<u8>,
        cache: Vec<u8>,
        dirty: BTreeSet<usize>,
    }

    const SECTOR: usize = 512;

    impl Storage for PowerLossSim {
        fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
            let o = offset as usize;
            self.cache[o..o + data.len()].copy_from_slice(data);
            for s in o / SECTOR..(o + data.len()).div_ceil(SECTOR) {
                self.dirty.insert(s);
            }
            Ok(())
        }
        fn sync(&mut self, offset: u64, len: u64) -> Result<()> {
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
    /// With both formats' checksums (the protocol is the same; a mebibyte is checked with the
    /// current one only: under valgrind each pass takes minutes).
    fn power_loss_at_every_instant(size: usize, commits: usize) {
        power_loss_with(size, commits, SlotSum::Xxh3);
        if size < 1 << 20 {
            power_loss_with(size, commits, SlotSum::Crc32);
        }
    }

    fn power_loss_with(size: usize, commits: usize, sum: SlotSum) {
        let layout = Layout {
            sum,
            ..Layout::new(size as u64, 8, 4096)
        };
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
                        assert!(got.is_ok(), "nothing recoverable");
                        assert!(
                            out == self.ok[0] || out == self.ok[1],
                            "recovered a value never committed"
                        );
                        *self.checked += 1;
                    }
                }
            }
            impl Storage for Checked<'_> {
                fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
                    self.sim.write(offset, data)?;
                    self.crash_now();
                    Ok(())
                }
                fn sync(&mut self, offset: u64, len: u64) -> Result<()> {
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

    /// Each version's checksum covers the sequence number and every byte of the data, where
    /// its head keeps it.
    #[test]
    fn each_checksum_covers_the_sequence_number_and_every_byte() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        for sum in [SlotSum::Xxh3, SlotSum::Crc32] {
            let base = sum.of(5, &data);
            assert_ne!(sum.of(6, &data), base, "{sum:?}: sequence number");
            for i in [0, 1, 2047, 4095] {
                let mut d = data.clone();
                d[i] ^= 1;
                assert_ne!(sum.of(5, &d), base, "{sum:?}: byte {i}");
            }
        }
        // Version 1 leaves bytes 12..16 of the head zero, as it always did.
        assert_eq!(SlotSum::Crc32.of(5, &data)[4..], [0; 4]);
        assert_eq!(SlotSum::for_version(1), Some(SlotSum::Crc32));
        assert_eq!(SlotSum::for_version(VERSION), Some(SlotSum::Xxh3));
        assert_eq!(SlotSum::for_version(3), None);
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
}
