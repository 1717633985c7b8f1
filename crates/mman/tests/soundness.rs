//! Adversarial tests of the soundness promises: aliases and peers that write, truncate or
//! scribble while the safe API is in use, spoofed signals, garbage in shared objects. Each
//! test asserts a defined value, an error of the documented kind, or a process that was not
//! killed by a signal. Tests that need a pristine process re-run this binary as a child
//! (`MMAN_SOUND_CHILD` names the role).

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mman::persist::Persistent;
use mman::shm::{Memfd, Seals};
use mman::sync::{Mutex, PosixSemaphore, Semaphore};
use mman::{ErrorKind, ExclusiveMap, MapOptions};

/// Re-run this test binary as `role`; returns the child's exit status and output.
mod common;

fn child(role: &str) -> std::process::Output {
    common::rerun("child_roles", role).output().unwrap()
}

/// The child processes. Does nothing unless run as one.
#[test]
fn child_roles() {
    let Some(role) = common::role() else {
        return;
    };
    match role.as_str() {
        "spoofed-sigbus" => spoofed_sigbus(),
        "spoofed-then-truncated" => spoofed_then_truncated(),
        "spoofed-then-guard-hit" => spoofed_then_guard_hit(),
        "spoofed-under-a-reporter" => spoofed_under_a_reporter(),
        other => panic!("unknown role {other}"),
    }
}

static SPOOFED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn count_sigbus(_: libc::c_int) {
    SPOOFED.fetch_add(1, Ordering::SeqCst);
}

/// Queue a SIGBUS to this thread with `si_code` and a chosen `si_addr`, as any process of the
/// same user can.
fn queue_sigbus(code: i32, addr: usize) {
    queue_signal(libc::SIGBUS, code, addr)
}

/// Queue `sig` to this thread with `si_code` and a chosen `si_addr`.
fn queue_signal(sig: i32, code: i32, addr: usize) {
    // SAFETY: a zeroed siginfo filled as rt_tgsigqueueinfo expects; si_addr sits at byte 16
    // of siginfo_t on 64-bit Linux.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        info.si_signo = sig;
        info.si_code = code;
        *((&mut info as *mut libc::siginfo_t as *mut u8).add(16) as *mut usize) = addr;
        let r = libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            libc::getpid(),
            libc::gettid(),
            sig,
            &info,
        );
        assert_eq!(r, 0, "rt_tgsigqueueinfo: {}", std::io::Error::last_os_error());
    }
}

fn spoofed_sigbus() {
    // A handler of the program's own, installed before mman's: spoofed signals reach it.
    // SAFETY: a plain handler that only adds to an atomic.
    unsafe { libc::signal(libc::SIGBUS, count_sigbus as *const () as libc::sighandler_t) };
    let m = Memfd::create("sealed", 4096).unwrap();
    m.map().unwrap().write_at(0, b"immutable").unwrap();
    m.add_seals(Seals::FROZEN).unwrap();
    let sealed = m.map_sealed().unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), [7u8; 8192]).unwrap();
    let map = MapOptions::new().map_path(file.path()).unwrap();
    let before = &sealed[..9];
    // SI_QUEUE (-1), SI_USER (0) and SI_TKILL (-6): never the kernel's.
    for code in [-1, 0, -6] {
        queue_sigbus(code, sealed.as_ptr() as usize);
        queue_sigbus(code, map.as_ptr() as usize + 100);
    }
    assert_eq!(
        before, b"immutable",
        "the sealed bytes under a live &[u8] changed"
    );
    assert_eq!(
        map.load::<u8>(100).unwrap(),
        7,
        "a spoofed signal replaced file pages"
    );
    assert!(!map.is_truncated());
    assert_eq!(
        SPOOFED.load(Ordering::SeqCst),
        6,
        "spoofed signals go to the previous handler"
    );
    println!("SPOOF-OK");
}

/// Truncate the file at `path` to 0 bytes, under any mapping of it.
fn truncate_to_nothing(path: &std::path::Path) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

/// With no handler of the program's own, the disposition mman chains to is std's (its
/// stack-overflow handler, which on a signal that is not its guard page's "unregisters itself"
/// by setting SIG_DFL). A spoofed SIGBUS handed to it must not take mman's handler with it: a
/// truncation afterwards is still an error, not a death.
fn spoofed_then_truncated() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), [7u8; 8192]).unwrap();
    let map = MapOptions::new().map_path(file.path()).unwrap();
    for code in [-1, 0, -6] {
        queue_sigbus(code, map.as_ptr() as usize + 100);
    }
    assert_eq!(map.load::<u8>(100).unwrap(), 7);
    println!("SPOOFS-SURVIVED");
    truncate_to_nothing(file.path());
    let e = map.load::<u8>(100).unwrap_err();
    println!("TRUNCATED-OK {e}");
}

static REPORTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// The handler the reporter replaced (mman's), which it chains to.
static UNDER_REPORTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A crash reporter installed after mman: counts every SIGBUS, then hands it on to the handler
/// it replaced, as crash reporters do.
extern "C" fn reporter(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    REPORTED.fetch_add(1, Ordering::SeqCst);
    let under = UNDER_REPORTER.load(Ordering::SeqCst);
    // SAFETY: mman's handler, installed with SA_SIGINFO: this type.
    let f = unsafe {
        std::mem::transmute::<usize, extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)>(
            under,
        )
    };
    f(sig, info, ctx);
}

/// A handler installed over mman's (a crash reporter that chains to it) must stay installed
/// when a spoofed SIGBUS goes down the chain to std's handler: putting back mman's own handler
/// instead would uninstall the reporter, which would see nothing from then on.
fn spoofed_under_a_reporter() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), [7u8; 8192]).unwrap();
    let map = MapOptions::new().map_path(file.path()).unwrap();
    // SAFETY: zeroed sigactions filled in full; the reporter is an SA_SIGINFO handler.
    unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = reporter as *const () as libc::sighandler_t;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut new.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(libc::SIGBUS, &new, &mut old), 0);
        assert!(old.sa_flags & libc::SA_SIGINFO != 0, "mman's handler is below");
        UNDER_REPORTER.store(old.sa_sigaction, Ordering::SeqCst);
    }
    for code in [-1, 0, -6] {
        queue_sigbus(code, map.as_ptr() as usize + 100);
    }
    assert_eq!(
        REPORTED.load(Ordering::SeqCst),
        3,
        "a spoofed SIGBUS replaced the handler installed over mman's (a crash reporter) with mman's own"
    );
    truncate_to_nothing(file.path());
    let e = map.load::<u8>(100).unwrap_err();
    assert_eq!(
        REPORTED.load(Ordering::SeqCst),
        4,
        "the reporter saw the truncation"
    );
    println!("REPORTER-OK {e}");
}

#[test]
fn a_spoofed_sigbus_leaves_a_handler_installed_over_mmans_in_place() {
    child_succeeds("spoofed-under-a-reporter", "REPORTER-OK");
}

/// The same for the guard pages' SIGSEGV handler: spoofed SIGSEGVs handed to std's handler
/// leave mman's in place, so a real guard hit is still named before the process dies.
fn spoofed_then_guard_hit() {
    let mut buf = mman::fault::GuardedBuffer::new(100).unwrap();
    let upper = buf.guards().1.start;
    for code in [-1, 0, -6] {
        queue_signal(libc::SIGSEGV, code, upper);
    }
    println!("SPOOFS-SURVIVED");
    let p = buf.as_mut_ptr();
    // SAFETY: a deliberate one-byte overflow into the upper guard page: the test.
    unsafe { std::ptr::write_volatile(p.add(100), 1) };
    println!("no fault");
}

#[test]
fn spoofed_sigsegvs_leave_the_guard_page_handler_in_place() {
    let out = child("spoofed-then-guard-hit");
    let (text, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(text.contains("SPOOFS-SURVIVED"), "{text}{err}");
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{text}{err}");
    assert!(err.contains("mman: guard page hit at 0x"), "{err}");
}

/// Run child `role`; it must exit 0 having printed `marker`.
fn child_succeeds(role: &str, marker: &str) {
    let out = child(role);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(marker),
        "{role}: signal {:?}, {}{}",
        out.status.signal(),
        text,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_spoofed_sigbus_leaves_the_truncation_handler_in_place() {
    child_succeeds("spoofed-then-truncated", "TRUNCATED-OK");
}

#[test]
fn spoofed_sigbus_never_remaps_and_goes_to_the_previous_handler() {
    child_succeeds("spoofed-sigbus", "SPOOF-OK");
}

#[test]
fn a_persistent_value_follows_writes_by_an_alias_and_reports_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v");
    let v = Persistent::<u64>::open(&path).unwrap();
    v.set(&5).unwrap();
    // This very process writes the file behind the handle's back (no flock asked for).
    std::fs::write(&path, {
        let mut page = vec![0u8; 4096];
        page[..8].copy_from_slice(&41u64.to_ne_bytes());
        page
    })
    .unwrap();
    assert_eq!(v.get().unwrap(), 41, "a copy, read fresh, sees the alias's write");
    // Another mapping of the same file writes too.
    let alias = MapOptions::new().read_write().shared().map_path(&path).unwrap();
    alias.store(0, &42u64).unwrap();
    assert_eq!(v.update(|n| *n += 1).unwrap(), ());
    assert_eq!(alias.load::<u64>(0).unwrap(), 43);
    // Truncation inside the value's page: the value reads as zeros without a fault, and
    // the measuring calls say what happened.
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4)
        .unwrap();
    assert_eq!(v.verify().unwrap_err().kind(), ErrorKind::Truncated);
    assert_eq!(
        v.flush().unwrap_err().kind(),
        ErrorKind::Truncated,
        "flush must not say Ok"
    );
    // Truncation to nothing: every access is an error, not a zero.
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_eq!(v.get().unwrap_err().kind(), ErrorKind::Truncated);
    assert_eq!(v.set(&1).unwrap_err().kind(), ErrorKind::Truncated);
}

#[test]
fn a_mutex_guard_holds_a_copy_that_a_scribbling_peer_cannot_change() {
    let shared = mman::shm::anonymous(4096).unwrap();
    let mx = Mutex::<[u64; 4]>::open(&shared, 0, || [1, 2, 3, 4]).unwrap();
    let mut g = mx.lock().unwrap();
    // A peer ignoring the lock writes garbage over the data (bytes 16..48).
    shared.write_at(16, &[0xFF; 32]).unwrap();
    assert_eq!(*g, [1, 2, 3, 4], "the guard's value changed under it");
    g[0] = 10;
    drop(g);
    assert_eq!(*mx.lock().unwrap(), [10, 2, 3, 4], "the holder's write-back wins");
    // The lock word names this thread (TID in the low 30 bits): no pointer of this process.
    let g = mx.lock().unwrap();
    let word = shared.load::<u64>(8).unwrap();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u64;
    assert_eq!(word & ((1 << 30) - 1), tid, "lock word {word:#x}");
    assert!(
        mx.lock().is_err(),
        "locking again on the same thread is an error, not a hang"
    );
    drop(g);
}

#[test]
fn garbage_in_a_lock_word_is_recovered_from_within_100ms() {
    let shared = mman::shm::anonymous(4096).unwrap();
    let mx = Mutex::<u64>::open(&shared, 0, || 7).unwrap();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..20 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Any TID with a token that no live thread has: a dead (or invented) owner.
        let garbage = (rng | 1) & !(1 << 31);
        shared.atomic_u64(8).unwrap().store(garbage, Ordering::SeqCst);
        let t0 = Instant::now();
        let mut g = mx.lock().unwrap();
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "took {:?}",
            t0.elapsed()
        );
        assert!(g.owner_died(), "garbage {garbage:#x} must read as a dead owner");
        g.make_consistent().unwrap();
    }
    // The unrecoverable state is an error, not a hang.
    shared.atomic_u64(8).unwrap().store(1 << 31, Ordering::SeqCst);
    assert!(mx.lock().is_err());
    assert!(mx.try_lock().is_err());
}

#[test]
fn garbage_in_a_semaphore_is_a_count_never_a_crash() {
    let shared = mman::shm::anonymous(4096).unwrap();
    let sem: &Semaphore = mman::sync::place(&shared, 0).unwrap();
    shared.atomic_u64(0).unwrap().store(u64::MAX, Ordering::SeqCst);
    assert!(
        sem.post().is_err(),
        "count at SEMAPHORE_MAX: overflow is an error"
    );
    // The garbage says waiters starve and are served first: a newcomer's wait gives way for
    // at most a millisecond, then takes a permit that is there; try_wait takes one at once.
    assert!(sem.try_wait());
    for _ in 0..3 {
        let asked = std::time::Instant::now();
        assert!(sem.wait_timeout(Duration::from_secs(10)));
        assert!(asked.elapsed() < Duration::from_secs(1));
    }
    shared
        .atomic_u64(0)
        .unwrap()
        .store(0xFFFF_FFFF_0000_0000, Ordering::SeqCst);
    assert!(!sem.wait_timeout(Duration::from_millis(5)));
    sem.post().unwrap();
    assert!(sem.wait_timeout(Duration::from_secs(10)));
}

#[test]
fn unaligned_copies_never_lose_a_neighbours_atomic_updates() {
    let shared = mman::shm::anonymous(4096).unwrap();
    let counter = shared.atomic_u64(0).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..200_000 {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Bytes 6..11 straddle the counter's word and the next: the counter's top bytes are
        // rewritten with what they hold (zero) by a compare-and-swap, never a stale word.
        for i in 0..200_000u32 {
            shared.write_at(6, &[0, 0, i as u8, 1, 2]).unwrap();
        }
    });
    assert_eq!(counter.load(Ordering::SeqCst), 200_000);
}

#[test]
fn a_secret_refuses_a_type_aligned_beyond_a_page() {
    #[repr(C, align(8192))]
    #[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
    struct Huge([u8; 8192]);
    let e = mman::fault::Secret::<Huge>::zeroed_with(false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}

#[test]
fn shared_anonymous_memory_refuses_to_grow_and_may_shrink() {
    let mut m = MapOptions::new().len(8192).shared().map_anonymous().unwrap();
    assert_eq!(m.resize(1 << 20).unwrap_err().kind(), ErrorKind::InvalidInput);
    m.write_at(0, b"kept").unwrap();
    m.resize(4096).unwrap();
    assert_eq!(&m.to_vec().unwrap()[..4], b"kept");
    let mut private = MapOptions::new().len(4096).map_anonymous().unwrap();
    private.resize(1 << 20).unwrap();
    private.write_at((1 << 20) - 1, b"z").unwrap();
}

#[test]
fn lazily_taken_huge_pages_fail_at_creation_not_with_sigbus() {
    let pool: u64 = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let r = MapOptions::new()
        .len(2 << 20)
        .huge_pages(None)
        .no_reserve(true)
        .map_exclusive();
    match r {
        Ok(mut x) => {
            assert!(pool > 0, "an empty pool cannot supply a huge page");
            x[0] = 1; // populated: no SIGBUS possible
        }
        Err(e) if pool == 0 => assert_eq!(e.kind(), ErrorKind::ResourceLimit, "{e}"),
        Err(e) => assert!(e.to_string().contains("huge"), "{e}"),
    }
    // And without creating: an ExclusiveMap is never handed out unpopulated.
    let _ = ExclusiveMap::new(4096).unwrap();
}

#[test]
fn a_zeroed_or_scribbled_sem_t_is_refused() {
    let shared = mman::shm::anonymous(4096).unwrap();
    // SAFETY: this test's own memory; refused before glibc touches it.
    let e = unsafe { PosixSemaphore::open_in(&shared, 0) }.err().unwrap();
    assert!(e.to_string().contains("not a process-shared"), "{e}");
    shared.write_at(0, &[0xA5; 32]).unwrap();
    // SAFETY: as above.
    assert!(unsafe { PosixSemaphore::open_in(&shared, 0) }.is_err());
    // SAFETY: fresh memory, used only through sem_* calls below.
    let sem = unsafe { PosixSemaphore::init_in(&shared, 64, 2) }.unwrap();
    // SAFETY: as above.
    let again = unsafe { PosixSemaphore::open_in(&shared, 64) }.unwrap();
    assert!(again.try_wait().unwrap() && sem.try_wait().unwrap());
}

#[test]
fn a_named_semaphore_whose_file_is_truncated_is_an_error_not_sigbus() {
    let name = format!("/mman-sound-{}", std::process::id());
    // SAFETY: this test's own name, touched by nothing else.
    let sem = unsafe { mman::sync::NamedSemaphore::create(&name, 1) }.unwrap();
    assert!(sem.try_wait().unwrap());
    let file = format!("/dev/shm/sem.{}", &name[1..]);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_eq!(sem.post().unwrap_err().kind(), ErrorKind::Truncated);
    assert_eq!(sem.try_wait().unwrap_err().kind(), ErrorKind::Truncated);
    drop(sem);
    // A file others may write is refused before glibc maps it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    // SAFETY: refused before it is opened.
    let e = unsafe { mman::sync::NamedSemaphore::open(&name) }.unwrap_err();
    assert!(e.to_string().contains("lets others write"), "{e}");
    mman::sync::NamedSemaphore::unlink(&name).unwrap();
}

#[test]
fn a_truncation_inside_a_page_reads_zeros_and_verify_says_so() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), [9u8; 4096]).unwrap();
    let map = MapOptions::new().map_path(file.path()).unwrap();
    file.as_file().set_len(100).unwrap();
    let mut buf = [1u8; 8];
    map.read_at(200, &mut buf).unwrap();
    assert_eq!(buf, [0; 8], "the kernel zeroes the rest of the page");
    let e = map.verify_file_size().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Truncated);
    assert_eq!(e.truncation(), Some((4096, 100)));
}

#[test]
fn a_mapping_at_address_0_is_refused_and_leaves_nothing_mapped() {
    let page0_mapped = || {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .any(|l| l.starts_with("00000000-"))
    };
    assert!(!page0_mapped());
    let e = MapOptions::new()
        .len(4096)
        .fixed_address(0)
        .map_anonymous()
        .unwrap_err();
    // Refused by the kernel (vm.mmap_min_addr, no CAP_SYS_RAWIO), placed elsewhere (as under
    // valgrind), or refused by mman (as root here): an error each time, whatever its kind,
    // and page 0 is not left mapped.
    let _ = e.kind();
    assert!(!page0_mapped(), "page 0 left mapped after {e}");
}
