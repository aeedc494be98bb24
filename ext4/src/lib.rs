//! bufwrite-ext4: reads ext4 images (superblock, group descriptors, inodes,
//! extent trees, directories, all with metadata_csum verification), maps
//! files for both write paths ([`Ext4File`] is a [`bufwrite_engine::Mapper`]),
//! and reports which features keep files off the iomap buffered path.
//!
//! Files written through [`Ext4File`] allocate as ext4 does with delalloc
//! (reservation at write time, allocation at writeback, unwritten or
//! ordered extents), truncate, punch and fallocate; [`Ext4`] creates and
//! unlinks files and is the engine's `Filesystem`. Images bufwrite could not
//! keep fsck-clean ([`Ext4::alloc_blockers`]) take overwrites of written
//! extents only, refused otherwise before a byte is written.
//!
//! ```no_run
//! use bufwrite_engine::device::{open_device, OpenOptions};
//! use bufwrite_engine::{File, FileOptions, IomapPath};
//! use bufwrite_ext4::Ext4;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = open_device("img".as_ref(), OpenOptions::default())?;
//! let fs = Ext4::open(dev.clone())?;
//! let mapper = fs.open_file("/dir/f")?;
//! let file = File::open(dev, mapper, Box::new(IomapPath::new()), FileOptions::default())?;
//! file.pwrite(0, b"overwrite")?;
//! file.fsync()?;
//! println!("{}", fs.gaps()?);
//! # Ok(()) }
//! ```

#![warn(unreachable_pub)]
#![forbid(unsafe_code)]

mod alloc;
mod checksum;
mod crc16;
mod dir;
mod dir_write;
mod error;
pub mod extent;
pub mod extent_tree;
mod file;
mod fs;
pub mod gaps;
mod group_desc;
mod indirect;
pub mod inode;
mod inode_write;
pub mod jbd2;
mod journal;
mod meta;
pub mod mount;
mod namei;
#[cfg(test)]
mod namei_tests;
pub mod orphan;
pub mod superblock;
pub mod txn;
mod util;

pub use dir::DirEntry;
pub use error::{Corrupt, CorruptKind, Ext4Error, Location, OverlapWith, Result, Structure};
pub use extent::Extent;
pub use file::Ext4File;
pub use fs::Ext4;
pub use gaps::{Gap, GapReport, InternalInode};
pub use group_desc::GroupDesc;
pub use inode::{FileType, Inode, Protection};
pub use journal::{JournalStats, COMMIT_INTERVAL};
pub use mount::MountDefaults;
pub use superblock::Superblock;
pub use txn::{MetaCounts, MetaKind, Phase, Transaction};
