//! Byte counts on the command line and in reports: the one size parser
//! every flag uses, and the one way a report writes a size back.

/// Parses a size with an optional binary suffix: `65536`, `64K`, `16M`,
/// `1G` (also lower case, and `0x` hex without a suffix).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad =
        || format!("{s:?} is not a size (expected a number with an optional K, M or G suffix)");
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n = crate::trace::parse_number(digits).ok_or_else(bad)?;
    n.checked_mul(1 << shift).ok_or_else(|| {
        format!("size {s:?} is too large: a size is at most 2^64 - 1 bytes (17179869183G)")
    })
}

/// How [`human`] spells a size's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    /// As the flags take it, so a printed size can be pasted back:
    /// `64K`, `1M`, `1000`.
    Flag,
    /// Spelled out, for charts and prose: `64 KiB`, `1 MiB`, `1000 B`.
    Spelled,
}

/// `n` bytes in the largest of MiB, KiB and bytes that divides it exactly.
pub fn human(n: u64, units: Units) -> String {
    let (mib, kib, bytes) = match units {
        Units::Flag => ("M", "K", ""),
        Units::Spelled => (" MiB", " KiB", " B"),
    };
    match n {
        n if n >= 1 << 20 && n.is_multiple_of(1 << 20) => format!("{}{mib}", n >> 20),
        n if n >= 1 << 10 && n.is_multiple_of(1 << 10) => format!("{}{kib}", n >> 10),
        n => format!("{n}{bytes}"),
    }
}

/// `n` bytes in the largest binary unit that keeps a digit before the
/// point, to one decimal (`1.5 GiB`): for amounts that are not a size the
/// user gave, such as free space.
pub fn approx(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("16m"), Ok(16 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("0x1000"), Ok(4096));
        for bad in ["", "K", "-1", "1T", "1.5M", "99999999999999999999G", "x"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        // The largest whole-G size, and the first whose bytes overflow u64.
        assert_eq!(parse_size("17179869183G"), Ok(u64::MAX - (1 << 30) + 1));
        assert_eq!(parse_size("18014398509481983K"), Ok(u64::MAX - 1023));
        for big in ["17179869184G", "17592186044416M", "18014398509481984K"] {
            let e = parse_size(big).unwrap_err();
            assert!(
                e.contains("too large") && e.contains("2^64 - 1"),
                "{big}: {e}"
            );
        }
    }

    #[test]
    fn sizes_print_in_both_units() {
        assert_eq!(human(65536, Units::Flag), "64K");
        assert_eq!(human(1 << 20, Units::Flag), "1M");
        assert_eq!(human(1000, Units::Flag), "1000");
        assert_eq!(human(512, Units::Spelled), "512 B");
        assert_eq!(human(1024, Units::Spelled), "1 KiB");
        assert_eq!(human(1 << 20, Units::Spelled), "1 MiB");
        assert_eq!(human(1536, Units::Spelled), "1536 B");
        // Every flag spelling parses back to its size.
        for n in [512, 4096, 65536, 1 << 20, 3 << 20, 1000] {
            assert_eq!(parse_size(&human(n, Units::Flag)), Ok(n));
        }
        assert_eq!(approx(1000), "1000 bytes");
        assert_eq!(approx(3 << 29), "1.5 GiB");
    }
}
