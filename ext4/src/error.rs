//! The crate's error type.
//!
//! Corruption is data, not text: a [`Corrupt`] names the structure that
//! failed a check ([`Structure`]), where it is ([`Location`]) and what was
//! wrong with it ([`CorruptKind`]), so that callers and tests match on what
//! was wrong instead of parsing messages. Its `Display` renders all three
//! as one sentence.

use bufwrite_engine::Error as EngineError;
use std::fmt;

/// Errors returned by the ext4 layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Ext4Error {
    /// The device failed (or a request was out of its bounds). Transparent:
    /// the engine's error already says what failed and where, and a
    /// message of its own that embedded it would print it twice in any
    /// walk of the source chain (`{:#}`).
    #[error(transparent)]
    Io(#[from] EngineError),
    /// An on-disk structure failed a check (magic, bounds, checksum, loop).
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
    /// The image or file uses something bufwrite does not handle; the text
    /// says what and why. Nothing was written.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A path component does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A name to be created already exists (the text says which, where).
    /// Nothing was changed.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The path names something that is not a regular file (or a path
    /// component that is not a directory); the text says what it is.
    #[error("wrong file type: {0}")]
    WrongType(String),
    /// A directory to be removed still has entries. Nothing was changed.
    #[error("directory not empty: {0}")]
    NotEmpty(String),
    /// A rename bufwrite makes only within one directory (a directory
    /// moving to another parent). Nothing was changed.
    #[error("cross-directory rename: {0}")]
    CrossDir(String),
    /// No free blocks or inodes are left for what the text names. Nothing
    /// was changed.
    #[error("no space left on the filesystem: {0}")]
    NoSpace(String),
    /// An edit the caller asked for is not valid (for example mapping a
    /// file range that is already mapped); the text says why. Nothing was
    /// changed.
    #[error("refused: {0}")]
    Refused(String),
    /// The journal failed a check (its superblock, its map, or a log the
    /// kernel would refuse to recover); the text says what and where.
    /// Nothing was replayed.
    #[error("corrupt journal: {0}")]
    JournalCorrupt(String),
    /// The journal needs recovery and this operation may not do it (a
    /// read-only open, or a log writer on a log not yet recovered).
    #[error("the journal needs recovery: {0}")]
    NeedsRecovery(String),
}

impl Ext4Error {
    /// Builds an [`Ext4Error::Corrupt`].
    pub(crate) fn corrupt(structure: Structure, location: Location, kind: CorruptKind) -> Self {
        Ext4Error::Corrupt(Corrupt::new(structure, location, kind))
    }

    /// The corruption, when this is one.
    pub fn as_corrupt(&self) -> Option<&Corrupt> {
        match self {
            Ext4Error::Corrupt(c) => Some(c),
            _ => None,
        }
    }
}

/// An on-disk structure failed a check: which structure, where, and what
/// was wrong. Opaque, so that new details can be added without breaking
/// callers; read it through [`Corrupt::structure`], [`Corrupt::location`]
/// and [`Corrupt::kind`].
#[derive(Clone, PartialEq, Eq)]
pub struct Corrupt(Box<Inner>);

/// Boxed: an `Ext4Error` travels through every `?` of the crate, and the
/// three parts together are several words.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner {
    structure: Structure,
    location: Location,
    kind: CorruptKind,
}

impl Corrupt {
    /// Builds a corruption report.
    pub(crate) fn new(structure: Structure, location: Location, kind: CorruptKind) -> Self {
        Corrupt(Box::new(Inner {
            structure,
            location,
            kind,
        }))
    }

    /// The structure that failed the check.
    pub fn structure(&self) -> &Structure {
        &self.0.structure
    }

    /// Where it is on the device (or in the file).
    pub fn location(&self) -> &Location {
        &self.0.location
    }

    /// What was wrong with it.
    pub fn kind(&self) -> &CorruptKind {
        &self.0.kind
    }
}

impl fmt::Debug for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt {} at {}: {}",
            self.0.structure, self.0.location, self.0.kind
        )?;
        if self.0.structure == Structure::Superblock
            && matches!(self.0.kind, CorruptKind::BadMagic { .. })
        {
            f.write_str(": not ext2/3/4")?;
        }
        Ok(())
    }
}

impl std::error::Error for Corrupt {}

/// The on-disk structure a check failed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Structure {
    /// The primary superblock.
    Superblock,
    /// A block of the group descriptor table, as a whole.
    GroupDescriptorTable,
    /// The descriptor of one block group.
    GroupDescriptor {
        /// The group number.
        group: u64,
    },
    /// A block of one group's inode table, as a whole.
    InodeTable {
        /// The group number.
        group: u64,
    },
    /// One inode.
    Inode {
        /// The inode number.
        ino: u32,
    },
    /// The header of a node of an inode's extent tree.
    ExtentHeader {
        /// The inode the tree belongs to.
        ino: u32,
    },
    /// An index entry (pointing at a lower node) of an extent tree node.
    ExtentIndex {
        /// The inode the tree belongs to.
        ino: u32,
        /// The entry's position in its node, from 0.
        entry: usize,
    },
    /// A leaf extent of an extent tree node.
    ExtentLeaf {
        /// The inode the tree belongs to.
        ino: u32,
        /// The extent's position in its node, from 0.
        entry: usize,
    },
    /// An extent tree block as a whole (its read, its checksum).
    ExtentBlock {
        /// The inode the tree belongs to.
        ino: u32,
    },
    /// An inode's block map as a whole: where its blocks land on the
    /// device, whatever maps them (extents or indirect blocks).
    BlockMap {
        /// The inode.
        ino: u32,
    },
    /// An indirect block of a non-extent file.
    IndirectBlock {
        /// The inode the map belongs to.
        ino: u32,
    },
    /// A directory block as a whole (its read, its checksum tail).
    DirBlock {
        /// The directory's inode.
        ino: u32,
    },
    /// One entry of a directory block.
    DirEntry {
        /// The directory's inode.
        ino: u32,
    },
    /// The hash-tree index of a directory (root or interior node).
    Htree {
        /// The directory's inode.
        ino: u32,
    },
    /// One group's block bitmap.
    BlockBitmap {
        /// The group number.
        group: u64,
    },
    /// One group's inode bitmap.
    InodeBitmap {
        /// The group number.
        group: u64,
    },
}

impl fmt::Display for Structure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Structure::Superblock => f.write_str("superblock"),
            Structure::GroupDescriptorTable => f.write_str("group descriptor table"),
            Structure::GroupDescriptor { group } => write!(f, "group descriptor {group}"),
            Structure::InodeTable { group } => write!(f, "inode table of group {group}"),
            Structure::Inode { ino } => write!(f, "inode {ino}"),
            Structure::ExtentHeader { ino } => {
                write!(f, "node header of the extent tree of inode {ino}")
            }
            Structure::ExtentIndex { ino, entry } => {
                write!(f, "index entry {entry} of the extent tree of inode {ino}")
            }
            Structure::ExtentLeaf { ino, entry } => {
                write!(f, "extent {entry} of the extent tree of inode {ino}")
            }
            Structure::ExtentBlock { ino } => write!(f, "extent block of inode {ino}"),
            Structure::BlockMap { ino } => write!(f, "block map of inode {ino}"),
            Structure::IndirectBlock { ino } => write!(f, "indirect block of inode {ino}"),
            Structure::DirBlock { ino } => write!(f, "directory block of inode {ino}"),
            Structure::DirEntry { ino } => write!(f, "directory entry of inode {ino}"),
            Structure::Htree { ino } => write!(f, "htree index of directory inode {ino}"),
            Structure::BlockBitmap { group } => write!(f, "block bitmap of group {group}"),
            Structure::InodeBitmap { group } => write!(f, "inode bitmap of group {group}"),
        }
    }
}

/// Where the structure that failed is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A device byte offset.
    Byte(u64),
    /// A device block.
    Block(u64),
    /// A byte offset inside a device block.
    BlockByte {
        /// The device block.
        block: u64,
        /// The byte offset in it.
        byte: u64,
    },
    /// The `i_block` field of the inode (the root of its extent tree or
    /// block map).
    IBlock {
        /// The inode.
        ino: u32,
    },
    /// A block of the file the structure belongs to.
    FileBlock(u64),
    /// A byte offset inside a block of the file the structure belongs to.
    FileBlockByte {
        /// The file block.
        block: u64,
        /// The byte offset in it.
        byte: u64,
    },
    /// The inode number itself (a reference to an inode that cannot exist).
    InodeNumber,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Location::Byte(b) => write!(f, "byte {b}"),
            Location::Block(b) => write!(f, "block {b}"),
            Location::BlockByte { block, byte } => write!(f, "block {block} byte {byte}"),
            Location::IBlock { ino } => write!(f, "inode {ino} i_block"),
            Location::FileBlock(b) => write!(f, "file block {b}"),
            Location::FileBlockByte { block, byte } => {
                write!(f, "file block {block} byte {byte}")
            }
            Location::InodeNumber => f.write_str("inode number"),
        }
    }
}

/// What a block range overlaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverlapWith {
    /// Device block 0 (the boot sector; with 1 KiB blocks, nothing else).
    BootBlock,
    /// Filesystem metadata: superblock, descriptor table, bitmaps, inode
    /// tables.
    Metadata,
    /// The internal journal.
    Journal {
        /// The journal's inode.
        ino: u32,
    },
}

impl fmt::Display for OverlapWith {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OverlapWith::BootBlock => f.write_str("the boot block"),
            OverlapWith::Metadata => f.write_str("filesystem metadata"),
            OverlapWith::Journal { ino } => write!(f, "the journal (inode {ino})"),
        }
    }
}

/// What was wrong. Fields named `field` hold the on-disk field's name as
/// the kernel's headers spell it (`s_inode_size`, `eh_entries`, ...).
/// Block ranges are `[first, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptKind {
    /// A magic number is not the structure's.
    BadMagic {
        /// The structure's magic.
        expected: u32,
        /// What the image holds.
        found: u32,
    },
    /// A stored checksum differs from the one computed over the structure.
    ChecksumMismatch {
        /// The checksum on disk.
        on_disk: u32,
        /// The checksum computed.
        computed: u32,
        /// Its width in bits (16 or 32), for printing.
        bits: u8,
    },
    /// The superblock names a checksum algorithm other than crc32c.
    ChecksumType {
        /// The `s_checksum_type` found.
        found: u8,
    },
    /// A block that must end with a checksum tail has none.
    NoChecksumTail,
    /// The structure would end past the device's end: a truncated image.
    PastDeviceEnd {
        /// The bytes it needs from its location on.
        len: u64,
        /// The device's size in bytes.
        device_size: u64,
    },
    /// A field's value is outside `[min, end)`.
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The smallest valid value.
        min: u64,
        /// One past the largest valid value.
        end: u64,
    },
    /// A size that must be a power of two is not.
    NotPowerOfTwo {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// A field that must not be zero is.
    Zero {
        /// The field.
        field: &'static str,
    },
    /// A count is over its limit.
    CountOverMax {
        /// The field holding the count.
        field: &'static str,
        /// The count.
        count: u64,
        /// The largest count allowed.
        max: u64,
    },
    /// The block count times the block size overflows a 64-bit byte offset.
    ByteOffsetOverflow {
        /// `s_blocks_count`.
        blocks: u64,
        /// The block size in bytes.
        block_size: u32,
    },
    /// `s_inodes_count` is not the group count times the inodes per group.
    InodesCount {
        /// `s_inodes_count`.
        count: u32,
        /// The group count the block geometry gives.
        groups: u64,
        /// `s_inodes_per_group`.
        per_group: u32,
    },
    /// Group 0 would start at block 0 (the boot block): first data block
    /// 0 with 1 KiB blocks and clusters of one block.
    GroupZeroOnBootBlock,
    /// Device blocks overlap something they must not.
    Overlap {
        /// The offending device blocks.
        blocks: (u64, u64),
        /// What they overlap.
        with: OverlapWith,
        /// Its device blocks.
        with_blocks: (u64, u64),
    },
    /// Device blocks lie past the filesystem's end.
    OutsideFilesystem {
        /// The device blocks.
        blocks: (u64, u64),
        /// `s_blocks_count`.
        blocks_count: u64,
    },
    /// A node's depth is not the one its parent index promised.
    DepthMismatch {
        /// The node's `eh_depth`.
        depth: u16,
        /// The depth the index above implies.
        promised: u16,
    },
    /// A node's first entry starts before the file block where its parent
    /// index entry says the node begins.
    StartsBeforeParent {
        /// The entry's first file block.
        start: u64,
        /// Where the parent says the node begins.
        parent_start: u64,
    },
    /// An entry starts at or past the file block where the parent's next
    /// index entry begins.
    StartsPastParent {
        /// The entry's first file block.
        start: u64,
        /// Where the parent's next entry begins.
        parent_end: u64,
    },
    /// A leaf extent ends past the file block where the parent's next
    /// index entry begins.
    EndsPastParent {
        /// The extent's file blocks.
        blocks: (u64, u64),
        /// Where the parent's next entry begins.
        parent_end: u64,
    },
    /// A leaf extent starts before the previous extent of its node ends.
    OverlapsPrevious {
        /// The extent's first file block.
        start: u64,
        /// The previous extent's position in the node.
        prev: usize,
        /// Where the previous extent ends.
        prev_end: u64,
    },
    /// An index entry does not start after the previous entry of its node.
    Unsorted {
        /// The entry's first file block.
        start: u64,
        /// The previous entry's position in the node.
        prev: usize,
        /// Where the previous entry starts.
        prev_start: u64,
    },
    /// A leaf extent has length 0.
    ZeroLength {
        /// Its first file block.
        start: u64,
    },
    /// An extent ends past the last file block a file can have.
    PastFileBlockLimit {
        /// One past its last file block.
        end: u64,
        /// The number of file blocks a file can have.
        limit: u64,
    },
    /// A block was reached twice while walking a tree: the tree loops or
    /// shares a block.
    Loop {
        /// The block reached twice (a device block for extent and indirect
        /// trees, a file block for htree nodes).
        block: u64,
    },
    /// A block that must hold data (an htree node) is a hole.
    Hole,
    /// A directory entry's header (8 bytes) overruns the block.
    EntryOverrun {
        /// The bytes left in the block at the entry.
        room: u64,
    },
    /// A directory entry's lengths are inconsistent: `rec_len` under 12,
    /// not a multiple of 4, past the block, or too short for the name.
    BadRecLen {
        /// The record length.
        rec_len: u64,
        /// The name length.
        name_len: u64,
        /// The bytes left in the block at the entry.
        room: u64,
    },
    /// A free count disagrees with the bitmap it counts.
    FreeCountMismatch {
        /// The count's field (`bg_free_blocks_count`, ...).
        field: &'static str,
        /// The count on disk.
        on_disk: u64,
        /// The free bits the bitmap has.
        counted: u64,
    },
    /// The bitmap shows a metadata block (superblock or descriptor
    /// backup, bitmap, inode table) as free: allocating it would
    /// overwrite metadata.
    MetadataMarkedFree {
        /// The block.
        block: u64,
    },
    /// A block or inode to be freed is already free in its bitmap.
    AlreadyFree {
        /// The block or inode number.
        number: u64,
    },
}

impl fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let blocks = |f: &mut fmt::Formatter<'_>, (first, end): (u64, u64)| {
            write!(f, "device blocks {first}..{end}")
        };
        match self {
            CorruptKind::BadMagic { expected, found } => {
                write!(f, "bad magic {found:#06x} (expected {expected:#06x})")
            }
            CorruptKind::ChecksumMismatch {
                on_disk,
                computed,
                bits,
            } => {
                let w = usize::from(*bits / 4) + 2;
                write!(
                    f,
                    "checksum {on_disk:#0w$x} on disk, computed {computed:#0w$x}"
                )
            }
            CorruptKind::ChecksumType { found } => {
                write!(f, "checksum type {found} is not crc32c (1)")
            }
            CorruptKind::NoChecksumTail => f.write_str("no checksum tail at the end of the block"),
            CorruptKind::PastDeviceEnd { len, device_size } => write!(
                f,
                "{len} bytes would end past the device's end ({device_size} bytes): truncated image?"
            ),
            CorruptKind::OutOfRange {
                field,
                value,
                min,
                end,
            } => write!(f, "{field} {value} is outside {min}..{end}"),
            CorruptKind::NotPowerOfTwo { field, value } => {
                write!(f, "{field} {value} is not a power of two")
            }
            CorruptKind::Zero { field } => write!(f, "{field} is 0"),
            CorruptKind::CountOverMax { field, count, max } => {
                write!(f, "{field} {count} over the limit of {max}")
            }
            CorruptKind::ByteOffsetOverflow { blocks, block_size } => write!(
                f,
                "block count {blocks} of {block_size} bytes overflows a 64-bit byte offset"
            ),
            CorruptKind::InodesCount {
                count,
                groups,
                per_group,
            } => write!(
                f,
                "{count} inodes in {groups} groups of {per_group} inodes"
            ),
            CorruptKind::GroupZeroOnBootBlock => f.write_str(
                "first data block 0 with 1 KiB blocks and 1 KiB clusters: \
                 group 0 would overlap the boot block",
            ),
            CorruptKind::Overlap {
                blocks: b,
                with,
                with_blocks: (ws, we),
            } => {
                blocks(f, *b)?;
                write!(f, " overlap {with} at blocks {ws}..{we}")
            }
            CorruptKind::OutsideFilesystem {
                blocks: b,
                blocks_count,
            } => {
                blocks(f, *b)?;
                write!(f, " past the filesystem's {blocks_count} blocks")
            }
            CorruptKind::DepthMismatch { depth, promised } => {
                write!(f, "depth {depth} where the index above promised {promised}")
            }
            CorruptKind::StartsBeforeParent {
                start,
                parent_start,
            } => write!(
                f,
                "starts at file block {start}, before file block {parent_start} where the \
                 index above says this node begins"
            ),
            CorruptKind::StartsPastParent { start, parent_end } => write!(
                f,
                "starts at file block {start}, at or past file block {parent_end} where the \
                 next entry of the index above begins"
            ),
            CorruptKind::EndsPastParent {
                blocks: (first, end),
                parent_end,
            } => write!(
                f,
                "covers file blocks {first}..{end}, past file block {parent_end} where the \
                 next entry of the index above begins"
            ),
            CorruptKind::OverlapsPrevious {
                start,
                prev,
                prev_end,
            } => write!(
                f,
                "starts at file block {start}, before the end of extent {prev} (file block \
                 {prev_end}): extents overlap or are unsorted"
            ),
            CorruptKind::Unsorted {
                start,
                prev,
                prev_start,
            } => write!(
                f,
                "starts at file block {start}, not after index entry {prev} (file block \
                 {prev_start}): the index is unsorted or has duplicates"
            ),
            CorruptKind::ZeroLength { start } => {
                write!(f, "extent at file block {start} has length 0")
            }
            CorruptKind::PastFileBlockLimit { end, limit } => write!(
                f,
                "ends at file block {end}, past the {limit} blocks a file can have"
            ),
            CorruptKind::Loop { block } => write!(
                f,
                "block {block} was reached twice: the tree loops or shares a block"
            ),
            CorruptKind::Hole => f.write_str("the block is a hole"),
            CorruptKind::EntryOverrun { room } => write!(
                f,
                "the 8-byte entry header overruns the block ({room} bytes left)"
            ),
            CorruptKind::BadRecLen {
                rec_len,
                name_len,
                room,
            } => write!(
                f,
                "rec_len {rec_len}, name_len {name_len} with {room} bytes left in the block"
            ),
            CorruptKind::FreeCountMismatch {
                field,
                on_disk,
                counted,
            } => write!(
                f,
                "{field} {on_disk} on disk, but the bitmap has {counted} free"
            ),
            CorruptKind::MetadataMarkedFree { block } => {
                write!(f, "metadata block {block} is marked free")
            }
            CorruptKind::AlreadyFree { number } => {
                write!(f, "{number} is already free in the bitmap")
            }
        }
    }
}

impl From<Ext4Error> for EngineError {
    /// Device errors pass through unchanged; a corrupt structure becomes
    /// [`EngineError::Corrupt`] with the ext4 error as its source (not an
    /// I/O error: the device read fine, the metadata it returned is bad,
    /// which the kernel reports as EFSCORRUPTED); everything else is
    /// `Unsupported`.
    fn from(e: Ext4Error) -> Self {
        match e {
            Ext4Error::Io(inner) => inner,
            corrupt @ Ext4Error::Corrupt(_) => EngineError::Corrupt {
                what: "ext4 metadata is corrupt",
                source: Box::new(corrupt),
            },
            other => EngineError::Unsupported(other.to_string()),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Ext4Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use bufwrite_engine::IoKind;
    use std::error::Error as _;

    #[test]
    fn display_renders_structure_location_and_kind() {
        let e = Ext4Error::corrupt(
            Structure::ExtentHeader { ino: 12 },
            Location::Block(345),
            CorruptKind::BadMagic {
                expected: 0xF30A,
                found: 0x1234,
            },
        );
        assert_eq!(
            e.to_string(),
            "corrupt node header of the extent tree of inode 12 at block 345: \
             bad magic 0x1234 (expected 0xf30a)"
        );
        let e = Ext4Error::corrupt(
            Structure::GroupDescriptor { group: 3 },
            Location::BlockByte { block: 1, byte: 96 },
            CorruptKind::ChecksumMismatch {
                on_disk: 0xab,
                computed: 0x1234,
                bits: 16,
            },
        );
        assert_eq!(
            e.to_string(),
            "corrupt group descriptor 3 at block 1 byte 96: checksum 0x00ab on disk, computed 0x1234"
        );
    }

    /// A corruption crossing into the engine is the engine's `Corrupt`,
    /// its source the ext4 error, and no text is repeated along the chain.
    #[test]
    fn corruption_reaches_the_engine_as_corruption() {
        let kind = CorruptKind::Loop { block: 9 };
        let e: EngineError = Ext4Error::corrupt(
            Structure::IndirectBlock { ino: 14 },
            Location::Block(9),
            kind.clone(),
        )
        .into();
        assert!(matches!(e, EngineError::Corrupt { .. }), "{e:?}");
        let source = e.source().expect("a source");
        let ext4 = source.downcast_ref::<Ext4Error>().expect("an Ext4Error");
        assert_eq!(ext4.as_corrupt().map(Corrupt::kind), Some(&kind));
        assert!(!e.to_string().contains(&source.to_string()), "{e}");
        assert!(source.source().is_none());
        // A device error is the engine's own, said once along the chain.
        let read = || EngineError::io(IoKind::Read, 4096, 512, std::io::Error::other("EIO here"));
        let e = Ext4Error::from(read());
        assert_eq!(e.to_string(), read().to_string());
        let mut chain = vec![e.to_string()];
        let mut at = e.source();
        while let Some(s) = at {
            chain.push(s.to_string());
            at = s.source();
        }
        assert_eq!(
            chain.iter().filter(|t| t.contains("EIO here")).count(),
            1,
            "{chain:?}"
        );
        // A device error inside stays the device error.
        let io = EngineError::ReadOnly;
        assert!(matches!(
            EngineError::from(Ext4Error::Io(io)),
            EngineError::ReadOnly
        ));
    }
}
