//! `mman cache` and `mman maps` as a user runs them: JSON and text output, the vmtouch
//! options, a user the kernel will not tell, the lock held until SIGTERM, pmap agreement.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn mman() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mman"))
}

fn run_json(args: &[&str]) -> serde_json::Value {
    let out = mman().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn write(path: &Path, len: usize) {
    std::fs::write(path, vec![7u8; len]).unwrap();
    std::fs::File::open(path).unwrap().sync_all().unwrap();
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("d/e")).unwrap();
    write(&dir.path().join("d/a.log"), 10_000);
    write(&dir.path().join("d/b.dat"), 8192);
    write(&dir.path().join("d/e/c.dat"), 1 << 20);
    dir
}

#[test]
fn status_evict_touch_round_trip_in_json() {
    let dir = tree();
    let d = dir.path().join("d");
    let d = d.to_str().unwrap();
    let v = run_json(&["cache", "evict", "--json", d]);
    assert_eq!(v["files"], 3);
    assert_eq!(v["stayed_pages"], 0, "{v}");
    let v = run_json(&["cache", "status", "--json", "-v", d]);
    assert_eq!(
        (v["files"].as_u64(), v["directories"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(v["total_pages"], 3 + 2 + 256);
    assert_eq!(v["resident_pages"], 0);
    assert_eq!(v["page_size"], 4096);
    assert!(v["elapsed_s"].as_f64().unwrap() >= 0.0);
    assert_eq!(v["entries"].as_array().unwrap().len(), 3);
    let v = run_json(&["cache", "touch", "--json", "-p", "0-8k", d]);
    assert_eq!(v["touched_pages"], 2 + 2 + 2, "{v}");
    let v = run_json(&["cache", "status", "--json", d]);
    assert_eq!(v["resident_pages"], 6);
    assert!(v.get("entries").is_none());
    let v = run_json(&["cache", "touch", "--json", d]);
    assert_eq!(v["touched_pages"], 261 - 6);
    assert_eq!(v["resident_pages"], 261);
}

#[test]
fn vmtouch_options_ignore_include_max_size_and_lists() {
    let dir = tree();
    let d = dir.path().join("d");
    let ds = d.to_str().unwrap();
    assert_eq!(
        run_json(&["cache", "status", "--json", "-i", "*.log", ds])["files"],
        2
    );
    assert_eq!(
        run_json(&["cache", "status", "--json", "-i", "e", ds])["files"],
        2
    );
    assert_eq!(
        run_json(&["cache", "status", "--json", "-I", "*.dat", ds])["files"],
        2
    );
    assert_eq!(
        run_json(&["cache", "status", "--json", "-m", "9k", ds])["files"],
        1
    );
    let list = dir.path().join("list");
    let names = [d.join("d/../a.log"), d.join("e/c.dat")];
    let mut nul = Vec::new();
    for n in &names {
        nul.extend_from_slice(n.to_str().unwrap().as_bytes());
        nul.push(0);
    }
    std::fs::write(&list, &nul).unwrap();
    let out = mman()
        .args(["cache", "status", "--json", "-0", "-b", list.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "an entry was skipped");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"], 1, "d/d/../a.log does not exist: {v}");
    assert_eq!(v["skipped"], 1);
    let bad = mman()
        .args(["cache", "status", "-p", "9k-1k", ds])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("before the start"));
}

#[test]
fn verbose_text_prints_a_bar_per_file_and_a_vmtouch_summary() {
    let dir = tree();
    let f = dir.path().join("d/e/c.dat");
    let out = mman().args(["cache", "evict"]).arg(&f).output().unwrap();
    assert!(out.status.success());
    mman()
        .args(["cache", "touch", "-p", "0-512k"])
        .arg(&f)
        .output()
        .unwrap();
    let out = mman().args(["cache", "status", "-v"]).arg(&f).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let bar = text.lines().nth(1).unwrap();
    assert_eq!(
        bar,
        format!("[{}{}] 128/256", "O".repeat(30), " ".repeat(30)),
        "{text}"
    );
    assert!(
        text.contains("  Resident Pages: 128/256  512K/1M  50.000%"),
        "{text}"
    );
    assert!(text.contains("           Files: 1"), "{text}");
    assert!(text.contains("         Elapsed: "), "{text}");
}

fn as_nobody(cmd: &mut Command) -> bool {
    if rustix::process::geteuid().is_root() {
        cmd.uid(65534).gid(65534);
        true
    } else {
        false
    }
}

#[test]
fn files_the_kernel_will_not_report_are_unknown_not_100_percent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = dir.path().join("theirs");
    write(&f, 40960);
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = mman();
    cmd.args(["cache", "status", "--json", "-v"]);
    if as_nobody(&mut cmd) {
        cmd.arg(&f);
    } else {
        // Not root: a file of root's that this user may read but not write.
        cmd.arg("/etc/passwd");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["unknown_files"], 1, "{v}");
    assert_eq!(v["resident_pages"], 0);
    assert!(v["entries"][0]["resident_pages"].is_null());
    assert!(v["entries"][0]["unknown_reason"]
        .as_str()
        .unwrap()
        .contains("owner"));
}

#[test]
fn unreadable_files_are_reported_and_the_walk_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    write(&dir.path().join("open"), 100);
    write(&dir.path().join("secret"), 100);
    std::fs::set_permissions(dir.path().join("open"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(dir.path().join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = mman();
    cmd.args(["cache", "status", "--json"]).arg(dir.path());
    if !as_nobody(&mut cmd) {
        return assert!(rustix::process::geteuid().as_raw() != 0);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "some entries were skipped");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["files"].as_u64(), v["skipped"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("secret") && err.contains("Permission denied"),
        "{err}"
    );
}

fn vm_locked_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn lock_holds_the_pages_and_releases_on_sigterm() {
    let dir = tree();
    let pidfile = dir.path().join("pid");
    let child = mman()
        .args(["cache", "lock", "--pidfile"])
        .arg(&pidfile)
        .arg(dir.path().join("d"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !pidfile.exists() {
        assert!(t0.elapsed() < Duration::from_secs(20), "no pid file");
        std::thread::sleep(Duration::from_millis(20));
    }
    // 3 + 2 + 256 pages.
    assert_eq!(vm_locked_kib(child.id()), 261 * 4);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Locked Pages: 261"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("released"));
    assert!(!pidfile.exists(), "the pid file is removed on release");
}

#[test]
fn lock_beyond_rlimit_memlock_says_how_much_and_how_to_raise_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = dir.path().join("big");
    write(&f, 16 << 20);
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = mman();
    cmd.args(["cache", "lock"]).arg(&f);
    // Root has CAP_IPC_LOCK: drop to nobody, whose limit applies (8 MiB by default here).
    if !as_nobody(&mut cmd) {
        let (soft, _) = mman::memlock_limit();
        if soft.is_none_or(|s| s >= 16 << 20) {
            return;
        }
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("RLIMIT_MEMLOCK")
            && err.contains("locking needs 16777216 bytes (16384 KiB)")
            && err.contains("ulimit -l"),
        "{err}"
    );
}

#[test]
fn maps_totals_agree_with_pmap_and_bad_pids_are_clear() {
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let pid = sleeper.id().to_string();
    let v = run_json(&["maps", &pid, "--json"]);
    let n = v["mappings"].as_array().unwrap().len();
    assert!(n > 5, "{v}");
    assert!(v["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["kind"] == "stack"));
    if let Ok(p) = Command::new("pmap").args(["-x", &pid]).output() {
        let text = String::from_utf8_lossy(&p.stdout);
        let total: Vec<u64> = text
            .lines()
            .find(|l| l.starts_with("total kB"))
            .unwrap()
            .split_whitespace()
            .skip(2)
            .map(|x| x.parse().unwrap())
            .collect();
        let t = &v["total"];
        assert_eq!(
            total,
            vec![
                t["size_kib"].as_u64().unwrap(),
                t["rss_kib"].as_u64().unwrap(),
                t["dirty_kib"].as_u64().unwrap()
            ]
        );
    }
    let heap = run_json(&["maps", &pid, "--json", "--filter", "[stack]"]);
    assert_eq!(heap["mappings"].as_array().unwrap().len(), 1);
    let sorted = run_json(&["maps", &pid, "--json", "--sort", "rss"]);
    let rss: Vec<u64> = sorted["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["rss_kib"].as_u64().unwrap())
        .collect();
    assert!(rss.windows(2).all(|w| w[0] >= w[1]));
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();

    let out = mman().args(["maps", "4000000"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no process 4000000"));
    let mut cmd = mman();
    cmd.args(["maps", "1"]);
    if as_nobody(&mut cmd) || !rustix::process::geteuid().is_root() {
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("another user"));
    }
}

#[test]
fn lock_daemon_detaches_holds_and_releases() {
    let dir = tree();
    let pidfile = dir.path().join("daemon.pid");
    let out = mman()
        .args(["cache", "lock", "--daemon", "--pidfile"])
        .arg(&pidfile)
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Locked Pages: 261"), "{text}");
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(
        text.contains(&format!("holding the pages in process {pid}")),
        "{text}"
    );
    assert_eq!(vm_locked_kib(pid), 261 * 4);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let t0 = Instant::now();
    while pidfile.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the daemon did not release"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The binary starts without libm.so: its one user (indicatif's `powf`) gets the `pow` the
/// binary defines, and a shared library fewer is ~0.07 ms off every start (bench/RESULTS.md).
/// `LD_TRACE_LOADED_OBJECTS` makes glibc's loader list what it would load, then stop.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_binary_loads_no_libm() {
    let out = mman().env("LD_TRACE_LOADED_OBJECTS", "1").output().unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("libc.so"), "the loader did not list: {listed}");
    assert!(!listed.contains("libm.so"), "mman loads libm: {listed}");
}
