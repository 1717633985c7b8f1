//! The one atomic access scheme for memory that other parties can reach.
//!
//! Rust's memory model makes racing atomic accesses of *different sizes* to the same bytes
//! undefined behaviour. Shared and file-backed memory is raced on by design (other processes,
//! other mappings of the same file, this process through another handle), so every access
//! mman makes to such memory uses one size: aligned 8-byte atomics ([`AtomicU64`]).
//!
//! * Copies ([`copy_out`], [`copy_in`]) move whole aligned words. A copy whose ends fall
//!   inside a word reads the whole word, and writes it back with a compare-and-swap that
//!   changes only the bytes asked for (a concurrent writer of the other bytes is retried,
//!   never overwritten).
//! * Objects that live in shared memory (semaphores, lock words, channel cursors) are
//!   `AtomicU64`s. A futex waits on 32 bits: [`futex_half`] gives the address of the low
//!   half of a word, handed to the kernel only, never accessed as a Rust `AtomicU32`.
//!
//! An aligned 8-byte word never crosses a page, so the word around any mapped byte is
//! mapped too: a copy touches no page it was not asked to touch.
//!
//! **Long copies on x86-64** move their aligned middle 64 bytes at a time with SSE2 16-byte
//! moves in inline assembly ([`blocks`]), three times the speed of a loop of 8-byte atomics
//! (which the compiler may not widen). The assembly is opaque to the compiler, and what it
//! does is what the 8-byte scheme does: each 16-byte access on the shared side is
//! 16-aligned, so it lies in one cache line and each of its aligned 8-byte halves is read or
//! written whole (single-copy atomic: Intel SDM vol. 3 §9.1.1 for aligned quadwords, and
//! aligned 16-byte SSE accesses are atomic on every CPU with AVX, per both vendors'
//! manuals); no ordering between the words of a copy is promised by either. A copy
//! through it is thus one of the outcomes of the same copy made of relaxed 8-byte atomics.

use std::sync::atomic::{AtomicU64, Ordering};

const W: usize = 8;

/// Copy `dst.len()` bytes from `src` with aligned 8-byte atomic loads.
///
/// # Safety
/// `src .. src + dst.len()` must be mapped and readable, and every other access to those
/// bytes made through Rust must be an aligned 8-byte atomic (this module's scheme).
#[inline]
pub unsafe fn copy_out(src: *const u8, dst: &mut [u8]) {
    if dst.is_empty() {
        // No word may be read: `src` may be one past the end of the memory.
        return;
    }
    let start = src as usize;
    let end = start + dst.len();
    let mut w = start & !(W - 1);
    // SAFETY (whole body): each word read is aligned and holds at least one byte of the
    // caller's range, so it lies in a mapped, readable page (a word never crosses a page).
    unsafe {
        // A first word that starts before the range, or holds all of it.
        let head = if w < start || end < w + W {
            let hi = end.min(w + W);
            let word = load(w).to_ne_bytes();
            dst[..hi - start].copy_from_slice(&word[start - w..hi - w]);
            w += W;
            hi - start
        } else {
            0
        };
        // From here `w` is the address of `dst[head]`, aligned: whole words, then a tail.
        let rest = &mut dst[head..];
        let fast = blocks::load(w, rest.as_mut_ptr(), rest.len());
        w += fast;
        let mut chunks = rest[fast..].chunks_exact_mut(W);
        for c in &mut chunks {
            c.copy_from_slice(&load(w).to_ne_bytes());
            w += W;
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let word = load(w).to_ne_bytes();
            let k = tail.len();
            tail.copy_from_slice(&word[..k]);
        }
    }
}

/// Append `len` bytes from `src` to `dst` with aligned 8-byte atomic loads (as
/// [`copy_out`], into `dst`'s spare capacity: no zeros written first).
///
/// # Safety
/// As [`copy_out`], for `src .. src + len`.
#[cfg(all(linux_like, feature = "channel"))]
#[inline(always)]
pub unsafe fn copy_out_append(src: *const u8, len: usize, dst: &mut Vec<u8>) {
    if len == 0 {
        return;
    }
    dst.reserve(len);
    let spare = &mut dst.spare_capacity_mut()[..len];
    let start = src as usize;
    let end = start + len;
    let mut w = start & !(W - 1);
    let put = |d: &mut [std::mem::MaybeUninit<u8>], b: &[u8]| {
        for (d, b) in d.iter_mut().zip(b) {
            d.write(*b);
        }
    };
    // SAFETY (loads): as in copy_out: each word read is aligned and holds at least one byte
    // of the caller's range.
    unsafe {
        // A first word that starts before the range.
        let head = if w < start {
            let hi = end.min(w + W);
            put(
                &mut spare[..hi - start],
                &load(w).to_ne_bytes()[start - w..hi - w],
            );
            w += W;
            hi - start
        } else {
            0
        };
        let rest = &mut spare[head..];
        let fast = blocks::load(w, rest.as_mut_ptr().cast(), rest.len());
        w += fast;
        let mut chunks = rest[fast..].chunks_exact_mut(W);
        for c in &mut chunks {
            put(c, &load(w).to_ne_bytes());
            w += W;
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let k = tail.len();
            put(tail, &load(w).to_ne_bytes()[..k]);
        }
    }
    let filled = dst.len() + len;
    // SAFETY: the loop wrote all `len` bytes of the spare capacity after the old length.
    unsafe { dst.set_len(filled) };
}

/// Write `src` at the 8-aligned `dst` as whole aligned 8-byte atomic stores, the last word
/// padded with zeros: for memory whose padding belongs to the writer (a channel record).
///
/// # Safety
/// `dst` is 8-aligned; `dst .. dst + src.len().next_multiple_of(8)` is mapped writable,
/// with every other Rust access to those bytes following this module's scheme.
#[cfg(all(linux_like, feature = "channel"))]
#[inline]
pub unsafe fn copy_in_padded(src: &[u8], dst: *mut u8) {
    debug_assert_eq!(dst as usize % W, 0);
    // SAFETY (stores): aligned words inside the caller's range.
    unsafe {
        let (w, tail) = store_whole_words(dst as usize, src);
        if !tail.is_empty() {
            let mut b = [0u8; W];
            b[..tail.len()].copy_from_slice(tail);
            word(w).store(u64::from_ne_bytes(b), Ordering::Relaxed);
        }
    }
}

/// Copy `src` to `dst` with aligned 8-byte atomic stores; words only partly covered are
/// updated with a compare-and-swap that keeps their other bytes.
///
/// # Safety
/// `dst .. dst + src.len()` must be mapped readable and writable, with every other Rust
/// access to those bytes following this module's scheme.
#[inline]
pub unsafe fn copy_in(src: &[u8], dst: *mut u8) {
    if src.is_empty() {
        return;
    }
    let start = dst as usize;
    let end = start + src.len();
    let mut w = start & !(W - 1);
    // SAFETY (whole body): as in copy_out; the pages are writable (caller).
    unsafe {
        let head = if w < start || end < w + W {
            let hi = end.min(w + W);
            merge(w, start - w, &src[..hi - start]);
            w += W;
            hi - start
        } else {
            0
        };
        let (w, tail) = store_whole_words(w, &src[head..]);
        if !tail.is_empty() {
            merge(w, 0, tail);
        }
    }
}

/// Copy `words` aligned 8-byte words from `src` to `dst`, each an atomic load and an atomic
/// store: from memory others can reach to memory others can reach (a channel's pool slot
/// into another's), with no plain access to either.
///
/// # Safety
/// `src` and `dst` are 8-aligned; the `8 * words` bytes from `src` are mapped readable and
/// those from `dst` mapped writable, with every other Rust access to those bytes following
/// this module's scheme.
#[cfg(all(linux_like, feature = "channel"))]
#[inline]
pub unsafe fn copy_words(src: *const u8, dst: *mut u8, words: usize) {
    let (s, d) = (src as usize, dst as usize);
    debug_assert!(s % W == 0 && d % W == 0);
    // SAFETY: per the contract.
    let fast = unsafe { blocks::between(s, d, words * W) } / W;
    for i in fast..words {
        // SAFETY: aligned words inside the caller's ranges.
        unsafe { word(d + i * W).store(load(s + i * W), Ordering::Relaxed) };
    }
}

/// Store the whole 8-byte chunks of `src` as words from the address `w` on; the address
/// after them, and the bytes left over.
///
/// # Safety
/// `w` is aligned; the words written are mapped writable and follow this module's scheme.
#[inline(always)]
unsafe fn store_whole_words(mut w: usize, src: &[u8]) -> (usize, &[u8]) {
    // SAFETY: per the contract.
    let fast = unsafe { blocks::store(src.as_ptr(), w, src.len()) };
    w += fast;
    let mut chunks = src[fast..].chunks_exact(W);
    for c in &mut chunks {
        let mut b = [0u8; W];
        b.copy_from_slice(c);
        // SAFETY: per the contract.
        unsafe { word(w) }.store(u64::from_ne_bytes(b), Ordering::Relaxed);
        w += W;
    }
    (w, chunks.remainder())
}

/// # Safety
/// `w` is an aligned, mapped, readable word.
#[inline(always)]
unsafe fn load(w: usize) -> u64 {
    // SAFETY: per the contract.
    unsafe { word(w) }.load(Ordering::Relaxed)
}

/// # Safety
/// `w` is an aligned, mapped word; `'static` is a lie the callers never let escape.
#[inline(always)]
unsafe fn word(w: usize) -> &'static AtomicU64 {
    // SAFETY: aligned and mapped (caller); only atomic accesses are made through it.
    unsafe { AtomicU64::from_ptr(w as *mut u64) }
}

/// Write `bytes` at byte `at` of the word `w`, keeping its other bytes.
///
/// # Safety
/// `w` is an aligned, mapped, readable and writable word; `at + bytes.len() <= 8`.
unsafe fn merge(w: usize, at: usize, bytes: &[u8]) {
    // SAFETY: per the contract.
    let a = unsafe { word(w) };
    let mut cur = a.load(Ordering::Relaxed);
    loop {
        let mut b = cur.to_ne_bytes();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        match a.compare_exchange_weak(cur, u64::from_ne_bytes(b), Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => cur = now,
        }
    }
}

/// Long copies' aligned middles, 64 bytes at a time (see the module's documentation). Each
/// function copies a prefix of whole words of the `len` bytes it is given, and returns its
/// length: nothing where the copy is short, else one 8-byte atomic to bring the shared side
/// to a 16-byte boundary and then as many 64-byte blocks as fit.
mod blocks {
    use super::{word, W};
    use std::sync::atomic::Ordering;

    /// Shorter copies are left to the word loop: the set-up would cost more than it saves.
    const FROM: usize = 256;
    const BLOCK: usize = 64;

    /// Copy from the shared, 8-aligned `w` to the private `dst`.
    ///
    /// # Safety
    /// As [`super::copy_out`] for `w .. w + len`; `dst .. dst + len` is writable and private.
    #[inline]
    pub unsafe fn load(w: usize, dst: *mut u8, len: usize) -> usize {
        // SAFETY: per the contract; the head word is an aligned word of the caller's range,
        // and `dst` has room for its 8 bytes.
        unsafe {
            prefix(w, dst as usize, len, w, |s, d| {
                (d as *mut [u8; W]).write_unaligned(super::load(s).to_ne_bytes())
            })
        }
    }

    /// Copy from the private `src` to the shared, 8-aligned `w`.
    ///
    /// # Safety
    /// As [`super::copy_in`] for `w .. w + len`; `src .. src + len` is readable.
    #[inline]
    pub unsafe fn store(src: *const u8, w: usize, len: usize) -> usize {
        // SAFETY: per the contract; `src` holds the head word's 8 bytes, and `w` is an
        // aligned word of the caller's range.
        unsafe {
            prefix(src as usize, w, len, w, |s, d| {
                let v = u64::from_ne_bytes((s as *const [u8; W]).read_unaligned());
                word(d).store(v, Ordering::Relaxed)
            })
        }
    }

    /// Copy between two shared, 8-aligned ranges; only when both sides can be 16-aligned at
    /// once (they are 16 apart), else nothing.
    ///
    /// # Safety
    /// As [`super::copy_words`], for `len` bytes.
    #[cfg(all(linux_like, feature = "channel"))]
    #[inline]
    pub unsafe fn between(s: usize, d: usize, len: usize) -> usize {
        if s % 16 != d % 16 {
            return 0;
        }
        // SAFETY: per the contract; the head words are aligned words of the caller's ranges.
        unsafe {
            prefix(s, d, len, s, |s, d| {
                word(d).store(super::load(s), Ordering::Relaxed)
            })
        }
    }

    /// The prefix of a copy of `len` bytes from `s` to `d` made of blocks: nothing when short
    /// (or off x86-64), else the one word `head` copies to bring `shared` (`s` or `d`, the
    /// side others reach) to a 16-byte boundary, then whole blocks. Its length.
    ///
    /// # Safety
    /// Both ranges hold `len` bytes (mapped readable and writable), the side others reach is
    /// `shared` and follows this module's scheme; `head(s, d)` copies the 8 bytes at `s` to
    /// `d` by that scheme.
    #[inline(always)]
    unsafe fn prefix(
        s: usize,
        d: usize,
        len: usize,
        shared: usize,
        head: impl FnOnce(usize, usize),
    ) -> usize {
        if !cfg!(target_arch = "x86_64") || len < FROM {
            return 0;
        }
        let k = if shared.is_multiple_of(16) {
            0
        } else {
            head(s, d);
            W
        };
        let n = (len - k) / BLOCK;
        // SAFETY: the shared side is 16-aligned from `k` on; both ranges hold `n` blocks.
        unsafe { copy(s + k, d + k, n) };
        k + n * BLOCK
    }

    /// Copy `n` 64-byte blocks from `s` to `d` with 16-byte SSE2 moves.
    ///
    /// # Safety
    /// Both ranges are mapped (readable, writable); the side others can reach is 16-aligned;
    /// the other side is private to this call.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    unsafe fn copy(s: usize, d: usize, n: usize) {
        if n == 0 {
            return;
        }
        // SAFETY: the caller's ranges; the assembly reads `64 * n` bytes from `s` and writes
        // as many at `d`, touches no stack and no other memory.
        unsafe {
            std::arch::asm!(
                "2:",
                "movdqu {a}, [{s}]",
                "movdqu {b}, [{s} + 16]",
                "movdqu {c}, [{s} + 32]",
                "movdqu {e}, [{s} + 48]",
                "movdqu [{d}], {a}",
                "movdqu [{d} + 16], {b}",
                "movdqu [{d} + 32], {c}",
                "movdqu [{d} + 48], {e}",
                "add {s}, 64",
                "add {d}, 64",
                "dec {n}",
                "jnz 2b",
                s = inout(reg) s => _,
                d = inout(reg) d => _,
                n = inout(reg) n => _,
                a = out(xmm_reg) _,
                b = out(xmm_reg) _,
                c = out(xmm_reg) _,
                e = out(xmm_reg) _,
                options(nostack),
            );
        }
    }

    /// Never called: [`load`] and friends copy nothing outside x86-64.
    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn copy(_: usize, _: usize, _: usize) {}
}

/// The address of the low 32 bits of `word` (the futex word of mman's shared objects): the
/// kernel's futex calls take it; Rust code never accesses it as a 32-bit atomic.
#[cfg(all(linux_like, feature = "sync"))]
pub fn futex_half(word: &AtomicU64) -> *mut u32 {
    let p = word.as_ptr() as *mut u32;
    if cfg!(target_endian = "big") {
        p.wrapping_add(1)
    } else {
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(linux_like, feature = "channel"))]
    fn appends_and_padded_writes_agree(base: *mut u8, off: usize, data: &[u8]) {
        let len = data.len();
        let mut appended = vec![7u8];
        // SAFETY: inside the caller's backing, accessed only through this module's atomics.
        unsafe { copy_out_append(base.add(off), len, &mut appended) };
        assert_eq!(appended[0], 7);
        assert_eq!(&appended[1..], data);
        if off.is_multiple_of(8) {
            // SAFETY: as above (the padding stays inside the backing).
            unsafe { copy_in_padded(data, base.add(off)) };
            let mut back = Vec::new();
            // SAFETY: as above.
            unsafe { copy_out_append(base.add(off), len.next_multiple_of(8), &mut back) };
            assert_eq!(&back[..len], data);
            assert!(back[len..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn long_copies_are_exact_at_every_alignment_and_keep_neighbours() {
        const N: usize = 1024;
        let backing: Vec<AtomicU64> = (0..N / 8).map(|_| AtomicU64::new(0)).collect();
        let other: Vec<AtomicU64> = (0..N / 8).map(|_| AtomicU64::new(0)).collect();
        let (base, base2) = (backing.as_ptr() as *mut u8, other.as_ptr() as *mut u8);
        let data: Vec<u8> = (0..N).map(|b| (b * 7 + 1) as u8).collect();
        for off in 0..24 {
            for len in [255, 256, 257, 300, 319, 320, 321, 511, 512, 600, 777, N - 24] {
                // SAFETY: inside `backing`, accessed only through this module's atomics.
                unsafe { copy_in(&[0xEE; N], base) };
                // SAFETY: as above.
                unsafe { copy_in(&data[..len], base.add(off)) };
                let mut all = vec![0u8; N];
                // SAFETY: as above.
                unsafe { copy_out(base, &mut all) };
                assert!(all[..off].iter().all(|&b| b == 0xEE), "off {off} len {len}");
                assert_eq!(&all[off..off + len], &data[..len], "off {off} len {len}");
                assert!(all[off + len..].iter().all(|&b| b == 0xEE), "off {off} len {len}");
                let mut back = vec![0u8; len + 1];
                // SAFETY: as above.
                unsafe { copy_out(base.add(off), &mut back[1..]) };
                assert_eq!(&back[1..], &data[..len]);
                #[cfg(all(linux_like, feature = "channel"))]
                {
                    appends_and_padded_writes_agree(base, off, &data[..len]);
                    let w = off & !7;
                    // SAFETY: inside both backings, accessed only through atomics.
                    unsafe { copy_in(&[0xEE; N], base2) };
                    // SAFETY: as above.
                    unsafe { copy_in(&data, base) };
                    let words = len.min(N - 48) / 8;
                    for to in [w, w ^ 8, w + 16] {
                        // SAFETY: as above; both ranges lie in their backings.
                        unsafe { copy_words(base.add(w), base2.add(to), words) };
                        let mut got = vec![0u8; words * 8];
                        // SAFETY: as above.
                        unsafe { copy_out(base2.add(to), &mut got) };
                        assert_eq!(got, &data[w..w + words * 8], "words at {w} to {to}");
                    }
                }
            }
        }
    }

    #[test]
    fn copies_are_exact_at_every_alignment_and_keep_neighbours() {
        let backing: [AtomicU64; 8] = Default::default();
        let base = backing.as_ptr() as *mut u8;
        for off in 0..16 {
            for len in 0..40 {
                // SAFETY: inside `backing`, accessed only through this module's atomics.
                unsafe { copy_in(&[0xEE; 64], base) };
                let data: Vec<u8> = (0..len as u8).map(|b| b + 1).collect();
                // SAFETY: as above.
                unsafe { copy_in(&data, base.add(off)) };
                let mut all = [0u8; 64];
                // SAFETY: as above.
                unsafe { copy_out(base, &mut all) };
                assert!(all[..off].iter().all(|&b| b == 0xEE));
                assert_eq!(&all[off..off + len], &data[..]);
                assert!(all[off + len..].iter().all(|&b| b == 0xEE));
                let mut back = vec![0u8; len];
                // SAFETY: as above.
                unsafe { copy_out(base.add(off), &mut back) };
                assert_eq!(back, data);
                #[cfg(all(linux_like, feature = "channel"))]
                appends_and_padded_writes_agree(base, off, &data);
            }
        }
    }
}
