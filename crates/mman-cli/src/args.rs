//! The parsers every option with a number goes through, so each kind of number is checked
//! the same way in every subcommand: sizes, durations, counts.

/// A whole number from `min` to `max`, named `what` in errors, with the errors every
/// numeric parser gives: a number past `max` (even past `u64`) is named as too large, not as
/// "not a whole number"; a negative one as negative.
pub fn whole_in(s: &str, what: &str, min: u64, max: u64) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.strip_prefix('+').unwrap_or(t);
    let all_digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(digits) {
        if t.strip_prefix('-').is_some_and(all_digits) {
            return Err(format!(
                "{what} {s:?} is negative: expected a whole number from {min}"
            ));
        }
        return Err(format!("bad {what} {s:?}: expected a whole number"));
    }
    match digits.parse::<u64>() {
        Ok(v) if v > max => Err(format!("{what} {v} is too large (at most {max})")),
        Err(_) => Err(format!("{what} {s:?} is too large (at most {max})")),
        Ok(v) if v < min => Err(format!("{what} {v} is too small (at least {min})")),
        Ok(v) => Ok(v),
    }
}

/// A size in bytes: `4096`, `4k`, `100M`, `1.5G`, `2T` (powers of 1024; a trailing `B` is
/// allowed). A fraction is allowed where it makes a whole number of bytes (`1.5k` is 1536);
/// `1.5` or `0.1k` is an error, not rounded. Refuses negative, non-finite and too-large
/// values.
pub fn size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix(['b', 'B']).unwrap_or(t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_lowercase() {
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                't' => 1 << 40,
                _ => return Err(format!("bad size {s:?}: the unit must be k, M, G or T")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    if num.starts_with('-') {
        return Err(format!("size {s:?} is negative"));
    }
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "bad size {s:?}: expected a number such as 4096, 4k, 1.5G"
        ));
    }
    let too_large = || format!("size {s:?} is too large (at most {} bytes)", u64::MAX);
    // Exact decimal arithmetic: INT.FRAC x MULT = (INT x 10^f + FRAC) x MULT / 10^f.
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    if int.len() > 20 {
        return Err(too_large());
    }
    if frac.len() > 18 {
        return Err(format!(
            "size {s:?} is not a whole number of bytes (too many decimal places)"
        ));
    }
    let scale = 10u128.pow(frac.len() as u32);
    let int_v: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| too_large())?
    };
    let frac_v: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| too_large())?
    };
    let scaled = int_v
        .checked_mul(scale)
        .and_then(|v| v.checked_add(frac_v))
        .and_then(|v| v.checked_mul(mult as u128))
        .ok_or_else(too_large)?;
    if scaled % scale != 0 {
        return Err(format!(
            "size {s:?} is not a whole number of bytes: a byte does not divide"
        ));
    }
    u64::try_from(scaled / scale).map_err(|_| too_large())
}

/// A byte range for `cache -p`: `A-B`, `A-` or `-B` (sizes as [`size`] reads them; `-4k`
/// is the first 4 KiB, which is why the option takes values that start with a hyphen).
pub fn range(s: &str) -> Result<mman::cache::PageRange, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("bad range {s:?}: expected A-B, A- or -B"))?;
    let a = if a.is_empty() { 0 } else { size(a)? };
    let b = if b.is_empty() { None } else { Some(size(b)?) };
    if b.is_some_and(|b| b < a) {
        return Err(format!("bad range {s:?}: the end comes before the start"));
    }
    Ok(mman::cache::PageRange::bytes(a, b))
}

/// A glob pattern (`*.log`, `[ab]?`), checked when the arguments are read.
pub fn glob(s: &str) -> Result<globset::Glob, String> {
    globset::Glob::new(s).map_err(|e| format!("bad pattern {s:?}: {}", e.kind()))
}

/// A process id: 1 to `i32::MAX`.
pub fn pid(s: &str) -> Result<u32, String> {
    whole_in(s, "process id", 1, i32::MAX as u64).map(|v| v as u32)
}

/// The longest duration a command accepts: a year.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// A duration in seconds: finite, more than 0, at most a year.
pub fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected seconds, such as 2 or 0.5"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!(
            "duration {s:?} must be a finite number of seconds above 0"
        ));
    }
    if v > MAX_SECONDS {
        return Err(format!("duration {s:?} is longer than a year"));
    }
    Ok(v)
}

/// A count of at least 1.
pub fn positive(s: &str) -> Result<u64, String> {
    whole_in(s, "count", 1, u64::MAX)
}

/// A count from 0.
pub fn count(s: &str) -> Result<u64, String> {
    whole_in(s, "count", 0, u64::MAX)
}

/// The most round trips a benchmark times: each is kept (8 bytes) for the percentiles, and
/// the peers are told the count plus the warm-up, which must not wrap.
pub const MAX_ROUNDS: u64 = 100_000_000;
/// The most messages a benchmark sends one way: their bytes (up to 1 GiB each) are counted
/// in a u64.
pub const MAX_MESSAGES: u64 = 1_000_000_000;

/// A count from 1 to `max`.
fn count_to(s: &str, max: u64) -> Result<u64, String> {
    whole_in(s, "count", 1, max)
}

/// A benchmark's round trips: 1 to [`MAX_ROUNDS`].
pub fn rounds(s: &str) -> Result<u64, String> {
    count_to(s, MAX_ROUNDS)
}

/// A benchmark's messages: 1 to [`MAX_MESSAGES`].
pub fn messages(s: &str) -> Result<u64, String> {
    count_to(s, MAX_MESSAGES)
}

/// A message size for `bench channel`: 1 byte to 1 GiB.
pub fn message_size(s: &str) -> Result<u64, String> {
    match size(s)? {
        n @ 1..=0x4000_0000 => Ok(n),
        n => Err(format!("{n} bytes: a message is 1 byte to 1 GiB")),
    }
}

/// Threads for a walk: 0 (one a core) to 256.
pub fn threads(s: &str) -> Result<u16, String> {
    whole_in(s, "thread count", 0, 256).map(|v| v as u16)
}

/// Philosophers at the table: 2 to 1024.
pub fn philosophers(s: &str) -> Result<u32, String> {
    whole_in(s, "number of philosophers", 2, 1024).map(|v| v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("4k"), Ok(4096));
        assert_eq!(size("1M"), Ok(1 << 20));
        assert_eq!(size("1.5G"), Ok(3 << 29));
        assert_eq!(size("2TB"), Ok(2 << 40));
        for bad in [
            "",
            "-1",
            "1e99",
            "inf",
            "nan",
            "1x",
            "1e3k",
            "99999999999T",
            "18446744073709551616",
        ] {
            assert!(size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_are_whole_numbers_of_bytes() {
        assert_eq!(size("1.5k"), Ok(1536));
        assert_eq!(size("0.5K"), Ok(512));
        assert_eq!(size(".5k"), Ok(512));
        assert_eq!(size("2.000"), Ok(2));
        assert_eq!(size("1.25M"), Ok(1_310_720));
        assert_eq!(
            size("16777215.999999999999999999T").map_err(|e| e.contains("whole")),
            Err(true)
        );
        for frac in ["1.5", "0.5", "0.1k", "1.0001", "0.000000000000000000001T"] {
            let e = size(frac).unwrap_err();
            assert!(e.contains("not a whole number of bytes"), "{frac}: {e}");
        }
        for big in [
            "18446744073709551616",
            "99999999999999999999999",
            "16777216T",
            "17179869184G",
        ] {
            let e = size(big).unwrap_err();
            assert!(e.contains("too large"), "{big}: {e}");
        }
        assert_eq!(size("18446744073709551615"), Ok(u64::MAX));
        assert!(size("-1").unwrap_err().contains("negative"));
        assert!(size(".").is_err() && size("1..2").is_err() && size("k").is_err());
    }

    #[test]
    fn numbers_past_their_range_are_too_large() {
        for s in ["1025", "99999999999999999999", "184467440737095516160"] {
            let e = philosophers(s).unwrap_err();
            assert!(e.contains("too large (at most 1024)"), "{s}: {e}");
        }
        assert!(positive("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert!(pid("2147483648").unwrap_err().contains("too large"));
        assert!(threads("-1").unwrap_err().contains("negative"));
        assert!(positive("1.5").unwrap_err().contains("whole number"));
        assert_eq!(count("0"), Ok(0));
        assert_eq!(positive("+7"), Ok(7));
    }

    #[test]
    fn ranges() {
        assert_eq!(range("-4k"), Ok(mman::cache::PageRange::bytes(0, Some(4096))));
        assert_eq!(range("4k-"), Ok(mman::cache::PageRange::bytes(4096, None)));
        assert!(range("5-1").unwrap_err().contains("before the start"));
        assert!(range("5").is_err() && range("a-b").is_err());
    }

    #[test]
    fn durations_and_counts() {
        assert_eq!(seconds("0.5"), Ok(0.5));
        for bad in ["0", "-1", "inf", "nan", "1e99", "x"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(positive("3"), Ok(3));
        assert!(positive("0").is_err() && positive("-2").is_err());
        assert_eq!(rounds("100000000"), Ok(100_000_000));
        assert!(rounds("4294967295").is_err() && rounds("0").is_err());
        assert!(messages("18446744073709551615").is_err());
    }
}
