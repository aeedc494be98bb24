//! Helpers shared by the engine's integration tests.

use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::device::{open_device, Backend, OpenOptions};
use bufwrite_engine::{BlockDevice, File, FileOptions, Flat, IomapPath, OrderPolicy};
use bufwrite_testkit::fill;
use std::path::PathBuf;
use std::sync::Arc;

/// Seed of the bytes a fresh device holds outside and inside the file's
/// region: anything the engine wrongly exposes or writes shows up.
pub const GARBAGE_SEED: u64 = 0xdead_beef;

/// A test file on a device, with a way to read the device's bytes back.
pub struct Rig {
    /// The file.
    pub file: File,
    /// The device under it.
    pub dev: Arc<dyn BlockDevice>,
    /// The Mem device, when the backend is Mem.
    pub mem: Option<Arc<Mem>>,
    /// The image file, when the backend is Sync (kept alive by `_tmp`).
    pub image: Option<PathBuf>,
    _tmp: Option<tempfile::TempDir>,
    /// Device offset of the file's region.
    pub base: u64,
    /// Region size (the Flat capacity).
    pub capacity: u64,
    /// The device's initial bytes.
    pub initial: Vec<u8>,
    /// The file's mapper.
    pub flat: Arc<Flat>,
    /// The folio order policy the file was opened with.
    pub opts: FileOptions,
}

/// The device backends the model tests run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dev {
    /// RAM.
    Mem,
    /// pread/pwrite on an image file under /tmp.
    Sync,
}

impl Rig {
    /// A file of `size` initial bytes at device offset `base` in a region
    /// of `capacity` bytes, on a device of `base + capacity + guard` bytes
    /// pre-filled with garbage.
    pub fn new(dev: Dev, bs: u32, order: OrderPolicy, base: u64, capacity: u64, size: u64) -> Rig {
        let guard = 64 << 10;
        let total = base + capacity + guard;
        let mut initial = vec![0u8; total as usize];
        fill(GARBAGE_SEED, 0, &mut initial);
        let flat = Arc::new(Flat::new(base, capacity, bs, size).unwrap());
        let opts = FileOptions { order };
        let (dev, mem, image, tmp): (Arc<dyn BlockDevice>, _, _, _) = match dev {
            Dev::Mem => {
                let m = Arc::new(Mem::from_bytes(initial.clone(), 512));
                (m.clone(), Some(m), None, None)
            }
            Dev::Sync => {
                let dir = tempfile::Builder::new()
                    .prefix("bufwrite-engine-test")
                    .tempdir_in("/tmp")
                    .unwrap();
                let path = dir.path().join("image");
                std::fs::write(&path, &initial).unwrap();
                let d = open_device(
                    &path,
                    OpenOptions {
                        backend: Backend::Sync,
                        ..OpenOptions::default()
                    },
                )
                .unwrap();
                (d, None, Some(path), Some(dir))
            }
        };
        let file = File::open(dev.clone(), flat.clone(), Box::new(IomapPath::new()), opts).unwrap();
        Rig {
            file,
            dev,
            mem,
            image,
            _tmp: tmp,
            base,
            capacity,
            initial,
            flat,
            opts,
        }
    }

    /// A Mem rig with the file at device offset 0, empty, of `capacity`.
    pub fn mem(bs: u32, order: OrderPolicy, capacity: u64) -> Rig {
        Rig::new(Dev::Mem, bs, order, 0, capacity, 0)
    }

    /// The whole device's bytes as they are now.
    pub fn device_bytes(&self) -> Vec<u8> {
        match (&self.mem, &self.image) {
            (Some(m), _) => m.snapshot(0, u64::MAX),
            (None, Some(p)) => std::fs::read(p).unwrap(),
            _ => unreachable!(),
        }
    }

    /// The device bytes of the file's region.
    pub fn region_bytes(&self) -> Vec<u8> {
        let all = self.device_bytes();
        all[self.base as usize..(self.base + self.capacity) as usize].to_vec()
    }

    /// Checks that nothing outside the file's region changed.
    pub fn check_outside(&self) -> Result<(), String> {
        let all = self.device_bytes();
        let (lo, hi) = (self.base as usize, (self.base + self.capacity) as usize);
        if all.len() != self.initial.len() {
            return Err(format!("device size changed to {}", all.len()));
        }
        if let Some(i) = (0..lo)
            .chain(hi..all.len())
            .find(|&i| all[i] != self.initial[i])
        {
            return Err(format!("device byte {i} outside the file region changed"));
        }
        Ok(())
    }
}

/// Checks docs/DESIGN.md §4 R1, R3 and R4 on every cached folio: the folio is
/// uptodate exactly when every block is; a dirty block is uptodate; dirty
/// blocks only in a dirty folio, and a dirty folio is in the dirty set.
pub fn check_invariants(file: &File) -> Result<(), String> {
    let bs = file.mapping().bs().as_usize();
    for folio in file.mapping().cache.folios() {
        let g = folio.lock();
        let at = g.pos();
        if let Some(s) = g.iomap_state() {
            if s.nblocks() != g.size() / bs {
                return Err(format!("folio {at}: {} blocks in its state", s.nblocks()));
            }
            if s.all_uptodate() != g.uptodate() {
                return Err(format!(
                    "folio {at}: flag uptodate {} but bitmap full {}",
                    g.uptodate(),
                    s.all_uptodate()
                ));
            }
            for b in 0..s.nblocks() {
                if s.is_dirty(b) && !s.is_uptodate(b, b + 1) {
                    return Err(format!("folio {at}: block {b} dirty but not uptodate"));
                }
            }
            if s.any_dirty() && !g.dirty() {
                return Err(format!("folio {at}: dirty blocks in a clean folio"));
            }
        }
        if g.dirty() && !g.uptodate() && g.iomap_state().is_none() {
            return Err(format!("folio {at}: dirty, not uptodate, no state"));
        }
    }
    Ok(())
}
