//! Per-page residency from `mincore(2)`.

/// Per-page residency of a range, from `mincore(2)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Residency {
    pub(super) pages: Vec<u8>,
    pub(super) page_size: usize,
}

impl Residency {
    /// Number of pages in the range.
    pub fn pages(&self) -> usize {
        self.pages.len()
    }
    /// Number of resident pages.
    pub fn resident(&self) -> usize {
        self.pages.iter().filter(|b| *b & 1 != 0).count()
    }
    /// Whether page `i` (from the start of the range) is resident.
    pub fn is_resident(&self, i: usize) -> bool {
        self.pages.get(i).is_some_and(|b| b & 1 != 0)
    }
    /// One bool a page, in order.
    pub fn iter(&self) -> impl Iterator<Item = bool> + '_ {
        self.pages.iter().map(|b| b & 1 != 0)
    }
    /// A packed bitmap: bit `i % 64` of word `i / 64` is page `i`.
    pub fn bitmap(&self) -> Vec<u64> {
        let mut words = vec![0u64; self.pages.len().div_ceil(64)];
        for (i, r) in self.iter().enumerate() {
            if r {
                words[i / 64] |= 1 << (i % 64);
            }
        }
        words
    }
    /// The page size the counts are in.
    pub fn page_size(&self) -> usize {
        self.page_size
    }
}
