//! Bit operations on on-disk bitmaps (little-endian bit order within a
//! byte, as ext4's `ext4_set_bit`), and the free-run search.
//!
//! Searches take an optional second bitmap, `busy`: bits set there count
//! as in use although the on-disk bitmap says free (blocks freed by a
//! transaction that has not committed yet).

/// True if bit `i` is set.
pub(super) fn test(b: &[u8], i: usize) -> bool {
    b[i / 8] & (1 << (i % 8)) != 0
}

/// Sets bit `i`.
pub(super) fn set(b: &mut [u8], i: usize) {
    b[i / 8] |= 1 << (i % 8);
}

/// Clears bit `i`.
pub(super) fn clear(b: &mut [u8], i: usize) {
    b[i / 8] &= !(1 << (i % 8));
}

/// Sets bits `[from, to)`.
pub(super) fn set_range(b: &mut [u8], from: usize, to: usize) {
    for i in from..to {
        set(b, i);
    }
}

/// Clears bits `[from, to)`.
pub(super) fn clear_range(b: &mut [u8], from: usize, to: usize) {
    for i in from..to {
        clear(b, i);
    }
}

/// Number of clear bits in `[from, to)`.
pub(super) fn count_zeros(b: &[u8], from: usize, to: usize) -> usize {
    (from..to).filter(|&i| !test(b, i)).count()
}

/// The byte of `b` at `i`, with `busy` or-ed in.
fn byte(b: &[u8], busy: Option<&[u8]>, i: usize) -> u8 {
    b[i] | busy.map_or(0, |x| x[i])
}

fn used(b: &[u8], busy: Option<&[u8]>, i: usize) -> bool {
    test(b, i) || busy.is_some_and(|x| test(x, i))
}

/// The first bit in `[from, to)` that is clear in `b` and in `busy`.
pub(super) fn next_free(b: &[u8], busy: Option<&[u8]>, from: usize, to: usize) -> Option<usize> {
    let mut i = from;
    while i < to {
        // Whole bytes with every bit used are skipped at once.
        if i.is_multiple_of(8) && i + 8 <= to && byte(b, busy, i / 8) == 0xFF {
            i += 8;
            continue;
        }
        if !used(b, busy, i) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The first bit in `[from, to)` that is used (set in `b` or `busy`), or
/// `to` when none is.
pub(super) fn next_used(b: &[u8], busy: Option<&[u8]>, from: usize, to: usize) -> usize {
    let mut i = from;
    while i < to {
        if i.is_multiple_of(8) && i + 8 <= to && byte(b, busy, i / 8) == 0 {
            i += 8;
            continue;
        }
        if used(b, busy, i) {
            return i;
        }
        i += 1;
    }
    to
}

/// A run of free bits: `(first, len)`.
pub(super) type Run = (usize, usize);

/// Scans `[from, to)` for free runs, each capped at `want` bits: returns
/// the first run of `want` bits, else the longest run seen (the first of
/// equal ones), or `None` when every bit is used.
pub(super) fn find_run(
    b: &[u8],
    busy: Option<&[u8]>,
    from: usize,
    to: usize,
    want: usize,
) -> Option<Run> {
    let mut best: Option<Run> = None;
    let mut i = from;
    while let Some(start) = next_free(b, busy, i, to) {
        let cap = to.min(start.saturating_add(want));
        let end = next_used(b, busy, start, cap);
        let len = end - start;
        if len >= want {
            return Some((start, len));
        }
        if best.is_none_or(|(_, l)| len > l) {
            best = Some((start, len));
        }
        i = end;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_runs() {
        let mut b = vec![0u8; 4];
        set_range(&mut b, 0, 10);
        assert_eq!(b[0], 0xFF);
        assert_eq!(b[1], 0b11);
        assert!(test(&b, 9) && !test(&b, 10));
        assert_eq!(count_zeros(&b, 0, 32), 22);
        assert_eq!(next_free(&b, None, 0, 32), Some(10));
        set(&mut b, 12);
        // Runs: 10..12 (2), 13..32 (19).
        assert_eq!(find_run(&b, None, 0, 32, 2), Some((10, 2)));
        assert_eq!(find_run(&b, None, 0, 32, 5), Some((13, 5)));
        assert_eq!(find_run(&b, None, 0, 32, 40), Some((13, 19)));
        assert_eq!(find_run(&b, None, 0, 12, 40), Some((10, 2)));
        let mut busy = vec![0u8; 4];
        set_range(&mut busy, 13, 32);
        assert_eq!(find_run(&b, Some(&busy), 0, 32, 5), Some((10, 2)));
        set_range(&mut busy, 10, 12);
        assert_eq!(find_run(&b, Some(&busy), 0, 32, 5), None);
        clear(&mut b, 0);
        assert_eq!(next_free(&b, Some(&busy), 0, 32), Some(0));
        clear_range(&mut b, 0, 32);
        assert_eq!(next_used(&b, None, 0, 32), 32);
        assert_eq!(next_used(&b, Some(&busy), 0, 32), 10);
    }
}
