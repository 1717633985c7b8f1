//! The command line as a hostile user drives it (the second audit, issue 24): usage errors
//! are the parser's (status 2, with the usage), numbers and sizes are refused when they do
//! not mean what they say, file lists are read in bounded memory, objects kept on purpose
//! are not stale, and messages say what is true (a read-only file system, a socket, a user's
//! own file, the command that failed).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn mman() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mman"))
}

fn run(args: &[&str]) -> Output {
    Command::new(mman()).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A usage error: status 2, clap's `error:` and a pointer to the usage, nothing on stdout.
fn assert_usage_error(args: &[&str], out: &Output) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "mman {args:?}: {err}");
    assert!(err.starts_with("error: "), "mman {args:?}: {err}");
    assert!(
        err.contains("Usage:") || err.contains("try '--help'"),
        "mman {args:?}: {err}"
    );
    assert!(!err.contains("panicked"), "mman {args:?}: {err}");
    assert!(out.stdout.is_empty(), "mman {args:?}: {}", stdout(out));
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

// ---------------------------------------------------------------------------------------
// F. Input and exit codes

#[test]
fn usage_errors_are_status_2_with_the_usage() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    let f = f.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["tour", "--section", "0"],
        &["tour", "--section", "16"],
        &["cache", "status", "-p", "5-1", f],
        &["cache", "status", "-i", "[", f],
        &["cache", "status", "-I", "[", f],
        &["maps", "--filter", "["],
        &["cache", "status"],
        &["cache", "touch"],
        &["cache", "evict"],
        &["cache", "lock"],
        &["shm", "rm"],
        &["counter", "--file", f],
    ];
    for args in cases {
        assert_usage_error(args, &run(args));
    }
    // The counter's file was not touched by the refused command.
    assert_eq!(std::fs::read(f).unwrap(), b"x");
}

#[test]
fn numbers_too_large_are_named_too_large() {
    let big = "99999999999999999999"; // past u64
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    let f = f.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["philosophers", "-n", big],
        &["philosophers", "--meals", big],
        &["bench", "ipc", "--rounds", big],
        &["bench", "channel", "--messages", big],
        &["cache", "status", "--threads", big, f],
        &["cache", "status", "-m", big, f],
        &["shm", "create", "x", "--size", big],
        &["counter", "--add", big, "--file", f],
        &["maps", big],
    ];
    for args in cases {
        let out = run(args);
        assert_usage_error(args, &out);
        let err = stderr(&out);
        assert!(err.contains("too large"), "mman {args:?}: {err}");
        assert!(!err.contains("whole number"), "mman {args:?}: {err}");
    }
    let out = run(&["tour", "--section", big]);
    assert_usage_error(&["tour"], &out);
    assert!(stderr(&out).contains("there is no section"), "{}", stderr(&out));
}

#[test]
fn sizes_that_are_no_whole_number_of_bytes_are_refused() {
    let tag = std::process::id();
    for size in ["1.5", "0.5", "0.1k", "1.0000000000000000001"] {
        let name = format!("frac-{tag}");
        let args = ["shm", "create", &name, "--size", size];
        let out = run(&args);
        assert_usage_error(&args, &out);
        assert!(stderr(&out).contains("whole number of bytes"), "{}", stderr(&out));
        assert!(!Path::new(&format!("/dev/shm/mman.{name}")).exists(), "{size}");
    }
    // A fraction of a unit that is a whole number of bytes is fine.
    let name = format!("frac-ok-{tag}");
    let out = run(&["shm", "create", &name, "--size", "1.5k"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let len = std::fs::metadata(format!("/dev/shm/mman.{name}")).unwrap().len();
    assert!(run(&["shm", "rm", &name]).status.success());
    assert_eq!(len, 1536);
}

#[test]
fn a_range_may_start_with_a_hyphen() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, vec![1u8; 64 << 10]).unwrap();
    let out = run(&["cache", "status", "--json", "-p", "-4k", f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"], 1, "{v}");
}

/// `setrlimit(RLIMIT_AS)` in the child before it execs mman: the list reader must stay
/// within it, whatever the list holds.
fn limited(cmd: &mut Command, bytes: u64) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

const LIMIT: u64 = 1 << 30;

#[test]
fn a_newline_list_of_endless_bytes_is_an_error_at_path_max() {
    // (With -0, /dev/zero is endless empty names, read in bounded memory without end: see
    // the finite run of NUL bytes of the next test.)
    let out = limited(
        Command::new(mman()).args(["cache", "status", "-b", "/dev/zero"]),
        LIMIT,
    )
    .output()
    .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("PATH_MAX"), "{err}");
    // A name longer than any path, then a newline: the same.
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list");
    std::fs::write(&list, [vec![b'a'; 5000], b"\n".to_vec()].concat()).unwrap();
    let out = run(&["cache", "status", "-b", list.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("PATH_MAX"), "{}", stderr(&out));
}

/// More NUL bytes than the address-space limit allows to hold, then one real name: the list
/// is read as it is walked (empty names skipped), in bounded memory.
#[test]
fn a_nul_list_larger_than_memory_is_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("real");
    std::fs::write(&f, b"x").unwrap();
    let mut child = limited(
        Command::new(mman())
            .args(["cache", "status", "--json", "-0", "-b", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        LIMIT,
    )
    .spawn()
    .unwrap();
    let mut input = child.stdin.take().unwrap();
    let name = f.clone();
    let feeder = std::thread::spawn(move || {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..((2 * LIMIT) >> 20) {
            if input.write_all(&zeros).is_err() {
                return false;
            }
        }
        let ok = input
            .write_all(name.as_os_str().as_encoded_bytes())
            .and_then(|()| input.write_all(b"\0\0"))
            .is_ok();
        drop(input);
        ok
    });
    let out = child.wait_with_output().unwrap();
    let fed = feeder.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fed, "mman stopped reading its list");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"], 1, "{v}");
}

// ---------------------------------------------------------------------------------------
// D. Objects kept on purpose are not stale

#[test]
fn an_object_made_by_shm_create_is_kept_not_stale() {
    let name = format!("kept-cli-{}", std::process::id());
    let out = run(&["shm", "create", &name, "--size", "4k"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(&run(&["shm", "list"]));
    let line = list
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("not listed: {list}"));
    assert!(line.ends_with(" kept"), "{line}");
    assert!(!line.contains("stale"), "{line}");
    let out = run(&["shm", "rm", "--stale"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exists = Path::new(&format!("/dev/shm/mman.{name}")).exists();
    assert!(run(&["shm", "rm", &name]).status.success());
    assert!(exists, "shm rm --stale removed a kept object");
}

// ---------------------------------------------------------------------------------------
// G. Messages

#[test]
fn bench_channel_errors_name_bench_channel() {
    if !is_root() || !have("prlimit") || !have("setpriv") {
        eprintln!("skipped: needs root, prlimit and setpriv");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new("prlimit")
        .args([
            "--nproc=1:1",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(mman())
        .args([
            "bench",
            "channel",
            "--rounds",
            "1",
            "--messages",
            "1",
            "--size",
            "64",
        ])
        .env("TMPDIR", dir.path())
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bench channel: start the spin peer"), "{err}");
    assert!(!err.contains("bench ipc"), "{err}");
}

/// A read-only tmpfs mounted for the test (root only), unmounted on drop.
struct ReadOnly(tempfile::TempDir);

impl ReadOnly {
    fn mount() -> Option<ReadOnly> {
        if !is_root() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(ReadOnly(dir))
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_read_only_file_system_is_not_blamed_on_permissions() {
    let Some(ro) = ReadOnly::mount() else {
        eprintln!("skipped: needs root to mount a read-only tmpfs");
        return;
    };
    let d = ro.0.path();
    let c = d.join("counter");
    let p = d.join("page");
    let counter = run(&["counter", "--add", "1", "--file", c.to_str().unwrap()]);
    let mut persist = Command::new(mman())
        .args(["persist", "--write", "--file", p.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    persist.stdin.take().unwrap().write_all(b"hi").unwrap();
    let persist = persist.wait_with_output().unwrap();
    for out in [counter, persist] {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("Read-only file system"), "{err}");
        assert!(
            err.contains("read-only file system: no file can be created"),
            "{err}"
        );
        assert!(!err.contains("may not"), "{err}");
        assert!(!err.to_lowercase().contains("permission"), "{err}");
    }
}

#[test]
fn counter_never_suggests_removing_a_users_own_file() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("notes.txt", b"my notes, not a counter\n".to_vec()),
        ("data.bin", (0..100_000u32).map(|i| (i * 7) as u8).collect()),
    ] {
        let f = dir.path().join(name);
        std::fs::write(&f, &bytes).unwrap();
        let f_str = f.to_str().unwrap();
        for args in [
            vec!["counter", "--add", "1", "--file", f_str],
            vec!["counter", "--check", "--file", f_str],
        ] {
            let out = run(&args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(!err.contains("remove"), "{args:?}: {err}");
            assert!(err.contains("left as it is"), "{args:?}: {err}");
        }
        assert_eq!(std::fs::read(&f).unwrap(), bytes, "{name} was changed");
    }
}

#[test]
fn a_socket_where_a_file_is_expected_is_not_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let s = sock.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["counter", "--add", "1", "--file", s],
        &["counter", "--check", "--file", s],
        &["cache", "status", s],
        &["cache", "evict", s],
        &["persist", "--read", "--file", s],
    ];
    for args in cases {
        let out = run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("not a regular file"), "{args:?}: {err}");
        assert!(!err.contains("No such device"), "{args:?}: {err}");
    }
}

#[test]
fn cache_text_output_escapes_backslashes() {
    let dir = tempfile::tempdir().unwrap();
    // Two names that would print alike if backslashes were not escaped.
    std::fs::write(dir.path().join("a\\nb"), b"x").unwrap();
    std::fs::write(dir.path().join("a\nb"), b"y").unwrap();
    for job in ["status", "touch", "evict"] {
        let out = Command::new(mman())
            .args(["cache", job, "-v"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains("a\\\\nb"), "{job}: {text}");
        assert!(text.contains("/a\\nb"), "{job}: {text}");
    }
}

/// The spinner under a pseudo-terminal (`script`): none for `TERM=dumb`, ASCII frames for a
/// locale that is not UTF-8.
#[test]
fn the_spinner_respects_term_dumb_and_the_locale() {
    if !Command::new("script")
        .args(["-qec", "true", "/dev/null"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("skipped: needs script(1)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..2000 {
        std::fs::write(tree.join(format!("f{i}")), b"x").unwrap();
    }
    let t = tree.to_str().unwrap();
    for (env, forbid) in [
        ("TERM=dumb LANG=en_US.UTF-8", &b"\x1b["[..]),
        ("TERM=xterm LANG=C", &"⠁".as_bytes()[..2]),
    ] {
        let log = dir.path().join("typescript");
        let cmd = format!(
            "env -u LC_ALL -u LC_CTYPE {env} '{}' cache status {t} {t} {t} {t}",
            mman().display()
        );
        let st = Command::new("script")
            .args(["-qec", &cmd])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{env}");
        let seen = std::fs::read(&log).unwrap();
        assert!(
            !seen.windows(forbid.len()).any(|w| w == forbid),
            "{env}: {}",
            String::from_utf8_lossy(&seen)
        );
        assert!(
            String::from_utf8_lossy(&seen).contains("Files: "),
            "{env}: {}",
            String::from_utf8_lossy(&seen)
        );
    }
}
