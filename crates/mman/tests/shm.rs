//! Named shared-memory objects, memfd seals and descriptor passing, with real processes.

use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};

use mman::shm::{self, Memfd, OpenCheck, Seals, SharedMemory};
use mman::ErrorKind;

mod common;

/// The tests that make objects stale or sweep them take turns: a sweep removes every stale
/// object of this user, so one test's sweep would otherwise remove another's object in the
/// instant it is stale on purpose (a creator gone, a handle not yet opened), or hold it
/// locked while the other looks whether anyone uses it.
static SWEEPS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sweeping() -> std::sync::MutexGuard<'static, ()> {
    SWEEPS.lock().unwrap_or_else(|e| e.into_inner())
}

fn unique(tag: &str) -> String {
    format!(
        "test-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    )
    .replace(['(', ')'], "")
}

#[test]
fn create_is_exclusive_and_open_sees_the_same_bytes() {
    let name = unique("excl");
    let a = SharedMemory::create(&name, 8192).unwrap();
    assert_eq!(a.name(), format!("/mman.{name}"));
    let again = SharedMemory::create(&name, 8192).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AddressInUse, "{again}");
    assert!(again.to_string().contains(&name), "{again}");
    a.map().unwrap().write_at(100, b"shared").unwrap();
    let b = SharedMemory::open(&name, 8192).unwrap();
    let mut buf = [0u8; 6];
    b.map().unwrap().read_at(100, &mut buf).unwrap();
    assert_eq!(&buf, b"shared");
    let meta = std::fs::metadata(format!("/dev/shm/mman.{name}")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(meta.len(), 8192);
    drop(b);
    drop(a); // the creator unlinks
    assert!(SharedMemory::open(&name, 0).is_err());
}

#[test]
fn open_refuses_too_small_wrong_mode_and_wrong_owner() {
    let small = unique("small");
    let _s = SharedMemory::create(&small, 4096).unwrap();
    let e = SharedMemory::open(&small, 8192).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(
        e.to_string().contains("4096 bytes, smaller than the 8192 needed"),
        "{e}"
    );

    let open_mode = unique("mode");
    let _m = SharedMemory::create_with_mode(&open_mode, 4096, 0o666).unwrap();
    let e = SharedMemory::open(&open_mode, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("mode 0666"), "{e}");
    let ok = SharedMemory::open_checked(
        &open_mode,
        &OpenCheck {
            min_size: 0,
            owner: None,
            allowed_other_bits: 0o066,
        },
    );
    assert!(ok.is_ok());

    let foreign = unique("owner");
    let _f = SharedMemory::create(&foreign, 4096).unwrap();
    let path = format!("/dev/shm/mman.{foreign}");
    if std::os::unix::fs::chown(&path, Some(65534), None).is_ok() {
        let e = SharedMemory::open(&foreign, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
    }
}

#[test]
fn list_shows_live_and_stale_creators_and_removes_stale_ones() {
    let _turn = sweeping();
    let live = unique("live");
    let _obj = SharedMemory::create(&live, 4096).unwrap();
    // A creator that exits at once: `true` is no mman process, so create through a child
    // that re-runs this binary's creating test.
    let stale = unique("stale");
    let st = common::rerun("child_creates_and_keeps", &stale).status().unwrap();
    assert!(st.success());
    let all = shm::list().unwrap();
    let l = all.iter().find(|o| o.name == live).expect("live object listed");
    assert_eq!(l.creator, Some(std::process::id()));
    assert_eq!(l.in_use, Some(true));
    assert!(!l.is_stale() && !l.kept);
    let s = all.iter().find(|o| o.name == stale).expect("stale object listed");
    assert_eq!(s.in_use, Some(false));
    assert!(s.is_stale() && !s.kept);
    assert_eq!(s.size, 4096);
    // Removed by this sweep, or by another test's running at the same time.
    shm::remove_stale().unwrap();
    assert!(!shm::list().unwrap().iter().any(|o| o.name == stale));
    assert!(shm::list().unwrap().iter().any(|o| o.name == live));
}

#[test]
fn child_creates_and_keeps() {
    let Some(name) = common::role() else {
        return;
    };
    let mut o = SharedMemory::create(&name, 4096).unwrap();
    o.keep();
}

#[test]
fn sealed_memfd_refuses_truncation_and_writes() {
    let m = Memfd::create("seal-test", 8192).unwrap();
    m.map().unwrap().write_at(0, b"frozen").unwrap();
    m.add_seals(Seals::FROZEN).unwrap();
    assert!(m.set_len(0).is_err());
    assert!(m.set_len(1 << 20).is_err());
    assert!(m.map().is_err(), "a writable shared mapping must be refused");
    assert_eq!(&m.map_sealed().unwrap()[..6], b"frozen");
    let unsealed = Memfd::create("open", 4096).unwrap();
    let e = unsealed.require_seals(Seals::WRITE | Seals::SHRINK).unwrap_err();
    assert!(e.to_string().contains("lack"), "{e}");
}

/// Sealing against writes while a writable shared mapping lives fails with `EBUSY`, a
/// hint naming the mapping, and soon (the retries meant for a page the kernel holds a
/// moment longer do not wait on a mapping); once it is dropped, sealing works.
#[test]
fn sealing_under_a_writable_mapping_fails_soon_then_works_without_it() {
    let m = Memfd::create("busy", 8192).unwrap();
    let map = m.map().unwrap();
    map.write_at(0, b"live").unwrap();
    let t = std::time::Instant::now();
    let e = m.add_seals(Seals::WRITE).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBUSY), "{e}");
    assert!(e.to_string().contains("writable shared mapping"), "{e}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );
    drop(map);
    m.add_seals(Seals::WRITE).unwrap();
}

#[test]
fn child_receives_sealed_memfd() {
    let Some(sock) = common::role() else {
        return;
    };
    let s = UnixStream::connect(sock).unwrap();
    let creds = shm::peer_credentials(&s).unwrap();
    let (fd, msg) = shm::recv_fd(&s).unwrap();
    let m = Memfd::from_fd(fd).unwrap();
    m.require_seals(Seals::WRITE | Seals::SHRINK).unwrap();
    let view = m.map_sealed().unwrap();
    assert_eq!(&view[..msg.len()], &msg[..]);
    // Report the parent's pid as seen through SO_PEERCRED.
    println!("PEER {}", creds.pid);
}

#[test]
fn memfd_passes_to_another_process_with_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let child = common::rerun("child_receives_sealed_memfd", &sock)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (conn, _) = listener.accept().unwrap();
    let peer = shm::peer_credentials(&conn).unwrap();
    assert_eq!(peer.pid, child.id());
    let m = Memfd::create("passed", 4096).unwrap();
    m.map().unwrap().write_at(0, b"hello from the parent").unwrap();
    m.add_seals(Seals::FROZEN).unwrap();
    shm::send_fd(&conn, m.as_fd(), b"hello from the parent").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("PEER {}", std::process::id())), "{text}");
}

/// Removes a name from `/dev/shm` when dropped (the test's own planted entries).
struct Planted(std::path::PathBuf);

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `/dev/shm` is writable by every user: a name there may be a symbolic link another user
/// planted, pointing at a file of the victim's that passes every check (a regular file the
/// victim owns, mode 0600). Opening it must not follow the link (glibc's `shm_open` passes
/// `O_NOFOLLOW`), or the victim maps its own file read-write and writes into it.
#[test]
fn open_refuses_a_symbolic_link_planted_under_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, vec![b'v'; 4096]).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let name = unique("symlink");
    let link = Planted(format!("/dev/shm/mman.{name}").into());
    std::os::unix::fs::symlink(&victim, &link.0).unwrap();
    let opened = SharedMemory::open(&name, 0);
    if let Ok(obj) = &opened {
        let _ = obj.map().and_then(|m| m.write_at(0, b"scribbled"));
    }
    assert_eq!(
        &std::fs::read(&victim).unwrap()[..9],
        b"vvvvvvvvv",
        "the victim's file was written through the link"
    );
    let e = opened.expect_err("a symbolic link was followed");
    assert!(e.to_string().contains(&name), "{e}");
    // Listing does not follow it either (nor fail).
    shm::list_all().unwrap();
}

/// Another user may plant a FIFO in `/dev/shm`: opening it for reading waits for a writer,
/// forever. Listing the objects, and opening one by that name, must not wait.
#[test]
fn a_fifo_planted_in_dev_shm_hangs_neither_list_nor_open() {
    let name = unique("fifo");
    let fifo = Planted(format!("/dev/shm/mman.{name}").into());
    let c = std::ffi::CString::new(fifo.0.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; mkfifo only creates the name.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(shm::list_all().map(|l| l.len()));
    });
    let listed = rx.recv_timeout(std::time::Duration::from_secs(10));
    if listed.is_err() {
        // Release the stuck reader (and any other test's) before failing.
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo.0);
    }
    assert!(listed.is_ok(), "shm::list_all() waited on the FIFO for 10 s");
    listed.unwrap().unwrap();
    let e = SharedMemory::open(&name, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}

/// A sealed memfd of huge pages (another program's: mman makes none) is not viewed as
/// immutable bytes: with no huge page left, reading a page never written faults, and the
/// only answer mman's handler has would change the bytes after it under the reference.
#[test]
fn a_sealed_memfd_of_huge_pages_is_refused_as_a_sealed_view() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let name = c"mman-test-huge";
    // SAFETY: a plain system call; a descriptor it returns is owned here from now on.
    let raw = unsafe {
        libc::memfd_create(
            name.as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | libc::MFD_HUGETLB,
        )
    };
    if raw < 0 {
        eprintln!(
            "skipped: no MFD_HUGETLB here ({})",
            std::io::Error::last_os_error()
        );
        return;
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let huge = 2 << 20;
    // SAFETY: a plain system call on the descriptor owned above.
    if unsafe { libc::ftruncate(raw, huge) } != 0 {
        eprintln!(
            "skipped: cannot size a hugetlb memfd ({})",
            std::io::Error::last_os_error()
        );
        return;
    }
    let memfd = Memfd::from_fd(fd).unwrap();
    if memfd
        .add_seals(Seals::WRITE | Seals::SHRINK | Seals::GROW)
        .is_err()
    {
        eprintln!("skipped: hugetlbfs without write seals on this kernel");
        return;
    }
    let e = memfd.map_sealed().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("huge pages"), "{e}");
    // An ordinary sealed memfd still maps.
    let plain = Memfd::create("mman-test-plain", 4096).unwrap();
    plain.add_seals(Seals::WRITE | Seals::SHRINK).unwrap();
    assert_eq!(plain.map_sealed().unwrap().len(), 4096);
}

// ---------------------------------------------------------------------------------------
// Objects kept on purpose, and staleness judged by liveness (locks the kernel drops with a
// process), not by the creator's PID.

fn listed(name: &str) -> shm::ObjectInfo {
    shm::list()
        .unwrap()
        .into_iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("{name} is not listed"))
}

/// An object created to be kept, by a process that then exits, is listed as kept, is not
/// stale, and survives `remove_stale`, with what another program wrote into it.
#[test]
fn a_kept_object_outlives_its_creator_and_is_never_stale() {
    let _turn = sweeping();
    let name = unique("kept");
    let st = common::rerun("child_creates_kept", &name).status().unwrap();
    assert!(st.success());
    let peer = SharedMemory::open(&name, 4096).unwrap();
    peer.map().unwrap().write_at(0, b"precious").unwrap();
    drop(peer);
    let o = listed(&name);
    assert!(o.kept, "{o:?}");
    assert!(!o.is_stale(), "{o:?}");
    assert_eq!(o.in_use, Some(false), "{o:?}");
    let removed = shm::remove_stale().unwrap();
    assert!(!removed.contains(&name), "{removed:?}");
    let back = SharedMemory::open(&name, 4096).unwrap();
    let mut buf = [0u8; 8];
    back.map().unwrap().read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"precious");
    SharedMemory::unlink(&name).unwrap();
}

#[test]
fn child_creates_kept() {
    let Some(name) = common::role() else {
        return;
    };
    let o = SharedMemory::create_kept(&name, 4096, 0o600).unwrap();
    drop(o); // a kept object's handle never unlinks
}

/// An object whose creator died is not stale while another process holds a handle to it;
/// once that handle goes, it is.
#[test]
fn an_object_held_by_a_live_handle_is_not_stale() {
    let _turn = sweeping();
    let name = unique("held");
    let st = common::rerun("child_creates_and_keeps", &name).status().unwrap();
    assert!(st.success());
    let held = SharedMemory::open(&name, 4096).unwrap();
    let o = listed(&name);
    assert_eq!(o.in_use, Some(true), "{o:?}");
    assert!(!o.is_stale() && !o.kept, "{o:?}");
    assert!(!shm::remove_stale().unwrap().contains(&name));
    assert!(std::path::Path::new(&format!("/dev/shm/mman.{name}")).exists());
    drop(held);
    assert!(listed(&name).is_stale());
    shm::remove_stale().unwrap();
    let gone = SharedMemory::open(&name, 0).unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound, "{gone}");
}

/// A creator that execs another program keeps its PID (and start time), but its handle is
/// gone: the object is stale at once, as a channel endpoint that execs is gone.
#[test]
fn an_object_whose_creator_execd_is_stale_though_its_pid_lives() {
    let _turn = sweeping();
    let name = unique("exec");
    let mut child = common::rerun("child_creates_then_execs", &name)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The child says "ready" just before it execs; the exec'd `sleep` keeps the pipe open.
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.unwrap().contains("ready")),
        "the child ended before it was ready"
    );
    let pid = child.id();
    // Wait until the exec happened (comm becomes "sleep"); bounded by the test harness.
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).map_or(true, |c| c.trim() != "sleep") {
        std::thread::yield_now();
    }
    // The descriptors closed by the exec are released as the new program first returns to
    // user space (the kernel defers the last close of a file): look until then, boundedly.
    let t0 = std::time::Instant::now();
    let mut o = listed(&name);
    while o.in_use != Some(false) && t0.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(5));
        o = listed(&name);
    }
    assert_eq!(o.creator, Some(pid), "{o:?}");
    assert_eq!(o.in_use, Some(false), "{o:?}");
    assert!(o.is_stale(), "{o:?}");
    shm::remove_stale().unwrap();
    let gone = SharedMemory::open(&name, 0);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(gone.unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn child_creates_then_execs() {
    let Some(name) = common::role() else {
        return;
    };
    let o = SharedMemory::create(&name, 4096).unwrap();
    println!("ready");
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new("sleep").arg("600").exec();
    drop(o);
    panic!("exec: {e}");
}
