//! The mapping core: exact bytes at any offset, errors for bad input, protection, locking,
//! flushing, resizing and residency.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;

use mman::{Advice, DestructiveAdvice, ErrorKind, ExclusiveMap, FileEnd, FlushMode, MapOptions, Protection};
use proptest::prelude::*;

mod common;

fn child(test: &str) -> Command {
    common::rerun(test, test)
}

fn is_child(test: &str) -> bool {
    common::is(test)
}

fn temp_file(content: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::write(&p, content).unwrap();
    (dir, p)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_range_of_a_file_maps_to_exactly_those_bytes(
        content in proptest::collection::vec(any::<u8>(), 0..(3 * 4096 + 300)),
        a in any::<prop::sample::Index>(),
        b in any::<prop::sample::Index>(),
    ) {
        let (_d, p) = temp_file(&content);
        let n = content.len() + 1;
        let (x, y) = (a.index(n), b.index(n));
        let (off, end) = (x.min(y), x.max(y));
        let m = MapOptions::new().offset(off as u64).len(end - off).map_path(&p).unwrap();
        prop_assert_eq!(m.len(), end - off);
        prop_assert_eq!(&m.to_vec().unwrap()[..], &content[off..end]);
        let mut buf = vec![0u8; end - off];
        m.read_at(0, &mut buf).unwrap();
        prop_assert_eq!(&buf[..], &content[off..end]);
        // Without a length: everything from the offset on.
        let rest = MapOptions::new().offset(off as u64).map_path(&p).unwrap();
        prop_assert_eq!(&rest.to_vec().unwrap()[..], &content[off..]);
    }
}

#[test]
fn bad_input_is_an_error_that_names_the_path() {
    let (dir, p) = temp_file(&[1u8; 5000]);
    let name = p.to_str().unwrap();
    let e = MapOptions::new().offset(5001).map_path(&p).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains(name) && e.to_string().contains("past the end"),
        "{e}"
    );
    let e = MapOptions::new().offset(4000).len(2000).map_path(&p).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("SIGBUS"), "{e}");
    let e = MapOptions::new()
        .offset(100)
        .len(usize::MAX)
        .map_path(&p)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = MapOptions::new()
        .offset(u64::MAX)
        .len(10)
        .map_path(&p)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let missing = dir.path().join("missing");
    let e = MapOptions::new().map_path(&missing).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("missing"), "{e}");
    let e = MapOptions::new().map_path(dir.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotMappable, "{e}");
    assert!(e.to_string().contains("directory"), "{e}");
    let e = MapOptions::new().len(4096).offset(1).map_anonymous().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}

#[test]
fn unmappable_inputs_say_so_so_callers_can_fall_back() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    for e in [
        MapOptions::new().map(&f).unwrap_err(),
        MapOptions::new().map_path("/proc/self/status").unwrap_err(),
        MapOptions::new().map_path("/dev/null").unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::NotMappable, "{e}");
        assert!(e.to_string().contains("read()"), "{e}");
    }
    let (_d, empty) = temp_file(b"");
    let m = MapOptions::new().map_path(&empty).unwrap();
    assert!(m.is_empty());
    assert!(m.to_vec().unwrap().is_empty());
    let z = MapOptions::new().len(0).map_anonymous().unwrap();
    assert_eq!(z.len(), 0);
}

#[test]
fn fixed_placement_never_clobbers() {
    let e = MapOptions::new()
        .len(4096)
        .fixed_address(0x10001)
        .map_anonymous()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("page size"), "{e}");
    let existing = MapOptions::new().len(8192).map_anonymous().unwrap();
    existing.write_at(0, b"keep me").unwrap();
    let addr = existing.as_ptr() as usize;
    let e = MapOptions::new()
        .len(4096)
        .fixed_address(addr)
        .map_anonymous()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AddressInUse, "{e}");
    let mut back = [0u8; 7];
    existing.read_at(0, &mut back).unwrap();
    assert_eq!(&back, b"keep me");
    // A free address: reserve a range, release it, then place exactly there.
    let probe = MapOptions::new().len(1 << 20).map_anonymous().unwrap();
    let free = probe.as_ptr() as usize;
    drop(probe);
    let placed = MapOptions::new()
        .len(1 << 20)
        .fixed_address(free)
        .map_anonymous()
        .unwrap();
    assert_eq!(placed.as_ptr() as usize, free);
    let hinted = MapOptions::new()
        .len(4096)
        .address_hint(free)
        .map_anonymous()
        .unwrap();
    assert_ne!(
        hinted.as_ptr() as usize,
        free,
        "a hint must not replace a mapping"
    );
}

#[test]
fn write_and_execute_together_need_permission() {
    let rwx = Protection::READ | Protection::WRITE | Protection::EXEC;
    let e = MapOptions::new()
        .len(4096)
        .protection(rwx)
        .map_anonymous()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("W^X"), "{e}");
    let m = MapOptions::new()
        .len(4096)
        .protection(rwx)
        .allow_write_exec(true)
        .map_anonymous()
        .unwrap();
    assert_eq!(m.protection(), rwx);
    let mut m = MapOptions::new().len(4096).map_anonymous().unwrap();
    assert!(m.protect(rwx).is_err());
    m.protect(Protection::READ | Protection::EXEC).unwrap();
}

#[test]
fn protection_is_checked_before_touching() {
    let mut m = MapOptions::new().len(4096).map_anonymous().unwrap();
    m.protect(Protection::READ).unwrap();
    assert_eq!(
        m.write_at(0, b"x").unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    m.protect(Protection::NONE).unwrap();
    assert_eq!(
        m.read_at(0, &mut [0u8; 1]).unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    assert!(m.atomic_u64(0).is_err());
    m.protect(Protection::READ_WRITE).unwrap();
    m.write_at(0, b"ok").unwrap();
}

#[test]
fn child_writes_read_only() {
    if !is_child("child_writes_read_only") {
        return;
    }
    let mut m = MapOptions::new().len(4096).map_anonymous().unwrap();
    m.protect(Protection::READ).unwrap();
    let p = m.as_mut_ptr();
    // SAFETY: deliberate: a write to a read-only page, so the kernel kills this child.
    unsafe { std::ptr::write_volatile(p, 1) };
    std::process::exit(0);
}

#[test]
fn a_write_to_a_read_only_mapping_kills_with_sigsegv() {
    let st = child("child_writes_read_only").status().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGSEGV), "{st:?}");
}

#[test]
fn child_mlock_beyond_limit() {
    if !is_child("child_mlock_beyond_limit") {
        return;
    }
    let m = MapOptions::new().len(1 << 20).map_anonymous().unwrap();
    let e = m.lock(..).unwrap_err();
    println!("KIND {:?}", e.kind());
    println!("MSG {e}");
}

#[test]
fn mlock_over_rlimit_memlock_names_the_limit() {
    let mut c = child("child_mlock_beyond_limit");
    // SAFETY: setrlimit, setgid and setuid are async-signal-safe. Dropping root matters:
    // root's CAP_IPC_LOCK ignores RLIMIT_MEMLOCK.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: 64 << 10,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::geteuid() == 0 && (libc::setgid(65534) != 0 || libc::setuid(65534) != 0) {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = match c.output() {
        Ok(o) => o,
        // The unprivileged user cannot run a binary under a root-only directory: nothing to
        // test here then, and saying so beats a false pass.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("skipped: the test binary is not executable by uid 65534");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if text.is_empty() && !out.status.success() {
        eprintln!("skipped: uid 65534 could not run the test binary: {out:?}");
        return;
    }
    assert!(text.contains("KIND ResourceLimit"), "{text}");
    assert!(text.contains("RLIMIT_MEMLOCK is 65536 bytes"), "{text}");
    assert!(text.contains("ulimit -l"), "{text}");
}

#[test]
fn shared_writes_reach_the_file_and_private_ones_do_not() {
    let (_d, p) = temp_file(&[b'.'; 10_000]);
    {
        let m = MapOptions::new()
            .read_write()
            .shared()
            .offset(4097)
            .len(100)
            .map_path(&p)
            .unwrap();
        m.write_at(3, b"shared").unwrap();
        m.flush(1..50, FlushMode::Sync).unwrap();
        m.flush(.., FlushMode::Async).unwrap();
        assert_eq!(&std::fs::read(&p).unwrap()[4100..4106], b"shared");
    }
    assert_eq!(
        &std::fs::read(&p).unwrap()[4100..4106],
        b"shared",
        "lost after unmap"
    );
    let m = MapOptions::new().read_write().private().map_path(&p).unwrap();
    m.write_at(0, b"private").unwrap();
    assert_eq!(&std::fs::read(&p).unwrap()[..7], b".......");
    assert_eq!(m.load::<[u8; 7]>(0).unwrap(), *b"private");
}

#[test]
fn resize_keeps_contents() {
    let mut a = MapOptions::new().len(4096).map_anonymous().unwrap();
    a.write_at(4000, b"tail").unwrap();
    a.resize(3 << 20).unwrap();
    assert_eq!(a.len(), 3 << 20);
    assert_eq!(a.load::<[u8; 4]>(4000).unwrap(), *b"tail");
    assert_eq!(a.load::<u64>((3 << 20) - 8).unwrap(), 0);
    a.resize(4004).unwrap();
    assert_eq!(a.load::<[u8; 4]>(4000).unwrap(), *b"tail");
    let mut x = ExclusiveMap::new(10).unwrap();
    x.copy_from_slice(b"0123456789");
    x.resize(1 << 16).unwrap();
    assert_eq!(&x[..10], b"0123456789");
    assert!(x[10..].iter().all(|&b| b == 0));

    let (_d, p) = temp_file(b"file contents");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let mut m = MapOptions::new().read_write().shared().map(&file).unwrap();
    assert!(m.resize(100).is_err(), "a file mapping needs its file");
    assert!(
        m.resize_file(&file, 8192, FileEnd::Keep).is_err(),
        "past EOF, keeping the file's end"
    );
    m.resize_file(&file, 8192, FileEnd::Extend).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 8192);
    assert_eq!(m.load::<[u8; 13]>(0).unwrap(), *b"file contents");
    m.write_at(8000, b"grown").unwrap();
    m.flush(.., FlushMode::Sync).unwrap();
    assert_eq!(&std::fs::read(&p).unwrap()[8000..8005], b"grown");
    let (_d2, other) = temp_file(&[0u8; 9000]);
    let other = std::fs::File::open(other).unwrap();
    assert!(
        m.resize_file(&other, 4096, FileEnd::Keep).is_err(),
        "another file"
    );
}

/// No slice, and no offset arithmetic, may span more than `isize::MAX` bytes: a mapping
/// (or a resize) that long is refused by mman itself, before the kernel is asked, on every
/// target. (On 32-bit targets the kernel could grant one, and `ExclusiveMap`'s slice would
/// then be undefined behaviour; a resize's `delta + new_len` could wrap.)
#[test]
fn lengths_beyond_isize_max_are_refused_before_the_kernel_is_asked() {
    let too_long = isize::MAX as usize + 1;
    let refused = |r: mman::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}: {e}");
        assert!(e.to_string().contains("isize::MAX"), "{what}: {e}");
    };
    refused(
        MapOptions::new().len(too_long).map_anonymous().map(drop),
        "anonymous",
    );
    refused(ExclusiveMap::new(too_long).map(drop), "exclusive");
    refused(ExclusiveMap::new(usize::MAX).map(drop), "exclusive, usize::MAX");
    let mut x = ExclusiveMap::new(4096).unwrap();
    refused(x.resize(too_long), "resize");
    refused(x.resize(usize::MAX), "resize to usize::MAX");
    assert_eq!(x.len(), 4096, "a refused resize changes nothing");
}

#[test]
fn residency_locking_and_advice() {
    let mut x = ExclusiveMap::new(16 * 4096).unwrap();
    assert_eq!(x.residency(..).unwrap().resident(), 0);
    for page in 0..16 {
        x[page * 4096] = 1;
    }
    let r = x.residency(..).unwrap();
    assert_eq!((r.pages(), r.resident()), (16, 16));
    assert_eq!(r.bitmap(), vec![0xFFFF]);
    x.lock(..).unwrap();
    x.unlock(..).unwrap();
    x.discard(..).unwrap();
    assert!(
        x.iter().all(|&b| b == 0),
        "DONTNEED zeroes private anonymous memory"
    );
    x.advise(.., Advice::Random).unwrap();
    let mut m = x.into_mapping();
    m.advise_destructive(.., DestructiveAdvice::Free).unwrap();
    m.advise(0..1, Advice::Sequential).unwrap();
    assert!(m.residency(0..100_000_000).is_err(), "range outside the mapping");
}

#[test]
fn atomics_and_typed_access() {
    let m = MapOptions::new().len(64).shared().map_anonymous().unwrap();
    m.atomic_u64(8)
        .unwrap()
        .store(42, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(m.load::<u64>(8).unwrap(), 42);
    assert!(m.atomic_u64(4).is_err(), "misaligned");
    assert!(m.atomic_u64(64).is_err(), "out of bounds");
    m.store(3, &0xABCD_u16).unwrap();
    assert_eq!(m.load::<u16>(3).unwrap(), 0xABCD);
    assert!(m.store(63, &1u16).is_err());
}

#[test]
fn lock_all_and_unlock_all() {
    let r = mman::lock_all(mman::LockAll::CURRENT | mman::LockAll::ON_FAULT);
    match r {
        Ok(()) => mman::unlock_all().unwrap(),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ResourceLimit, "{e}"),
    }
}

#[test]
fn huge_pages_without_a_reservation_say_how_to_reserve() {
    let reserved: u64 = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let r = MapOptions::new().len(2 << 20).huge_pages(None).map_anonymous();
    match r {
        Ok(m) => assert!(reserved > 0 && m.page_size() >= 2 << 20),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::ResourceLimit, "{e}");
            assert!(e.to_string().contains("/proc/sys/vm/nr_hugepages"), "{e}");
        }
    }
}

#[test]
fn populate_transparent_huge_pages_and_no_reserve() {
    let m = MapOptions::new()
        .len(64 * 4096)
        .populate(true)
        .map_anonymous()
        .unwrap();
    assert_eq!(
        m.residency(..).unwrap().resident(),
        64,
        "MAP_POPULATE faults every page in"
    );
    let t = MapOptions::new()
        .len(4 << 20)
        .transparent_huge_pages(true)
        .map_anonymous();
    assert!(t.is_ok(), "{:?}", t.err());
    let n = MapOptions::new()
        .len(1 << 30)
        .no_reserve(true)
        .map_anonymous()
        .unwrap();
    assert_eq!(n.residency(..).unwrap().resident(), 0);
}

/// Bits of a `Protection` the kernel does not take never reach it, nor stay in what the
/// mapping reports.
#[test]
fn protection_keeps_only_the_kernels_bits() {
    let odd = Protection::from_bits_retain(Protection::READ.bits() | 0x100);
    let mut m = MapOptions::new()
        .len(4096)
        .protection(odd)
        .map_anonymous()
        .unwrap();
    assert_eq!(m.protection(), Protection::READ);
    m.protect(Protection::from_bits_retain(
        Protection::READ_WRITE.bits() | 0x8000,
    ))
    .unwrap();
    assert_eq!(m.protection(), Protection::READ_WRITE);
}
