//! Unit tests of `maps`: parsing synthetic and live mappings.

use super::*;

const SAMPLE: &str = "\
55f33f99d000-55f33f99f000 r--p 00000000 fe:00 247282                     /usr/bin/my prog
Size:                  8 kB
Rss:                   8 kB
Pss:                   4 kB
Shared_Dirty:          0 kB
Private_Dirty:         4 kB
Swap:                  0 kB
Locked:                0 kB
SomeFutureField:       3 kB
THPeligible:           0
VmFlags: rd mr mw me
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
Size:                132 kB
Rss:                  12 kB
Shared_Dirty:          1 kB
Private_Dirty:         8 kB
Swap:                 16 kB
Locked:               12 kB
THPeligible:           1
VmFlags: rd wr mr mw me lo ac
7f0000100000-7f0000101000 rw-s 00000000 00:01 1234                       /memfd:ring (deleted)
Size:                  4 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
Size:                  4 kB
";

#[test]
fn parses_synthetic_smaps() {
    let r = parse(SAMPLE).unwrap();
    assert_eq!(r.len(), 5);
    assert_eq!(r[0].start, 0x55f33f99d000);
    assert_eq!(
        r[0].kind,
        Kind::File {
            path: "/usr/bin/my prog".into(),
            deleted: false
        }
    );
    assert_eq!(r[0].inode, 247282);
    assert_eq!(r[0].device, (0xfe, 0));
    assert_eq!(r[0].usage.pss, 4);
    assert_eq!(r[0].thp_eligible, Some(false));
    assert_eq!(r[1].kind, Kind::Anonymous);
    assert!(r[1].perms.write && !r[1].perms.shared);
    assert_eq!(r[1].usage.dirty(), 9);
    assert_eq!(r[1].usage.locked, 12);
    assert!(r[1].vm_flags.iter().any(|f| f == "lo"));
    assert_eq!(
        r[2].kind,
        Kind::File {
            path: "/memfd:ring".into(),
            deleted: true
        }
    );
    assert!(r[2].perms.shared);
    assert_eq!(r[3].kind, Kind::Stack);
    assert_eq!(r[4].kind, Kind::Vsyscall);
    assert_eq!(r[4].perms.to_string(), "--xp");
    let t = ProcessMaps {
        pid: None,
        regions: r,
    }
    .total();
    assert_eq!(
        (t.size, t.rss, t.swap, t.locked),
        (8 + 132 + 4 + 132 + 4, 20, 16, 12)
    );
}

/// `parse` takes any text (a file from another machine, a test's): figures at the top
/// of the range add up without overflowing (a panic in a debug build, a wrapped
/// nonsense total in a release one).
#[test]
fn huge_figures_saturate_instead_of_overflowing() {
    let text = "\
1000-2000 rw-p 00000000 00:00 0
Rss: 18446744073709551615 kB
Shared_Dirty: 18446744073709551615 kB
Private_Dirty: 1 kB
2000-3000 rw-p 00000000 00:00 0
Rss: 18446744073709551615 kB
";
    let maps = ProcessMaps {
        pid: None,
        regions: parse(text).unwrap(),
    };
    let t = maps.total();
    assert_eq!(t.rss, u64::MAX);
    assert_eq!(maps.regions[0].usage.dirty(), u64::MAX);
}

/// Only a newline ends a line of `maps`: a file name may end in a carriage return,
/// which the kernel prints as is.
#[test]
fn a_name_ending_in_a_carriage_return_keeps_it() {
    let r = parse("1000-2000 r--p 00000000 fe:00 12 /tmp/odd\r\nSize: 4 kB\r\n").unwrap();
    assert_eq!(
        r[0].kind,
        Kind::File {
            path: "/tmp/odd\r".into(),
            deleted: false
        }
    );
}

/// A mapped file whose name holds a newline and bytes that are not UTF-8 is found
/// under its exact name in this process's own mappings (the kernel writes the newline
/// as `\012`; a lossy conversion would have replaced the other bytes).
#[test]
fn a_mapped_file_is_found_under_its_exact_name() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"odd\nname \xff\xfe (deleted)");
    let path = dir.path().join(name);
    std::fs::write(&path, [1u8; 4096]).unwrap();
    let map = crate::MapOptions::new().map_path(&path).unwrap();
    let at = map.as_ptr() as u64;
    let me = read(None).unwrap();
    let r = me.regions.iter().find(|r| r.start <= at && at < r.end).unwrap();
    assert_eq!(
        r.kind,
        Kind::File {
            path: path.clone(),
            deleted: false
        }
    );
    drop(map);
    // The same bytes through `parse_bytes`, deleted this time.
    let mut line = b"1000-2000 r--s 00000000 fe:00 12 /d/a\\012b\xff (deleted)\n".to_vec();
    line.extend_from_slice(b"Size: 4 kB\n");
    let r = parse_bytes(&line).unwrap();
    assert_eq!(
        r[0].kind,
        Kind::File {
            path: std::ffi::OsStr::from_bytes(b"/d/a\nb\xff").into(),
            deleted: true
        }
    );
}

/// The kernel writes a newline in a name as `\012` but leaves a backslash as it is, so a
/// file really named with the four characters `\012` reads like one with a newline. As
/// with ` (deleted)`, `read` asks the file system: the name found with the mapping's device
/// and inode is the one reported, also when the file is named both ways in one directory.
#[test]
fn a_name_really_holding_backslash_012_is_kept_as_it_is() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let literal = dir.path().join(std::ffi::OsStr::from_bytes(b"a\\012b"));
    let newline = dir.path().join(std::ffi::OsStr::from_bytes(b"a\nb"));
    std::fs::write(&literal, [1u8; 4096]).unwrap();
    let find = |path: &std::path::Path| {
        let map = crate::MapOptions::new().map_path(path).unwrap();
        let at = map.as_ptr() as u64;
        let me = read(None).unwrap();
        me.regions
            .iter()
            .find(|r| r.start <= at && at < r.end)
            .unwrap()
            .kind
            .clone()
    };
    let want = |path: &std::path::Path| Kind::File {
        path: path.to_path_buf(),
        deleted: false,
    };
    assert_eq!(find(&literal), want(&literal), "only the literal name exists");
    std::fs::write(&newline, [2u8; 4096]).unwrap();
    assert_eq!(find(&literal), want(&literal), "both names exist");
    assert_eq!(find(&newline), want(&newline), "both names exist");
}

#[test]
fn rejects_garbage_with_the_line() {
    let e = parse("hello world\n").unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
    let e = parse("Size: 4 kB\n").unwrap_err();
    assert!(e.to_string().contains("before any mapping"), "{e}");
}

/// A field line with leading blanks and a multi-byte key panicked ("not a char boundary")
/// when the line was cut at the key's length counted from the line's start.
#[test]
fn a_field_with_leading_blanks_and_a_multibyte_key_does_not_panic() {
    let text = "7f0000000000-7f0000001000 rw-p 00000000 00:00 0\n  é: 4 kB\n \u{1F600}x: 1\n";
    let regions = parse(text).unwrap();
    assert_eq!(regions.len(), 1);
    // Fields after blanks are still fields (kernels write none, but they parse).
    let text = "7f0000000000-7f0000001000 rw-p 00000000 00:00 0\n   Rss:   8 kB\n";
    assert_eq!(parse(text).unwrap()[0].usage.rss, 8);
}

mod no_panic {
    use proptest::prelude::*;

    /// Lines made of what the parser looks for (numbers, colons, dashes, blanks, multi-byte
    /// characters, field names): arbitrary bytes rarely reach past the first check.
    fn line() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just(" ".to_string()),
                Just("\t".to_string()),
                Just(":".to_string()),
                Just("-".to_string()),
                Just("é".to_string()),
                Just("\u{1F600}".to_string()),
                Just("kB".to_string()),
                Just("Rss:".to_string()),
                Just("VmFlags:".to_string()),
                Just("THPeligible:".to_string()),
                Just("7f0000000000-7f0000001000 rw-p 00000000 00:00 0".to_string()),
                Just("\\012".to_string()),
                Just(" (deleted)".to_string()),
                "[0-9a-f]{1,17}",
                "\\PC{0,4}",
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Any bytes: an error or regions, never a panic.
        #[test]
        fn parse_bytes_never_panics(text in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = super::parse_bytes(&text);
        }

        /// Text shaped like the kernel's, after a mapping line (so that field lines are
        /// parsed, not refused): an error or regions, never a panic.
        #[test]
        fn parse_never_panics(lines in proptest::collection::vec(line(), 0..12)) {
            let text = format!("7f0000000000-7f0000001000 rw-p 00000000 00:00 0\n{}", lines.join("\n"));
            let _ = super::parse(&text);
        }
    }
}
