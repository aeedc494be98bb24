//! Buffer heads: the per-block state of the legacy path (`struct
//! buffer_head`, less the fields a userspace model has no use for).

use bufwrite_engine::{BlockMapping, Error, ExtentKind, Result};

/// The state bits of a buffer head (`b_state`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BhState(u16);

impl BhState {
    /// The block's bytes in the folio are valid.
    pub const UPTODATE: BhState = BhState(1 << 0);
    /// The block must be written back (only meaningful with MAPPED and UPTODATE).
    pub const DIRTY: BhState = BhState(1 << 1);
    /// Under I/O (the kernel also sleeps on it); set around a read-in.
    pub const LOCK: BhState = BhState(1 << 2);
    /// Has been submitted for I/O at least once.
    pub const REQ: BhState = BhState(1 << 3);
    /// `blocknr` is valid: the block has a place on the device.
    pub const MAPPED: BhState = BhState(1 << 4);
    /// Just created by get_block: bytes the write does not cover must be zeroed.
    pub const NEW: BhState = BhState(1 << 5);
    /// Under a read whose completion makes it uptodate.
    pub const ASYNC_READ: BhState = BhState(1 << 6);
    /// Under writeback.
    pub const ASYNC_WRITE: BhState = BhState(1 << 7);
    /// Delayed allocation: reserved, no disk block yet.
    pub const DELAY: BhState = BhState(1 << 8);
    /// Allocated but not written on disk: reads must see zeroes.
    pub const UNWRITTEN: BhState = BhState(1 << 9);
    /// The last write of this block failed.
    pub const WRITE_EIO: BhState = BhState(1 << 10);

    /// No bits set.
    pub const fn empty() -> Self {
        BhState(0)
    }

    /// True when every bit of `f` is set.
    #[inline]
    pub const fn contains(self, f: BhState) -> bool {
        self.0 & f.0 == f.0
    }

    /// True when any bit of `f` is set.
    #[inline]
    pub const fn intersects(self, f: BhState) -> bool {
        self.0 & f.0 != 0
    }

    /// Sets the bits of `f`.
    #[inline]
    pub fn insert(&mut self, f: BhState) {
        self.0 |= f.0;
    }

    /// Clears the bits of `f`.
    #[inline]
    pub fn remove(&mut self, f: BhState) {
        self.0 &= !f.0;
    }
}

impl std::ops::BitOr for BhState {
    type Output = BhState;
    fn bitor(self, rhs: BhState) -> BhState {
        BhState(self.0 | rhs.0)
    }
}

/// One block of a folio: its state, where it lives on the device, and
/// where it sits in the folio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferHead {
    /// State bits.
    pub state: BhState,
    /// Disk block number in units of `size` (valid when MAPPED).
    pub blocknr: u64,
    /// Offset of the block in the folio, in bytes.
    pub offset: u32,
    /// Block size in bytes.
    pub size: u32,
}

impl BufferHead {
    /// A head for the block at folio offset `offset`.
    pub fn new(offset: u32, size: u32, state: BhState) -> Self {
        BufferHead {
            state,
            blocknr: 0,
            offset,
            size,
        }
    }

    /// Folio byte range `[start, end)` of the block.
    #[inline]
    pub fn range(&self) -> (usize, usize) {
        let start = self.offset as usize;
        (start, start + self.size as usize)
    }

    /// True when the block lies entirely outside folio bytes `[from, to)`.
    #[inline]
    pub fn outside(&self, from: usize, to: usize) -> bool {
        let (start, end) = self.range();
        end <= from || start >= to
    }

    /// Valid in memory.
    #[inline]
    pub fn uptodate(&self) -> bool {
        self.state.contains(BhState::UPTODATE)
    }

    /// Has a disk block.
    #[inline]
    pub fn mapped(&self) -> bool {
        self.state.contains(BhState::MAPPED)
    }

    /// Needs writing back.
    #[inline]
    pub fn dirty(&self) -> bool {
        self.state.contains(BhState::DIRTY)
    }

    /// Device byte address of the block (valid when MAPPED).
    #[inline]
    pub fn addr(&self) -> u64 {
        self.blocknr * u64::from(self.size)
    }

    /// Records a get_block answer, as ext4's get_block sets the bits: a
    /// mapped block gets its number; unwritten and delalloc blocks are
    /// mapped but New (their uncovered bytes must be zeroed); a hole stays
    /// unmapped. A device address that is not block aligned is refused
    /// rather than rounded.
    pub fn map(&mut self, m: &BlockMapping) -> Result<()> {
        let bs = u64::from(self.size);
        let extra = match m.kind {
            ExtentKind::Hole => return Ok(()),
            ExtentKind::Mapped => BhState::empty(),
            ExtentKind::Unwritten => BhState::UNWRITTEN | BhState::NEW,
            ExtentKind::Delalloc => BhState::DELAY | BhState::NEW,
        };
        if !m.addr.is_multiple_of(bs) {
            return Err(Error::InvalidArgument(format!(
                "get_block returned device address {} not aligned to the block size {bs}",
                m.addr
            )));
        }
        self.blocknr = m.addr / bs;
        self.state.insert(BhState::MAPPED | extra);
        if m.new {
            self.state.insert(BhState::NEW);
        }
        Ok(())
    }

    /// True when the block's bytes cannot come from the device and read as
    /// zeroes instead: no disk block, unwritten, delalloc or just created.
    #[inline]
    pub fn reads_as_zero(&self) -> bool {
        !self.mapped()
            || self
                .state
                .intersects(BhState::NEW | BhState::UNWRITTEN | BhState::DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_bits() {
        let mut s = BhState::UPTODATE | BhState::DIRTY;
        assert!(s.contains(BhState::UPTODATE) && s.intersects(BhState::DIRTY | BhState::NEW));
        s.remove(BhState::DIRTY);
        assert!(!s.contains(BhState::DIRTY));
        s.insert(BhState::MAPPED);
        assert!(s.contains(BhState::MAPPED | BhState::UPTODATE));
    }

    #[test]
    fn map_sets_bits_from_the_mapping() {
        let mut bh = BufferHead::new(4096, 4096, BhState::empty());
        assert_eq!(bh.range(), (4096, 8192));
        assert!(bh.outside(0, 4096) && bh.outside(8192, 9000) && !bh.outside(8191, 9000));
        let m = |kind, addr, new| BlockMapping { kind, addr, new };
        bh.map(&m(ExtentKind::Hole, 0, false)).unwrap();
        assert!(!bh.mapped() && bh.reads_as_zero());
        bh.map(&m(ExtentKind::Mapped, 8192, false)).unwrap();
        assert!(bh.mapped() && !bh.reads_as_zero());
        assert_eq!((bh.blocknr, bh.addr()), (2, 8192));
        let mut u = BufferHead::new(0, 1024, BhState::empty());
        u.map(&m(ExtentKind::Unwritten, 1024, false)).unwrap();
        assert!(u.state.contains(BhState::UNWRITTEN | BhState::NEW) && u.reads_as_zero());
        let mut d = BufferHead::new(0, 1024, BhState::empty());
        assert!(d.map(&m(ExtentKind::Mapped, 1000, false)).is_err());
        d.map(&m(ExtentKind::Mapped, 2048, true)).unwrap();
        assert!(d.state.contains(BhState::NEW));
    }
}
