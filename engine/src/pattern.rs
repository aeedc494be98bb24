//! The fixed byte pattern writes carry and the hash printed for reads.
//!
//! Both are part of the `replay` command-line contract (docs/DESIGN.md §7),
//! so that any other tool can reproduce a replay byte for
//! byte; the model harness (`bufwrite-testkit`) and the `bufwrite` binary use these
//! same functions.
//!
//! - byte at absolute file offset `o` for seed `s`:
//!   `(splitmix64(s ^ (o >> 3)) >> (8 * (o & 7))) & 0xff` ([`byte_at`],
//!   computed eight bytes at a time by [`fill`]). A byte depends on the seed
//!   and its absolute offset, so overlapping writes with different seeds are
//!   visible.
//! - the read hash: FNV-1a 64 of the bytes ([`fnv1a64`]).
//!
//! ```
//! use bufwrite_engine::pattern::{byte_at, fill, fnv1a64};
//!
//! let mut buf = [0u8; 16];
//! fill(7, 100, &mut buf);
//! assert_eq!(buf[3], byte_at(7, 103));
//! assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
//! ```

/// splitmix64 (the generator's output step applied to the state `x`), as
/// docs/DESIGN.md §7 specifies it; all arithmetic wrapping.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The byte at absolute file offset `offset` for `seed`:
/// `(splitmix64(seed ^ (offset >> 3)) >> (8 * (offset & 7))) & 0xff`.
/// The definition, which [`fill`] computes eight bytes at a time.
pub fn byte_at(seed: u64, offset: u64) -> u8 {
    (splitmix64(seed ^ (offset >> 3)) >> (8 * (offset & 7))) as u8
}

/// Fills `buf` with the bytes of `seed` for file offsets `offset ..`
/// (offsets wrap past `u64::MAX`).
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    // One splitmix64 per 8-byte group of the file rather than per byte:
    // tests and benches write megabytes.
    let mut o = offset;
    let mut i = 0;
    while i < buf.len() {
        let word = splitmix64(seed ^ (o >> 3)).to_le_bytes();
        let first = (o & 7) as usize;
        let n = (8 - first).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&word[first..first + n]);
        i += n;
        o = o.wrapping_add(n as u64);
    }
}

/// FNV-1a 64 of `bytes` (offset basis `0xcbf29ce484222325`, prime
/// `0x100000001b3`): the `HASH` of the replay output.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // Reference values of the published splitmix64 finaliser applied to
        // x (the generator's first output from state x).
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(1), 0x910a_2dec_8902_5cc1);
    }

    #[test]
    fn fnv1a64_known_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn bytes_are_little_endian_groups_of_eight() {
        let w0 = 0xe220_a839_7b1d_cdafu64.to_le_bytes();
        for o in 0..8 {
            assert_eq!(byte_at(0, o), w0[o as usize]);
        }
        // Offsets 8..16 use splitmix64(0 ^ 1), and the seed is xored in.
        assert_eq!(byte_at(0, 8), 0xc1);
        assert_eq!(byte_at(1, 0), 0xc1);
    }

    #[test]
    fn fill_matches_byte_at() {
        for off in [0u64, 1, 5, 7, 8, 13, 4095, u64::MAX - 20, u64::MAX - 3] {
            for len in [0usize, 1, 3, 19, 21] {
                let mut buf = vec![0u8; len];
                fill(42, off, &mut buf);
                for (i, &b) in buf.iter().enumerate() {
                    let o = off.wrapping_add(i as u64);
                    assert_eq!(b, byte_at(42, o), "offset {o}");
                }
            }
        }
    }
}
