//! Units the compiler checks where the layers meet: file positions, device
//! byte addresses, file and disk block numbers, and the block size that
//! converts between them.
//!
//! Every one of these was a bare `u64` once, and a bare `u64` goes anywhere:
//! a file offset handed where a device address was wanted compiles, and a
//! writeback run credited to the wrong folio wrote one folio's memory to
//! another's blocks before anything noticed. Each unit is now its own
//! `#[repr(transparent)]` newtype with `#[inline]` methods, so it costs what
//! the bare number cost, and the only way from one unit to another is a
//! named conversion that says which block size it uses
//! ([`FileBlock::pos`], [`DevAddr::of`], [`FilePos::block`]). There is no
//! `From<u64>`: a raw number becomes a unit through `new`, where a reader
//! can see it happen. The same idea as the `ext4-view` crate's block index
//! types, applied to the seams of the write path.
//!
//! Within a folio, offsets stay `usize` (they index the folio's memory),
//! and lengths stay `u64` / `usize`: a length has no origin to confuse.

use crate::error::{Error, Result};

/// A filesystem block size: a power of two in `512..=65536`, carrying its
/// shift so that byte-to-block conversions are shifts, not divisions (a
/// division on the hot path was one of the costs `perf` found, see
/// ARCHITECTURE.md).
///
/// It holds the size in bytes, the 4 bytes the bare `u32` took; the shift
/// is its trailing zero count (one `tzcnt`), valid because construction
/// checked the power of two. Callgrind preferred this to storing the shift
/// alone (every use of the size became a variable shift: bh-tailskip 945
/// instructions a write) or both (936); this one gives 933.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct BlockSize {
    bytes: u32,
}

impl BlockSize {
    /// The smallest block size accepted (one sector).
    pub const MIN: u32 = 512;
    /// The largest block size accepted (ext4's limit with 64 KiB pages).
    pub const MAX: u32 = 65536;
    /// 4096 bytes, the page size of the machines this models.
    pub const PAGE: BlockSize = BlockSize { bytes: 4096 };

    /// A checked block size: `bytes` must be a power of two in
    /// [`MIN`](Self::MIN)`..=`[`MAX`](Self::MAX).
    pub fn new(bytes: u32) -> Result<Self> {
        if !(Self::MIN..=Self::MAX).contains(&bytes) || !bytes.is_power_of_two() {
            return Err(Error::InvalidArgument(format!(
                "block size {bytes} (must be a power of two from {} to {})",
                Self::MIN,
                Self::MAX
            )));
        }
        Ok(BlockSize { bytes })
    }

    /// log2 of the size: `bytes >> bs.shift()` is the block count.
    #[inline]
    pub const fn shift(self) -> u32 {
        self.bytes.trailing_zeros()
    }

    /// The size in bytes.
    #[inline]
    pub const fn bytes(self) -> u32 {
        self.bytes
    }

    /// The size in bytes as a `u64` (device and file arithmetic).
    #[inline]
    pub const fn get(self) -> u64 {
        self.bytes as u64
    }

    /// The size in bytes as a `usize` (folio offsets).
    #[inline]
    pub const fn as_usize(self) -> usize {
        self.bytes as usize
    }

    /// `x` rounded down to a multiple of the block size.
    #[inline]
    pub const fn round_down(self, x: u64) -> u64 {
        x & !(self.get() - 1)
    }

    /// `x` rounded up to a multiple of the block size (saturating at the
    /// last multiple below `u64::MAX`).
    #[inline]
    pub const fn round_up(self, x: u64) -> u64 {
        match x.checked_add(self.get() - 1) {
            Some(v) => self.round_down(v),
            None => self.round_down(u64::MAX),
        }
    }

    /// True when `x` is a multiple of the block size.
    #[inline]
    pub const fn is_aligned(self, x: u64) -> bool {
        x & (self.get() - 1) == 0
    }
}

impl std::fmt::Display for BlockSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.bytes())
    }
}

/// A byte position in a file (the kernel's `loff_t pos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct FilePos(u64);

impl FilePos {
    /// File position `pos`.
    #[inline]
    pub const fn new(pos: u64) -> Self {
        FilePos(pos)
    }

    /// The position as a number of bytes from the file's start.
    #[inline]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The file block holding this position.
    #[inline]
    pub const fn block(self, bs: BlockSize) -> FileBlock {
        FileBlock(self.0 >> bs.shift())
    }

    /// The position `len` bytes further (callers have checked the range
    /// against overflow, as `File` does before a write).
    #[inline]
    #[allow(clippy::should_implement_trait)] // no Add impl: units do not add to units
    pub const fn add(self, len: u64) -> Self {
        FilePos(self.0 + len)
    }

    /// Bytes from `earlier` to here (`earlier` must not lie past `self`).
    #[inline]
    pub const fn since(self, earlier: FilePos) -> u64 {
        self.0 - earlier.0
    }
}

impl std::fmt::Display for FilePos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A byte address on the block device (what a `bio`'s sector times 512
/// is in the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct DevAddr(u64);

impl DevAddr {
    /// Device byte address `addr`.
    #[inline]
    pub const fn new(addr: u64) -> Self {
        DevAddr(addr)
    }

    /// The address in bytes from the device's start (what an `IoRequest`
    /// takes).
    #[inline]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The address of the first byte of disk block `block`. Block numbers
    /// come from the device's own size, so the product does not overflow
    /// for any block a mapper hands out.
    #[inline]
    pub const fn of(block: DiskBlock, bs: BlockSize) -> Self {
        DevAddr(block.0 << bs.shift())
    }

    /// The disk block starting at this address, or `None` when the address
    /// is not a multiple of the block size.
    #[inline]
    pub const fn block(self, bs: BlockSize) -> Option<DiskBlock> {
        if bs.is_aligned(self.0) {
            Some(DiskBlock(self.0 >> bs.shift()))
        } else {
            None
        }
    }

    /// The address `len` bytes further.
    #[inline]
    #[allow(clippy::should_implement_trait)] // no Add impl: units do not add to units
    pub const fn add(self, len: u64) -> Self {
        DevAddr(self.0 + len)
    }

    /// The address `len` bytes earlier.
    #[inline]
    pub const fn sub(self, len: u64) -> Self {
        DevAddr(self.0 - len)
    }
}

impl std::fmt::Display for DevAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A block number in a file, in units of the block size (the kernel's
/// `lblk` / `iblock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct FileBlock(u64);

impl FileBlock {
    /// File block `n`.
    #[inline]
    pub const fn new(n: u64) -> Self {
        FileBlock(n)
    }

    /// The block number.
    #[inline]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The file position of the block's first byte, or `None` when it does
    /// not fit in a `u64` (a block number no file of this size can have).
    #[inline]
    pub const fn pos(self, bs: BlockSize) -> Option<FilePos> {
        if self.0 > (u64::MAX >> bs.shift()) {
            None
        } else {
            Some(FilePos(self.0 << bs.shift()))
        }
    }
}

impl std::fmt::Display for FileBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A block number on the device, in units of the block size (the
/// kernel's `sector_t b_blocknr`, ext4's `pblk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct DiskBlock(u64);

impl DiskBlock {
    /// Disk block `n`.
    #[inline]
    pub const fn new(n: u64) -> Self {
        DiskBlock(n)
    }

    /// The block number.
    #[inline]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The block `n` blocks further.
    #[inline]
    #[allow(clippy::should_implement_trait)] // no Add impl: units do not add to units
    pub const fn add(self, n: u64) -> Self {
        DiskBlock(self.0 + n)
    }
}

impl std::fmt::Display for DiskBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size_is_a_checked_power_of_two() {
        for bytes in [512, 1024, 2048, 4096, 65536] {
            let bs = BlockSize::new(bytes).unwrap();
            assert_eq!((bs.bytes(), 1u32 << bs.shift()), (bytes, bytes));
            assert_eq!(bs.get(), u64::from(bytes));
            assert_eq!(bs.as_usize(), bytes as usize);
        }
        for bad in [0, 1, 256, 511, 1000, 3072, 131072, u32::MAX] {
            assert!(BlockSize::new(bad).is_err(), "{bad}");
        }
        let bs = BlockSize::new(4096).unwrap();
        assert_eq!((bs.round_down(8191), bs.round_up(4097)), (4096, 8192));
        assert_eq!(bs.round_up(u64::MAX), u64::MAX - 4095);
        assert!(bs.is_aligned(8192) && !bs.is_aligned(100));
    }

    #[test]
    fn conversions_name_their_block_size() {
        let bs = BlockSize::new(1024).unwrap();
        assert_eq!(FilePos::new(5000).block(bs), FileBlock::new(4));
        assert_eq!(FileBlock::new(4).pos(bs), Some(FilePos::new(4096)));
        assert_eq!(FileBlock::new(u64::MAX).pos(bs), None);
        assert_eq!(DevAddr::of(DiskBlock::new(3), bs), DevAddr::new(3072));
        assert_eq!(DevAddr::new(3072).block(bs), Some(DiskBlock::new(3)));
        assert_eq!(DevAddr::new(3000).block(bs), None);
        assert_eq!(FilePos::new(10).add(5).since(FilePos::new(3)), 12);
        assert_eq!(DevAddr::new(10).add(5).sub(3), DevAddr::new(12));
    }

    #[test]
    fn units_cost_what_the_number_costs() {
        assert_eq!(size_of::<FilePos>(), 8);
        assert_eq!(size_of::<DevAddr>(), 8);
        assert_eq!(size_of::<FileBlock>(), 8);
        assert_eq!(size_of::<DiskBlock>(), 8);
        assert_eq!(size_of::<BlockSize>(), 4);
        assert_eq!(BlockSize::PAGE, BlockSize::new(4096).unwrap());
    }
}
