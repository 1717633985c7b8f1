//! When the file system cannot back a mapping: a full tmpfs (`ENOSPC`).
//!
//! Each test mounts a tmpfs of a few pages of its own (so it needs root: without it, or
//! where the mount fails, it says so and passes without testing), fills it, and then maps
//! a sparse file there: every page of the file that has no page of memory yet cannot get
//! one, and touching it through a mapping raises SIGBUS with the file whole. That is no
//! truncation, and must not be answered as one.

#![cfg(target_os = "linux")]

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mman::{ErrorKind, MapOptions};

/// A small tmpfs mounted on a temporary directory, unmounted (lazily, so a mapping still
/// open cannot keep it) and removed on drop, whether the test passed or not.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// A tmpfs of `pages` pages, or `None` (with the reason printed) when this process may
    /// not mount one.
    fn mount(pages: usize) -> Option<Tmpfs> {
        Self::mount_fs("tmpfs", &format!("size={}", pages * mman::page_size()))
    }

    /// A file system of type `fstype` mounted with `options`, or `None` (said why).
    fn mount_fs(fstype: &str, options: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a {fstype} needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", fstype, "-o", options, "mman-test"])
            .arg(dir.path())
            .status();
        match st {
            Ok(s) if s.success() => Some(Tmpfs { dir }),
            other => {
                eprintln!("skipped: mount -t {fstype} failed: {other:?}");
                None
            }
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write a file of whole pages until the tmpfs has no page left.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.path("filler")).unwrap();
        let page = vec![0xEEu8; mman::page_size()];
        while f.write_all(&page).is_ok() {}
        assert_eq!(free_pages(self.dir.path()), 0);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn free_pages(dir: &Path) -> u64 {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs fills the zeroed struct we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to our struct.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64 / mman::page_size() as u64
}

/// A file of `pages` pages of which only those in `backed` have a page of memory.
fn sparse_file(path: &Path, pages: usize, backed: &[usize]) -> std::fs::File {
    let ps = mman::page_size();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap();
    f.set_len((pages * ps) as u64).unwrap();
    for &p in backed {
        f.write_all_at(&vec![b'b'; ps], (p * ps) as u64).unwrap();
    }
    f
}

#[test]
fn a_page_the_file_system_cannot_back_is_storage_full_not_a_truncation() {
    let Some(fs) = Tmpfs::mount(4) else { return };
    let ps = mman::page_size();
    let path = fs.path("sparse");
    let file = sparse_file(&path, 4, &[3]);
    fs.fill();
    let map = MapOptions::new().read_write().shared().map_path(&path).unwrap();

    let e = map.write_at(ps + 10, b"lost").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    assert_eq!(e.unbacked_offset(), Some((ps as u64, 4 * ps as u64)), "{e}");
    assert_eq!(e.truncation(), None, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("could not back the page holding byte 4096"),
        "{text}"
    );
    assert!(
        text.contains("no truncation") && text.contains("ENOSPC"),
        "{text}"
    );
    assert!(!text.contains("shrank"), "{text}");
    assert!(
        text.contains("hint: the file system holding the file is full"),
        "{text}"
    );
    assert!(map.is_unbacked() && !map.is_truncated());
    // Every later use says so too, and a flush does not pass the lost write off as stored.
    assert_eq!(
        map.read_at(0, &mut [0u8; 4]).unwrap_err().kind(),
        ErrorKind::StorageFull
    );
    assert_eq!(
        map.flush(.., mman::FlushMode::Sync).unwrap_err().kind(),
        ErrorKind::StorageFull
    );
    assert_eq!(map.verify_file_size().unwrap_err().kind(), ErrorKind::StorageFull);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * ps as u64);

    // Only the page that could not be backed was replaced: the page after it is still the
    // file's, so what another writer puts there is seen through the mapping.
    file.write_all_at(b"peer", (3 * ps) as u64).unwrap();
    let mut seen = [0u8; 4];
    for (i, b) in seen.iter_mut().enumerate() {
        // SAFETY: page 3 of the live mapping, backed by the file; read as single bytes.
        *b = unsafe { std::ptr::read_volatile(map.as_ptr().add(3 * ps + i)) };
    }
    assert_eq!(&seen, b"peer", "page 3 is no longer shared with the file");
}

#[test]
fn a_truncation_is_still_a_truncation() {
    let Some(fs) = Tmpfs::mount(8) else { return };
    let ps = mman::page_size();
    let path = fs.path("whole");
    std::fs::write(&path, vec![1u8; 4 * ps]).unwrap();
    let map = MapOptions::new().read_write().shared().map_path(&path).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(ps as u64)
        .unwrap();
    let e = map.write_at(2 * ps, b"gone").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Truncated, "{e}");
    assert_eq!(e.truncation(), Some((4 * ps as u64, ps as u64)));
    assert!(map.is_truncated() && !map.is_unbacked());
}

#[test]
fn allocate_backs_a_sparse_range_or_says_the_disk_is_full() {
    let Some(fs) = Tmpfs::mount(4) else { return };
    let ps = mman::page_size();
    let path = fs.path("sparse");
    sparse_file(&path, 8, &[]);
    let map = MapOptions::new().read_write().shared().map_path(&path).unwrap();
    map.allocate(0..1).unwrap();
    map.allocate(ps..2 * ps + 1).unwrap();
    assert_eq!(free_pages(fs.dir.path()), 1);
    let e = map.allocate(..).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    assert!(
        e.to_string().contains("fallocate") && e.to_string().contains("hint:"),
        "{e}"
    );
    // Never grows the file.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 8 * ps as u64);
    assert_eq!(
        map.allocate(0..9 * ps).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[cfg(feature = "sync")]
#[test]
fn a_semaphore_placed_in_a_file_the_disk_cannot_back_is_an_error_at_once() {
    use mman::sync::{place, Barrier, Semaphore};
    let Some(fs) = Tmpfs::mount(2) else { return };
    let path = fs.path("table");
    sparse_file(&path, 2, &[]);
    fs.fill();
    let map = MapOptions::new().read_write().shared().map_path(&path).unwrap();
    // Before: placed without a word, and the first post landed in a private zero page
    // (the peers waiting on the file's page were never woken).
    let e = place::<Semaphore>(&map, 64).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    assert_eq!(
        Barrier::open(&map, 128, 2).err().map(|e| e.kind()),
        Some(ErrorKind::StorageFull)
    );
    assert!(!map.is_unbacked(), "placing must not fault");
}

#[cfg(feature = "sync")]
#[test]
fn a_semaphore_placed_in_a_sparse_file_is_backed_before_use() {
    use mman::sync::{place, Semaphore};
    let Some(fs) = Tmpfs::mount(2) else { return };
    let path = fs.path("table");
    sparse_file(&path, 2, &[]);
    let map = MapOptions::new().read_write().shared().map_path(&path).unwrap();
    let sem: &Semaphore = place(&map, 8).unwrap();
    // Placing took the page: a full disk now cannot take it from the semaphore.
    fs.fill();
    sem.post().unwrap();
    assert!(sem.try_wait());
    assert!(!map.is_unbacked());
    let mut word = [0u8; 8];
    map.read_at(8, &mut word).unwrap();
}

#[cfg(feature = "persist")]
#[test]
fn a_persistent_value_in_a_sparse_file_on_a_full_disk_is_refused_at_open() {
    use mman::persist::{persist_fixed, Persistent};
    let Some(fs) = Tmpfs::mount(2) else { return };
    let ps = mman::page_size();
    // A file of the right size made by another program with ftruncate: a hole.
    let path = fs.path("value");
    sparse_file(&path, 1, &[]);
    fs.fill();
    let e = Persistent::<u64>::open(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");

    // persist_fixed refuses before the caller's memory is replaced.
    let mut scratch = mman::ExclusiveMap::new(ps).unwrap();
    scratch[0] = 7;
    let addr = scratch.as_mut_ptr();
    // SAFETY: our own page, not borrowed across the call; on success the mapping would
    // replace it (and is dropped, leaving the range unmapped, which `scratch` then owns).
    let r = unsafe { persist_fixed(&path, addr, ps) };
    let e = r.expect_err("persist_fixed on a full disk");
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    assert_eq!(scratch[0], 7, "the caller's memory was replaced");
}

#[cfg(feature = "persist")]
#[test]
fn a_durable_file_with_a_hole_on_a_full_disk_is_refused_at_open() {
    use mman::persist::Durable;
    let Some(fs) = Tmpfs::mount(16) else { return };
    let path = fs.path("durable");
    drop(Durable::<u64>::open(&path, *b"holetest", 5).unwrap());
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // Punch out everything past the header's page, then fill the disk.
    let ps = mman::page_size() as i64;
    // SAFETY: fallocate on our own open file.
    let r = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            ps,
            len as i64 - ps,
        )
    };
    assert_eq!(r, 0);
    fs.fill();
    let e = Durable::<u64>::open_existing(&path, *b"holetest").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    // A read through the mapping meets the same holes: an error that says so, no crash.
    let e = Durable::<u64>::open_read_only(&path, *b"holetest").unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::Corrupted),
        "{e}"
    );
}

#[test]
fn copying_a_sparse_file_on_a_full_tmpfs_through_a_mapping_falls_back_to_read() {
    use mman::transfer::{Method, Sink};
    use std::os::fd::AsFd;
    let Some(fs) = Tmpfs::mount(2) else { return };
    let ps = mman::page_size();
    let path = fs.path("sparse");
    let f = sparse_file(&path, 4, &[0]);
    f.write_all_at(b"head", 0).unwrap();
    fs.fill();
    for method in [Method::Map, Method::Vmsplice] {
        let (rd, wr) = std::io::pipe().unwrap();
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut { rd }, &mut v).unwrap();
            v
        });
        let input = std::fs::File::open(&path).unwrap();
        let done = Sink::new(wr.as_fd()).copy_from(input.as_fd(), &path, method);
        drop(wr);
        let got = reader.join().unwrap();
        let done = done.unwrap_or_else(|e| panic!("{method:?}: {e}"));
        assert_eq!(done.bytes, 4 * ps as u64, "{method:?}");
        assert!(
            done.methods.contains(&Method::Read),
            "{method:?}: {:?}",
            done.methods
        );
        assert_eq!(got.len(), 4 * ps, "{method:?}");
        assert_eq!(&got[..4], b"head");
        assert!(got[ps..].iter().all(|&b| b == 0), "{method:?}");
    }
}

#[cfg(feature = "sync")]
#[test]
fn a_file_system_that_cannot_allocate_ahead_is_no_error() {
    use mman::sync::{place, Semaphore};
    // ramfs has no fallocate (EOPNOTSUPP), and no size limit to run into.
    let Some(fs) = Tmpfs::mount_fs("ramfs", "mode=0700") else {
        return;
    };
    let path = fs.path("table");
    sparse_file(&path, 2, &[]);
    let map = MapOptions::new().read_write().shared().map_path(&path).unwrap();
    map.allocate(..).unwrap();
    let sem: &Semaphore = place(&map, 0).unwrap();
    sem.post().unwrap();
    assert!(sem.try_wait());
}

/// The role of a re-run of this binary inside a mount namespace of its own.
const IN_NAMESPACE: &str = "MMAN_FULL_DISK_NAMESPACE";

/// A channel whose object another process left with holes, on a `/dev/shm` that is full: in
/// a mount namespace of its own (`unshare -m`), so the small tmpfs over `/dev/shm` is this
/// test's alone. Opening it backs every page first, and fails then; the creator's handle,
/// whose pages were punched out under it, says the tmpfs is full, not "truncated".
#[cfg(feature = "channel")]
#[test]
fn a_channel_left_sparse_on_a_full_dev_shm_is_refused_at_open() {
    in_a_namespace(
        "a_channel_left_sparse_on_a_full_dev_shm_is_refused_at_open",
        channel_on_a_full_dev_shm,
    );
}

/// A channel's pool slots are backed when first loaned: on a `/dev/shm` too small for a
/// slot, the channel is made (its ring fits), small messages flow, and a loan or a large
/// `send` is [`ErrorKind::StorageFull`], with the slot kept for later.
#[cfg(feature = "channel")]
#[test]
fn a_pool_slot_dev_shm_cannot_back_is_an_error_at_loan() {
    in_a_namespace(
        "a_pool_slot_dev_shm_cannot_back_is_an_error_at_loan",
        pool_on_a_small_dev_shm,
    );
}

/// Run `inside` in a re-run of this binary (the test `test` alone) in a mount namespace of
/// its own (`unshare -m`), so the small tmpfs it mounts over `/dev/shm` is its alone.
#[cfg(feature = "channel")]
fn in_a_namespace(test: &str, inside: fn()) {
    if std::env::var_os(IN_NAMESPACE).is_some() {
        return inside();
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: a mount namespace needs root");
        return;
    }
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture"])
        .env(IN_NAMESPACE, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if text.contains("skipped:") {
        eprintln!("{text}");
        return;
    }
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

/// Mount a tmpfs of `pages` pages over `/dev/shm` (in the namespace); false, said why, if
/// that fails.
#[cfg(feature = "channel")]
fn small_dev_shm(pages: usize) -> bool {
    let st = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={}", pages * mman::page_size()),
            "mman-test",
            "/dev/shm",
        ])
        .status();
    if !st.as_ref().is_ok_and(|s| s.success()) {
        println!("skipped: mount -t tmpfs on /dev/shm in a namespace failed: {st:?}");
        return false;
    }
    true
}

#[cfg(feature = "channel")]
fn pool_on_a_small_dev_shm() {
    use mman::channel::Options;
    // 512 KiB: room for the default ring, not for a default slot of 1 MiB.
    if !small_dev_shm(128) {
        return;
    }
    let ch = Options::new().create("small-pool").unwrap();
    let (mut tx, mut rx) = (ch.sender().unwrap(), ch.receiver().unwrap());
    tx.send(b"small").unwrap();
    assert_eq!(rx.recv().unwrap(), b"small");
    let e = tx
        .loan(100_000)
        .expect_err("a loan of a slot /dev/shm cannot back");
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    assert!(e.to_string().contains("fallocate"), "{e}");
    let e = tx
        .send(&vec![1u8; 100_000])
        .expect_err("a send through such a slot");
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    // Nothing was half sent: the ring goes on, and the receiver sees only what was sent.
    tx.send(b"after").unwrap();
    assert_eq!(rx.recv().unwrap(), b"after");
    assert!(rx.try_recv().unwrap().is_none());
    // Slots that fit serve.
    let ch2 = Options::new().pool(2, 64 * 1024).create("small-slots").unwrap();
    let (mut tx2, mut rx2) = (ch2.sender().unwrap(), ch2.receiver().unwrap());
    tx2.send(&vec![2u8; 60_000]).unwrap();
    assert_eq!(rx2.recv().unwrap(), vec![2u8; 60_000]);
}

#[cfg(feature = "channel")]
fn channel_on_a_full_dev_shm() {
    use mman::channel::Options;
    let ps = mman::page_size();
    if !small_dev_shm(32) {
        return;
    }
    let ch = Options::new().capacity(4 * ps).create("full-disk").unwrap();
    let mut tx = ch.sender().unwrap();
    let object = Path::new("/dev/shm/mman.full-disk");
    let len = std::fs::metadata(object).unwrap().len();
    assert!(len > ps as u64);
    // Another process punches out every page but the first, then the tmpfs fills up.
    let f = std::fs::OpenOptions::new().write(true).open(object).unwrap();
    // SAFETY: fallocate on our own open file.
    let r = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            ps as i64,
            len as i64 - ps as i64,
        )
    };
    assert_eq!(r, 0);
    let mut filler = std::fs::File::create("/dev/shm/filler").unwrap();
    while filler.write_all(&vec![0u8; ps]).is_ok() {}

    let e = mman::channel::Channel::open("full-disk").expect_err("open on a full /dev/shm");
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    // The creator's sender writes into a punched page: the fault is a backing failure.
    let mut sent = Ok(());
    for _ in 0..64 {
        sent = tx.send(&[7u8; 512]);
        if sent.is_err() {
            break;
        }
    }
    let e = sent.expect_err("sends into pages the tmpfs cannot back");
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    assert!(!e.to_string().contains("truncated"), "{e}");
}

#[test]
fn the_page_named_is_the_file_s_whatever_the_mapping_s_offset() {
    let Some(fs) = Tmpfs::mount(4) else { return };
    let ps = mman::page_size();
    let path = fs.path("sparse");
    sparse_file(&path, 6, &[2]);
    fs.fill();
    // From byte 2 pages + 100 of the file: mapping byte ps - 100 + 10 is file byte 3 pages + 10.
    let map = MapOptions::new()
        .read_write()
        .shared()
        .offset(2 * ps as u64 + 100)
        .len(3 * ps)
        .map_path(&path)
        .unwrap();
    let e = map.write_at(ps - 100 + 10, b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    assert_eq!(e.unbacked_offset(), Some((3 * ps as u64, 6 * ps as u64)), "{e}");
}
