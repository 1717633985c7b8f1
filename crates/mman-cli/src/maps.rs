//! `mman maps`: a process's mappings with their memory figures (pmap -x / -X), over the
//! library's `mman::maps`.

use std::io::Write;

use anyhow::Result;
use clap::{Args, ValueEnum};
use mman::maps::{self, Kind, Region, Usage};

// Arguments of `mman maps` (a plain comment: as a doc comment it would replace the
// subcommand's about text, the arguments being added last, see `Command` in main.rs).
#[derive(Args, Debug)]
pub struct MapsArgs {
    /// The process (default: mman itself).
    #[arg(value_parser = crate::args::pid)]
    pid: Option<u32>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Largest first by this figure (default: address order).
    #[arg(long, value_enum)]
    sort: Option<SortKey>,
    /// Only mappings whose name (path, or `[heap]`, `[stack]`, `[anon]`...) matches GLOB or equals it.
    #[arg(
        long,
        value_name = "GLOB",
        value_parser = crate::args::glob,
        help = "Only mappings whose name (path, or [heap], [stack], [anon]...) matches GLOB or equals it"
    )]
    filter: Option<globset::Glob>,
    /// Every smaps figure, as pmap -X prints them.
    #[arg(short = 'X', long)]
    extended: bool,
}

/// What `--sort` orders by.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum SortKey {
    Rss,
    Size,
    Dirty,
    Swap,
    Pss,
}

/// `mman maps`.
pub fn run(args: MapsArgs) -> Result<()> {
    let m = maps::read(args.pid)?;
    let mut regions: Vec<&Region> = m.regions.iter().collect();
    if let Some(glob) = &args.filter {
        let pat = glob.glob();
        let glob = glob.compile_matcher();
        regions.retain(|r| {
            let name = r.kind.to_string();
            name == pat || glob.is_match(&name)
        });
    }
    if let Some(key) = args.sort {
        let f = |u: &Usage| match key {
            SortKey::Rss => u.rss,
            SortKey::Size => u.size,
            SortKey::Dirty => u.dirty(),
            SortKey::Swap => u.swap,
            SortKey::Pss => u.pss,
        };
        regions.sort_by(|a, b| f(&b.usage).cmp(&f(&a.usage)).then(a.start.cmp(&b.start)));
    }
    let total: Usage = regions.iter().map(|r| &r.usage).sum();
    let pid = args.pid.unwrap_or_else(std::process::id);
    let mut out = crate::out::stdout();
    if args.json {
        let mappings: Vec<_> = regions.iter().map(|r| json_region(r)).collect();
        let v = serde_json::json!({
            "pid": pid,
            "mappings": mappings,
            "total": {
                "size_kib": total.size, "rss_kib": total.rss, "pss_kib": total.pss,
                "dirty_kib": total.dirty(), "swap_kib": total.swap, "locked_kib": total.locked,
            },
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .trim_end_matches('\0')
                .replace('\0', " ")
        })
        .unwrap_or_default();
    writeln!(out, "{pid}:   {cmd}")?;
    if args.extended {
        writeln!(
            out,
            "{:>16} {:4} {:>8} {:>6} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>3} Mapping",
            "Address", "Perm", "Offset", "Device", "Inode", "Size", "Rss", "Pss", "PssDrty", "Refd", "Anon",
            "AnonHP", "Swap", "SwapPss", "Locked", "LazyFr", "THP"
        )?;
        for r in &regions {
            let u = &r.usage;
            writeln!(
                out,
                "{:>16x} {} {:08x} {:>3x}:{:02x} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>3} {}",
                r.start, r.perms, r.offset, r.device.0, r.device.1, r.inode, u.size, u.rss, u.pss, u.pss_dirty,
                u.referenced, u.anonymous, u.anon_huge_pages, u.swap, u.swap_pss, u.locked, u.lazy_free,
                r.thp_eligible.map_or("-", |t| if t { "1" } else { "0" }),
                crate::out::name_safe(&r.kind.to_string())
            )?;
        }
    } else {
        writeln!(
            out,
            "{:<16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} Mode Mapping",
            "Address", "Kbytes", "RSS", "PSS", "Dirty", "Swap", "Locked"
        )?;
        for r in &regions {
            let u = &r.usage;
            writeln!(
                out,
                "{:016x} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {} {}",
                r.start,
                u.size,
                u.rss,
                u.pss,
                u.dirty(),
                u.swap,
                u.locked,
                r.perms,
                // A mapped file's name is whoever made it's: shown terminal-safe.
                crate::out::name_safe(&r.kind.to_string())
            )?;
        }
    }
    writeln!(
        out,
        "---------------- -------- -------- -------- -------- -------- --------"
    )?;
    writeln!(
        out,
        "total kB         {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}   ({} mappings)",
        total.size,
        total.rss,
        total.pss,
        total.dirty(),
        total.swap,
        total.locked,
        regions.len()
    )?;
    Ok(())
}

fn json_region(r: &Region) -> serde_json::Value {
    let (kind, path, deleted) = match &r.kind {
        Kind::File { path, deleted } => ("file", Some(path.display().to_string()), *deleted),
        Kind::Heap => ("heap", None, false),
        Kind::Stack => ("stack", None, false),
        Kind::Vdso => ("vdso", None, false),
        Kind::Vvar => ("vvar", None, false),
        Kind::Vsyscall => ("vsyscall", None, false),
        Kind::Anonymous => ("anon", None, false),
        Kind::Other(_) => ("other", None, false),
    };
    let u = &r.usage;
    serde_json::json!({
        "start": format!("{:#x}", r.start),
        "end": format!("{:#x}", r.end),
        "perms": r.perms.to_string(),
        "offset": r.offset,
        "device": format!("{:02x}:{:02x}", r.device.0, r.device.1),
        "inode": r.inode,
        "kind": kind,
        "name": r.kind.to_string(),
        "path": path,
        "deleted": deleted,
        "size_kib": u.size,
        "rss_kib": u.rss,
        "pss_kib": u.pss,
        "pss_dirty_kib": u.pss_dirty,
        "shared_clean_kib": u.shared_clean,
        "shared_dirty_kib": u.shared_dirty,
        "private_clean_kib": u.private_clean,
        "private_dirty_kib": u.private_dirty,
        "dirty_kib": u.dirty(),
        "referenced_kib": u.referenced,
        "anonymous_kib": u.anonymous,
        "anon_huge_pages_kib": u.anon_huge_pages,
        "swap_kib": u.swap,
        "swap_pss_kib": u.swap_pss,
        "locked_kib": u.locked,
        "thp_eligible": r.thp_eligible,
        "vm_flags": r.vm_flags,
    })
}
