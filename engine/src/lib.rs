//! bufwrite-engine: a userspace model of the Linux buffered write path.
//!
//! A per-file page cache of large folios (4 KiB .. 2 MiB) over a block
//! device, the iomap write path (per-folio sub-block bitmaps), buffered
//! read, writeback with I/O merging, and the device layer (RAM, pread/pwrite,
//! io_uring). The buffer-head path (`bufwrite-compat`) and ext4 mapping
//! (`bufwrite-ext4`) plug in through [`WritePath`] and [`Mapper`].
//!
//! ```
//! use bufwrite_engine::{device::mem::Mem, File, FileOptions, Flat, IomapPath};
//! use std::sync::Arc;
//!
//! let dev = Arc::new(Mem::new(8 << 20));
//! let flat = Arc::new(Flat::new(0, 8 << 20, 4096, 0)?);
//! let file = File::open(dev, flat, Box::new(IomapPath::new()), FileOptions::default())?;
//! file.pwrite(0, b"hello")?;
//! let mut buf = [0u8; 5];
//! assert_eq!(file.pread(0, &mut buf)?, 5);
//! assert_eq!(&buf, b"hello");
//! file.fsync()?;
//! # Ok::<(), bufwrite_engine::Error>(())
//! ```

#![warn(unreachable_pub)]

pub mod address_space;
pub mod align;
pub mod bitmap;
pub mod device;
mod error;
mod file;
pub mod flusher;
pub mod folio;
mod folio_state;
pub mod generic_write;
pub mod iomap;
mod iov;
pub mod mapping;
pub mod memory;
pub mod mount;
pub mod page_cache;
pub mod pattern;
pub mod read_in;
pub mod trace;
pub mod units;
pub mod write_path;
pub mod writeback;

pub use address_space::AddressSpace;
pub use align::AlignedBuf;
pub use device::{BlockDevice, IoRequest, IoStats, OwnedWrite, WriteStream};
pub use error::{Error, IoKind, Result};
pub use file::{File, FileOptions};
pub use flusher::CacheMemory;
pub use folio::{Folio, FolioData, FolioFlags, FolioGuard, FolioPrivate};
pub use folio_state::FolioState;
pub use iomap::IomapPath;
pub use iov::IovIter;
pub use mapping::{
    AllocPolicy, BlockMapping, ExtentKind, FallocMode, Flat, Iomap, MapIntent, Mapper,
};
pub use memory::{CacheLimits, MemStats};
pub use mount::{Filesystem, Mount, OpenFlags};
pub use page_cache::{FolioHint, OrderPolicy, PageCache};
pub use units::{BlockSize, DevAddr, DiskBlock, FileBlock, FilePos};
pub use write_path::{DirtyRun, WritePath};

/// The README's library example, compiled and run as a doc test so that it
/// stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExample;
