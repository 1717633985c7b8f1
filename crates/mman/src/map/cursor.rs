//! A file-like view of a [`Mapping`]: `Read`, `BufRead`, `Write` and `Seek`, as Python's
//! `mmap` object offers, so a mapping plugs into any code that takes a reader or a writer.
//! Every byte moves by copy ([`Mapping::read_at`], [`Mapping::write_at`]), so it stays sound
//! whoever else writes or truncates the memory.

use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};

use super::Mapping;

/// How much `fill_buf` copies at a time.
const CHUNK: usize = 64 << 10;

/// A position in a [`Mapping`], read and written like a file: `Read`, `BufRead`, `Write`
/// and `Seek`, every byte by copy, so it stays sound whoever else writes or truncates the
/// memory (as Python's `mmap` object, for code that takes a reader or a writer).
///
/// ```
/// use std::io::{BufRead, Read, Seek, SeekFrom, Write};
/// # fn main() -> std::io::Result<()> {
/// let map = mman::MapOptions::new().len(64).map_anonymous()?;
/// let mut c = mman::map::Cursor::new(&map);
/// c.write_all(b"first line\nsecond line\n")?;
/// c.seek(SeekFrom::Start(0))?;
/// let mut line = String::new();
/// c.read_line(&mut line)?;
/// assert_eq!(line, "first line\n");
/// # Ok(()) }
/// ```
///
/// Reads stop at the end of the mapping (0 bytes: end of file); writes past it write what
/// fits, then 0 bytes (so `write_all` fails with `WriteZero`): a mapping does not grow.
#[derive(Debug)]
pub struct Cursor<'a> {
    map: &'a Mapping,
    pos: u64,
    /// Bytes copied out by `fill_buf`, starting at `buf_at`; `buf[used..]` not yet consumed.
    buf: Vec<u8>,
    buf_at: u64,
    used: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `map`.
    pub fn new(map: &'a Mapping) -> Self {
        Cursor {
            map,
            pos: 0,
            buf: Vec::new(),
            buf_at: 0,
            used: 0,
        }
    }
    /// The current position.
    pub fn position(&self) -> u64 {
        self.pos
    }
    /// The mapping.
    pub fn get_ref(&self) -> &'a Mapping {
        self.map
    }
    fn left(&self) -> usize {
        (self.map.len() as u64).saturating_sub(self.pos) as usize
    }
    /// Forget what `fill_buf` copied (after a write or a seek).
    fn drop_buffer(&mut self) {
        self.buf.clear();
        self.used = 0;
    }
}

impl Read for Cursor<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.buf[self.used..].is_empty() {
            let n = out.len().min(self.buf.len() - self.used);
            out[..n].copy_from_slice(&self.buf[self.used..self.used + n]);
            self.consume(n);
            return Ok(n);
        }
        let n = out.len().min(self.left());
        if n == 0 {
            return Ok(0);
        }
        self.map.read_at(self.pos as usize, &mut out[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl BufRead for Cursor<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.used >= self.buf.len() {
            let n = CHUNK.min(self.left());
            self.buf.resize(n, 0);
            self.buf_at = self.pos;
            self.used = 0;
            if n > 0 {
                if let Err(e) = self.map.read_at(self.pos as usize, &mut self.buf) {
                    // Nothing was buffered: the next read copies (and fails) afresh.
                    self.drop_buffer();
                    return Err(e.into());
                }
            }
        }
        Ok(&self.buf[self.used..])
    }
    fn consume(&mut self, amt: usize) {
        let amt = amt.min(self.buf.len() - self.used);
        if amt == 0 {
            // Nothing buffered (after a seek, a write) or nothing asked: `buf_at` may be
            // stale, and the position stays where it is.
            return;
        }
        self.used += amt;
        self.pos = self.buf_at + self.used as u64;
    }
}

impl Write for Cursor<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.drop_buffer();
        let n = data.len().min(self.left());
        if n == 0 {
            return Ok(0);
        }
        self.map.write_at(self.pos as usize, &data[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Cursor<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let base = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => (self.map.len() as u64).checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let pos = base.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.drop_buffer();
        self.pos = pos;
        Ok(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MapOptions;

    #[test]
    fn reads_writes_seeks_and_stops_at_the_end() {
        let map = MapOptions::new().len(10).map_anonymous().unwrap();
        let mut c = Cursor::new(&map);
        assert_eq!(c.write(b"0123456789abc").unwrap(), 10);
        assert_eq!(c.write(b"x").unwrap(), 0);
        assert!(c.write_all(b"x").is_err());
        c.seek(SeekFrom::End(-4)).unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        assert_eq!(s, "6789");
        assert!(c.seek(SeekFrom::Current(-11)).is_err());
        c.seek(SeekFrom::Start(2)).unwrap();
        assert_eq!(c.fill_buf().unwrap(), b"23456789");
        c.consume(3);
        assert_eq!(c.position(), 5);
        let mut two = [0u8; 2];
        c.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"56");
        c.write_all(b"XY").unwrap();
        assert_eq!(map.to_vec().unwrap(), b"0123456XY9");
        c.seek(SeekFrom::Start(100)).unwrap();
        assert_eq!(c.read(&mut two).unwrap(), 0, "past the end is end of file");
    }

    /// A `fill_buf` that fails leaves nothing buffered: the next `read` fails too rather
    /// than hand out the zeros of a buffer never filled (from a stale position).
    #[test]
    fn a_failed_fill_buf_leaves_nothing_to_read() {
        // A file cut to nothing under the mapping: the copy is an error (Truncated).
        let file = tempfile::tempfile().unwrap();
        file.set_len(8192).unwrap();
        let map = MapOptions::new().map(&file).unwrap();
        let mut c = Cursor::new(&map);
        file.set_len(0).unwrap();
        assert_eq!(c.fill_buf().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let mut out = [1u8; 16];
        let r = c.read(&mut out);
        assert!(r.is_err(), "read after a failed fill_buf: {r:?}, {out:?}");
        // Memory the mapping may not read: refused before any copy.
        let mut none = MapOptions::new().len(4096).map_anonymous().unwrap();
        none.protect(crate::Protection::NONE).unwrap();
        let mut c = Cursor::new(&none);
        assert!(c.fill_buf().is_err());
        let r = c.read(&mut out);
        assert!(r.is_err(), "read after a failed fill_buf: {r:?}");
    }

    /// `consume` with nothing buffered (after a seek or a write) leaves the position alone.
    #[test]
    fn consume_with_nothing_buffered_never_moves_the_position() {
        let map = MapOptions::new().len(100).map_anonymous().unwrap();
        let mut c = Cursor::new(&map);
        assert_eq!(c.fill_buf().unwrap().len(), 100);
        c.seek(SeekFrom::Start(60)).unwrap();
        c.consume(0);
        assert_eq!(c.position(), 60, "after a seek");
        c.write_all(b"abc").unwrap();
        c.consume(5);
        assert_eq!(c.position(), 63, "after a write");
    }
}
