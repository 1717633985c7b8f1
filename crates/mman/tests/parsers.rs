//! No parser fed by bytes from outside this process may panic: property tests over
//! arbitrary bytes for the `Durable` file format and for channel regions (their headers,
//! positions, owner words and ring records), as a file on disk or a peer writing into the
//! shared memory would present them. (`/proc/PID/smaps`: `maps_tests.rs`; the CLI's file
//! lists: `mman-cli`.)
//!
//! Each case must end in a value or an error; a panic fails the test with the input.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mman::channel::broadcast;
use mman::channel::Options;
use mman::persist::Durable;
use mman::shm::SharedMemory;
use proptest::prelude::*;

const TAG: [u8; 8] = *b"parsers\0";

fn unique(tag: &str) -> String {
    use std::sync::atomic::AtomicU32;
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "parsers-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn word(map: &mman::Mapping, index: usize) -> &AtomicU64 {
    map.atomic_u64(index * 8).unwrap()
}

/// A valid durable file of a 24-byte value, as bytes.
fn durable_image() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d");
    let mut d = Durable::<[u64; 3]>::open(&p, TAG, [1, 2, 3]).unwrap();
    d.update(mman::persist::Commit::ProcessCrashSafe, |v| v[0] = 7)
        .unwrap();
    drop(d);
    std::fs::read(&p).unwrap()
}

/// Open `bytes` as a durable file every way there is, and read it; never a panic.
fn open_durable(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d");
    std::fs::write(&p, bytes).unwrap();
    if let Ok(d) = Durable::<[u64; 3]>::open_read_only(&p, TAG) {
        let _ = d.read();
    }
    if let Ok(mut d) = Durable::<[u64; 3]>::open_existing(&p, TAG) {
        let _ = d.read();
        let _ = d.update(mman::persist::Commit::ProcessCrashSafe, |v| v[1] += 1);
    }
    std::fs::write(&p, bytes).unwrap();
    if let Ok(d) = Durable::<[u64; 3]>::open(&p, TAG, [0; 3]) {
        let _ = d.read();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Arbitrary bytes as a durable file.
    #[test]
    fn durable_files_of_any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
        open_durable(&bytes);
    }

    /// A valid durable file with bytes changed anywhere (header, slot heads, data) and cut
    /// to any length: the checks past the header's are reached.
    #[test]
    fn damaged_durable_files_never_panic(
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..16),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = durable_image();
        for (at, b) in changes {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        open_durable(&bytes);
    }
}

/// What a channel region is made of, to write over: word indexes in the header (configuration
/// words, lane positions, owners, events) and in the ring, and values that mean something
/// there (small numbers, headers of any kind and stamp, all ones, a PID).
fn region_writes() -> impl Strategy<Value = Vec<(usize, u64)>> {
    let index = prop_oneof![0..8usize, 48..160usize, 512..1024usize];
    let value = prop_oneof![
        any::<u64>(),
        0..64u64,
        // A record header: length, kind, and the stamp of lap 0 or 1 (what the receiver
        // expects at the start), or any.
        (
            0..4096u64,
            0..3u64,
            prop_oneof![Just(0x0800_0000u32), Just(0x0800_0001), any::<u32>()]
        )
            .prop_map(|(len, kind, stamp)| len | kind << 32 | (stamp as u64 & 0x0fff_ffff) << 36),
        Just(u64::MAX),
        Just(1 << 63 | std::process::id() as u64),
    ];
    proptest::collection::vec((index, value), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// A peer writes anything anywhere in a channel's header and ring, before the endpoints
    /// attach or between their operations: every operation ends with a value or an error.
    #[test]
    fn channel_regions_of_any_words_never_panic(before in region_writes(), between in region_writes()) {
        let name = unique("chan");
        let chan = Options::new().capacity(4096).senders(2).create(&name).unwrap();
        let map = SharedMemory::open(&name, 0).unwrap().map().unwrap();
        let write = |ws: &[(usize, u64)]| {
            for &(i, v) in ws {
                if i * 8 + 8 <= map.len() {
                    word(&map, i).store(v, Ordering::SeqCst);
                }
            }
        };
        write(&before);
        // Opening again parses the configuration words.
        let _ = mman::channel::Channel::open(&name);
        let rx = chan.receiver();
        let tx = chan.sender();
        if let (Ok(mut rx), Ok(mut tx)) = (rx, tx) {
            let _ = tx.try_send(b"first message");
            write(&between);
            for _ in 0..3 {
                let _ = rx.try_recv();
                let _ = rx.recv_timeout(Duration::ZERO);
                let _ = tx.try_send(&[7u8; 100]);
            }
        }
    }

    /// The same for a broadcast: its geometry, head, subscriber places and slots.
    #[test]
    fn broadcast_regions_of_any_words_never_panic(before in region_writes(), between in region_writes()) {
        let name = unique("bus");
        let bus = broadcast::Options::new().slots(4).message_size(64).subscribers(2).create(&name).unwrap();
        let map = SharedMemory::open(&name, 0).unwrap().map().unwrap();
        let write = |ws: &[(usize, u64)]| {
            for &(i, v) in ws {
                if i * 8 + 8 <= map.len() {
                    word(&map, i).store(v, Ordering::SeqCst);
                }
            }
        };
        write(&before);
        let _ = broadcast::Broadcast::open(&name);
        if let (Ok(mut p), Ok(mut s)) = (bus.publisher(), bus.subscriber()) {
            let _ = p.try_publish(b"first");
            write(&between);
            for _ in 0..3 {
                let _ = s.try_recv();
                let _ = s.recv_timeout(Duration::ZERO);
                let _ = p.try_publish(&[1u8; 64]);
            }
        }
    }
}

/// The words a channel header starts with, each either what a channel has there (mark,
/// kind and version, small parameters, `ready!`) or anything: opening them reaches every
/// check. `ready!` is there most of the time (a header without it is waited for, 200 ms).
fn header_words() -> impl Strategy<Value = Vec<u64>> {
    let w = prop_oneof![
        any::<u64>(),
        Just(u64::from_le_bytes(*b"MMANCHAN")),
        Just(2 | 1 << 32),
        Just(2 | 2 << 32),
        0..70_000u64,
        (0..41u32).prop_map(|k| 1u64 << k),
    ];
    (proptest::collection::vec(w, 8), proptest::bool::weighted(0.9)).prop_map(|(mut ws, ready)| {
        if ready {
            ws[6] = u64::from_le_bytes(*b"ready!\0\0");
        }
        ws
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Anything as the header of a named object opened as a channel or a broadcast (or
    /// examined by `remove_stale`), in objects of several sizes.
    #[test]
    fn objects_of_any_header_never_open_with_a_panic(ws in header_words(), len in 0..3usize) {
        let name = unique("bytes");
        let size = [0u64, 4096, 3 * 4096][len];
        let obj = SharedMemory::create(&name, size).unwrap();
        if size > 0 {
            let map = obj.map().unwrap();
            for (i, w) in ws.iter().enumerate() {
                word(&map, i).store(*w, Ordering::SeqCst);
            }
        }
        let _ = mman::channel::Channel::open(&name);
        let _ = broadcast::Broadcast::open(&name);
        let _ = mman::channel::remove_stale(&name);
        drop(obj); // unlinks the name
    }
}
