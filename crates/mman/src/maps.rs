//! The mappings of a process, as `/proc/PID/maps` and `/proc/PID/smaps` describe them (Linux):
//! what procps `pmap -x` / `pmap -X` print, as typed values.
//!
//! ```
//! # fn main() -> mman::Result<()> {
//! // Map 1 MiB, touch a quarter of it, and find it among this process's mappings.
//! let mut scratch = mman::ExclusiveMap::new(1 << 20)?;
//! scratch[..256 << 10].fill(1);
//! let me = mman::maps::read(None)?; // this process
//! let at = scratch.as_ptr() as u64;
//! let region = me.regions.iter().find(|r| r.start <= at && at < r.end).expect("mapped");
//! assert!(region.perms.read && region.perms.write && !region.perms.shared);
//! assert!(region.usage.rss >= 256); // KiB resident, as pmap -x prints them
//! println!("{} mappings, {} KiB resident", me.regions.len(), me.total().rss);
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// Access rights of a mapping: the `rwxp` / `rwxs` column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perms {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
    /// `MAP_SHARED` (`s`) rather than private (`p`).
    pub shared: bool,
}

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |b: bool, ch: char| if b { ch } else { '-' };
        write!(
            f,
            "{}{}{}{}",
            c(self.read, 'r'),
            c(self.write, 'w'),
            c(self.exec, 'x'),
            if self.shared { 's' } else { 'p' }
        )
    }
}

/// What backs a mapping.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A file (or a shared-memory object, memfd, SysV segment: the kernel names them like files).
    File {
        /// The path, as the kernel printed it.
        path: PathBuf,
        /// The file was deleted after being mapped (the kernel appends ` (deleted)` to the name;
        /// [`read`] checks the whole name first, which a file may really have).
        deleted: bool,
    },
    /// `[heap]`: the program break.
    Heap,
    /// `[stack]`: the main thread's stack.
    Stack,
    /// `[vdso]`.
    Vdso,
    /// `[vvar]` (and `[vvar_vclock]`).
    Vvar,
    /// `[vsyscall]`.
    Vsyscall,
    /// Anonymous memory without a name.
    Anonymous,
    /// Another bracketed name: `[anon:NAME]`, `[anon_shmem:NAME]`, `[uprobes]`...
    Other(String),
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::File { path, deleted } => {
                // One line a mapping, as the kernel and pmap print it: a newline as \012.
                let shown = path.display().to_string();
                f.write_str(&shown.replace('\n', "\\012"))?;
                if *deleted {
                    f.write_str(" (deleted)")?;
                }
                Ok(())
            }
            Kind::Heap => f.write_str("[heap]"),
            Kind::Stack => f.write_str("[stack]"),
            Kind::Vdso => f.write_str("[vdso]"),
            Kind::Vvar => f.write_str("[vvar]"),
            Kind::Vsyscall => f.write_str("[vsyscall]"),
            Kind::Anonymous => f.write_str("[anon]"),
            Kind::Other(s) => f.write_str(s),
        }
    }
}

/// The memory figures of a mapping, in KiB, as `smaps` gives them (all zero when only
/// `maps` was read, except `size`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Virtual size.
    pub size: u64,
    /// Page size the kernel uses for the mapping.
    pub kernel_page_size: u64,
    /// Page size the MMU uses.
    pub mmu_page_size: u64,
    /// Resident.
    pub rss: u64,
    /// Proportional set size: resident, shared pages divided among their sharers.
    pub pss: u64,
    /// The dirty part of `pss`.
    pub pss_dirty: u64,
    /// Resident, shared with another process, unmodified.
    pub shared_clean: u64,
    /// Resident, shared, modified.
    pub shared_dirty: u64,
    /// Resident, this process's only, unmodified.
    pub private_clean: u64,
    /// Resident, this process's only, modified.
    pub private_dirty: u64,
    /// Recently accessed.
    pub referenced: u64,
    /// Anonymous (not backed by a file, or copied on write).
    pub anonymous: u64,
    /// Merged by KSM.
    pub ksm: u64,
    /// Marked `MADV_FREE`.
    pub lazy_free: u64,
    /// Backed by transparent huge pages (anonymous).
    pub anon_huge_pages: u64,
    /// Shared memory mapped by PMD (huge) entries.
    pub shmem_pmd_mapped: u64,
    /// File memory mapped by PMD entries.
    pub file_pmd_mapped: u64,
    /// hugetlbfs pages shared.
    pub shared_hugetlb: u64,
    /// hugetlbfs pages private.
    pub private_hugetlb: u64,
    /// Swapped out.
    pub swap: u64,
    /// Proportional swap.
    pub swap_pss: u64,
    /// Locked in memory (`mlock`).
    pub locked: u64,
}

impl Usage {
    /// Dirty: shared and private, as `pmap -x` counts it (saturating at `u64::MAX`).
    pub fn dirty(&self) -> u64 {
        self.shared_dirty.saturating_add(self.private_dirty)
    }

    fn set(&mut self, key: &str, kib: u64) -> bool {
        let field = match key {
            "Size" => &mut self.size,
            "KernelPageSize" => &mut self.kernel_page_size,
            "MMUPageSize" => &mut self.mmu_page_size,
            "Rss" => &mut self.rss,
            "Pss" => &mut self.pss,
            "Pss_Dirty" => &mut self.pss_dirty,
            "Shared_Clean" => &mut self.shared_clean,
            "Shared_Dirty" => &mut self.shared_dirty,
            "Private_Clean" => &mut self.private_clean,
            "Private_Dirty" => &mut self.private_dirty,
            "Referenced" => &mut self.referenced,
            "Anonymous" => &mut self.anonymous,
            "KSM" => &mut self.ksm,
            "LazyFree" => &mut self.lazy_free,
            "AnonHugePages" => &mut self.anon_huge_pages,
            "ShmemPmdMapped" => &mut self.shmem_pmd_mapped,
            "FilePmdMapped" => &mut self.file_pmd_mapped,
            "Shared_Hugetlb" => &mut self.shared_hugetlb,
            "Private_Hugetlb" => &mut self.private_hugetlb,
            "Swap" => &mut self.swap,
            "SwapPss" => &mut self.swap_pss,
            "Locked" => &mut self.locked,
            _ => return false,
        };
        *field = kib;
        true
    }
}

/// Adds every figure but the page sizes (which are not amounts), saturating at `u64::MAX`:
/// [`parse`] takes any text, whose figures may be anything.
impl std::ops::AddAssign<&Usage> for Usage {
    fn add_assign(&mut self, o: &Usage) {
        self.size = self.size.saturating_add(o.size);
        self.rss = self.rss.saturating_add(o.rss);
        self.pss = self.pss.saturating_add(o.pss);
        self.pss_dirty = self.pss_dirty.saturating_add(o.pss_dirty);
        self.shared_clean = self.shared_clean.saturating_add(o.shared_clean);
        self.shared_dirty = self.shared_dirty.saturating_add(o.shared_dirty);
        self.private_clean = self.private_clean.saturating_add(o.private_clean);
        self.private_dirty = self.private_dirty.saturating_add(o.private_dirty);
        self.referenced = self.referenced.saturating_add(o.referenced);
        self.anonymous = self.anonymous.saturating_add(o.anonymous);
        self.ksm = self.ksm.saturating_add(o.ksm);
        self.lazy_free = self.lazy_free.saturating_add(o.lazy_free);
        self.anon_huge_pages = self.anon_huge_pages.saturating_add(o.anon_huge_pages);
        self.shmem_pmd_mapped = self.shmem_pmd_mapped.saturating_add(o.shmem_pmd_mapped);
        self.file_pmd_mapped = self.file_pmd_mapped.saturating_add(o.file_pmd_mapped);
        self.shared_hugetlb = self.shared_hugetlb.saturating_add(o.shared_hugetlb);
        self.private_hugetlb = self.private_hugetlb.saturating_add(o.private_hugetlb);
        self.swap = self.swap.saturating_add(o.swap);
        self.swap_pss = self.swap_pss.saturating_add(o.swap_pss);
        self.locked = self.locked.saturating_add(o.locked);
    }
}

impl<'a> std::iter::Sum<&'a Usage> for Usage {
    fn sum<I: Iterator<Item = &'a Usage>>(iter: I) -> Usage {
        let mut t = Usage::default();
        for u in iter {
            t += u;
        }
        t
    }
}

/// One mapping of a process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Region {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Access rights.
    pub perms: Perms,
    /// Offset in the file (pages of anonymous memory: 0, or the address >> page shift).
    pub offset: u64,
    /// Device of the file: (major, minor).
    pub device: (u32, u32),
    /// Inode of the file, 0 for anonymous memory.
    pub inode: u64,
    /// What backs it.
    pub kind: Kind,
    /// Memory figures (from `smaps`).
    pub usage: Usage,
    /// `THPeligible` from `smaps`.
    pub thp_eligible: Option<bool>,
    /// The `VmFlags` of `smaps`, such as `rd`, `wr`, `lo` (locked), `dd` (do not dump).
    pub vm_flags: Vec<String>,
}

impl Region {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    /// Whether the range is empty (never, for a kernel-made entry).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// The mappings of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessMaps {
    /// The process (`None`: read through `/proc/self`).
    pub pid: Option<u32>,
    /// Its mappings, in address order.
    pub regions: Vec<Region>,
}

impl ProcessMaps {
    /// The sum of every region's figures.
    pub fn total(&self) -> Usage {
        self.regions.iter().map(|r| &r.usage).sum()
    }
}

/// Read `/proc/PID/smaps` (`None`: this process).
///
/// # Errors
/// * [`ErrorKind::NotFound`]: no such process, or it has no address space (a kernel thread
///   or a zombie).
/// * [`ErrorKind::PermissionDenied`]: ptrace access to it is denied (another user's
///   process, no `CAP_SYS_PTRACE`, or Yama's `ptrace_scope`), with a hint saying which.
/// * [`ErrorKind::InvalidInput`] for text that does not parse (as [`parse`]).
pub fn read(pid: Option<u32>) -> Result<ProcessMaps> {
    let path = match pid {
        Some(p) => PathBuf::from(format!("/proc/{p}/smaps")),
        None => PathBuf::from("/proc/self/smaps"),
    };
    let text = std::fs::read(&path).map_err(|e| {
        let err = Error::os("read mappings", e).with_path(Some(&path));
        match err.kind() {
            ErrorKind::NotFound => err.with_hint(format!("no process {} exists", pid.unwrap_or(0))),
            ErrorKind::PermissionDenied => {
                let owner = pid.and_then(|p| {
                    use std::os::unix::fs::MetadataExt;
                    std::fs::metadata(format!("/proc/{p}")).ok().map(|m| m.uid())
                });
                let me = crate::sys::shm::euid();
                err.with_hint(match owner {
                    Some(o) if o != me && me != 0 => format!(
                        "the process belongs to another user (uid {o}; you are uid {me}): reading its mappings needs \
                         the same user with ptrace access, or CAP_SYS_PTRACE"
                    ),
                    _ => "ptrace access to the process is denied: this process lacks CAP_SYS_PTRACE \
                          (as in many containers), or /proc/sys/kernel/yama/ptrace_scope forbids it"
                        .to_string(),
                })
            }
            _ => err,
        }
    })?;
    if text.is_empty() {
        // A zombie, or a kernel thread: no address space.
        if pid.is_some() {
            return Err(Error::new(
                ErrorKind::NotFound,
                "read mappings",
                "the process has no address space (a kernel thread or a zombie)",
            )
            .with_path(Some(&path)));
        }
    }
    let mut regions = parse_bytes(&text).map_err(|e| e.with_path(Some(&path)))?;
    // Two things the kernel writes are ambiguous: it marks a file deleted since it was
    // mapped by appending " (deleted)" to its name, and it writes a newline as `\012` but a
    // backslash as it is; a file may really be called either way. The file found under one
    // of the spellings with the mapping's device and inode is that file.
    for r in &mut regions {
        if let Kind::File { path, deleted } = &mut r.kind {
            if let Some(exact) = existing_spelling(path, *deleted, (r.device, r.inode)) {
                *path = exact;
                *deleted = false;
            }
        }
    }
    Ok(ProcessMaps { pid, regions })
}

/// Parse the text of `/proc/PID/smaps` or `/proc/PID/maps` (then only the address, rights,
/// offset, device, inode and name are known, and `usage.size`).
///
/// # Errors
/// [`ErrorKind::InvalidInput`], naming the line, for a line that is neither a mapping nor a
/// `Key: value` field, or a field before any mapping. Unknown fields, and values that are
/// not numbers, are skipped.
pub fn parse(text: &str) -> Result<Vec<Region>> {
    parse_bytes(text.as_bytes())
}

/// The name under which the file of a mapping parsed as `path` (`deleted` if the kernel
/// added " (deleted)") exists now with device and inode `id`, when the kernel's text could
/// mean another name than the one parsed: a newline in `path` may have been the four
/// characters `\012` (at most 2^8 spellings are tried), and " (deleted)" may be part of the
/// name. `None` when the parse is unambiguous or no spelling is found (the parsed name
/// stands: a deleted file is under no name).
fn existing_spelling(path: &Path, deleted: bool, id: ((u32, u32), u64)) -> Option<PathBuf> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    const MAX_AMBIGUOUS_NEWLINES: u32 = 8;
    let bytes = path.as_os_str().as_bytes();
    let newlines: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] == b'\n').collect();
    if !deleted && newlines.is_empty() {
        return None;
    }
    if newlines.len() as u32 > MAX_AMBIGUOUS_NEWLINES {
        return None;
    }
    // Spelling 0 is the parsed one, every `\012` a newline: when the file is not marked
    // deleted and is there under it, it stands.
    if !deleted && crate::sys::path_id(path) == Some(id) {
        return None;
    }
    (u32::from(!deleted)..1 << newlines.len()).find_map(|spelling| {
        let mut name = Vec::with_capacity(bytes.len() + 3 * newlines.len() + 10);
        for (i, &b) in bytes.iter().enumerate() {
            match newlines.iter().position(|&n| n == i) {
                Some(k) if spelling & (1 << k) != 0 => name.extend_from_slice(b"\\012"),
                _ => name.push(b),
            }
        }
        if deleted {
            name.extend_from_slice(b" (deleted)");
        }
        let name = PathBuf::from(std::ffi::OsString::from_vec(name));
        (crate::sys::path_id(&name) == Some(id)).then_some(name)
    })
}

/// [`parse`] of the bytes as the kernel writes them: file names are any bytes but a
/// newline (which the kernel writes as `\012`, decoded here), so they are kept exactly,
/// UTF-8 or not.
///
/// # Errors
/// As [`parse`].
pub fn parse_bytes(text: &[u8]) -> Result<Vec<Region>> {
    let mut regions: Vec<Region> = Vec::new();
    // Only a newline ends a line: a file name may end in a carriage return.
    for (n, raw) in text.split(|&b| b == b'\n').enumerate() {
        if raw.is_empty() {
            continue;
        }
        // The fields are ASCII; only a mapping line's name may not be UTF-8.
        let line = String::from_utf8_lossy(raw);
        let bad = |what: &str| {
            Error::new(
                ErrorKind::InvalidInput,
                "parse mappings",
                format!("line {}: {what}: {line:?}", n + 1),
            )
        };
        // The first word is a prefix of the line without its leading whitespace: what
        // follows it is cut there (cutting the whole line at the word's length could split
        // a multi-byte character after leading blanks).
        let trimmed = line.trim_start_matches(|c: char| c.is_ascii_whitespace());
        let first = trimmed.split_ascii_whitespace().next().unwrap_or("");
        if let Some(key) = first.strip_suffix(':') {
            let Some(region) = regions.last_mut() else {
                return Err(bad("a field before any mapping"));
            };
            let rest = trimmed[first.len()..].trim();
            match key {
                "VmFlags" => region.vm_flags = rest.split_ascii_whitespace().map(String::from).collect(),
                "THPeligible" => region.thp_eligible = Some(rest == "1"),
                _ => {
                    let num = rest.strip_suffix("kB").unwrap_or(rest).trim();
                    if let Ok(v) = num.parse::<u64>() {
                        region.usage.set(key, v);
                    }
                    // Unknown fields (new kernels add some) are skipped, not errors.
                }
            }
            continue;
        }
        regions.push(parse_header(raw).ok_or_else(|| bad("not a mapping line"))?);
    }
    Ok(regions)
}

/// What backs a mapping, from the name column's bytes.
fn kind_of(name: &[u8]) -> Kind {
    use std::os::unix::ffi::OsStringExt;
    match name {
        b"" => Kind::Anonymous,
        b"[heap]" => Kind::Heap,
        b"[stack]" => Kind::Stack,
        b"[vdso]" => Kind::Vdso,
        b"[vvar]" | b"[vvar_vclock]" => Kind::Vvar,
        b"[vsyscall]" => Kind::Vsyscall,
        n if n.starts_with(b"[") && n.ends_with(b"]") => Kind::Other(String::from_utf8_lossy(n).into_owned()),
        n => {
            let (n, deleted) = match n.strip_suffix(b" (deleted)") {
                Some(p) => (p, true),
                None => (n, false),
            };
            // The kernel writes a newline in a name as `\012`, the only byte it escapes.
            let mut path = Vec::with_capacity(n.len());
            let mut i = 0;
            while i < n.len() {
                if n[i..].starts_with(b"\\012") {
                    path.push(b'\n');
                    i += 4;
                } else {
                    path.push(n[i]);
                    i += 1;
                }
            }
            Kind::File {
                path: PathBuf::from(std::ffi::OsString::from_vec(path)),
                deleted,
            }
        }
    }
}

fn parse_header(line: &[u8]) -> Option<Region> {
    let mut rest = line;
    let mut field = || {
        let start = rest.iter().position(|&b| b != b' ')?;
        let t = &rest[start..];
        let end = t.iter().position(|&b| b == b' ').unwrap_or(t.len());
        let (f, r) = t.split_at(end);
        rest = r;
        std::str::from_utf8(f).ok()
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    let dev = field()?;
    let inode = field()?;
    let name = &rest[rest.iter().position(|&b| b != b' ').unwrap_or(rest.len())..];
    let (s, e) = range.split_once('-')?;
    let start = u64::from_str_radix(s, 16).ok()?;
    let end = u64::from_str_radix(e, 16).ok()?;
    let p = perms.as_bytes();
    if p.len() != 4 || end < start {
        return None;
    }
    let perms = Perms {
        read: p[0] == b'r',
        write: p[1] == b'w',
        exec: p[2] == b'x',
        shared: p[3] == b's',
    };
    let (maj, min) = dev.split_once(':')?;
    let kind = kind_of(name);
    Some(Region {
        start,
        end,
        perms,
        offset: u64::from_str_radix(offset, 16).ok()?,
        device: (
            u32::from_str_radix(maj, 16).ok()?,
            u32::from_str_radix(min, 16).ok()?,
        ),
        inode: inode.parse().ok()?,
        kind,
        usage: Usage {
            size: (end - start) / 1024,
            ..Usage::default()
        },
        thp_eligible: None,
        vm_flags: Vec::new(),
    })
}

#[cfg(test)]
#[path = "maps_tests.rs"]
mod tests;
