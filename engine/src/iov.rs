//! `IovIter`: the source of a write (one buffer, an iovec, or zeroes),
//! consumed folio by folio.

use std::io::IoSlice;

#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    One(&'a [u8]),
    Many(&'a [IoSlice<'a>]),
    Zeros,
}

/// A cursor over the bytes a write copies into the page cache.
#[derive(Debug, Clone)]
pub struct IovIter<'a> {
    src: Source<'a>,
    seg: usize,
    off: usize,
    remaining: u64,
}

impl<'a> IovIter<'a> {
    /// The bytes of one buffer.
    pub fn from_slice(buf: &'a [u8]) -> Self {
        IovIter {
            src: Source::One(buf),
            seg: 0,
            off: 0,
            remaining: buf.len() as u64,
        }
    }

    /// The bytes of an iovec, in order. Returns `None` when the lengths add
    /// up past `u64::MAX`.
    pub fn from_iovec(bufs: &'a [IoSlice<'a>]) -> Option<Self> {
        let total = bufs
            .iter()
            .try_fold(0u64, |acc, b| acc.checked_add(b.len() as u64))?;
        Some(IovIter {
            src: Source::Many(bufs),
            seg: 0,
            off: 0,
            remaining: total,
        })
    }

    /// `len` zero bytes (zeroing a gap below a new EOF).
    pub fn zeros(len: u64) -> Self {
        IovIter {
            src: Source::Zeros,
            seg: 0,
            off: 0,
            remaining: len,
        }
    }

    /// Bytes not yet copied.
    #[inline]
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Copies the next `dst.len()` bytes (or fewer, at the end) into `dst`
    /// and advances; returns the count copied.
    #[inline]
    pub fn copy_to(&mut self, dst: &mut [u8]) -> usize {
        let want = dst
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        match self.src {
            Source::One(b) => {
                dst[..want].copy_from_slice(&b[self.off..self.off + want]);
                self.off += want;
            }
            Source::Zeros => dst[..want].fill(0),
            Source::Many(bufs) => {
                let mut done = 0;
                while done < want {
                    let seg: &[u8] = &bufs[self.seg];
                    let n = (seg.len() - self.off).min(want - done);
                    dst[done..done + n].copy_from_slice(&seg[self.off..self.off + n]);
                    done += n;
                    self.off += n;
                    if self.off == seg.len() {
                        self.seg += 1;
                        self.off = 0;
                    }
                }
            }
        }
        self.remaining -= want as u64;
        want
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iovec_spans_segments() {
        let (a, b, c) = ([1u8; 3], [2u8; 0], [3u8; 5]);
        let v = [IoSlice::new(&a), IoSlice::new(&b), IoSlice::new(&c)];
        let mut it = IovIter::from_iovec(&v).unwrap();
        assert_eq!(it.remaining(), 8);
        let mut d = [0u8; 4];
        assert_eq!(it.copy_to(&mut d), 4);
        assert_eq!(d, [1, 1, 1, 3]);
        let mut d = [9u8; 10];
        assert_eq!(it.copy_to(&mut d), 4);
        assert_eq!(&d[..5], &[3, 3, 3, 3, 9]);
        assert_eq!(it.remaining(), 0);
    }

    #[test]
    fn zeros_and_slice() {
        let mut z = IovIter::zeros(3);
        let mut d = [7u8; 5];
        assert_eq!(z.copy_to(&mut d), 3);
        assert_eq!(d, [0, 0, 0, 7, 7]);
        let mut s = IovIter::from_slice(&[5, 6]);
        assert_eq!(s.copy_to(&mut d[..1]), 1);
        assert_eq!(s.copy_to(&mut d), 1);
        assert_eq!(d[0], 6);
    }
}
