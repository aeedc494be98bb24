//! Mapping file offsets to the device: the filesystem's side of both write
//! paths, and the `Flat` mapper.

use crate::error::{Error, Result};
use crate::units::{BlockSize, DevAddr, FileBlock, FilePos};
use std::sync::atomic::{AtomicU64, Ordering};

/// What an extent holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// Blocks on the device holding the file's data.
    Mapped,
    /// No blocks: reads see zeroes.
    Hole,
    /// Blocks allocated but not yet written: reads see zeroes.
    Unwritten,
    /// Reserved for delayed allocation, no disk address yet.
    Delalloc,
}

/// Why a mapping is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapIntent {
    /// A buffered read (or read-in of a partial block).
    Read,
    /// A buffered write.
    Write,
    /// Writeback of dirty blocks.
    Writeback,
}

/// One contiguous mapping returned by [`Mapper::iomap_begin`] (the kernel's
/// `struct iomap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iomap {
    /// File position of the mapping's first byte.
    pub offset: FilePos,
    /// Bytes covered.
    pub length: u64,
    /// What the range holds.
    pub kind: ExtentKind,
    /// Device byte address of `offset` (meaningful for `Mapped` and `Unwritten`).
    pub addr: DevAddr,
    /// Freshly allocated: the parts a write does not cover must be zeroed.
    pub new: bool,
}

impl Iomap {
    /// File position one past the mapping's end.
    #[inline]
    pub fn end(&self) -> FilePos {
        self.offset.add(self.length)
    }

    /// Device address of file position `pos`, which must lie in the mapping.
    #[inline]
    pub fn addr_of(&self, pos: FilePos) -> DevAddr {
        self.addr.add(pos.since(self.offset))
    }
}

/// The mapping of one block, for the block-at-a-time (buffer-head) path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockMapping {
    /// What the block holds.
    pub kind: ExtentKind,
    /// Device byte address of the block (meaningful for `Mapped` and
    /// `Unwritten`). An address rather than a [`crate::DiskBlock`] so that
    /// a mapper whose region is not block aligned is caught where the
    /// buffer head takes the block number, not rounded silently.
    pub addr: DevAddr,
    /// Freshly allocated by this call.
    pub new: bool,
}

/// The filesystem's side of the write paths: maps file ranges to the
/// device and owns i_size.
pub trait Mapper: Send + Sync {
    /// The filesystem block size (1, 2 or 4 KiB for the files the engine opens).
    fn block_size(&self) -> BlockSize;

    /// Maps `[pos, pos + len)`: returns the extent covering `pos`, clipped
    /// to the request (it may be shorter; the caller asks again for the rest).
    fn iomap_begin(&self, pos: FilePos, len: u64, intent: MapIntent) -> Result<Iomap>;

    /// Ends a mapping once `written` bytes of it were used.
    fn iomap_end(&self, _pos: FilePos, _len: u64, _written: u64, _intent: MapIntent) -> Result<()> {
        Ok(())
    }

    /// Maps the file block `block`; `create` asks for allocation when
    /// there is none.
    fn get_block(&self, block: FileBlock, create: bool) -> Result<BlockMapping>;

    /// The file size (i_size).
    fn size(&self) -> u64;

    /// Moves i_size (called under the file's write lock, before the folio
    /// holding the new EOF is unlocked).
    fn set_size(&self, size: u64);

    /// The largest size the file can reach (a Flat region's capacity).
    fn max_size(&self) -> u64;

    /// Checks, before a single byte is copied, that a write of `len` bytes at
    /// `pos` can be done; refusing here leaves file and cache untouched.
    ///
    /// A zero-length write is accepted at any offset, as [`crate::File`]
    /// does it (it returns 0 before asking the mapper) and as the ext4
    /// mapper answers: every mapper gives the same answer for it.
    fn prepare_write(&self, pos: FilePos, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let capacity = self.max_size();
        let pos = pos.get();
        match pos.checked_add(len) {
            Some(end) if end <= capacity => Ok(()),
            Some(_) => Err(Error::FileTooLarge {
                offset: pos,
                len,
                capacity,
            }),
            None => Err(Error::RangeOverflow { offset: pos, len }),
        }
    }
}

/// A file that is one contiguous region of a device: `[base, base +
/// capacity)`. Every block is mapped; the file starts at `size` and can grow
/// up to `capacity`.
#[derive(Debug)]
pub struct Flat {
    base: DevAddr,
    capacity: u64,
    block_size: BlockSize,
    size: AtomicU64,
}

impl Flat {
    /// A Flat file at device offset `base` with room for `capacity` bytes and
    /// current size `size`. `block_size` must be 1024, 2048 or 4096, and
    /// `base` and `capacity` multiples of it.
    pub fn new(base: u64, capacity: u64, block_size: u32, size: u64) -> Result<Self> {
        if !matches!(block_size, 1024 | 2048 | 4096) {
            return Err(Error::InvalidArgument(format!(
                "block size {block_size} (must be 1024, 2048 or 4096)"
            )));
        }
        let checked = BlockSize::new(block_size)?;
        let bs = checked.get();
        if !base.is_multiple_of(bs) || !capacity.is_multiple_of(bs) {
            return Err(Error::InvalidArgument(format!(
                "Flat region base {base} and capacity {capacity} must be multiples of the block size {bs}"
            )));
        }
        if base.checked_add(capacity).is_none() || size > capacity {
            return Err(Error::InvalidArgument(format!(
                "Flat region at {base} of {capacity} bytes cannot hold size {size}"
            )));
        }
        Ok(Flat {
            base: DevAddr::new(base),
            capacity,
            block_size: checked,
            size: AtomicU64::new(size),
        })
    }

    /// Device address of the file's first byte.
    pub fn base(&self) -> DevAddr {
        self.base
    }
}

impl Mapper for Flat {
    #[inline]
    fn block_size(&self) -> BlockSize {
        self.block_size
    }

    #[inline]
    fn iomap_begin(&self, pos: FilePos, len: u64, _intent: MapIntent) -> Result<Iomap> {
        if pos.get() >= self.capacity {
            return Err(Error::FileTooLarge {
                offset: pos.get(),
                len,
                capacity: self.capacity,
            });
        }
        Ok(Iomap {
            offset: pos,
            length: len.min(self.capacity - pos.get()),
            kind: ExtentKind::Mapped,
            addr: self.base.add(pos.get()),
            new: false,
        })
    }

    fn get_block(&self, block: FileBlock, _create: bool) -> Result<BlockMapping> {
        let bs = self.block_size;
        let pos = block.pos(bs).filter(|p| p.get() < self.capacity);
        let Some(pos) = pos else {
            return Err(Error::FileTooLarge {
                offset: block.get().saturating_mul(bs.get()),
                len: bs.get(),
                capacity: self.capacity,
            });
        };
        Ok(BlockMapping {
            kind: ExtentKind::Mapped,
            addr: self.base.add(pos.get()),
            new: false,
        })
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }

    fn max_size(&self) -> u64 {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_maps_and_bounds() {
        let f = Flat::new(8192, 1 << 20, 4096, 0).unwrap();
        let p = FilePos::new;
        let b = FileBlock::new;
        let m = f.iomap_begin(p(100), 1 << 30, MapIntent::Write).unwrap();
        assert_eq!(
            (m.addr.get(), m.length, m.kind),
            (8292, (1 << 20) - 100, ExtentKind::Mapped)
        );
        assert!(f.iomap_begin(p(1 << 20), 1, MapIntent::Write).is_err());
        assert_eq!(f.get_block(b(2), false).unwrap().addr.get(), 8192 + 8192);
        assert!(f.get_block(b(256), false).is_err());
        assert!(f.get_block(b(u64::MAX), false).is_err());
        assert!(f.prepare_write(p((1 << 20) - 1), 1).is_ok());
        assert!(matches!(
            f.prepare_write(p(1 << 20), 1),
            Err(Error::FileTooLarge { .. })
        ));
        assert!(matches!(
            f.prepare_write(p(u64::MAX), 2),
            Err(Error::RangeOverflow { .. })
        ));
        // Zero bytes past the capacity: accepted, as File::pwrite and the
        // ext4 mapper do.
        assert!(f.prepare_write(p(u64::MAX), 0).is_ok());
        assert!(f.prepare_write(p(1 << 21), 0).is_ok());
        assert!(Flat::new(0, 4096, 512, 0).is_err());
        assert!(Flat::new(0, 1000, 1024, 0).is_err());
    }
}
