//! `FolioState`: the iomap path's per-folio sub-block state, the kernel's
//! `struct iomap_folio_state` (`ifs`, fs/iomap/buffered-io.c).
//!
//! The mapping, field by field: `ifs->state` (one bitmap, the uptodate
//! bits then the dirty bits) is `words`, in the same order, each half
//! rounded up to whole words; `ifs->state_lock` is not needed, because the
//! kernel takes it for bios of one folio completing at once and here every
//! change happens under the folio lock; `read_bytes_pending` /
//! `write_bytes_pending` have no counterpart because I/O completes before
//! the folio is unlocked. The kernel's helpers map to methods:
//! `ifs_set_range_uptodate` / `ifs_is_fully_uptodate` to
//! [`FolioState::set_uptodate`] (which reports full), `ifs_block_is_uptodate`
//! to [`FolioState::is_uptodate`], `ifs_set_range_dirty` /
//! `ifs_clear_range_dirty` to [`FolioState::set_dirty`] /
//! [`FolioState::clear_dirty`].
//!
//! One allocation per folio holding two bitmaps of N bits each (N = blocks
//! per folio): which blocks are uptodate and which are dirty. It is attached
//! only to folios with more than one block that need per-block state, and is
//! seeded from the folio flags when attached (an uptodate folio has every
//! block uptodate, a dirty one every block dirty), so a later partial
//! operation neither reads over valid data nor loses dirtiness.

use crate::bitmap;

/// Per-block uptodate and dirty bits of one folio (`struct
/// iomap_folio_state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolioState {
    nblocks: usize,
    /// Words `[0, half)` hold the uptodate bits, `[half, 2*half)` the dirty bits.
    words: Box<[u64]>,
}

impl FolioState {
    /// State for a folio of `nblocks` blocks, seeded from its flags.
    pub fn new(nblocks: usize, folio_uptodate: bool, folio_dirty: bool) -> Self {
        let half = bitmap::words_for(nblocks);
        let mut s = FolioState {
            nblocks,
            words: vec![0u64; 2 * half].into_boxed_slice(),
        };
        if folio_uptodate {
            s.set_uptodate(0, nblocks);
        }
        if folio_dirty {
            s.set_dirty(0, nblocks);
        }
        s
    }

    /// Blocks in the folio.
    pub fn nblocks(&self) -> usize {
        self.nblocks
    }

    /// Bytes of memory this state costs (header and bitmaps).
    pub fn metadata_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.words.len() * 8
    }

    fn half(&self) -> usize {
        self.words.len() / 2
    }

    fn split(&self) -> (&[u64], &[u64]) {
        self.words.split_at(self.half())
    }

    fn split_mut(&mut self) -> (&mut [u64], &mut [u64]) {
        let h = self.half();
        self.words.split_at_mut(h)
    }

    /// Marks blocks `[start, end)` uptodate; returns true when every block now is.
    pub fn set_uptodate(&mut self, start: usize, end: usize) -> bool {
        let n = self.nblocks;
        let (up, _) = self.split_mut();
        bitmap::set_range(up, start, end);
        bitmap::all_set(up, 0, n)
    }

    /// Clears the uptodate bits of `[start, end)`.
    pub fn clear_uptodate(&mut self, start: usize, end: usize) {
        let (up, _) = self.split_mut();
        bitmap::clear_range(up, start, end);
    }

    /// True when every block of `[start, end)` is uptodate.
    pub fn is_uptodate(&self, start: usize, end: usize) -> bool {
        bitmap::all_set(self.split().0, start, end)
    }

    /// True when every block of the folio is uptodate.
    pub fn all_uptodate(&self) -> bool {
        self.is_uptodate(0, self.nblocks)
    }

    /// Marks blocks `[start, end)` dirty.
    pub fn set_dirty(&mut self, start: usize, end: usize) {
        let (_, dirty) = self.split_mut();
        bitmap::set_range(dirty, start, end);
    }

    /// Clears the dirty bits of `[start, end)`.
    pub fn clear_dirty(&mut self, start: usize, end: usize) {
        let (_, dirty) = self.split_mut();
        bitmap::clear_range(dirty, start, end);
    }

    /// True when block `block` is dirty.
    pub fn is_dirty(&self, block: usize) -> bool {
        bitmap::any_set(self.split().1, block, block + 1)
    }

    /// True when any block is dirty.
    pub fn any_dirty(&self) -> bool {
        bitmap::any_set(self.split().1, 0, self.nblocks)
    }

    /// The first uptodate block in `[from, limit)`.
    pub fn next_uptodate(&self, from: usize, limit: usize) -> Option<usize> {
        bitmap::next_set(self.split().0, from, limit)
    }

    /// The first block in `[from, limit)` that is not uptodate.
    pub fn next_not_uptodate(&self, from: usize, limit: usize) -> Option<usize> {
        bitmap::next_clear(self.split().0, from, limit)
    }

    /// The next run of dirty blocks starting at or after `from` and ending at
    /// or before `limit`, as `[start, end)`.
    pub fn next_dirty_run(&self, from: usize, limit: usize) -> Option<(usize, usize)> {
        let dirty = self.split().1;
        let start = bitmap::next_set(dirty, from, limit)?;
        let end = bitmap::next_clear(dirty, start, limit).unwrap_or(limit);
        Some((start, end))
    }

    /// Number of dirty blocks.
    pub fn dirty_count(&self) -> usize {
        bitmap::count(self.split().1, 0, self.nblocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_from_flags() {
        let s = FolioState::new(512, true, false);
        assert!(s.all_uptodate());
        assert!(!s.any_dirty());
        let s = FolioState::new(512, false, true);
        assert!(!s.is_uptodate(0, 1));
        assert_eq!(s.dirty_count(), 512);
        assert_eq!(s.metadata_bytes(), std::mem::size_of::<FolioState>() + 128);
    }

    #[test]
    fn runs() {
        let mut s = FolioState::new(100, false, false);
        s.set_dirty(3, 7);
        s.set_dirty(64, 70);
        assert_eq!(s.next_dirty_run(0, 100), Some((3, 7)));
        assert_eq!(s.next_dirty_run(7, 100), Some((64, 70)));
        assert_eq!(s.next_dirty_run(65, 68), Some((65, 68)));
        assert_eq!(s.next_dirty_run(70, 100), None);
        assert!(!s.set_uptodate(0, 99));
        assert!(s.set_uptodate(99, 100));
        assert_eq!(s.next_not_uptodate(0, 100), None);
    }
}
