//! Persistent and durable variables: the file format, bad files, locking. (The simulated
//! power loss at every instant of the commit protocol is a unit test of `persist::format`.)

use std::os::unix::fs::PermissionsExt;

use mman::persist::{Commit, Durable, Persistent};
use mman::{ErrorKind, MapOptions};

mod common;

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
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("the file has 4 bytes"), "{e}");
}

/// An existing file is used only if it has the format `open` makes (a regular file of the
/// value rounded up to whole pages): a longer file of someone else's, a link to one, or a
/// FIFO is refused, left exactly as it was, and nothing waits.
#[test]
fn a_file_mman_did_not_make_is_neither_used_nor_written() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    let text = b"my notes, which are not a persistent u64\n".repeat(200);
    std::fs::write(&notes, &text).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&notes, &link).unwrap();
    for p in [&notes, &link] {
        let e = Persistent::<u64>::open(p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("exactly 4096"), "{e}");
        // SAFETY: refused before anything is mapped at the (null) address.
        let e = unsafe { mman::persist::persist_fixed(p, std::ptr::null_mut(), 4096) }.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
    assert_eq!(
        std::fs::read(&notes).unwrap(),
        text,
        "the foreign file is untouched"
    );
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let e = Persistent::<u64>::open(&fifo).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

#[test]
fn persist_fixed_maps_over_the_callers_memory() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fixed");
    // A file of another length is not this format: neither grown nor mapped.
    std::fs::write(&p, b"from the file").unwrap();
    // SAFETY: refused before anything is mapped at the (null) address.
    let e = unsafe { mman::persist::persist_fixed(&p, std::ptr::null_mut(), 4096) }.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert_eq!(std::fs::read(&p).unwrap(), b"from the file", "not grown");
    let mut page = b"from the file".to_vec();
    page.resize(4096, 0);
    std::fs::write(&p, &page).unwrap();
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
    // The documented format: a header page, then two slots of a page each for a 32-byte
    // value, the value 16 bytes into its slot.
    let slot = |s: usize| 4096 + s * 4096;
    for s in 0..2 {
        c[slot(s) + 16] ^= 0xFF;
    }
    std::fs::write(&corrupt, &c).unwrap();
    let e = Durable::<[u64; 4]>::open(&corrupt, *b"test-arr", [0; 4]).unwrap_err();
    assert!(e.to_string().contains("both copies are corrupted"), "{e}");
    assert_eq!(e.kind(), ErrorKind::Corrupted, "{e}");

    let mut one_bad = bytes.clone();
    let newest = if u64::from_le_bytes(bytes[slot(1)..][..8].try_into().unwrap())
        > u64::from_le_bytes(bytes[slot(0)..][..8].try_into().unwrap())
    {
        1
    } else {
        0
    };
    one_bad[slot(newest) + 16] ^= 1;
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

/// A commit written by `pwritev` (every durable one, and values of 64 KiB and more) after
/// another process truncated the file is an error: the write lengthened the file again with
/// zeros where the header was, so reporting success would hand back a file nobody can open.
#[test]
fn a_commit_after_a_truncation_under_it_is_an_error_not_an_unreadable_success() {
    let dir = tempfile::tempdir().unwrap();
    for (name, mode) in [
        ("durable", Commit::Durable),
        ("crash-safe", Commit::ProcessCrashSafe),
    ] {
        let p = dir.path().join(name);
        let mut d = Durable::<[u8; 1 << 16]>::open(&p, *b"big-page", [0u8; 1 << 16]).unwrap();
        let cut = || {
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(0)
                .unwrap()
        };
        {
            // A writer held across the truncation goes straight to the write.
            let mut w = d.writer().unwrap();
            w.update(mode, |v| v[0] = 1).unwrap();
            cut();
            let Err(e) = w.update(mode, |v| v[0] = 2) else {
                panic!("{name}: the commit reported success on a file with no header")
            };
            assert_eq!(e.kind(), ErrorKind::Corrupted, "{name}: {e}");
            assert!(
                e.to_string().contains(&*p.to_string_lossy()),
                "{name}: names the file: {e}"
            );
        }
        // A new transaction reads the value first, and finds the file cut.
        cut();
        let Err(e) = d.update(mode, |v| v[0] = 3) else {
            panic!("{name}: the transaction reported success on a cut file")
        };
        assert_eq!(e.kind(), ErrorKind::Truncated, "{name}: {e}");
        assert!(
            e.to_string().contains(&*p.to_string_lossy()),
            "{name}: names the file: {e}"
        );
    }
}

/// A process killed while it creates a file (here a 256 MiB persistent value, whose zeros
/// take a while to write and sync) leaves nothing in the directory: no half-written file
/// under the name, and no temporary file beside it either.
#[test]
fn a_process_killed_while_creating_a_file_leaves_nothing_behind() {
    if let Some(role) = common::role() {
        if let Some(path) = role.strip_prefix("create:") {
            let _ = Persistent::<[u8; 1 << 28]>::open(path);
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    let mut child = common::rerun(
        "a_process_killed_while_creating_a_file_leaves_nothing_behind",
        format!("create:{}", path.display()),
    )
    .spawn()
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    // Killed while it creates, or the test would prove nothing.
    assert!(
        child.try_wait().unwrap().is_none(),
        "the child finished its 256 MiB file within 100 ms"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "big" || std::fs::metadata(&path).unwrap().len() != 1 << 28)
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A file holding exactly the value is the value, as it was before formats were checked:
/// what a C program writes (`fwrite` of the struct, or the notes' `persist()`, which makes a
/// 4 KiB file for its 4 KiB page also where pages are 16 KiB), and what mman made on a
/// system of other pages (the value rounded up to 4, 16 or 64 KiB). Only the page size of
/// the system that opens it must not decide whether a file is a persistent value.
#[test]
fn a_file_of_exactly_the_value_or_of_another_systems_pages_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let exact = dir.path().join("exact");
    std::fs::write(&exact, [7u8; 100]).unwrap();
    let v = Persistent::<[u8; 100]>::open(&exact).unwrap();
    assert_eq!(v.get().unwrap(), [7u8; 100]);
    v.set(&[8u8; 100]).unwrap();
    v.flush().unwrap();
    drop(v);
    assert_eq!(std::fs::read(&exact).unwrap(), [8u8; 100], "not grown");
    for pages in [4096usize, 16 << 10, 64 << 10] {
        let p = dir.path().join(format!("pages-{pages}"));
        let mut bytes = vec![0u8; pages];
        bytes[..8].copy_from_slice(&41u64.to_ne_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let v = Persistent::<u64>::open(&p).unwrap();
        assert_eq!(v.update(|n| *n += 1).unwrap(), ());
        assert_eq!(v.get().unwrap(), 42);
        drop(v);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), pages as u64);
    }
    // Any other length is still someone else's file.
    for len in [101usize, 4095, 4097, 8192, 128 << 10] {
        let p = dir.path().join(format!("other-{len}"));
        std::fs::write(&p, vec![1u8; len]).unwrap();
        let e = Persistent::<[u8; 100]>::open(&p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{len}: {e}");
    }
}
