//! `mman persist` against the course notes' C program, and `mman counter` killed with
//! SIGKILL at random instants.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

fn mman() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mman"))
}

/// The notes' program: a page-aligned global made persistent with MAP_FIXED.
const SEED_C: &str = r#"
#include <assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#define PGSIZE 4096
char persistent_data[PGSIZE] __attribute__((aligned(PGSIZE)));
static void persist(const char *filename, void *variableaddr, size_t size) {
    int fd = open(filename, O_RDWR | O_CREAT, 0666);
    assert(fd != -1);
    assert(ftruncate(fd, size) == 0);
    void *addr = mmap(variableaddr, size, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_SHARED, fd, 0);
    assert(addr == variableaddr);
    assert(close(fd) == 0);
}
int main(int ac, char *av[]) {
    int i, do_read = ac < 2 || strcmp(av[1], "-read") == 0;
    persist(".persistent_data", persistent_data, sizeof(persistent_data));
    if (do_read) {
        for (i = 0; persistent_data[i] != 0 && i < PGSIZE; i++) fputc(persistent_data[i], stdout);
    } else {
        int c;
        for (i = 0; i < PGSIZE && (c = fgetc(stdin)) != -1; i++) persistent_data[i] = c;
        memset(persistent_data + i, 0, PGSIZE - i);
    }
    return 0;
}
"#;

fn run_with_stdin(mut cmd: Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn mman_persist_and_the_c_program_read_each_others_page() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("seed.c"), SEED_C).unwrap();
    let st = Command::new("cc")
        .args(["-O2", "-o", "seed", "seed.c"])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let seed = dir.path().join("seed");

    let mut w = Command::new(&seed);
    w.arg("-write").current_dir(dir.path());
    assert!(run_with_stdin(w, b"written by C").status.success());
    let out = mman().arg("persist").current_dir(dir.path()).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"written by C");

    let mut w = mman();
    w.args(["persist", "--write"]).current_dir(dir.path());
    assert!(run_with_stdin(w, b"and by mman").status.success());
    let out = Command::new(&seed)
        .arg("-read")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"and by mman");
    assert_eq!(
        std::fs::metadata(dir.path().join(".persistent_data"))
            .unwrap()
            .len(),
        4096
    );

    // More than a page of input is refused, and nothing is stored; exactly a page is kept.
    let big: Vec<u8> = (0..5000).map(|i| b'a' + (i % 26) as u8).collect();
    let mut w = mman();
    w.args(["persist", "--write", "--file", "other"])
        .current_dir(dir.path());
    assert_eq!(run_with_stdin(w, &big).status.code(), Some(1));
    assert!(!dir.path().join("other").exists());
    let mut w = mman();
    w.args(["persist", "--write", "--file", "other"])
        .current_dir(dir.path());
    assert!(run_with_stdin(w, &big[..4096]).status.success());
    let out = mman()
        .args(["persist", "--read", "--file", "other"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.stdout, &big[..4096]);
}

fn check(path: &std::path::Path) -> u64 {
    let out = mman()
        .args(["counter", "--check", "--file"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_counter_killed_at_random_instants_200_times_is_never_torn() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counter");
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut before = 0;
    for round in 0..200 {
        let mut child = mman()
            .args(["counter", "--add", "1000000000", "--verbose", "--file"])
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => last = l.trim().parse::<u64>().ok().or(last),
                    Err(_) => break,
                }
            }
            last
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % 20_000));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "round {round}");
        let printed = reader.join().unwrap();
        if !path.exists() {
            continue; // killed before the file was created: no file at all, never a half one
        }
        let now = check(&path);
        // The last commit it reported, or the one after it (committed, not yet printed).
        let floor = printed.unwrap_or(before);
        assert!(
            now == floor || now == floor + 1,
            "round {round}: count {now}, last printed {printed:?}"
        );
        assert!(now >= before, "round {round}: went back from {before} to {now}");
        before = now;
    }
    assert!(before > 0, "no transaction ever committed");
}

#[test]
fn corrupted_or_foreign_counters_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "random",
            (0..20000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        ("empty", Vec::new()),
        ("text", b"not a counter\n".to_vec()),
    ];
    for (name, content) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        let out = mman()
            .args(["counter", "--check", "--file"])
            .arg(&p)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("mman: counter --check"), "{name}: {err}");
        assert!(err.contains(p.to_str().unwrap()), "{name}: {err}");
    }
    let p = dir.path().join("c");
    assert!(mman()
        .args(["counter", "--add", "5", "--durable", "--file"])
        .arg(&p)
        .status()
        .unwrap()
        .success());
    assert_eq!(check(&p), 5);
    // Flip a byte of the newest copy's data: the checksum catches it, the previous copy wins.
    let mut bytes = std::fs::read(&p).unwrap();
    let (s0, s1) = (4096usize, 8192usize);
    let seq = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let newest = if seq(s1) > seq(s0) { s1 } else { s0 };
    bytes[newest + 16] ^= 0x40;
    std::fs::write(&p, &bytes).unwrap();
    assert_eq!(check(&p), 4);
}

#[test]
fn counter_files_are_0600_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "umask 000 && {} counter --add 1 --file c",
        env!("CARGO_BIN_EXE_mman")
    );
    let st = Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("c"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("mman-new"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

#[test]
fn concurrent_writers_exclude_each_other_and_readers_never_see_a_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared-counter");
    assert!(mman()
        .args(["counter", "--add", "1", "--file"])
        .arg(&path)
        .status()
        .unwrap()
        .success());
    let writers: Vec<_> = (0..2)
        .map(|_| {
            mman()
                .args(["counter", "--add", "500000", "--file"])
                .arg(&path)
                .spawn()
                .unwrap()
        })
        .collect();
    // Readers run while the writers commit: every read must verify (check value intact).
    let mut last = 0;
    for _ in 0..30 {
        let now = check(&path);
        assert!(now >= last, "the count went back from {last} to {now}");
        last = now;
    }
    for mut w in writers {
        assert!(w.wait().unwrap().success());
    }
    assert_eq!(check(&path), 1_000_001, "two writers' transactions all counted");
}
