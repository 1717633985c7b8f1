//! The children mman starts, under hostile conditions: the parent killed with SIGKILL (no
//! child may outlive it), a peer killed or stopped (the error names it and how it ended,
//! and nothing is left running), a clean signal mask, `ulimit -f` (an EFBIG error that
//! cleans up, never a death by SIGXFSZ), `ulimit -u` (the RLIMIT_NPROC hint), and a
//! one-CPU placement (the spin floors are skipped, with the reason).
//!
//! Each test runs mman with a TMPDIR of its own and finds the processes a run started by it
//! (the environment is inherited however deep, wherever a process is reparented).

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn mman() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mman"))
}

/// The processes whose environment holds `TMPDIR=<tmp>`, but not `except` (the run itself):
/// (pid, command line). Zombies have no environment left and are not counted.
fn processes_of(tmp: &Path, except: Option<u32>) -> Vec<(u32, String)> {
    let needle = format!("TMPDIR={}", tmp.display());
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if Some(pid) == except {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        // TMPDIR itself, or a directory in it (the tour gives its children its own).
        let ours = |v: &[u8]| {
            v.strip_prefix(needle.as_bytes())
                .is_some_and(|rest| rest.is_empty() || rest[0] == b'/')
        };
        if env.split(|&b| b == 0).any(ours) {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    found
}

/// Wait until a process of the run with `tmp` (whose first process is `parent`) has `what`
/// in its command line; its pid.
fn wait_for_process(parent: &mut Child, tmp: &Path, what: &str) -> u32 {
    let t0 = Instant::now();
    loop {
        if let Some((pid, _)) = processes_of(tmp, None).iter().find(|(_, c)| c.contains(what)) {
            return *pid;
        }
        if let Some(status) = parent.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = parent.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).unwrap();
            }
            panic!("the run ended ({status}) before it started {what}: {err}");
        }
        assert!(t0.elapsed().as_secs() < 300, "no {what} started within 300 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What is left of the run with `tmp` after a short grace (the kernel kills children whose
/// parent died at once, but they take a moment to leave /proc): killed here, and returned.
fn left_running(tmp: &Path, grace: Duration) -> Vec<(u32, String)> {
    let t0 = Instant::now();
    let mut left = processes_of(tmp, None);
    while !left.is_empty() && t0.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(20));
        left = processes_of(tmp, None);
    }
    for (pid, _) in &left {
        // SAFETY: kill(2); processes this test started, left over.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    left
}

fn start(args: &[&str], tmp: &Path) -> Child {
    Command::new(mman())
        .args(args)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) of a process this test started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Wait for `child` of the run with `tmp` at most `secs` seconds (killing it, and failing,
/// after that); then kill what the run left running (which may hold its standard error
/// open), and return its status, what it left running, and its standard error.
fn end_of(mut child: Child, tmp: &Path, secs: u64, what: &str) -> (Output, Vec<(u32, String)>) {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            left_running(tmp, Duration::ZERO);
            panic!("{what} still ran after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = left_running(tmp, Duration::from_secs(1));
    (child.wait_with_output().unwrap(), left)
}

fn assert_empty(dir: &Path, what: &str) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{what} left behind: {left:?}");
}

/// SIGKILL of the parent, once `child` runs: no process of the run may be left. `grace`
/// is short: an orphan that finished its work and went on its own (the tour's dinner lasts
/// 0.5 s) must not pass for one that died with its parent.
fn killed_parent_leaves_nothing(args: &[&str], child: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let mut parent = start(args, tmp.path());
    wait_for_process(&mut parent, tmp.path(), child);
    kill(parent.id(), libc::SIGKILL);
    assert_eq!(parent.wait().unwrap().signal(), Some(libc::SIGKILL));
    let left = left_running(tmp.path(), Duration::from_millis(300));
    assert!(
        left.is_empty(),
        "mman {} killed left running: {left:?}",
        args.join(" ")
    );
    if !args.contains(&"tour") {
        // (A killed tour leaves its working directory: nothing can remove it after a
        // SIGKILL; what it held is removed section by section.)
        assert_empty(tmp.path(), &format!("mman {} killed", args.join(" ")));
    }
}

#[test]
fn a_killed_bench_ipc_leaves_no_peer() {
    // The idle peer waited for ever; the others until their 10 s timeout.
    killed_parent_leaves_nothing(&["bench", "ipc", "--rounds", "100000000"], "__ipc-peer");
}

#[test]
fn a_killed_bench_channel_leaves_no_stream_peer() {
    // The stream peer held the write end of its own input (a pipe without close-on-exec)
    // and never saw it end.
    killed_parent_leaves_nothing(
        &[
            "bench",
            "channel",
            "--size",
            "64",
            "--rounds",
            "10",
            "--messages",
            "1000000",
        ],
        "__channel-peer stream",
    );
}

#[test]
fn a_killed_dinner_leaves_no_philosopher_and_no_table() {
    killed_parent_leaves_nothing(&["philosophers", "-n", "3", "--seconds", "60"], "__philosopher");
}

#[test]
fn a_killed_tour_leaves_no_child() {
    // The tour's `mman philosophers` dined on for its half second, unparented.
    killed_parent_leaves_nothing(&["tour", "--section", "10"], "__philosopher");
}

/// The signals a process has blocked (`SigBlk` of /proc/PID/status).
fn blocked(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("SigBlk:")).unwrap();
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn children_start_with_no_signal_blocked() {
    let tmp = tempfile::tempdir().unwrap();
    let mut parent = start(&["bench", "ipc", "--rounds", "100000000"], tmp.path());
    let peer = wait_for_process(&mut parent, tmp.path(), "__ipc-peer");
    let mask = blocked(peer);
    kill(parent.id(), libc::SIGKILL);
    parent.wait().unwrap();
    left_running(tmp.path(), Duration::from_secs(1));
    // They inherited SIGHUP, SIGINT and SIGTERM blocked (0x4003): an orphan ignored all
    // but SIGKILL.
    assert_eq!(mask, 0, "the peer started with signals blocked: {mask:#x}");
}

#[test]
fn a_killed_peer_is_named_with_its_signal_and_nothing_is_left() {
    for (args, peer, names) in [
        (
            &["bench", "ipc", "--rounds", "100000000"][..],
            "__ipc-peer",
            "bench ipc: the semaphore peer",
        ),
        (
            &[
                "bench",
                "channel",
                "--size",
                "64",
                "--rounds",
                "10",
                "--messages",
                "1000000",
            ][..],
            "__channel-peer stream",
            "bench channel: the pipe peer",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut parent = start(args, tmp.path());
        let pid = wait_for_process(&mut parent, tmp.path(), peer);
        kill(pid, libc::SIGKILL);
        let (out, left) = end_of(parent, tmp.path(), 60, "a bench whose peer was killed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(names), "{err}");
        assert!(
            err.contains(&format!("(pid {pid}) was killed by signal 9 (SIGKILL)")),
            "{err}"
        );
        assert!(left.is_empty(), "left running: {left:?}");
    }
}

#[test]
fn a_peer_that_stops_answering_is_named_and_ended() {
    // A stopped peer: `bench ipc` gives up on it after its 10 s, and used to leave it
    // there, stopped, for ever.
    let tmp = tempfile::tempdir().unwrap();
    let mut parent = start(&["bench", "ipc", "--rounds", "100000000"], tmp.path());
    let pid = wait_for_process(&mut parent, tmp.path(), "__ipc-peer");
    kill(pid, libc::SIGSTOP);
    let (out, left) = end_of(parent, tmp.path(), 60, "a bench whose peer was stopped");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("(pid {pid}) is stopped")), "{err}");
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn a_stopped_philosopher_is_not_blamed_on_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let mut parent = start(&["philosophers", "-n", "3", "--seconds", "1"], tmp.path());
    let pid = wait_for_process(&mut parent, tmp.path(), "__philosopher");
    kill(pid, libc::SIGSTOP);
    let (out, left) = end_of(parent, tmp.path(), 60, "a dinner with a stopped philosopher");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("(pid {pid}) is stopped")), "{err}");
    assert!(!err.contains("garbage"), "{err}");
    assert!(left.is_empty(), "left running: {left:?}");
    assert_empty(tmp.path(), "a dinner with a stopped philosopher");
}

/// Run mman with RLIMIT_FSIZE at `bytes` (as `ulimit -f` sets it), its standard output
/// into `stdout` when given.
fn under_file_size_limit(args: &[&str], bytes: u64, tmp: &Path, stdout: Option<&Path>) -> Output {
    let mut cmd = Command::new(mman());
    cmd.args(args).env("TMPDIR", tmp).stdin(Stdio::null());
    if let Some(path) = stdout {
        cmd.stdout(std::fs::File::create(path).unwrap());
    }
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().unwrap()
}

#[test]
fn a_file_size_limit_is_an_error_that_cleans_up() {
    // The table (704 bytes) and the tour's first file (9 KB) do not fit: SIGXFSZ killed
    // both, and their temporary files stayed.
    for (args, limit) in [
        (&["philosophers", "-n", "5", "--meals", "1"][..], 0),
        (&["tour", "--section", "1"][..], 1024),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = under_file_size_limit(args, limit, tmp.path(), None);
        let err = String::from_utf8_lossy(&out.stderr);
        let what = format!(
            "mman {} under RLIMIT_FSIZE {limit}: {:?} {err}",
            args.join(" "),
            out.status
        );
        assert_eq!(out.status.signal(), None, "{what}");
        assert_eq!(out.status.code(), Some(1), "{what}");
        assert!(err.contains("File too large"), "{what}");
        assert!(err.contains("RLIMIT_FSIZE"), "{what}");
        assert_empty(tmp.path(), &what);
    }
    // Standard output into a file that may not grow: a write error, not a death.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = under_file_size_limit(&["maps"], 1024, tmp.path(), Some(&dir.path().join("out")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), None, "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("write error: File too large"), "{err}");
    assert!(err.contains("RLIMIT_FSIZE"), "{err}");
}

#[test]
fn every_refused_spawn_names_rlimit_nproc() {
    // Needs root to become another user with one process allowed (root is not bound by the
    // limit); skipped otherwise.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"some bytes").unwrap();
    let file = file.display().to_string();
    for args in [
        &["bench", "ipc", "--rounds", "10"][..],
        &[
            "bench",
            "channel",
            "--rounds",
            "10",
            "--messages",
            "10",
            "--size",
            "64",
        ][..],
        &["tour", "--section", "3"][..],
        &["cache", "lock", "--daemon", &file][..],
    ] {
        let mut cmd = Command::new(mman());
        cmd.args(args).env("TMPDIR", dir.path()).current_dir(dir.path());
        // SAFETY: setrlimit, setgroups, setgid and setuid are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                let one = libc::rlimit {
                    rlim_cur: 1,
                    rlim_max: 1,
                };
                if libc::setrlimit(libc::RLIMIT_NPROC, &one) != 0
                    || libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(65534) != 0
                    || libc::setuid(65534) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("RLIMIT_NPROC"), "{args:?}: {err}");
    }
}

/// `mman ARGS` on CPU 0 alone, through taskset; None when taskset cannot run here.
fn on_one_cpu(args: &[&str]) -> Option<Output> {
    let out = Command::new("taskset")
        .args(["-c", "0"])
        .arg(mman())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    (!String::from_utf8_lossy(&out.stderr).contains("taskset:")).then_some(out)
}

#[test]
fn one_cpu_skips_the_spin_floors_and_says_why() {
    let Some(out) = on_one_cpu(&["bench", "ipc", "--rounds", "20", "--json"]) else {
        eprintln!("skipped: taskset is not available");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["spin_floor"].is_null(), "{text}");
    let why = v["spin_floor_skipped"].as_str().unwrap_or_default();
    assert!(why.contains("only 1 CPU"), "{text}");

    let out = on_one_cpu(&["bench", "ipc", "--rounds", "20"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("spin floor skipped: this process can use only 1 CPU"),
        "{text}"
    );
    assert!(!text.contains("spinning on a cache line"), "{text}");

    let out = on_one_cpu(&[
        "bench",
        "channel",
        "--size",
        "64",
        "--rounds",
        "10",
        "--messages",
        "10",
        "--json",
    ])
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["spin_floor_ns"].is_null(), "{text}");
    assert!(
        v["spin_floor_skipped"]
            .as_str()
            .unwrap_or_default()
            .contains("only 1 CPU"),
        "{text}"
    );
}

/// The shared-memory objects whose names start with `prefix` (in /dev/shm).
fn shm_objects(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn bench_channel_unlinks_its_channels_once_its_peer_has_them() {
    // The names stayed for the whole measurement: a SIGKILL left them in /dev/shm.
    let tmp = tempfile::tempdir().unwrap();
    let mut parent = start(
        &[
            "bench",
            "channel",
            "--size",
            "64",
            "--rounds",
            "10",
            "--messages",
            "100000000",
        ],
        tmp.path(),
    );
    let peer = wait_for_process(&mut parent, tmp.path(), "__channel-peer mman ");
    let ours = format!("mman.bench-{}-", parent.id());
    let t0 = Instant::now();
    let mut gone_while_in_use = false;
    while Path::new(&format!("/proc/{peer}")).exists() && t0.elapsed() < Duration::from_secs(60) {
        if shm_objects(&format!("{ours}mman64-")).is_empty() {
            // Gone while the peer still uses the channels.
            gone_while_in_use = processes_of(tmp.path(), None).iter().any(|(p, _)| *p == peer);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    kill(parent.id(), libc::SIGKILL);
    parent.wait().unwrap();
    let left = left_running(tmp.path(), Duration::from_millis(300));
    assert!(left.is_empty(), "left running: {left:?}");
    assert!(gone_while_in_use, "the names stayed while the peer ran");
    assert_eq!(shm_objects(&ours), Vec::<String>::new());
}
