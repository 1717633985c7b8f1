//! Page-cache residency: status, touch, evict and lock on generated files, cachestat against
//! mincore, tree walks with links, loops, vanished files; and /proc/PID/smaps parsing of this
//! very process.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mman::cache::{self, CachedFile, DirtyPages, PageRange, Source, Visit, WalkOptions};
use mman::{ErrorKind, MapOptions};

const PS: u64 = 4096;

/// Tests that lock memory run one at a time: VmLck is one figure for the whole process.
static MLOCKS: Mutex<()> = Mutex::new(());

fn write_file(path: &Path, len: usize) {
    let mut f = File::create(path).unwrap();
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
}

/// A new file of `len` bytes, written back and evicted: none of it in the page cache.
fn cold_file(name: &str, len: usize) -> (tempfile::TempDir, PathBuf, CachedFile) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    write_file(&p, len);
    let f = CachedFile::open(&p).unwrap();
    f.evict(PageRange::ALL, DirtyPages::WriteBackFirst).unwrap();
    (dir, p, f)
}

fn resident(f: &CachedFile) -> u64 {
    f.status(PageRange::ALL)
        .unwrap()
        .resident
        .expect("known residency")
}

#[test]
fn evict_then_touch_every_size() {
    assert_eq!(mman::page_size() as u64, PS, "these tests assume 4 KiB pages");
    let dir = tempfile::tempdir().unwrap();
    for len in [0usize, 1, 4096, 4097, 10 << 20] {
        let p = dir.path().join(format!("f{len}"));
        write_file(&p, len);
        let f = CachedFile::open(&p).unwrap();
        let pages = (len as u64).div_ceil(PS);
        assert_eq!(f.pages(), pages);
        let ev = f.evict(PageRange::ALL, DirtyPages::WriteBackFirst).unwrap();
        assert_eq!(ev.after.resident, Some(0), "len {len}: {ev:?}");
        assert_eq!(ev.after.pages, pages);
        let t = f.touch(PageRange::ALL).unwrap();
        assert_eq!(t.touched, pages, "len {len}");
        assert_eq!(t.resident_after(), Some(pages), "len {len}");
        assert_eq!(resident(&f), pages, "len {len}");
        // Touching again reads nothing: everything is there.
        assert_eq!(f.touch(PageRange::ALL).unwrap().touched, 0);
        assert_eq!(
            f.evict(PageRange::ALL, DirtyPages::Stay).unwrap().evicted(),
            Some(pages)
        );
    }
}

#[test]
fn touch_reads_exactly_the_range_and_only_what_is_missing() {
    let (_dir, _, f) = cold_file("big", 8 << 20);
    let range = PageRange::bytes(1 << 20, Some(2 << 20));
    assert_eq!(
        range,
        PageRange {
            first: 256,
            end: Some(512)
        }
    );
    let t = f.touch(range).unwrap();
    assert_eq!((t.pages, t.touched), (256, 256));
    // No read-ahead past the range: exactly those pages are resident.
    assert_eq!(resident(&f), 256);
    let map = f.page_map(PageRange::ALL).unwrap().unwrap();
    assert!(map[256..512].iter().all(|&b| b == 1));
    assert!(map[..256].iter().chain(&map[512..]).all(|&b| b == 0));
    // A wider touch reads only the missing part.
    let t = f
        .touch(PageRange {
            first: 0,
            end: Some(1024),
        })
        .unwrap();
    assert_eq!(t.touched, 1024 - 256);
}

#[test]
fn cachestat_agrees_with_mincore() {
    let (_dir, _, f) = cold_file("mixed", 4 << 20);
    for first in [3u64, 100, 700, 1000] {
        f.touch(PageRange {
            first,
            end: Some(first + 17),
        })
        .unwrap();
    }
    let st = f.status(PageRange::ALL).unwrap();
    assert_eq!(st.source, Source::Cachestat, "this kernel has cachestat (6.5+)");
    let map = f.page_map(PageRange::ALL).unwrap().unwrap();
    let by_mincore = map.iter().filter(|&&b| b == 1).count() as u64;
    assert_eq!(st.resident, Some(by_mincore));
    assert_eq!(by_mincore, 4 * 17);
    // And in sub-ranges, bucket by bucket.
    let buckets = f.buckets(PageRange::ALL, 8).unwrap().unwrap();
    assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 1024);
    assert_eq!(buckets.iter().map(|b| b.0).sum::<u64>(), by_mincore);
}

#[test]
fn sparse_files_touch_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("sparse");
    let f = File::create(&p).unwrap();
    f.set_len(6 << 20).unwrap();
    drop(f);
    let f = CachedFile::open(&p).unwrap();
    assert_eq!(f.pages(), 1536);
    let t = f.touch(PageRange::ALL).unwrap();
    assert_eq!(t.resident_after(), Some(1536));
    assert_eq!(
        f.evict(PageRange::ALL, DirtyPages::Stay).unwrap().after.resident,
        Some(0)
    );
}

#[test]
fn evict_reports_pages_that_stay_mapped_and_locked() {
    let _serial = MLOCKS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("held");
    write_file(&p, 64 * PS as usize);
    let map = MapOptions::new().map_path(&p).unwrap();
    map.lock(..).unwrap();
    let f = CachedFile::open(&p).unwrap();
    let ev = f.evict(PageRange::ALL, DirtyPages::Stay).unwrap();
    assert_eq!(
        ev.after.resident,
        Some(64),
        "locked pages cannot be evicted: {ev:?}"
    );
    assert_eq!(ev.evicted(), Some(0));
    drop(map);
    assert_eq!(
        f.evict(PageRange::ALL, DirtyPages::Stay).unwrap().after.resident,
        Some(0)
    );
}

#[test]
fn a_file_truncated_before_touch_is_an_error_not_sigbus() {
    let (_dir, p, f) = cold_file("shrinks", 1 << 20);
    File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let e = f.touch(PageRange::ALL).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Truncated, "{e}");
    assert_eq!(e.truncation(), Some((1 << 20, 4096)));
    assert!(e.to_string().contains("shrinks"), "{e}");
}

fn vm_locked_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
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
fn lock_holds_every_page_until_dropped() {
    let _serial = MLOCKS.lock().unwrap_or_else(|e| e.into_inner());
    let (_dir, _, f) = cold_file("locked", 2 << 20);
    let before = vm_locked_kib();
    let l = f.lock(PageRange::ALL).unwrap();
    assert_eq!(l.pages(), 512);
    assert_eq!(vm_locked_kib() - before, 2048);
    assert_eq!(resident(&f), 512, "locked pages were faulted in");
    assert_eq!(
        f.evict(PageRange::ALL, DirtyPages::Stay).unwrap().after.resident,
        Some(512)
    );
    drop(l);
    assert_eq!(vm_locked_kib(), before);
}

#[test]
fn lock_limits_name_the_need_and_the_fix() {
    let (soft, _) = mman::memlock_limit();
    let e = cache::check_lock_limits(u64::MAX / 2, 1);
    let caps = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = caps
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    if let (0, Some(soft)) = (cap_eff & (1 << 14), soft) {
        let e = e.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceLimit);
        assert!(
            e.to_string().contains("RLIMIT_MEMLOCK") && e.to_string().contains("ulimit -l"),
            "{e}"
        );
        let exact = format!(
            "locking needs {} bytes but RLIMIT_MEMLOCK allows {} bytes",
            u64::MAX / 2,
            soft
        );
        assert!(e.to_string().contains(&exact), "{e}");
    } else {
        e.unwrap();
    }
    let e = cache::check_lock_limits(0, 1 << 40).unwrap_err();
    assert!(e.to_string().contains("vm.max_map_count"), "{e}");
}

fn collect(roots: &[PathBuf], opts: &WalkOptions) -> (cache::WalkTotals, Vec<PathBuf>, Vec<String>) {
    let files = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let t = cache::walk(roots, opts, &|v| match v {
        Visit::File(f) => files.lock().unwrap().push(f.path().to_path_buf()),
        Visit::Skipped(e) => errors.lock().unwrap().push(e.to_string()),
    });
    let mut files = files.into_inner().unwrap();
    files.sort();
    (t, files, errors.into_inner().unwrap())
}

#[test]
fn walk_counts_hard_links_once_and_survives_symlink_loops() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    write_file(&root.join("a/x"), 10);
    write_file(&root.join("a/b/c/y"), 5000);
    std::fs::hard_link(root.join("a/x"), root.join("a/b/x2")).unwrap();
    std::os::unix::fs::symlink("../..", root.join("a/b/c/up")).unwrap();
    std::os::unix::fs::symlink("x", root.join("a/xlink")).unwrap();
    std::fs::create_dir(root.join("empty")).unwrap();
    let roots = vec![root.to_path_buf()];
    let (t, files, errors) = collect(&roots, &WalkOptions::default());
    assert_eq!(
        (t.files, t.directories, t.skipped),
        (2, 5, 0),
        "{files:?} {errors:?}"
    );
    // Following links: the loop is reported and the walk ends.
    let opts = WalkOptions {
        follow_symlinks: true,
        ..WalkOptions::default()
    };
    let (t, files, errors) = collect(&roots, &opts);
    assert_eq!(t.files, 2, "{files:?}");
    assert!(errors.iter().any(|e| e.contains("second time")), "{errors:?}");
    // An empty directory.
    let (t, files, _) = collect(&[root.join("empty")], &WalkOptions::default());
    assert_eq!((t.files, t.directories), (0, 1));
    assert!(files.is_empty());
    // Filters and size limits.
    let opts = WalkOptions {
        max_size: Some(100),
        filter: Some(Box::new(|p: &Path, is_dir| is_dir || p.extension().is_none())),
        ..WalkOptions::default()
    };
    let (t, files, _) = collect(&roots, &opts);
    assert_eq!(t.files, 1, "{files:?}");
    // A path that does not exist is reported, not fatal.
    let (t, _, errors) = collect(&[root.join("missing"), root.join("a/x")], &WalkOptions::default());
    assert_eq!((t.files, t.skipped), (1, 1));
    assert!(
        errors[0].contains("missing") && errors[0].contains("os error 2"),
        "{errors:?}"
    );
}

#[test]
fn files_deleted_during_the_walk_are_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..20 {
        write_file(&dir.path().join(format!("f{i:02}")), 100);
    }
    let opts = WalkOptions {
        threads: 1,
        ..WalkOptions::default()
    };
    let seen = Mutex::new(0u32);
    let skipped = Mutex::new(Vec::new());
    let d = dir.path().to_path_buf();
    let t = cache::walk(std::slice::from_ref(&d), &opts, &|v| match v {
        Visit::File(f) => {
            let mut n = seen.lock().unwrap();
            if *n == 0 {
                // Delete every other file: those not yet visited vanish mid-walk.
                for i in 0..20 {
                    let p = d.join(format!("f{i:02}"));
                    if p != f.path() {
                        let _ = std::fs::remove_file(p);
                    }
                }
            }
            *n += 1;
        }
        Visit::Skipped(e) => skipped.lock().unwrap().push(e),
    });
    assert_eq!(t.files, 1);
    assert_eq!(t.skipped, 19);
    let skipped = skipped.into_inner().unwrap();
    assert!(
        skipped.iter().all(|e| e.kind() == ErrorKind::NotFound),
        "{skipped:?}"
    );
}

#[test]
fn maps_of_this_process_show_a_file_an_anonymous_and_a_locked_mapping() {
    let _serial = MLOCKS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mapped-file");
    write_file(&p, 3 * PS as usize);
    let file_map = MapOptions::new().map_path(&p).unwrap();
    let mut buf = [0u8; 1];
    file_map.read_at(0, &mut buf).unwrap();
    let mut anon = mman::ExclusiveMap::new(5 * PS as usize).unwrap();
    anon[0] = 1;
    let locked = mman::ExclusiveMap::new(2 * PS as usize).unwrap();
    locked.lock(..).unwrap();
    let me = mman::maps::read(None).unwrap();
    let find = |addr: usize| {
        me.regions
            .iter()
            .find(|r| r.start <= addr as u64 && (addr as u64) < r.end)
            .unwrap_or_else(|| panic!("no region holds {addr:#x}"))
    };
    let r = find(file_map.as_ptr() as usize);
    assert_eq!(
        r.kind,
        mman::maps::Kind::File {
            path: p.clone(),
            deleted: false
        }
    );
    assert_eq!(r.len(), 3 * PS);
    assert!(r.perms.read && !r.perms.write);
    assert!(r.usage.rss >= 4, "{r:?}");
    let r = find(anon.as_ptr() as usize);
    assert!(r.perms.read && r.perms.write && !r.perms.shared);
    assert!(r.usage.anonymous >= 4 && r.usage.private_dirty >= 4, "{r:?}");
    let r = find(locked.as_ptr() as usize);
    assert_eq!(r.usage.locked, 8, "{r:?}");
    assert!(r.vm_flags.iter().any(|f| f == "lo"), "{r:?}");
    let total = me.total();
    assert!(total.rss > 0 && total.size >= total.rss && total.locked >= 8);
}

#[test]
fn maps_of_a_missing_process_is_a_clear_error() {
    let e = mman::maps::read(Some(u32::MAX - 1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("no process"), "{e}");
}

mod common;

#[test]
fn child_measures_a_huge_sparse_file() {
    let Ok(path) = std::env::var("MMAN_SPARSE") else {
        return;
    };
    let f = CachedFile::open(&path).unwrap();
    // One byte a page of 2^44 pages: no such map can be allocated. An error, not an abort.
    let e = f.page_map(PageRange::ALL).expect_err("a 16 TiB residency map");
    assert_eq!(e.kind(), ErrorKind::ResourceLimit, "{e}");
    // Slices of it are measured without one map of the whole range.
    let b = f.buckets(PageRange::ALL, 4).unwrap().unwrap();
    assert_eq!(b.len(), 4);
    assert_eq!(b.iter().map(|s| s.1).sum::<u64>(), f.pages());
    assert!(b[0].0 >= 1, "the written page is resident: {b:?}");
    // A huge slice count gives as many slices as are asked (no more than pages), or an error.
    let _ = f.buckets(PageRange::bytes(0, Some(64 * PS)), usize::MAX).unwrap();
    let st = f.status(PageRange::ALL).unwrap();
    assert!(st.resident.unwrap() >= 1);
    // check_lock_limits takes any count of mappings.
    let _ = cache::check_lock_limits(0, u64::MAX);
    println!("MEASURED");
}

/// A sparse file of 2^56 bytes (tmpfs holds one without using any memory), one page of it
/// written: measuring it is an error or a figure, never an abort on a residency map of one
/// byte a page (16 TiB) that cannot be allocated.
#[test]
fn a_huge_sparse_file_is_measured_or_refused_never_aborts() {
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        return;
    };
    let path = dir.path().join("sparse");
    let f = File::create(&path).unwrap();
    if f.set_len(1 << 56).is_err() {
        return; // a tmpfs that refuses files this large
    }
    (&f).write_all(b"x").unwrap();
    let out = common::rerun("child_measures_a_huge_sparse_file", "sparse")
        .env("MMAN_SPARSE", &path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("MEASURED"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
