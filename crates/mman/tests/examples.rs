//! The seed programs in `examples/` (built by `cargo test`) do what the course notes' C does.

use std::process::Command;

fn example(name: &str) -> Command {
    // target/<profile>/deps/examples-HASH -> target/<profile>/examples/NAME
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    Command::new(dir.join("examples").join(name))
}

#[test]
fn mmap_cat_prints_the_file_and_names_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31) as u8).collect();
    std::fs::write(&p, &data).unwrap();
    let out = example("mmap_cat").arg(&p).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, data);
    let out = example("mmap_cat")
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing: No such file"),
        "{out:?}"
    );
}

#[test]
fn share_shows_shared_and_private_memory() {
    let out = example("share").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Memory mapped at 0x"), "{text}");
    assert!(text.ends_with("0 1 2 3 4 5 6 7 8 9\n"), "{text}");
    let out = example("share").arg("-private").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("0 0 0 0 0 0 0 0 0 0\n"));
}
