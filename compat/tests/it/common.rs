//! Opening the same file on every path.

use bufwrite_compat::{BufferHeadPath, Mode};
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::testing::fill;
use bufwrite_engine::{File, FileOptions, Flat, IomapPath, OrderPolicy, WritePath};
use std::sync::Arc;

/// Seed of the bytes a fresh device holds, so that anything exposed or
/// written in the wrong place shows.
pub const GARBAGE_SEED: u64 = 0xdead_beef;

/// The four paths, iomap first.
pub const PATHS: [&str; 4] = ["iomap", "bh-legacy", "bh-tailskip", "bh-seek"];

/// The write path called `name`.
pub fn path(name: &str) -> Box<dyn WritePath> {
    match Mode::from_name(name) {
        Some(m) => Box::new(BufferHeadPath::new(m)),
        None => Box::new(IomapPath::new()),
    }
}

/// A file on its own Mem device.
pub struct Rig {
    pub file: File,
    pub mem: Arc<Mem>,
    pub base: u64,
    pub capacity: u64,
}

impl Rig {
    /// A file on path `name` of `size` bytes at device offset `base`, in a
    /// region of `capacity`, on a device full of garbage (the same bytes for
    /// every rig, so that the initial contents agree).
    pub fn new(
        name: &str,
        bs: u32,
        order: OrderPolicy,
        base: u64,
        capacity: u64,
        size: u64,
    ) -> Rig {
        let mut bytes = vec![0u8; (base + capacity + (64 << 10)) as usize];
        fill(GARBAGE_SEED, 0, &mut bytes);
        let mem = Arc::new(Mem::from_bytes(bytes, 512));
        let flat = Arc::new(Flat::new(base, capacity, bs, size).unwrap());
        let file = File::open(mem.clone(), flat, path(name), FileOptions { order }).unwrap();
        Rig {
            file,
            mem,
            base,
            capacity,
        }
    }

    /// The device bytes of the file's region.
    pub fn region(&self) -> Vec<u8> {
        self.mem.snapshot(self.base, self.capacity)
    }

    /// Device reads so far.
    pub fn reads(&self) -> u64 {
        self.file.device_stats().reads
    }
}
