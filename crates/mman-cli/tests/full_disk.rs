//! The command line on a full disk: a tmpfs of a few pages, mounted for the test (root
//! only: without it, or where the mount fails, each test says so and passes untested), and
//! filled. Nothing may hang, print empty values with status 0, report a truncation that did
//! not happen, or leave a half-made file behind.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn mman() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mman"))
}

/// A small tmpfs mounted on a temporary directory, unmounted (lazily, so a process still
/// holding a file there cannot keep it) on drop, whether the test passed or not.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(pages: usize) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={}", pages * page()),
                "mman-test",
            ])
            .arg(dir.path())
            .status();
        match st {
            Ok(s) if s.success() => Some(Tmpfs { dir }),
            other => {
                eprintln!("skipped: mount -t tmpfs failed: {other:?}");
                None
            }
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Fill the tmpfs, leaving `free` pages: a filler file of whole pages.
    fn fill_leaving(&self, free: usize) {
        let filler = self.path(".filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let p = vec![0xEEu8; page()];
        while f.write_all(&p).is_ok() {}
        let len = std::fs::metadata(&filler).unwrap().len();
        f.set_len(len - (free * page()) as u64).unwrap();
    }

    /// Every name in the tmpfs but the filler.
    fn left(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".filler")
            .collect()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Run `cmd` to its end, or kill it after `limit` and fail: a hang is the bug.
fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?} (killed): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn philosophers_on_a_tmpfs_with_one_free_page_fail_at_once_and_leave_no_file() {
    let Some(fs) = Tmpfs::mount(8) else { return };
    fs.fill_leaving(1);
    let table = fs.path("tab");
    // 64 philosophers: a table of three pages, of which one could be backed. Before: the
    // forks posted into the two others landed in private copies and the dinner hung.
    let out = run_within(
        mman()
            .args(["philosophers", "-n", "64", "--meals", "1", "--file"])
            .arg(&table),
        Duration::from_secs(60),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains(&table.display().to_string()), "{err}");
    assert!(
        err.contains("hint: the file system holding the file is full"),
        "{err}"
    );
    assert!(!err.contains("shrank"), "{err}");
    assert!(fs.left().is_empty(), "left behind: {:?}", fs.left());
}

#[test]
fn philosophers_on_a_full_disk_leave_no_half_made_table_to_refuse_later() {
    let Some(fs) = Tmpfs::mount(8) else { return };
    fs.fill_leaving(0);
    let table = fs.path("new-table");
    let out = run_within(
        mman()
            .args(["philosophers", "-n", "5", "--meals", "1", "--file"])
            .arg(&table),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        !table.exists(),
        "a half-made table was left: {} bytes",
        table.metadata().unwrap().len()
    );
    // With room again, the same path serves a dinner.
    std::fs::remove_file(fs.path(".filler")).unwrap();
    let out = run_within(
        mman()
            .args(["philosophers", "-n", "5", "--meals", "1", "--file"])
            .arg(&table),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_existing_table_is_never_removed_when_the_disk_is_full() {
    let Some(fs) = Tmpfs::mount(8) else { return };
    let table = fs.path("table");
    let out = run_within(
        mman()
            .args(["philosophers", "-n", "64", "--meals", "1", "--file"])
            .arg(&table),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    fs.fill_leaving(0);
    // Its pages are all backed already: a full disk takes nothing from it.
    let out = run_within(
        mman()
            .args(["philosophers", "-n", "64", "--meals", "1", "--file"])
            .arg(&table),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(table.exists());
}

#[test]
fn cat_through_a_mapping_reads_a_sparse_file_on_a_full_tmpfs() {
    let Some(fs) = Tmpfs::mount(4) else { return };
    let path = fs.path("sparse");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(3 * page() as u64 + 100).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"start", 0).unwrap();
    fs.fill_leaving(0);
    for via in ["map", "vmsplice", "auto", "read"] {
        let out = run_within(
            mman().args(["cat", "--via", via]).arg(&path),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "--via {via}: {}", stderr(&out));
        assert_eq!(out.stdout.len(), 3 * page() + 100, "--via {via}");
        assert_eq!(&out.stdout[..5], b"start");
        assert!(out.stdout[5..].iter().all(|&b| b == 0), "--via {via}");
    }
}

#[test]
fn the_tour_on_a_full_tmpdir_fails_instead_of_printing_empty_values() {
    let Some(fs) = Tmpfs::mount(16) else { return };
    fs.fill_leaving(0);
    for section in ["13", "5"] {
        let out = run_within(
            mman()
                .args(["tour", "--section", section])
                .env("TMPDIR", fs.dir.path()),
            Duration::from_secs(120),
        );
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "section {section}: {err}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            err.contains("No space left on device"),
            "section {section}: {err}"
        );
        assert!(!err.contains("shrank"), "section {section}: {err}");
        assert!(fs.left().is_empty(), "section {section} left {:?}", fs.left());
    }
}

#[test]
fn cache_lock_of_a_sparse_file_on_a_full_tmpfs_says_why_not_bad_address() {
    let Some(fs) = Tmpfs::mount(4) else { return };
    let path = fs.path("sparse");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(4 * page() as u64)
        .unwrap();
    fs.fill_leaving(0);
    let out = run_within(mman().args(["cache", "lock"]).arg(&path), Duration::from_secs(60));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("Bad address"), "{err}");
    assert!(
        err.contains("could not be backed") && err.contains("ENOSPC"),
        "{err}"
    );
}

#[test]
fn an_existing_table_that_cannot_be_backed_is_left_as_it_was() {
    let Some(fs) = Tmpfs::mount(16) else { return };
    let table = fs.path("table");
    let run = || {
        run_within(
            mman()
                .args(["philosophers", "-n", "64", "--meals", "1", "--file"])
                .arg(&table),
            Duration::from_secs(60),
        )
    };
    let out = run();
    assert!(out.status.success(), "{}", stderr(&out));
    let before = std::fs::read(&table).unwrap();
    // Another program punches its later pages out (a table of an older mman was sparse),
    // and the disk fills up.
    let f = std::fs::OpenOptions::new().write(true).open(&table).unwrap();
    // SAFETY: fallocate on our own open file.
    let r = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            page() as i64,
            before.len() as i64 - page() as i64,
        )
    };
    assert_eq!(r, 0);
    fs.fill_leaving(0);
    let out = run();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    let after = std::fs::read(&table).unwrap();
    assert_eq!(after.len(), before.len());
    assert_eq!(&after[8..16], b"MMANPHIL", "the table lost its mark");
    // With room again, the same table serves.
    std::fs::remove_file(fs.path(".filler")).unwrap();
    let out = run();
    assert!(out.status.success(), "{}", stderr(&out));
}
