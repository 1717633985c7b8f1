//! The tour, the README's main job: runs to the end, shows every section with real numbers,
//! and leaves nothing behind.

use std::process::Command;

#[test]
fn the_tour_runs_every_section_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mman"))
        .arg("tour")
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in 1..=14 {
        assert!(
            text.contains(&format!("\n== {n}. ")),
            "section {n} missing:\n{text}"
        );
    }
    assert!(text.contains("0 1 2 3 4 5 6 7 8 9"), "{text}");
    assert!(text.contains("0 0 0 0 0 0 0 0 0 0"), "{text}");
    assert!(text.contains("killed by signal 11 (SIGSEGV)"), "{text}");
    assert!(text.contains("file shrank from 65536 to 4096 bytes"), "{text}");
    assert!(text.contains("(upper guard)"), "{text}");
    assert!(text.contains("splice() from the page cache"), "{text}");
    assert!(
        text.contains("read: \"written by one process, read by the next\""),
        "{text}"
    );
    assert!(text.contains("later it reads 100100"), "{text}");
    assert!(text.contains("2048/2048 pages resident"), "{text}");
    assert!(text.contains("0/2048 pages resident"), "{text}");
    assert!(text.contains("512/2048 pages resident"), "{text}");
    assert!(text.contains("read 1536 missing pages"), "{text}");
    assert!(text.contains("the file, mapped just now"), "{text}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "the tour left files behind: {left:?}");
}

#[test]
fn one_section_and_a_bad_section_number() {
    let out = Command::new(env!("CARGO_BIN_EXE_mman"))
        .args(["tour", "--section", "2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("== 2. MAP_PRIVATE") && !text.contains("== 1. "),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_mman"))
        .args(["tour", "--section", "99"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no section 99"));
    assert!(out.stdout.is_empty());
}
