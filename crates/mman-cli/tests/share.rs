//! `mman share`, `semaphore`, `philosophers` and `shm`, as real processes.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn mman(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mman"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn share_and_private_print_what_the_parent_sees() {
    let o = mman(&["share"]);
    assert!(o.status.success(), "{o:?}");
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("Memory mapped at 0x"), "{lines:?}");
    assert_eq!(lines[1], "0 1 2 3 4 5 6 7 8 9");
    let o = mman(&["share", "--private"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o).lines().nth(1), Some("0 0 0 0 0 0 0 0 0 0"));
}

#[test]
fn semaphore_hands_the_numbers_over() {
    for _ in 0..20 {
        let o = mman(&["semaphore"]);
        assert!(o.status.success(), "{o:?}");
        assert_eq!(stdout(&o).trim(), "0 1 2 3 4 5 6 7 8 9");
    }
}

#[test]
fn every_philosopher_eats_exactly_the_meals() {
    // The fair dinner (the default, also asked for by the old `--fair`) and the greedy one.
    for (n, rule) in [2usize, 3, 5, 8, 16]
        .into_iter()
        .flat_map(|n| [(n, None), (n, Some("--greedy")), (n, Some("--fair"))])
    {
        let n_text = n.to_string();
        let mut args = vec!["philosophers", "-n", &n_text, "--meals", "300"];
        args.extend(rule);
        let o = mman(&args);
        assert!(o.status.success(), "n={n} {rule:?}: {o:?}");
        let out = stdout(&o);
        let meals: Vec<&str> = out
            .lines()
            .filter(|l| l.trim_start().starts_with("philosopher "))
            .collect();
        assert_eq!(meals.len(), n, "{out}");
        for l in meals {
            assert!(l.ends_with(": 300 meals"), "n={n} {rule:?}: {l}");
        }
        assert!(out.contains(&format!("total {} meals", 300 * n)), "{out}");
        assert!(out.contains("fairness min/max 300/300"), "{out}");
    }
}

/// A large table sits down before anyone eats: the clock starts when all are seated, so a
/// half-second dinner of 200 processes (whose start takes longer than that) lasts about half
/// a second, and everyone has eaten.
#[test]
fn a_large_table_starts_eating_together() {
    let o = mman(&["philosophers", "-n", "200", "--seconds", "0.5"]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    let total = out.lines().last().unwrap();
    let secs: f64 = total
        .split(" meals in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no time in {total}"));
    assert!(secs < 1.0, "the dinner's clock ran {secs} s: {total}");
    let fewest = out
        .lines()
        .filter(|l| l.trim_start().starts_with("philosopher "))
        .map(|l| {
            l.rsplit(": ")
                .next()
                .unwrap()
                .trim_end_matches(" meals")
                .parse::<u64>()
                .unwrap()
        })
        .min()
        .unwrap();
    assert!(fewest > 0, "a philosopher never ate: {total}");
}

#[test]
fn the_greedy_and_the_fair_dinner_are_one_choice() {
    let o = mman(&["philosophers", "--meals", "1", "--greedy", "--fair"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot be used with"),
        "{o:?}"
    );
}

/// A timed fair dinner (the default): every philosopher within 10% of the mean (the promise),
/// however the scheduler treats the processes; a meal count of 0 would fail too.
#[test]
fn a_fair_dinner_feeds_every_philosopher_alike() {
    for n in [2usize, 5, 16] {
        let o = mman(&["philosophers", "-n", &n.to_string(), "--seconds", "0.5"]);
        assert!(o.status.success(), "n={n}: {o:?}");
        let out = stdout(&o);
        let meals: Vec<u64> = out
            .lines()
            .filter(|l| l.trim_start().starts_with("philosopher "))
            .map(|l| {
                let count = l.rsplit(": ").next().unwrap();
                count.trim_end_matches(" meals").parse().unwrap()
            })
            .collect();
        assert_eq!(meals.len(), n, "{out}");
        let mean = meals.iter().sum::<u64>() as f64 / n as f64;
        assert!(mean >= 1000.0, "n={n}: too few meals to judge: {out}");
        for m in &meals {
            let off = (*m as f64 - mean).abs() / mean;
            assert!(
                off <= 0.10,
                "n={n}: {m} meals is {:.0}% off the mean {mean:.0}: {out}",
                off * 100.0
            );
        }
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        if rest.split_whitespace().nth(1) == Some(&pid.to_string()) {
            kids.push(p);
        }
    }
    kids
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/PID; it is not running.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rfind(')').is_some_and(|i| !s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}

#[test]
fn a_killed_philosopher_ends_the_dinner_with_no_orphans() {
    let dinner = Command::new(env!("CARGO_BIN_EXE_mman"))
        .args(["philosophers", "-n", "5", "--seconds", "60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut kids = Vec::new();
    while kids.len() < 5 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        kids = children_of(dinner.id());
    }
    assert_eq!(kids.len(), 5, "philosophers did not start");
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill(2) of a child process of the dinner, by pid.
    assert_eq!(unsafe { libc::kill(kids[2] as i32, libc::SIGKILL) }, 0);
    let killed_at = Instant::now();
    let out = dinner.wait_with_output().unwrap();
    assert!(
        killed_at.elapsed() < Duration::from_secs(5),
        "the dinner took too long to notice"
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("(pid {}) was killed by signal 9", kids[2])),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(100));
    for k in kids {
        assert!(!alive(k), "philosopher {k} outlived the dinner");
    }
}

#[test]
fn shm_objects_are_0600_whatever_the_umask() {
    let name = format!("cli-{}", std::process::id());
    let script = format!(
        "umask 000 && {} shm create {name} --size 12345",
        env!("CARGO_BIN_EXE_mman")
    );
    let o = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(format!("/dev/shm/mman.{name}")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 12345);
    let list = stdout(&mman(&["shm", "list"]));
    let line = list.lines().find(|l| l.starts_with(&name)).expect("listed");
    assert!(line.contains("12345") && line.contains("kept"), "{line}");
    let o = mman(&["shm", "create", &name, "--size", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("File exists"),
        "{o:?}"
    );
    assert!(mman(&["shm", "rm", &name]).status.success());
    assert!(!std::path::Path::new(&format!("/dev/shm/mman.{name}")).exists());
}

#[test]
fn bench_channel_json_has_both_floors_and_every_method() {
    let o = mman(&[
        "bench",
        "channel",
        "--size",
        "64",
        "--messages",
        "2000",
        "--rounds",
        "200",
        "--json",
    ]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // (Skipped, with the reason, where one CPU is all the process may use.)
    let skipped = v["spin_floor_skipped"].is_string();
    for k in ["spin_floor_ns", "two_line_floor_ns"] {
        assert!(skipped == v[k].is_null(), "{k}: {v}");
        assert!(skipped || v[k].as_u64().unwrap_or(0) > 0, "{k}: {v}");
    }
    let rows = v["results"].as_array().expect("results");
    for method in ["mman", "pipe", "unix_socket"] {
        let r = rows
            .iter()
            .find(|r| r["method"] == method)
            .unwrap_or_else(|| panic!("{method}: {v}"));
        assert_eq!(r["size"], 64, "{r}");
        let (median, p99) = (
            r["rtt_median_ns"].as_u64().unwrap_or(0),
            r["rtt_p99_ns"].as_u64().unwrap_or(0),
        );
        assert!(median > 0 && p99 >= median, "{r}");
        assert!(r["msgs_per_s"].as_u64().unwrap_or(0) > 0, "{r}");
        assert!(r["gib_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    }
    let in_place = v["mman_in_place"].as_array().expect("mman_in_place");
    assert_eq!(in_place.len(), 1, "{v}");
    assert_eq!(in_place[0]["size"], 64, "{v}");
    assert!(in_place[0]["rtt_median_ns"].as_u64().unwrap_or(0) > 0, "{v}");
    // A size no message can have is refused by the option's parser: a usage error.
    let o = mman(&["bench", "channel", "--size", "0"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn bench_ipc_json_has_every_method() {
    let o = mman(&["bench", "ipc", "--rounds", "2000", "--json"]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // (The spin floor is skipped, with the reason, where one CPU is all the process may use.)
    let skipped = v["spin_floor_skipped"].is_string();
    assert!(skipped == v["spin_floor"].is_null(), "{v}");
    for k in ["mman_semaphore", "sem_t", "pipe", "spin_floor"] {
        if k == "spin_floor" && skipped {
            continue;
        }
        let median = v[k]["median_ns"].as_u64().unwrap_or(0);
        let p99 = v[k]["p99_ns"].as_u64().unwrap_or(0);
        assert!(median > 0 && p99 >= median, "{k}: {v}");
    }
    assert!(v["idle_waiter_cpu_percent"].as_f64().is_some(), "{v}");
    // A usage error, refused by the count's parser like every other count (status 2).
    let o = mman(&["bench", "ipc", "--rounds", "0"]);
    assert_eq!(o.status.code(), Some(2));
}

/// Garbage a peer writes into the table's meal counters may cost the dinner its fairness,
/// never its end: here zeros over both counters for two seconds while two fair philosophers
/// eat a fixed number of meals. A philosopher napping until the hungriest catches up must not
/// nap forever on a counter nobody will raise again (its own, while it naps; or a finished
/// philosopher's): with `--meals` there is no stop flag to end the naps.
#[test]
fn scribbled_meal_counters_never_hang_a_fair_dinner_of_fixed_meals() {
    const N: usize = 2;
    const MEALS: u64 = 300_000;
    // The table's layout (philosophers.rs): 64 bytes of header, N forks of 64 bytes, then
    // N meal counters of 64 bytes each.
    const SIZE: u64 = 64 + 2 * 64 * N as u64;
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let dinner = Command::new(env!("CARGO_BIN_EXE_mman"))
        .args([
            "philosophers",
            "-n",
            &N.to_string(),
            "--meals",
            &MEALS.to_string(),
            "--file",
        ])
        .arg(&table)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Map the table once it has its size and mark (it is not truncated after that).
    let t0 = Instant::now();
    while !std::fs::read(&table)
        .is_ok_and(|b| b.len() as u64 == SIZE && b.get(8..16) == Some(&b"MMANPHIL"[..]))
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "no table");
        std::thread::sleep(Duration::from_micros(200));
    }
    let map = mman::MapOptions::new()
        .read_write()
        .shared()
        .len(SIZE as usize)
        .map_path(&table)
        .unwrap();
    let counters: Vec<&std::sync::atomic::AtomicU64> = (0..N)
        .map(|i| map.atomic_u64(64 + 64 * N + 64 * i).unwrap())
        .collect();
    let scribbling = Instant::now();
    while scribbling.elapsed() < Duration::from_secs(2) {
        for c in &counters {
            c.store(0, std::sync::atomic::Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_micros(20));
    }
    // The peer is gone; the dinner (well under a second undisturbed) must end. It ends as a
    // dinner does; the meals it prints are the counters, which the peer may have zeroed
    // after a philosopher finished, so only their number is checked.
    let o = ends_within_a_minute(dinner, "its meal counters were scribbled on");
    let out = stdout(&o);
    let lines = out.lines().filter(|l| l.trim_start().starts_with("philosopher "));
    assert_eq!(lines.count(), N, "{out}");
}

// ---------------------------------------------------------------------------------------
// The fair dinner's scheduling beside load (issue 25): SCHED_BATCH only while the table has
// its CPUs to itself.

/// CPU-bound processes (`sh` spinning), killed and reaped when dropped.
struct Spinners(Vec<std::process::Child>);

impl Spinners {
    /// One spinner for each CPU this process may use.
    fn on_every_cpu() -> Spinners {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let spin = || {
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .unwrap()
        };
        Spinners((0..cpus).map(|_| spin()).collect())
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The scheduling policy of `pid` (field 41 of /proc/PID/stat): 0 SCHED_OTHER, 3 SCHED_BATCH.
fn policy(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(41 - 3)?.parse().ok()
}

/// Start a fair dinner of `n` on a table in `dir`; return it once every philosopher has
/// eaten (so has looked at the table's load word at least once), with the table mapped.
fn dinner_under_way(dir: &std::path::Path, n: usize, extra: &[&str]) -> (std::process::Child, mman::Mapping) {
    let size = 64 + 2 * 64 * n;
    let table = dir.join("table");
    let dinner = Command::new(env!("CARGO_BIN_EXE_mman"))
        .args(["philosophers", "-n", &n.to_string(), "--file"])
        .arg(&table)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !std::fs::read(&table).is_ok_and(|b| b.len() == size && b.get(8..16) == Some(&b"MMANPHIL"[..])) {
        assert!(t0.elapsed() < Duration::from_secs(10), "no table");
        std::thread::sleep(Duration::from_micros(200));
    }
    let map = mman::MapOptions::new()
        .read_write()
        .shared()
        .len(size)
        .map_path(&table)
        .unwrap();
    let ate = |i: usize| {
        map.atomic_u64(64 + 64 * n + 64 * i)
            .unwrap()
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    while !(0..n).all(|i| ate(i) > 0) {
        assert!(t0.elapsed() < Duration::from_secs(20), "the dinner did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    (dinner, map)
}

/// Beside CPU-bound processes on every CPU, the fair philosophers run the default policy:
/// as SCHED_BATCH tasks (as they always did before), a napper that woke waited out the
/// spinners' time slices, and the dinner served 0.02-0.2x glibc `sem_t`'s meals/s.
#[test]
fn beside_cpu_bound_load_the_fair_philosophers_leave_sched_batch() {
    let spinners = Spinners::on_every_cpu();
    std::thread::sleep(Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let (dinner, _map) = dinner_under_way(dir.path(), 3, &["--seconds", "2"]);
    let policies: Vec<(u32, Option<u32>)> = children_of(dinner.id())
        .into_iter()
        .map(|k| (k, policy(k)))
        .collect();
    drop(spinners);
    let o = dinner.wait_with_output().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(policies.len(), 3, "{policies:?}");
    assert!(
        policies.iter().all(|p| p.1 == Some(0)),
        "pid, policy (0 SCHED_OTHER, 3 SCHED_BATCH): {policies:?}"
    );
}

/// Load that comes in the middle of a dinner is seen too: CPU-bound processes started once
/// the philosophers are eating make them leave SCHED_BATCH within a few of the parent's
/// half-second windows.
#[test]
fn load_that_comes_mid_dinner_makes_the_fair_philosophers_leave_sched_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (dinner, _map) = dinner_under_way(dir.path(), 3, &["--seconds", "6"]);
    let spinners = Spinners::on_every_cpu();
    let kids = children_of(dinner.id());
    let seen = Instant::now();
    let mut policies: Vec<Option<u32>> = kids.iter().map(|&k| policy(k)).collect();
    while !policies.iter().all(|p| *p == Some(0)) && seen.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(50));
        policies = kids.iter().map(|&k| policy(k)).collect();
    }
    drop(spinners);
    let o = dinner.wait_with_output().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(kids.len(), 3, "{kids:?}");
    assert!(
        policies.iter().all(|p| *p == Some(0)),
        "policies (0 SCHED_OTHER, 3 SCHED_BATCH) 4 s after the load came: {policies:?}"
    );
}

/// Garbage a peer writes into the table's load word changes how the philosophers are
/// scheduled, never whether the dinner ends or who eats what: here the word flips between
/// values for a second while two fair philosophers eat a fixed number of meals.
#[test]
fn garbage_in_the_load_word_never_hangs_a_fair_dinner() {
    const MEALS: u64 = 300_000;
    let dir = tempfile::tempdir().unwrap();
    let (mut dinner, map) = dinner_under_way(dir.path(), 2, &["--meals", &MEALS.to_string()]);
    let word = map.atomic_u64(48).unwrap();
    let scribbling = Instant::now();
    let mut k = 0u64;
    while scribbling.elapsed() < Duration::from_secs(1) && dinner.try_wait().unwrap().is_none() {
        let garbage = [0, 1, u64::MAX, 0x5555_5555_5555_5555][(k % 4) as usize];
        word.store(garbage, std::sync::atomic::Ordering::Relaxed);
        k += 1;
        std::thread::sleep(Duration::from_micros(20));
    }
    let o = ends_within_a_minute(dinner, "its load word was scribbled on");
    let out = stdout(&o);
    assert!(
        out.contains(&format!("fairness min/max {MEALS}/{MEALS}")),
        "{out}"
    );
}

/// Wait for `dinner` to end (a minute at most: then it is killed and the test fails, saying
/// `after`); its output, after checking that it succeeded.
fn ends_within_a_minute(mut dinner: std::process::Child, after: &str) -> std::process::Output {
    let ended = Instant::now();
    while dinner.try_wait().unwrap().is_none() {
        if ended.elapsed() > Duration::from_secs(60) {
            let _ = dinner.kill(); // its philosophers die with it (PR_SET_PDEATHSIG)
            let _ = dinner.wait();
            panic!("the dinner never ended after {after}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = dinner.wait_with_output().unwrap();
    assert!(o.status.success(), "{o:?}");
    o
}
