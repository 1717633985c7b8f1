//! The files a `mman cache` command works on: those named on the command line, then those
//! of the list `-b FILE` names, read as they are used, a batch at a time. A list has no
//! size limit (`-b /dev/zero` is a list too): memory holds one batch, and a name longer
//! than any path can be (`PATH_MAX`) is an error as soon as it is seen. Empty names (two
//! separators in a row, a trailing one) name nothing and are skipped.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Names handed to one walk: enough to keep the walk's threads busy, few enough that a
/// batch of the longest names is 4 MiB.
const BATCH: usize = 1024;

/// The longest name a path can have: `PATH_MAX` counts the terminating NUL.
const NAME_MAX_BYTES: usize = libc::PATH_MAX as usize - 1;

/// The names a command works on, a batch at a time.
pub(super) struct Roots {
    given: Vec<PathBuf>,
    list: Option<NameList>,
    seen: u64,
}

struct NameList {
    reader: Box<dyn BufRead>,
    sep: u8,
    what: String,
    done: bool,
}

impl Roots {
    /// The paths `given`, then the names of the list at `list` (`-`: standard input),
    /// separated by newlines, or NUL bytes with `nul`.
    pub(super) fn new(given: Vec<PathBuf>, list: Option<&Path>, nul: bool) -> Result<Roots> {
        let list = match list {
            None => None,
            Some(p) if p.as_os_str() == "-" => {
                let what = "read the file list from standard input".to_string();
                // A closed standard input is an error, not an empty list (Rust's runtime
                // reopened it on /dev/null).
                if crate::out::stdin_closed() {
                    return Err(crate::out::stdin_closed_error()).context(what);
                }
                Some(NameList::new(Box::new(std::io::stdin()), what, nul))
            }
            Some(p) => {
                let what = format!("read the file list {}", p.display());
                let f = std::fs::File::open(p).with_context(|| what.clone())?;
                Some(NameList::new(Box::new(f), what, nul))
            }
        };
        Ok(Roots { given, list, seen: 0 })
    }

    /// The next names to walk; `None` when every name has been handed out.
    ///
    /// # Errors
    /// Reading the list fails; a name in it is longer than `PATH_MAX` allows, or (in a
    /// newline-separated list) holds a NUL byte; the command line and the list named
    /// nothing at all.
    pub(super) fn next_batch(&mut self) -> Result<Option<Vec<PathBuf>>> {
        let mut batch = std::mem::take(&mut self.given);
        if let Some(list) = &mut self.list {
            while batch.len() < BATCH {
                match list.next_name()? {
                    Some(name) => batch.push(name),
                    None => break,
                }
            }
        }
        self.seen += batch.len() as u64;
        if !batch.is_empty() {
            return Ok(Some(batch));
        }
        if self.seen == 0 {
            bail!("the file list named no files (empty names are skipped)");
        }
        Ok(None)
    }
}

impl NameList {
    fn new(read: Box<dyn Read>, what: String, nul: bool) -> NameList {
        NameList {
            reader: Box::new(BufReader::with_capacity(64 << 10, read)),
            sep: if nul { b'\0' } else { b'\n' },
            what,
            done: false,
        }
    }

    /// The next non-empty name, or `None` at the end of the list.
    fn next_name(&mut self) -> Result<Option<PathBuf>> {
        let mut name = Vec::new();
        while !self.done {
            let buf = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context(self.what.clone()),
            };
            if buf.is_empty() {
                self.done = true;
                break;
            }
            if name.is_empty() {
                // A run of empty names, skipped at once.
                let empty = leading(buf, self.sep);
                if empty > 0 {
                    self.reader.consume(empty);
                    continue;
                }
            }
            let (part, used, ended) = match buf.iter().position(|&b| b == self.sep) {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            if name.len() + part.len() > NAME_MAX_BYTES {
                bail!(
                    "{}: a name longer than {NAME_MAX_BYTES} bytes, which no path can be (PATH_MAX); is this a list of files{}?",
                    self.what,
                    if self.sep == b'\n' { " (one a line, or NUL-separated with -0)" } else { " (NUL-separated)" }
                );
            }
            if self.sep == b'\n' && part.contains(&0) {
                bail!(
                    "{}: a name holds a NUL byte, which no path can: for a NUL-separated list, give -0",
                    self.what
                );
            }
            name.extend_from_slice(part);
            self.reader.consume(used);
            if ended && !name.is_empty() {
                break;
            }
        }
        Ok((!name.is_empty()).then(|| {
            PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                &name,
            ))
        }))
    }
}

/// How many bytes at the start of `buf` are `b`: eight at a time, so that a list of endless
/// empty names (`-0 -b /dev/zero`) is skipped at the speed of the pipe.
fn leading(buf: &[u8], b: u8) -> usize {
    let word = u64::from_ne_bytes([b; 8]);
    let mut i = 0;
    let mut w = [0u8; 8];
    while i + 8 <= buf.len() {
        w.copy_from_slice(&buf[i..i + 8]);
        if u64::from_ne_bytes(w) != word {
            break;
        }
        i += 8;
    }
    while i < buf.len() && buf[i] == b {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::leading;

    #[test]
    fn leading_counts_a_run() {
        assert_eq!(leading(b"", 0), 0);
        assert_eq!(leading(&[0; 20], 0), 20);
        assert_eq!(leading(&[0, 0, 0, 1, 0], 0), 3);
        assert_eq!(leading(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7], 0), 10);
        assert_eq!(leading(b"\n\nx", b'\n'), 2);
    }
}
