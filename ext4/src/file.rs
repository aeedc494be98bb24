//! `Ext4File`: the [`Mapper`] of one ext4 file, for both write paths.
//!
//! The whole block map is read when the file is opened, so `iomap_begin`
//! and `get_block` answer from memory (the role of ext4's extent status
//! cache). Only overwrites of written extents inside i_size are allowed;
//! everything that would need allocation or a metadata change is refused in
//! `prepare_write`, before a byte is copied.

use crate::extent::{find, Extent};
use crate::inode::Inode;
use bufwrite_engine::{
    BlockMapping, BlockSize, DevAddr, DiskBlock, Error, ExtentKind, FileBlock, FilePos, Iomap,
    MapIntent, Mapper, Result,
};
use std::sync::atomic::{AtomicU64, Ordering};

/// One ext4 file's mapping: its extents, block size and i_size.
#[derive(Debug)]
pub struct Ext4File {
    path: String,
    ino: u32,
    block_size: u32,
    extents: Vec<Extent>,
    disk_size: u64,
    size: AtomicU64,
    /// Why every write is refused (read-only open), if it is.
    refusal: Option<String>,
}

impl Ext4File {
    pub(crate) fn new(
        path: &str,
        inode: &Inode,
        extents: Vec<Extent>,
        block_size: u32,
        refusal: Option<String>,
    ) -> Self {
        Ext4File {
            path: path.to_string(),
            ino: inode.ino,
            block_size,
            extents,
            disk_size: inode.size,
            size: AtomicU64::new(inode.size),
            refusal,
        }
    }

    /// The path the file was opened by.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The inode number.
    pub fn ino(&self) -> u32 {
        self.ino
    }

    /// The file's extents, sorted by file block (holes are gaps between them).
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// True when the file was opened read-only.
    pub fn read_only(&self) -> bool {
        self.refusal.is_some()
    }

    fn bs(&self) -> u64 {
        u64::from(self.block_size)
    }

    fn refuse(&self, what: String) -> Error {
        Error::Unsupported(format!(
            "{} (inode {}): {what}; nothing was written",
            self.path, self.ino
        ))
    }

    /// The block size as the engine's checked unit. The superblock parser
    /// accepts only powers of two from 1 KiB to 64 KiB, so the check cannot
    /// fail for a file opened through [`crate::Ext4`]; the fallback only
    /// keeps the type total (and `File::open` refuses anything but 1, 2 and
    /// 4 KiB anyway).
    #[inline]
    fn unit(&self) -> BlockSize {
        BlockSize::new(self.block_size).unwrap_or(BlockSize::PAGE)
    }

    /// The mapping covering `pos`, clipped to `[pos, pos + len)`.
    fn lookup(&self, pos: FilePos, len: u64) -> Iomap {
        let bs = self.bs();
        let blk = pos.block(self.unit()).get();
        match find(&self.extents, blk) {
            Ok(i) => {
                let e = self.extents[i];
                let start = e.lblk * bs;
                Iomap {
                    offset: pos,
                    length: len.min(e.end() * bs - pos.get()),
                    kind: if e.unwritten {
                        ExtentKind::Unwritten
                    } else {
                        ExtentKind::Mapped
                    },
                    addr: DevAddr::of(DiskBlock::new(e.pblk), self.unit()).add(pos.get() - start),
                    new: false,
                }
            }
            Err(i) => {
                let next = self.extents.get(i).map_or(u64::MAX, |e| e.lblk * bs);
                Iomap {
                    offset: pos,
                    length: len.min(next - pos.get()),
                    kind: ExtentKind::Hole,
                    addr: DevAddr::new(0),
                    new: false,
                }
            }
        }
    }
}

impl Mapper for Ext4File {
    fn block_size(&self) -> BlockSize {
        self.unit()
    }

    fn iomap_begin(&self, pos: FilePos, len: u64, intent: MapIntent) -> Result<Iomap> {
        let m = self.lookup(pos, len);
        if intent != MapIntent::Read && m.kind != ExtentKind::Mapped && m.length > 0 {
            return Err(self.refuse(format!(
                "{:?} of {} bytes at offset {pos} hits a {:?} range, which needs allocation",
                intent, m.length, m.kind
            )));
        }
        Ok(m)
    }

    fn get_block(&self, block: FileBlock, create: bool) -> Result<BlockMapping> {
        let bs = self.unit();
        match find(&self.extents, block.get()) {
            Ok(i) => {
                let e = self.extents[i];
                if e.unwritten && create {
                    return Err(self.refuse(format!(
                        "block {block} is in an unwritten extent; converting it is not supported"
                    )));
                }
                Ok(BlockMapping {
                    kind: if e.unwritten {
                        ExtentKind::Unwritten
                    } else {
                        ExtentKind::Mapped
                    },
                    addr: DevAddr::of(DiskBlock::new(e.pblk).add(block.get() - e.lblk), bs),
                    new: false,
                })
            }
            Err(_) if create => Err(self.refuse(format!(
                "block {block} is a hole; allocation is not supported"
            ))),
            Err(_) => Ok(BlockMapping {
                kind: ExtentKind::Hole,
                addr: DevAddr::new(0),
                new: false,
            }),
        }
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }

    /// Files never grow: allocation and i_size updates are not implemented.
    fn max_size(&self) -> u64 {
        self.disk_size
    }

    fn prepare_write(&self, pos: FilePos, len: u64) -> Result<()> {
        let pos = pos.get();
        if let Some(why) = &self.refusal {
            return Err(self.refuse(format!("writes are refused because {why}")));
        }
        let end = pos
            .checked_add(len)
            .ok_or(Error::RangeOverflow { offset: pos, len })?;
        if len == 0 {
            return Ok(());
        }
        if end > self.disk_size {
            return Err(self.refuse(format!(
                "write of {len} bytes at offset {pos} ends past i_size {}; growing a file needs allocation and an inode update",
                self.disk_size
            )));
        }
        let mut at = pos;
        while at < end {
            let m = self.lookup(FilePos::new(at), end - at);
            if m.kind != ExtentKind::Mapped {
                return Err(self.refuse(format!(
                    "write of {len} bytes at offset {pos} covers a {} at offset {at}; that needs allocation or unwritten-extent conversion",
                    match m.kind {
                        ExtentKind::Unwritten => "unwritten extent",
                        _ => "hole",
                    }
                )));
            }
            at = m.end().get();
        }
        Ok(())
    }
}
