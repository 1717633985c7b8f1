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
    use super::{leading, NameList, NAME_MAX_BYTES};
    use proptest::prelude::*;

    /// A reader that hands out at most `step` bytes a read: names cut across the buffer's
    /// refills at every position.
    struct Dribble(Vec<u8>, usize, usize);

    impl std::io::Read for Dribble {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(out.len()).min(self.0.len() - self.2);
            out[..n].copy_from_slice(&self.0[self.2..self.2 + n]);
            self.2 += n;
            Ok(n)
        }
    }

    proptest! {
        /// A list of any bytes, cut into reads of any size, with either separator: never a
        /// panic; the names read are the list's non-empty pieces in order, or the reading
        /// stops with an error at a piece no path can be (too long; a NUL in a line list).
        #[test]
        fn any_list_reads_as_its_names_or_an_error(
            bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..2048),
                proptest::collection::vec(prop_oneof![Just(0u8), Just(b'\n'), Just(b'a')], 0..2048),
                proptest::collection::vec(prop_oneof![500 => Just(b'a'), 1 => Just(b'\n'), 1 => Just(0u8)], 0..12000),
            ],
            step in 1usize..300,
            nul in any::<bool>(),
        ) {
            let sep = if nul { 0u8 } else { b'\n' };
            let mut list = NameList::new(Box::new(Dribble(bytes.clone(), step, 0)), "list".into(), nul);
            let want: Vec<&[u8]> = bytes.split(|&b| b == sep).filter(|p| !p.is_empty()).collect();
            let mut got = Vec::new();
            loop {
                match list.next_name() {
                    Ok(Some(name)) => got.push(std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str()).to_vec()),
                    Ok(None) => {
                        prop_assert_eq!(&got, &want);
                        break;
                    }
                    Err(_) => {
                        // Stopped at the first piece no path can be.
                        let bad = want[got.len()];
                        prop_assert!(bad.len() > NAME_MAX_BYTES || (!nul && bad.contains(&0)));
                        prop_assert_eq!(&got[..], &want[..got.len()]);
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn leading_counts_a_run() {
        assert_eq!(leading(b"", 0), 0);
        assert_eq!(leading(&[0; 20], 0), 20);
        assert_eq!(leading(&[0, 0, 0, 1, 0], 0), 3);
        assert_eq!(leading(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7], 0), 10);
        assert_eq!(leading(b"\n\nx", b'\n'), 2);
    }
}
