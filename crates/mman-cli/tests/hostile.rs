//! Every subcommand that prints, under hostile standard streams: stdout closed, stdout on
//! /dev/full, stdout a pipe whose reader is gone, stdin closed. For each: no panic, no death
//! by a signal other than SIGPIPE (where GNU tools die of it), the documented status and
//! message, and nothing left in TMPDIR.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn mman() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mman"))
}

/// The subcommands that write to standard output, with small arguments; `dir` holds their
/// files.
fn printing_commands(dir: &Path) -> Vec<Vec<String>> {
    let data = dir.join("data");
    std::fs::write(&data, b"some bytes\n").unwrap();
    let page = dir.join("page");
    let mut p = vec![0u8; 4096];
    p[..5].copy_from_slice(b"hello");
    std::fs::write(&page, p).unwrap();
    let counter = dir.join("counter");
    let st = Command::new(mman())
        .args(["counter", "--add", "1", "--file"])
        .arg(&counter)
        .status()
        .unwrap();
    assert!(st.success());
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let d = |p: &Path| p.display().to_string();
    vec![
        s(&["tour", "--section", "1"]),
        s(&["share"]),
        s(&["semaphore"]),
        s(&["philosophers", "-n", "2", "--meals", "10"]),
        s(&["counter", "--check", "--file", &d(&counter)]),
        s(&["shm", "list"]),
        s(&["bench", "ipc", "--rounds", "50"]),
        s(&["cache", "status", "-v", &d(&data)]),
        s(&["maps"]),
        s(&["persist", "--read", "--file", &d(&page)]),
        s(&["cat", &d(&data)]),
    ]
}

/// Run `args` with standard output set up by the shell redirection `redir`.
fn run_sh(args: &[String], redir: &str, tmp: &Path) -> Output {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec '{}' {} {redir}",
            mman().display(),
            quoted.join(" ")
        ))
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn describe(args: &[String], out: &Output) -> String {
    format!(
        "mman {}: status {:?} signal {:?}\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status.code(),
        out.status.signal(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run `args` with standard input closed: status 1, and `needle` in what it says.
fn fails_with_stdin_closed(args: &[String], dir: &Path, needle: &str) {
    let out = run_sh(args, "<&-", dir);
    let text = describe(args, &out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(needle), "{text}");
}

/// Run `cmd`: it must fail with status 1 and say `needle` on stderr, which is returned for
/// further checks.
fn fails_with(cmd: &mut Command, needle: &str) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{cmd:?}: {err}");
    assert!(err.contains(needle), "{cmd:?}: {err}");
    err
}

fn assert_clean(tmp: &Path, what: &str) {
    let left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{what} left {left:?} in TMPDIR");
}

/// Every printing command with standard output set up by `redir`: status 1, `reason` as
/// a write error, no panic, nothing left behind.
fn expect_write_error(redir: &str, reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    for args in printing_commands(dir.path()) {
        let tmp = tempfile::tempdir().unwrap();
        let out = run_sh(&args, redir, tmp.path());
        let text = describe(&args, &out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{text}");
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(err.contains(&format!("write error: {reason}")), "{text}");
        assert_clean(tmp.path(), &text);
    }
}

#[test]
fn stdout_on_dev_full_is_a_write_error_with_status_1() {
    expect_write_error(">/dev/full", "No space left on device");
}

#[test]
fn a_closed_stdout_is_a_write_error_not_silence() {
    expect_write_error(">&-", "Bad file descriptor");
}

#[test]
fn a_reader_that_went_away_ends_mman_by_sigpipe_as_gnu_tools() {
    let dir = tempfile::tempdir().unwrap();
    for args in printing_commands(dir.path()) {
        let tmp = tempfile::tempdir().unwrap();
        // The reader is closed before mman starts: its first write finds no reader.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(mman())
            .args(&args)
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let text = describe(&args, &out);
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "{text}"
        );
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{text}");
        assert_clean(tmp.path(), &text);
    }
}

#[test]
fn a_closed_stdin_is_an_error_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page");
    let mut p = vec![0u8; 4096];
    p[..5].copy_from_slice(b"keep!");
    std::fs::write(&page, &p).unwrap();
    let args = vec![
        "persist".to_string(),
        "--write".into(),
        "--file".into(),
        page.display().to_string(),
    ];
    fails_with_stdin_closed(&args, dir.path(), "Bad file descriptor");
    assert_eq!(std::fs::read(&page).unwrap(), p, "the stored value was erased");

    let args = vec!["cat".to_string(), "-".into()];
    fails_with_stdin_closed(&args, dir.path(), "mman: cat: -: Bad file descriptor");
}

#[test]
fn persist_write_refuses_input_that_does_not_fit_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page");
    let run = |input: &[u8], file: &Path| {
        let mut child = Command::new(mman())
            .args(["persist", "--write", "--file"])
            .arg(file)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(input);
        child.wait_with_output().unwrap()
    };
    let out = run(&vec![b'x'; 4976], &page);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was stored"));
    assert!(!page.exists(), "a refused write created the file");
    // An existing file that is not a persistent page is never overwritten.
    let foreign = dir.path().join("foreign");
    std::fs::write(&foreign, vec![7u8; 3 << 20]).unwrap();
    let out = run(b"hello", &foreign);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to touch it"));
    assert_eq!(std::fs::read(&foreign).unwrap(), vec![7u8; 3 << 20]);
    // Reading creates nothing, and works on a read-only file.
    let out = Command::new(mman())
        .args(["persist", "--read", "--file"])
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!dir.path().join("missing").exists());
}

#[test]
fn sigint_and_sigterm_clean_up_and_end_with_the_signal() {
    for (args, sig) in [
        (vec!["philosophers", "-n", "3", "--seconds", "20"], libc::SIGINT),
        (vec!["philosophers", "-n", "3", "--seconds", "20"], libc::SIGTERM),
        (vec!["bench", "ipc", "--rounds", "100000000"], libc::SIGTERM),
        (vec!["tour"], libc::SIGINT),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new(mman())
            .args(&args)
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the command has made its temporary file or started a child (the
        // philosophers' table and `bench ipc`'s pages are unlinked as soon as they are
        // open: a SIGKILL leaves nothing), then interrupt it.
        let t0 = std::time::Instant::now();
        while std::fs::read_dir(tmp.path()).unwrap().next().is_none() && processes_of(tmp.path()).len() < 2 {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "{args:?} made no temporary file and started no child"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_clean(tmp.path(), &format!("{args:?} interrupted by signal {sig}"));
        if !status.success() {
            // (A command that finished before the signal came has nothing more to show.)
            assert_eq!(status.signal(), Some(sig), "{args:?}: {status:?} {err}");
        }
    }
}

#[test]
fn numbers_are_validated_by_one_parser_each() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    let f = f.display().to_string();
    let bad: &[&[&str]] = &[
        &["philosophers", "--seconds", "inf"],
        &["philosophers", "--seconds", "1e99"],
        &["philosophers", "--seconds", "-1"],
        &["philosophers", "--seconds", "nan"],
        &["philosophers", "--seconds", "0"],
        &["philosophers", "--meals", "0"],
        &["philosophers", "-n", "1"],
        &["philosophers", "-n", "100000"],
        &["cache", "status", "-m", "1e99", &f],
        &["cache", "status", "-m", "-1", &f],
        &["cache", "status", "--threads", "10000", &f],
        &["shm", "create", "x", "--size", "1e99"],
        &["shm", "create", "x", "--size", "12Q"],
    ];
    for args in bad {
        let out = Command::new(mman()).args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    }
    // One size parser: the same spellings work for shm and cache.
    let name = format!("hostile-{}", std::process::id());
    let out = Command::new(mman())
        .args(["shm", "create", &name, "--size", "1M"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(mman()).args(["shm", "rm", &name]).output().unwrap();
    assert!(out.status.success());
    let out = Command::new(mman())
        .args(["cache", "status", "-m", "1M", &f])
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn files_mman_did_not_create_are_never_changed_or_removed() {
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("precious");
    let content = vec![3u8; 3 << 20];
    std::fs::write(&precious, &content).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, vec![1u8; 1 << 16]).unwrap();

    // philosophers --file on an existing file, or a symlink to one: refused, untouched.
    for target in [&precious, &link] {
        fails_with(
            Command::new(mman())
                .args(["philosophers", "-n", "2", "--meals", "1", "--file"])
                .arg(target),
            "refusing to touch it",
        );
    }
    // A table mman made is reused; a new path is created.
    let table = dir.path().join("table");
    for _ in 0..2 {
        let out = Command::new(mman())
            .args(["philosophers", "-n", "2", "--meals", "5", "--file"])
            .arg(&table)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    // cache lock --pidfile on an existing file or a symlink: refused before locking.
    for target in [&precious, &link] {
        let out = Command::new(mman())
            .args(["cache", "lock", "--pidfile"])
            .arg(target)
            .arg(&data)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(std::fs::read(&precious).unwrap(), content);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());

    // Nothing to lock is a failure, not a process holding nothing forever.
    fails_with(
        Command::new(mman())
            .args(["cache", "lock"])
            .arg(dir.path().join("missing")),
        "nothing was locked",
    );
}

#[test]
fn shm_rm_keeps_going_and_odd_names_stay_on_one_line() {
    let tag = std::process::id();
    let (a, b, c) = (format!("ha-{tag}"), format!("hb-{tag}"), format!("hc-{tag}"));
    let odd = format!("odd\nname-{tag}");
    for n in [&a, &c, &odd] {
        let out = Command::new(mman())
            .args(["shm", "create", n, "--size", "4k"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = Command::new(mman()).args(["shm", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.lines().any(|l| l.starts_with(&format!("odd\\nname-{tag} "))),
        "{list}"
    );
    let out = Command::new(mman())
        .args(["shm", "rm", &a, &b, &c, &odd])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "one name was missing");
    for n in [&a, &c] {
        assert!(
            !Path::new(&format!("/dev/shm/mman.{n}")).exists(),
            "{n} was not removed"
        );
    }
    assert!(!Path::new(&format!("/dev/shm/mman.{odd}")).exists());
}

#[test]
fn a_refused_fork_names_rlimit_nproc() {
    // Needs root to become another user with one process allowed; skipped otherwise.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["prlimit", "setpriv"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !root || !tools {
        eprintln!("skipped: needs root, prlimit and setpriv");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    for args in [vec!["philosophers", "-n", "2", "--meals", "1"], vec!["share"]] {
        let out = Command::new("prlimit")
            .args([
                "--nproc=1:1",
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ])
            .arg(mman())
            .args(&args)
            .env("TMPDIR", dir.path())
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("RLIMIT_NPROC"), "{args:?}: {err}");
    }
}

#[test]
fn cat_through_a_mapping_works_under_an_address_space_limit() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("sparse");
    std::fs::File::create(&big).unwrap().set_len(1 << 30).unwrap();
    for via in ["map", "vmsplice"] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v 200000 && '{}' cat --via {via} '{}' | wc -c",
                mman().display(),
                big.display()
            ))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.is_empty(), "{via}: {err}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            (1u64 << 30).to_string(),
            "{via}"
        );
    }
}

#[test]
fn foreign_shared_memory_objects_can_be_listed_opened_and_removed() {
    use std::os::unix::fs::PermissionsExt;
    let name = format!("ring-{}", std::process::id());
    let path = format!("/dev/shm/{name}");
    std::fs::write(&path, vec![5u8; 8192]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let list = |all: bool| {
        let mut c = Command::new(mman());
        c.args(["shm", "list"]);
        if all {
            c.arg("--all");
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    assert!(!list(false).contains(&name), "a foreign object among mman's own");
    let all = list(true);
    let line = all
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("{all}"));
    assert!(line.ends_with("foreign") && line.contains("8192"), "{line}");
    // The library opens it by its name verbatim, with the usual checks.
    let check = mman::shm::OpenCheck {
        min_size: 4096,
        owner: None,
        allowed_other_bits: 0,
    };
    let obj = mman::shm::SharedMemory::open_foreign(&format!("/{name}"), &check).unwrap();
    assert_eq!(obj.map().unwrap().load::<u8>(100).unwrap(), 5);
    drop(obj);
    assert!(
        std::path::Path::new(&path).exists(),
        "a foreign handle never unlinks"
    );
    let out = Command::new(mman())
        .args(["shm", "rm", "--foreign", &format!("/{name}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!std::path::Path::new(&path).exists());
}

#[test]
fn a_non_utf8_path_is_carried_losslessly_in_cache_json() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let raw: &[u8] = b"caf\xe9.bin";
    let path = dir.path().join(std::ffi::OsStr::from_bytes(raw));
    std::fs::write(&path, b"x").unwrap();
    let out = Command::new(mman())
        .args(["cache", "status", "--json", "-v"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v.to_string();
    let want: Vec<serde_json::Value> = path.as_os_str().as_bytes().iter().map(|&b| b.into()).collect();
    assert!(
        text.contains(&serde_json::Value::Array(want).to_string()),
        "{text}"
    );
}

#[test]
fn an_unusable_tmpdir_is_an_error_that_says_so() {
    for args in [
        vec!["tour", "--section", "1"],
        vec!["philosophers", "-n", "2", "--meals", "1"],
        // (`bench ipc` makes no temporary file: its peers share memfds.)
    ] {
        let out = Command::new(mman())
            .args(&args)
            .env("TMPDIR", "/proc/self")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("TMPDIR") && err.contains("/proc/self"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn counter_never_writes_a_file_that_is_not_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let planted = dir.path().join("planted");
    std::fs::write(&planted, vec![9u8; 100_000]).unwrap();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for file in [&planted, &fifo] {
        for args in [
            vec!["counter", "--add", "3", "--file"],
            vec!["counter", "--check", "--file"],
        ] {
            let mut child = Command::new(mman())
                .args(&args)
                .arg(file)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // A FIFO must not make it wait for a writer.
            let t0 = std::time::Instant::now();
            let status = loop {
                if let Some(st) = child.try_wait().unwrap() {
                    break st;
                }
                if t0.elapsed() > std::time::Duration::from_secs(10) {
                    child.kill().unwrap();
                    panic!("{args:?} {file:?} hangs");
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            };
            assert_eq!(status.code(), Some(1), "{args:?} {file:?}");
        }
    }
    assert_eq!(std::fs::read(&planted).unwrap(), vec![9u8; 100_000]);
}

/// Wait for `child` at most `secs` seconds; kill it (and fail) if it is still running.
fn wait_at_most(child: &mut std::process::Child, secs: u64, what: &str) -> Output {
    let t0 = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t0.elapsed() > std::time::Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still ran after {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut out = Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    if let Some(mut s) = child.stdout.take() {
        std::io::Read::read_to_end(&mut s, &mut out.stdout).unwrap();
    }
    if let Some(mut s) = child.stderr.take() {
        std::io::Read::read_to_end(&mut s, &mut out.stderr).unwrap();
    }
    out
}

/// Start a timed dinner on `table` and return once its table carries the mark.
fn start_dinner(table: &Path, seconds: &str) -> std::process::Child {
    let child = Command::new(mman())
        .args(["philosophers", "-n", "3", "--seconds", seconds, "--file"])
        .arg(table)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !std::fs::read(table).is_ok_and(|b| b.get(8..16) == Some(b"MMANPHIL")) {
        assert!(t0.elapsed().as_secs() < 10, "the dinner made no table");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child
}

#[test]
fn a_second_dinner_on_the_same_table_is_refused_and_the_first_one_ends() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let mut first = start_dinner(&table, "2");
    // The second dinner used to reset the forks, gate and counters of the first, whose
    // philosophers then waited for good: the first dinner never ended.
    let mut second = Command::new(mman())
        .args(["philosophers", "-n", "3", "--seconds", "1", "--file"])
        .arg(&table)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out2 = wait_at_most(&mut second, 30, "the second dinner");
    let out1 = wait_at_most(&mut first, 30, "the first dinner, its table reset under it");
    let err2 = String::from_utf8_lossy(&out2.stderr);
    assert_eq!(out2.status.code(), Some(1), "{err2}");
    assert!(err2.contains("another dinner is using this table"), "{err2}");
    assert!(out1.status.success(), "{}", String::from_utf8_lossy(&out1.stderr));
    // Once the first has ended, the table is free again.
    let out = Command::new(mman())
        .args(["philosophers", "-n", "3", "--meals", "10", "--file"])
        .arg(&table)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_scribbled_table_cannot_keep_a_stopped_dinner_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let mut dinner = start_dinner(&table, "1");
    // A hostile writer takes every fork off the table (zeros over the semaphores).
    let f = std::fs::OpenOptions::new().write(true).open(&table).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 3 * 64], 64).unwrap();
    let out = wait_at_most(&mut dinner, 40, "a dinner whose forks were taken away");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("had not left the table"), "{err}");
}

/// The processes whose environment holds `TMPDIR=<tmp>`: everything a run with that TMPDIR
/// started, however deep, wherever it was reparented.
fn processes_of(tmp: &Path) -> Vec<(u32, String)> {
    let needle = format!("TMPDIR={}", tmp.display());
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v.starts_with(needle.as_bytes())) {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    found
}

#[test]
fn sigterm_ends_the_children_the_tour_runs_and_their_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tour = Command::new(mman())
        .args(["tour", "--section", "10"])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the tour's `mman philosophers` has its philosophers at the table.
    let t0 = std::time::Instant::now();
    while !processes_of(tmp.path())
        .iter()
        .any(|(_, c)| c.contains("__philosopher"))
    {
        assert!(t0.elapsed().as_secs() < 20, "the tour started no dinner");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(tour.id() as i32, libc::SIGTERM) };
    let status = tour.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    // The killed children need a moment to be gone from /proc; not as long as the dinner
    // (0.5 s), which an orphaned child would finish, and go, unnoticed.
    let mut left = processes_of(tmp.path());
    for _ in 0..10 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        left = processes_of(tmp.path());
    }
    for (pid, _) in &left {
        // SAFETY: kill(2); these are processes this test started, left over.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    assert!(left.is_empty(), "the interrupted tour left running: {left:?}");
    assert_clean(tmp.path(), "the tour interrupted by SIGTERM");
}

#[test]
fn benchmark_counts_that_would_wrap_are_refused_by_the_parser() {
    // --rounds 4294967295 was accepted, and the count plus the warm-up wrapped to 999 in the
    // peer's u32: the peer left after 999 round trips and the benchmark waited for good.
    for args in [
        vec!["bench", "ipc", "--rounds", "4294967295"],
        vec!["bench", "ipc", "--rounds", "0"],
        vec!["bench", "channel", "--rounds", "18446744073709551615"],
        vec!["bench", "channel", "--messages", "18446744073709551615"],
        vec!["bench", "channel", "--size", "0"],
        vec!["bench", "channel", "--size", "2G"],
    ] {
        let mut child = Command::new(mman())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_at_most(&mut child, 20, &format!("{args:?}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    }
}

#[test]
fn a_closed_stdin_is_an_error_for_a_list_of_files_too() {
    // `-b -` read a closed standard input as an empty list: the listed files were dropped
    // without a word and the status was 0.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    let args: Vec<String> = ["cache", "status", "-b", "-"]
        .iter()
        .map(|s| s.to_string())
        .chain([f.display().to_string()])
        .collect();
    fails_with_stdin_closed(
        &args,
        dir.path(),
        "file list from standard input: Bad file descriptor",
    );
}

#[test]
fn cache_lock_json_is_json() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, vec![1u8; 3 * 4096]).unwrap();
    let pidfile = dir.path().join("pid");
    let child = Command::new(mman())
        .args(["cache", "lock", "--json", "--pidfile"])
        .arg(&pidfile)
        .arg(&f)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !pidfile.exists() {
        assert!(t0.elapsed().as_secs() < 20, "no pid file");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(v["locked_pages"], 3, "{v}");
    assert_eq!(v["files"], 1, "{v}");
}

#[test]
fn an_empty_tmpdir_means_tmp_not_the_current_directory() {
    // GNU tools read an empty TMPDIR as unset; mman made its temporary files in the current
    // directory (a relative path joined to "").
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new(mman())
        .args(["tour", "--section", "1"])
        .env("TMPDIR", "")
        .current_dir(cwd.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("working in /tmp/mman-tour"), "{text}");
}

#[test]
fn hints_name_commands_that_exist_and_would_help() {
    // An existing name: the hint named the library's SharedMemory::open and ::unlink.
    let name = format!("hint-{}", std::process::id());
    let create = || {
        Command::new(mman())
            .args(["shm", "create", &name, "--size", "4k"])
            .output()
            .unwrap()
    };
    assert!(create().status.success());
    let out = create();
    let _ = Command::new(mman()).args(["shm", "rm", &name]).output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("`mman shm rm {name}`")), "{err}");
    assert!(!err.contains("SharedMemory::"), "{err}");
    // A loop of links named on the command line: links were followed, so the hint to follow
    // them (and the library's option name) was wrong.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    let err = fails_with(
        Command::new(mman()).args(["cache", "status"]).arg(&a),
        "a loop of symbolic links",
    );
    assert!(!err.contains("follow_symlinks"), "{err}");
}

#[test]
fn cat_takes_file_names_that_are_not_utf8() {
    // As cat does: a name is bytes. mman refused it with a usage error (status 2).
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::write(&name, b"bytes\n").unwrap();
    let missing = dir.path().join(std::ffi::OsStr::from_bytes(b"nope\xe9"));
    let out = Command::new(mman())
        .arg("cat")
        .arg(&name)
        .arg(&missing)
        .arg(&name)
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"bytes\nbytes\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
}

#[test]
fn a_file_that_cannot_be_created_is_named_as_asked() {
    // The error named the temporary file mman writes first (`.p.mman-new-PID`), a name the
    // user never gave, and not the directory that was missing.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("missing").join("p");
    for args in [
        vec!["persist", "--write", "--file"],
        vec!["counter", "--add", "1", "--file"],
    ] {
        let mut child = Command::new(mman())
            .args(&args)
            .arg(&target)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("create {}: No such file or directory", target.display())),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("does not exist") && !err.contains("mman-new"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_size_no_object_can_have_is_a_clear_error() {
    // It failed with fallocate's bare "Invalid argument".
    let name = format!("huge-{}", std::process::id());
    fails_with(
        Command::new(mman()).args(["shm", "create", &name, "--size", "18446744073709551615"]),
        "more than any object can hold",
    );
    assert!(!Path::new(&format!("/dev/shm/mman.{name}")).exists());
}

#[test]
fn a_lock_daemon_whose_report_cannot_be_given_is_released() {
    // The parent said "write error" and exited 1, and the daemon it had started held the
    // pages in the background, with its pid file, unknown to the caller.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, vec![1u8; 4096]).unwrap();
    for (redir, reason) in [
        (">/dev/full", "No space left on device"),
        (">&-", "Bad file descriptor"),
    ] {
        let pidfile = dir.path().join("pid");
        let args: Vec<String> = vec![
            "cache".into(),
            "lock".into(),
            "--daemon".into(),
            "--pidfile".into(),
            pidfile.display().to_string(),
            f.display().to_string(),
        ];
        let out = run_sh(&args, redir, dir.path());
        let text = describe(&args, &out);
        let holder = std::fs::read_to_string(&pidfile).ok();
        if let Some(pid) = holder.as_deref().and_then(|p| p.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) of the holder this test started, left behind.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(reason), "{text}");
        assert!(
            holder.is_none(),
            "{redir}: a holder still runs, pid file {holder:?}"
        );
    }
}

/// Errors reported while standard error is on /dev/full: the report is lost, as GNU tools
/// lose it, but mman neither panics (exit 101) nor changes the status the error earned.
#[test]
fn an_error_with_standard_error_full_keeps_its_status() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing").display().to_string();
    for args in [
        vec!["cat".to_string(), missing.clone()],
        vec!["cache".to_string(), "status".to_string(), missing.clone()],
        vec![
            "persist".to_string(),
            "--read".to_string(),
            "--file".to_string(),
            missing.clone(),
        ],
        vec![
            "shm".to_string(),
            "rm".to_string(),
            "mman-test-no-such-object".to_string(),
        ],
    ] {
        let out = run_sh(&args, "2>/dev/full", tmp.path());
        assert_eq!(out.status.code(), Some(1), "{args:?}: {:?}", out.status);
    }
}

/// `--help` and `--version` are output like any other: on /dev/full or a closed standard
/// output they are a write error with status 1 (GNU's rule), not a silent success; a usage
/// error stays status 2 on standard error.
#[test]
fn help_and_version_are_checked_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    for args in [s(&["--help"]), s(&["--version"]), s(&["cat", "--help"])] {
        for redir in [">/dev/full", ">&-"] {
            let out = run_sh(&args, redir, tmp.path());
            assert_eq!(out.status.code(), Some(1), "{args:?} {redir}: {:?}", out.status);
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("write error"),
                "{args:?} {redir}"
            );
        }
        let out = run_sh(&args, "", tmp.path());
        assert!(out.status.success() && !out.stdout.is_empty(), "{args:?}");
        assert!(
            !out.stdout.contains(&0x1b),
            "{args:?}: no colour codes into a pipe"
        );
    }
    let out = run_sh(&s(&["no-such-command"]), "", tmp.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}

/// A file name holding a newline and an escape sequence (anyone who can write a walked
/// directory can make one) cannot forge a line of mman's output or drive the terminal: in
/// `cache -v` lines and in error messages its control characters are shown escaped.
#[test]
fn control_characters_in_file_names_are_shown_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let evil = "evil\nmman: forged line \u{1b}[31mred";
    std::fs::write(tmp.path().join(evil), b"x").unwrap();
    let out = Command::new(mman())
        .args(["cache", "status", "-v"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("evil\\nmman: forged line \\e[31mred"), "{text}");
    assert!(
        !text.contains('\u{1b}') && !text.lines().any(|l| l.starts_with("mman: forged")),
        "{text}"
    );
    let out = Command::new(mman())
        .arg("cat")
        .arg(tmp.path().join("no\nsuch\u{1b}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no\\nsuch\\e: No such file"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
