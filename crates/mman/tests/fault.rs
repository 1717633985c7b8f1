//! Faults, guard pages and secrets, with real processes where a signal is the point.
//!
//! Child processes are this test binary run again with `MMAN_FAULT_CHILD` naming the work;
//! each `child_*` test does nothing without it.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

use mman::fault::{GuardedBuffer, GuardedStack, Secret};
use mman::{ErrorKind, MapOptions};

mod common;

fn run_child(test: &str) -> Output {
    common::rerun(test, test).output().unwrap()
}

fn is_child(test: &str) -> bool {
    common::is(test)
}

fn file_of(dir: &tempfile::TempDir, name: &str, len: usize) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, vec![0xA5u8; len]).unwrap();
    p
}

#[test]
fn truncation_by_another_process_is_an_error_with_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_of(&dir, "f", 5 * 4096 + 17);
    let map = MapOptions::new().map_path(&path).unwrap();
    let mut buf = vec![0u8; map.len()];
    map.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0xA5));
    let st = Command::new("truncate")
        .args(["-s", "4096"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    let err = map.read_at(0, &mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Truncated, "{err}");
    assert_eq!(err.truncation(), Some((5 * 4096 + 17, 4096)));
    assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
    assert!(map.is_truncated());
    // The surviving first page still reads; the vanished ones read as zeros.
    assert!(buf[..4096].iter().all(|&b| b == 0xA5));
    assert!(buf[4096..].iter().all(|&b| b == 0));
    // Later accesses keep reporting it.
    assert_eq!(map.load::<u8>(0).unwrap_err().kind(), ErrorKind::Truncated);
}

#[test]
fn a_shrunk_file_is_reported_by_write_to_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_of(&dir, "g", 3 * 4096);
    let map = MapOptions::new().map_path(&path).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    assert_eq!(map.verify_file_size().unwrap_err().kind(), ErrorKind::Truncated);
    let sink = std::fs::File::create(dir.path().join("out")).unwrap();
    let err = map.write_to(&sink, ..).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Truncated, "{err}");
    assert_eq!(err.truncation(), Some((3 * 4096, 100)));
}

#[test]
fn four_threads_reading_different_mappings_survive_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = (0..4)
        .map(|i| file_of(&dir, &format!("t{i}"), 64 * 4096))
        .collect();
    let maps: Vec<_> = paths
        .iter()
        .map(|p| MapOptions::new().map_path(p).unwrap())
        .collect();
    let go = std::sync::Barrier::new(5);
    std::thread::scope(|s| {
        let handles: Vec<_> = maps
            .iter()
            .map(|m| {
                let go = &go;
                s.spawn(move || {
                    let mut buf = vec![0u8; 4096];
                    go.wait();
                    let started = std::time::Instant::now();
                    loop {
                        for page in 0..64 {
                            if let Err(e) = m.read_at(page * 4096, &mut buf) {
                                return Some(e);
                            }
                        }
                        if started.elapsed() > std::time::Duration::from_secs(20) {
                            return None;
                        }
                    }
                })
            })
            .collect();
        go.wait();
        std::thread::sleep(std::time::Duration::from_millis(20));
        for p in &paths {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(4096)
                .unwrap();
        }
        for h in handles {
            let e = h.join().unwrap().expect("the reader never saw the truncation");
            assert_eq!(e.kind(), ErrorKind::Truncated, "{e}");
            assert_eq!(e.truncation(), Some((64 * 4096, 4096)));
        }
    });
}

static CHAINED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn earlier_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    CHAINED.store(true, std::sync::atomic::Ordering::SeqCst);
    // SAFETY: _exit is async-signal-safe; 42 tells the parent this handler ran.
    unsafe { libc::_exit(42) };
}

#[test]
fn child_chains_to_earlier_handler() {
    if !is_child("child_chains_to_earlier_handler") {
        return;
    }
    // SAFETY: install a plain SA_SIGINFO handler before mman's.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = earlier_handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
    mman::fault::install_sigbus_handler().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = file_of(&dir, "raw", 2 * 4096);
    let f = std::fs::File::open(&path).unwrap();
    use std::os::fd::AsRawFd;
    // A mapping mman does not know: its fault is not mman's to absorb.
    // SAFETY: a fresh read-only mapping; touched once below to provoke SIGBUS on purpose.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * 4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    // SAFETY: deliberate: this page is past the end of the file now, so this read raises
    // SIGBUS, which must reach earlier_handler (it exits the process).
    let v = unsafe { std::ptr::read_volatile((p as *const u8).add(4096)) };
    println!("no signal: {v}");
    std::process::exit(1);
}

#[test]
fn sigbus_outside_mman_reaches_the_earlier_handler() {
    let out = run_child("child_chains_to_earlier_handler");
    assert_eq!(out.status.code(), Some(42), "{out:?}");
}

#[test]
fn child_overflows_guarded_buffer() {
    if !is_child("child_overflows_guarded_buffer") {
        return;
    }
    let mut buf = GuardedBuffer::new(100).unwrap();
    buf[99] = 1; // the last byte is fine
    let p = buf.as_mut_ptr();
    std::io::stdout().flush().unwrap();
    // SAFETY: deliberate one-byte overflow into the upper guard page: the demonstration.
    unsafe { std::ptr::write_volatile(p.add(100), 1) };
    std::process::exit(0);
}

#[test]
fn guarded_buffer_overflow_is_reported_and_kills_with_sigsegv() {
    let out = run_child("child_overflows_guarded_buffer");
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mman: guard page hit at 0x"), "{err}");
    assert!(
        err.contains("overflow past the end of a guarded buffer of 100 bytes"),
        "{err}"
    );
    assert!(err.contains("(upper guard)"), "{err}");
}

/// A crash reporter's SIGSEGV handler, installed before mman's: it must see a guard hit
/// too (after mman's message), and ends the child with status 3.
extern "C" fn reporter(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let msg = b"reporter saw the fault\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(3);
    }
}

#[test]
fn child_with_a_reporter_overflows_guarded_buffer() {
    if !is_child("child_with_a_reporter_overflows_guarded_buffer") {
        return;
    }
    // SAFETY: installing a handler that only calls async-signal-safe functions.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = reporter as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        assert_eq!(libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut()), 0);
    }
    let mut buf = GuardedBuffer::new(100).unwrap();
    let p = buf.as_mut_ptr();
    // SAFETY: deliberate one-byte overflow into the upper guard page: the demonstration.
    unsafe { std::ptr::write_volatile(p.add(100), 1) };
    std::process::exit(0);
}

#[test]
fn a_guard_hit_reaches_the_handler_installed_before() {
    let out = run_child("child_with_a_reporter_overflows_guarded_buffer");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let ours = err.find("mman: guard page hit at 0x").expect("mman's message");
    let theirs = err
        .find("reporter saw the fault")
        .expect("the reporter's message");
    assert!(ours < theirs, "{err}");
}

#[test]
fn child_overflows_guarded_stack() {
    if !is_child("child_overflows_guarded_stack") {
        return;
    }
    #[inline(never)]
    fn deeper(n: u64) -> u64 {
        let pad = std::hint::black_box([n; 64]);
        if n == u64::MAX {
            return 0;
        }
        deeper(n + 1) + pad[3]
    }
    let mut stack = GuardedStack::new(128 << 10).unwrap();
    let _ = stack.run(|| deeper(0));
    std::process::exit(0);
}

#[test]
fn guarded_stack_overflow_is_reported() {
    let out = run_child("child_overflows_guarded_stack");
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stack overflow of a guarded stack of 131072 bytes"),
        "{err}"
    );
    assert!(err.contains("(lower guard)"), "{err}");
}

#[test]
fn guarded_stack_runs_closures_and_buffers_deref() {
    let mut stack = GuardedStack::new(256 << 10).unwrap();
    assert_eq!(stack.run(|| (1..=10u64).sum::<u64>()).unwrap(), 55);
    let mut b = GuardedBuffer::new(5000).unwrap();
    assert_eq!(b.len(), 5000);
    b[4999] = 9;
    assert_eq!(b[4999], 9);
    let (lo, hi) = b.guards();
    assert_eq!(hi.start, b.as_ptr() as usize + 5000);
    assert!(lo.end <= b.as_ptr() as usize);
}

/// Secrets lock memory, and VmLck counts the whole process: the tests that make secrets take
/// turns, so one can measure its own locking.
static LOCKING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn vm_lck_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmLck:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn secret_is_locked_and_reports_protections() {
    let _turn = LOCKING.lock().unwrap_or_else(|p| p.into_inner());
    let before = vm_lck_kib();
    let mut s = Secret::<[u8; 64]>::zeroed_with(false).unwrap();
    s.expose_mut().unwrap().copy_from_slice(&[3u8; 64]);
    let p = s.protections().clone();
    assert!(p.locked.is_active(), "{p:?}");
    assert!(p.excluded_from_core_dumps.is_active(), "{p:?}");
    assert!(p.hidden_from_children.is_active(), "{p:?}");
    assert!(!p.secret_memory.is_active());
    assert!(vm_lck_kib() >= before + 4, "VmLck did not rise");
    assert_eq!(s.expose().unwrap()[10], 3);
    assert!(!format!("{s:?}").contains('3'), "Debug must not print the value");
    s.wipe();
    assert!(
        s.expose().unwrap().iter().all(|&b| b == 0),
        "wipe (and so drop) zeroes"
    );
    drop(s);
    assert!(vm_lck_kib() <= before, "VmLck did not fall after drop");
}

#[test]
fn secret_memory_when_the_kernel_allows_it() {
    let _turn = LOCKING.lock().unwrap_or_else(|p| p.into_inner());
    let s = Secret::<u64>::zeroed().unwrap();
    let p = s.protections();
    // Either in force, or the reason it is not is given.
    match &p.secret_memory {
        mman::fault::Status::Active => assert!(p.locked.is_active()),
        mman::fault::Status::Unavailable(why) => assert!(why.contains("memfd_secret"), "{why}"),
    }
    assert_eq!(*s.expose().unwrap(), 0);
}

#[test]
fn a_forked_child_sees_zeros_not_the_secret() {
    let _turn = LOCKING.lock().unwrap_or_else(|p| p.into_inner());
    let mut s = Secret::<[u8; 32]>::zeroed_with(false).unwrap();
    s.expose_mut().unwrap().copy_from_slice(&[0x5Au8; 32]);
    let p = s.expose().unwrap().as_ptr();
    // SAFETY: the child only reads memory with volatile loads and calls _exit: both
    // async-signal-safe, as required after fork in a multi-threaded process.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut all_zero = true;
        for i in 0..32 {
            // SAFETY: the page is mapped in the child (WIPEONFORK zero-fills it).
            if unsafe { std::ptr::read_volatile(p.add(i)) } != 0 {
                all_zero = false;
            }
        }
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(if all_zero { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child died: {status}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "the child saw the secret");
    assert_eq!(s.expose().unwrap()[0], 0x5A, "the parent keeps it");
}

/// Lengths whose page rounding or guard pages overflow are refused: the rounding wrapped
/// in a release build (a `GuardedBuffer` of `usize::MAX` bytes over two pages, a slice past
/// all memory) and panicked in a debug one.
#[test]
fn guarded_lengths_that_overflow_are_refused_not_wrapped() {
    for len in [
        usize::MAX,
        usize::MAX - 100,
        usize::MAX - 4096 * 2,
        isize::MAX as usize + 1,
    ] {
        let e = GuardedBuffer::new(len).expect_err("no such buffer can exist");
        assert!(
            matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::ResourceLimit),
            "{len}: {e}"
        );
        let e = GuardedStack::new(len).expect_err("no such stack can exist");
        assert!(
            matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::ResourceLimit),
            "{len}: {e}"
        );
    }
}

#[test]
fn child_drops_a_secret_inherited_by_fork() {
    if !is_child("child_drops_a_secret_inherited_by_fork") {
        return;
    }
    let s = Secret::<[u8; 64]>::zeroed().unwrap();
    if !s.protections().secret_memory.is_active() {
        println!("SKIP: no memfd_secret here");
        return;
    }
    let at = s.expose().unwrap().as_ptr() as usize;
    // SAFETY: the grandchild makes system calls (mmap, getpid, munlock, munmap), reads and
    // writes its own page and calls _exit: async-signal-safe work only, as after a fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // MADV_DONTFORK left the secret's range empty here: map a page of the child's own
        // there, as any allocation of the child could.
        // SAFETY: a new anonymous page where nothing is mapped (NOREPLACE).
        let p = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p as usize != at {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(3) };
        }
        // SAFETY: the page just mapped.
        unsafe { std::ptr::write_volatile(p as *mut u8, 42) };
        drop(s);
        // SAFETY: the child's own page, if dropping the inherited secret left it mapped.
        let ok = unsafe { std::ptr::read_volatile(p as *const u8) } == 42;
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status),
        "the child died of signal {} dropping the secret it inherited",
        libc::WTERMSIG(status)
    );
    assert_eq!(libc::WEXITSTATUS(status), 0);
    assert_eq!(s.expose().unwrap()[0], 0);
}

/// A forked child that drops a `Secret` in `memfd_secret` memory (withheld from it by
/// MADV_DONTFORK) leaves alone whatever the child has mapped at that address since: drop
/// unmapped the range, taking the child's own memory with it.
#[test]
fn a_forked_child_dropping_a_secret_keeps_its_own_memory() {
    let out = run_child("child_drops_a_secret_inherited_by_fork");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
