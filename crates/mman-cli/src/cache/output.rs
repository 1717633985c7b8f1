//! What `mman cache` prints: a line (or two) a file, the summary of a walk as text or JSON,
//! and the progress spinner.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use mman::cache::{CachedFile, PageRange, WalkTotals};
use serde::Serialize;

use super::jobs::{Job, Sums};

/// One file as printed: a line (or two) of text, or an entry of the JSON output.
#[derive(Serialize, Default)]
pub(super) struct Entry {
    /// The path as text; a name that is not UTF-8 shows U+FFFD here, and its exact bytes in
    /// `path_bytes`.
    pub(super) path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) path_bytes: Option<Vec<u8>>,
    pub(super) size: u64,
    pub(super) pages: u64,
    pub(super) resident_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) unknown_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) dirty_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) writeback_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) evicted_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) recently_evicted_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) touched_pages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stayed_pages: Option<u64>,
    #[serde(skip)]
    pub(super) bar: Option<String>,
}

/// How the spinner may be drawn on this terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spinner {
    /// Not at all: `TERM=dumb` (or unset) cannot move the cursor back over it.
    None,
    /// In ASCII, for a locale whose characters are not UTF-8.
    Ascii,
    /// indicatif's own (Braille) frames.
    Unicode,
}

/// The spinner for a terminal of type `term` in a locale whose character set is named by
/// `ctype` (the first set of `LC_ALL`, `LC_CTYPE`, `LANG`; none is the C locale, ASCII).
fn spinner_for(term: Option<&str>, ctype: Option<&str>) -> Spinner {
    match term {
        None | Some("") | Some("dumb") => return Spinner::None,
        Some(_) => {}
    }
    let utf8 = ctype.is_some_and(|c| {
        let c = c.to_ascii_lowercase();
        c.contains("utf-8") || c.contains("utf8")
    });
    if utf8 {
        Spinner::Unicode
    } else {
        Spinner::Ascii
    }
}

/// The locale's character set, as the C library picks it: the first of `LC_ALL`,
/// `LC_CTYPE` and `LANG` that is set and not empty.
fn locale_ctype() -> Option<String> {
    ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.is_empty())
}

/// A spinner on standard error, when it is a terminal that can draw one and `enabled`.
pub(super) fn progress(enabled: bool) -> Option<indicatif::ProgressBar> {
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let term = std::env::var("TERM").ok();
    let style = indicatif::ProgressStyle::with_template("{spinner} {pos} files {msg} [{elapsed}]")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    let style = match spinner_for(term.as_deref(), locale_ctype().as_deref()) {
        Spinner::None => return None,
        Spinner::Ascii => style.tick_chars("|/-\\ "),
        Spinner::Unicode => style,
    };
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_style(style);
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(pb)
}

/// `mman: <error>` for a file skipped or failed, above the spinner if there is one.
pub(super) fn report_skip(e: &mman::Error, pb: Option<&indicatif::ProgressBar>) {
    // The library's hint names its option; on the command line that option is `-f`.
    let line = format!("mman: {e}").replace("(WalkOptions::follow_symlinks)", "(`-f`)");
    let line = crate::out::terminal_safe(&line).into_owned();
    match pb {
        Some(pb) => pb.println(line),
        None => crate::out::diagnostic(format_args!("{line}\n")),
    }
}

const BAR: usize = 60;

/// A size for people, as vmtouch prints them: `512`, `4K`, `1.5M`, `10G` (one decimal
/// below 10 units when it is not whole).
pub(super) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}")
    } else if v < 10.0 && v.fract() != 0.0 {
        format!("{v:.1}{}", UNITS[i])
    } else {
        format!("{v:.0}{}", UNITS[i])
    }
}

/// The residency of `range` as a bar of [`BAR`] cells: ' ' none, 'o' some, 'O' all.
pub(super) fn bar(f: &CachedFile, range: PageRange) -> Option<String> {
    let buckets = f.buckets(range, BAR).ok()??;
    let mut s = String::with_capacity(BAR + 2);
    s.push('[');
    for (r, n) in buckets {
        s.push(if n == 0 || r == 0 {
            ' '
        } else if r == n {
            'O'
        } else {
            'o'
        });
    }
    s.push(']');
    Some(s)
}

/// The summary of a status, touch or evict walk, on standard output: totals, and with
/// `verbose` and `json` the entries too (as text, [`print_entry`] printed them as it went).
pub(super) fn summary(
    job: Job,
    totals: &WalkTotals,
    s: &Sums,
    elapsed: f64,
    json: bool,
    verbose: bool,
) -> Result<()> {
    let ps = mman::page_size() as u64;
    let mut out = crate::out::stdout();
    if json {
        let mut v = serde_json::json!({
            "files": totals.files,
            "directories": totals.directories,
            "resident_pages": s.resident,
            "total_pages": s.pages,
            "page_size": ps,
            "elapsed_s": elapsed,
            "unknown_files": s.unknown_files,
            "unknown_pages": s.unknown_pages,
            "skipped": totals.skipped,
        });
        match job {
            Job::Touch => v["touched_pages"] = s.touched.into(),
            Job::Evict { .. } => {
                v["evicted_pages"] = s.evicted.into();
                v["stayed_pages"] = s.stayed.into();
                v["stayed_dirty_pages"] = s.stayed_dirty.into();
                v["stayed_writeback_pages"] = s.stayed_writeback.into();
            }
            Job::Status => {}
        }
        if verbose {
            v["entries"] = serde_json::to_value(&s.entries)?;
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        let known = s.pages - s.unknown_pages;
        let pct = if known == 0 {
            100.0
        } else {
            s.resident as f64 * 100.0 / known as f64
        };
        writeln!(out, "           Files: {}", totals.files)?;
        writeln!(out, "     Directories: {}", totals.directories)?;
        match job {
            Job::Status if known == 0 && s.unknown_files > 0 => {
                writeln!(out, "  Resident Pages: unknown (see below)")?
            }
            Job::Status => writeln!(
                out,
                "  Resident Pages: {}/{}  {}/{}  {:.3}%",
                s.resident,
                known,
                human(s.resident * ps),
                human(known * ps),
                pct
            )?,
            Job::Touch => {
                writeln!(out, "   Touched Pages: {} ({})", s.touched, human(s.touched * ps))?;
                writeln!(out, "  Resident Pages: {}/{}  {:.3}%", s.resident, known, pct)?;
            }
            Job::Evict { .. } => {
                writeln!(out, "   Evicted Pages: {} ({})", s.evicted, human(s.evicted * ps))?;
                writeln!(
                    out,
                    "    Stayed Pages: {} (dirty {}, under writeback {}{})",
                    s.stayed,
                    s.stayed_dirty,
                    s.stayed_writeback,
                    if s.stayed > s.stayed_dirty + s.stayed_writeback {
                        "; the rest mapped or locked by a process"
                    } else {
                        ""
                    }
                )?;
            }
        }
        if s.unknown_files > 0 {
            writeln!(
                out,
                "         Unknown: {} files, {} pages: the kernel does not report their residency to this user (not the owner, no write permission); run as the owner or root",
                s.unknown_files, s.unknown_pages
            )?;
        }
        if totals.skipped > 0 {
            writeln!(out, "         Skipped: {} (reported above)", totals.skipped)?;
        }
        writeln!(out, "         Elapsed: {elapsed:.6} seconds")?;
    }
    out.flush()?;
    Ok(())
}

pub(super) fn print_entry(e: &Entry, job: Job, pb: Option<&indicatif::ProgressBar>) -> std::io::Result<()> {
    // A name from the walked tree is anybody's: its control characters are shown escaped.
    let path = crate::out::name_safe(&e.path);
    let line = match (job, e.resident_pages) {
        (Job::Status, Some(r)) => format!(
            "{}\n{} {}/{}",
            path,
            e.bar.clone().unwrap_or_default(),
            r,
            e.pages
        ),
        (Job::Status, None) => format!(
            "{}\n[{}] unknown/{} ({})",
            path,
            "?".repeat(BAR),
            e.pages,
            e.unknown_reason.as_deref().unwrap_or("")
        ),
        (Job::Touch, r) => format!(
            "{}: touched {} of {} pages, resident {}",
            path,
            e.touched_pages.unwrap_or(0),
            e.pages,
            r.map_or("unknown".to_string(), |r| r.to_string())
        ),
        (Job::Evict { .. }, r) => format!(
            "{}: evicted {}, stayed {} of {} pages",
            path,
            e.evicted_pages.map_or("unknown".to_string(), |r| r.to_string()),
            r.map_or("unknown".to_string(), |r| r.to_string()),
            e.pages
        ),
    };
    match pb {
        Some(pb) => pb.println(line),
        None => outln!("{line}")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{human, spinner_for, Spinner};

    #[test]
    fn the_spinner_respects_dumb_terminals_and_non_utf8_locales() {
        assert_eq!(spinner_for(Some("dumb"), Some("en_US.UTF-8")), Spinner::None);
        assert_eq!(spinner_for(None, Some("en_US.UTF-8")), Spinner::None);
        assert_eq!(spinner_for(Some("xterm"), Some("en_US.UTF-8")), Spinner::Unicode);
        assert_eq!(spinner_for(Some("xterm"), Some("C.utf8")), Spinner::Unicode);
        assert_eq!(spinner_for(Some("xterm"), Some("C")), Spinner::Ascii);
        assert_eq!(
            spinner_for(Some("xterm"), Some("en_US.ISO-8859-1")),
            Spinner::Ascii
        );
        assert_eq!(spinner_for(Some("xterm"), None), Spinner::Ascii);
    }

    #[test]
    fn human_sizes_read_as_vmtouch_prints_them() {
        assert_eq!(human(0), "0");
        assert_eq!(human(1023), "1023");
        assert_eq!(human(4096), "4K");
        assert_eq!(human(1536), "1.5K");
        assert_eq!(human(10 << 20), "10M");
        assert_eq!(human(15 << 29), "7.5G");
        assert_eq!(human(3 << 50), "3072T");
    }
}
