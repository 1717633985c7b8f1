//! The parsers every option with a number goes through, so each kind of number is checked
//! the same way in every subcommand: sizes, durations, counts.

/// A size in bytes: `4096`, `4k`, `100M`, `1.5G`, `2T` (powers of 1024; a trailing `B` is
/// allowed). Refuses negative, non-finite and too-large values.
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
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "bad size {s:?}: expected a number such as 4096, 4k, 1.5G"
        ));
    }
    if let Ok(v) = num.parse::<u64>() {
        return v
            .checked_mul(mult)
            .ok_or_else(|| format!("size {s:?} is too large (at most 16 EiB)"));
    }
    let v: f64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let bytes = v * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size {s:?} is too large (at most 16 EiB)"));
    }
    Ok(bytes as u64)
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
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("bad count {s:?}: expected a whole number from 1")),
    }
}

/// The most round trips a benchmark times: each is kept (8 bytes) for the percentiles, and
/// the peers are told the count plus the warm-up, which must not wrap.
pub const MAX_ROUNDS: u64 = 100_000_000;
/// The most messages a benchmark sends one way: their bytes (up to 1 GiB each) are counted
/// in a u64.
pub const MAX_MESSAGES: u64 = 1_000_000_000;

/// A count from 1 to `max`.
fn count_to(s: &str, max: u64) -> Result<u64, String> {
    let v = positive(s)?;
    if v > max {
        return Err(format!("{v} is more than {max}, the most this takes"));
    }
    Ok(v)
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
