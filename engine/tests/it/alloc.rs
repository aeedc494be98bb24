//! Allocation through the engine on the iomap path: ENOSPC at write time,
//! truncate and punch over the cache, close and Drop, and a Mount of a tiny
//! in-test filesystem (names to Flat regions).

use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{
    AllocPolicy, BlockSize, Error, FallocMode, File, FileOptions, Filesystem, Flat, IomapPath,
    Mapper, Mount, OpenFlags, OrderPolicy, Result,
};
use bufwrite_testkit::Reserving;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const CAP: u64 = 1 << 20;

fn iomap_file(dev: Arc<Mem>, mapper: Arc<dyn Mapper>, order: u8) -> File {
    let opts = FileOptions {
        order: OrderPolicy::Fixed(order),
    };
    File::open(dev, mapper, Box::new(IomapPath::new()), opts).unwrap()
}

/// iomap_begin reserves as much as it can: the write is short, the next
/// one fails with NoSpace, nothing stays reserved unused.
#[test]
fn no_space_is_a_short_write_then_an_error() {
    let mem = Arc::new(Mem::new(CAP));
    let mapper = Arc::new(Reserving::new(0, CAP, 1024, 6, AllocPolicy::Unwritten));
    let file = iomap_file(mem.clone(), mapper.clone(), 0);
    assert_eq!(file.pwrite(0, &[1u8; 8192]).unwrap(), 6144);
    assert_eq!((file.size(), mapper.reserved()), (6144, 6));
    let err = file.pwrite(6144, &[2u8; 10]).unwrap_err();
    assert!(matches!(err, Error::NoSpace { offset: 6144, .. }), "{err}");
    assert_eq!(file.size(), 6144);
    file.fsync().unwrap();
    assert_eq!((mapper.reserved(), mapper.unwritten()), (0, 0));
    assert_eq!(mem.snapshot(0, 6144), vec![1u8; 6144]);
    // A punch frees blocks: room again.
    file.fallocate(0, 2048, FallocMode::PunchHole).unwrap();
    assert_eq!(file.pwrite(6144, &[3u8; 2048]).unwrap(), 2048);
}

/// A punch in the middle of a cached folio: the iomap state of the whole
/// blocks inside is forgotten (not uptodate, not dirty), their bytes are
/// zero, the edges are zeroed and stay dirty, the folio is not uptodate.
#[test]
fn punch_invalidates_the_blocks_inside() {
    let mem = Arc::new(Mem::from_bytes(vec![0x66; CAP as usize], 512));
    let flat = Arc::new(Flat::new(0, CAP, 1024, 16384).unwrap());
    let file = iomap_file(mem.clone(), flat.clone(), 2);
    file.pwrite(0, &[9u8; 16384]).unwrap();
    file.fsync().unwrap();
    file.pwrite(8192, &[8u8; 100]).unwrap();
    file.fallocate(1500, 2600, FallocMode::PunchHole).unwrap();
    {
        let folio = file.mapping().cache.find(0).unwrap();
        let g = folio.lock();
        let s = g.iomap_state().unwrap();
        assert!(!g.uptodate() && g.dirty());
        let up: Vec<bool> = (0..16).map(|b| s.is_uptodate(b, b + 1)).collect();
        let dirty: Vec<bool> = (0..16).map(|b| s.is_dirty(b)).collect();
        let mut want_up = vec![true; 16];
        want_up[2] = false;
        want_up[3] = false;
        assert_eq!(up, want_up);
        let mut want_dirty = vec![false; 16];
        want_dirty[1] = true; // the zeroed head edge
        want_dirty[4] = true; // the zeroed tail edge
        want_dirty[8] = true; // the write before the punch
        assert_eq!(dirty, want_dirty);
        assert!(g.data[1500..4100].iter().all(|&b| b == 0));
    }
    file.fsync().unwrap();
    file.drop_caches();
    let mut buf = vec![0u8; 16384];
    file.pread(0, &mut buf).unwrap();
    let mut want = vec![9u8; 16384];
    want[1500..4100].fill(0);
    want[8192..8292].fill(8);
    assert_eq!(buf, want);
}

/// Truncate down drops the cache past EOF (dirty data discarded), zeroes
/// the new EOF block past it on disk, and frees the blocks; growing again
/// reads zeroes.
#[test]
fn truncate_drops_zeroes_and_frees() {
    let mem = Arc::new(Mem::new(CAP));
    let mapper = Arc::new(Reserving::new(0, CAP, 1024, 1024, AllocPolicy::Unwritten));
    let file = iomap_file(mem.clone(), mapper.clone(), 9);
    file.pwrite(0, &[7u8; 10000]).unwrap();
    file.fsync().unwrap();
    file.pwrite(9000, &[6u8; 20000]).unwrap();
    assert_eq!(mapper.reserved(), 19);
    file.set_len(3000).unwrap();
    // The dirty reservations past EOF went; blocks 3.. freed.
    assert_eq!((mapper.reserved(), mapper.used()), (0, 3));
    file.fsync().unwrap();
    assert_eq!(mem.snapshot(0, 3072), {
        let mut v = vec![7u8; 3072];
        v[3000..].fill(0);
        v
    });
    file.set_len(50000).unwrap();
    let mut buf = vec![1u8; 50000];
    assert_eq!(file.pread(0, &mut buf).unwrap(), 50000);
    assert!(buf[..3000].iter().all(|&b| b == 7));
    assert!(buf[3000..].iter().all(|&b| b == 0));
    assert!(matches!(
        file.set_len(CAP + 1),
        Err(Error::FileTooLarge { .. })
    ));
    assert!(matches!(
        file.fallocate(0, 0, FallocMode::KeepSize),
        Err(Error::InvalidArgument(_))
    ));
    file.fallocate(60000, 4000, FallocMode::KeepSize).unwrap();
    assert_eq!(file.size(), 50000);
    file.fallocate(60000, 4000, FallocMode::Allocate).unwrap();
    assert_eq!(file.size(), 64000);
    file.fdatasync().unwrap();
}

/// close() writes back and reports; dropping a file writes back too, best
/// effort, unless told not to.
#[test]
fn close_and_drop_write_back() {
    let mem = Arc::new(Mem::new(CAP));
    let flat = Arc::new(Flat::new(0, CAP, 4096, 0).unwrap());
    let file = iomap_file(mem.clone(), flat.clone(), 0);
    file.pwrite(0, &[1u8; 100]).unwrap();
    file.close().unwrap();
    assert_eq!(mem.snapshot(0, 100), vec![1u8; 100]);
    let file = iomap_file(mem.clone(), flat.clone(), 0);
    file.pwrite(0, &[2u8; 100]).unwrap();
    drop(file);
    assert_eq!(mem.snapshot(0, 100), vec![2u8; 100]);
    let file = iomap_file(mem.clone(), flat, 0);
    file.pwrite(0, &[3u8; 100]).unwrap();
    file.set_writeback_on_drop(false);
    drop(file);
    assert_eq!(mem.snapshot(0, 100), vec![2u8; 100]);
}

/// A filesystem of fixed-size Flat regions, one per name (also the
/// writeback tests' mount, wbstate.rs).
pub(crate) struct TinyFs {
    slot: u64,
    files: Mutex<(HashMap<String, Arc<Flat>>, u64)>,
    syncs: Mutex<u32>,
}

impl TinyFs {
    pub(crate) fn new(slot: u64) -> Self {
        TinyFs {
            slot,
            files: Mutex::new((HashMap::new(), 0)),
            syncs: Mutex::new(0),
        }
    }
}

impl Filesystem for TinyFs {
    fn block_size(&self) -> BlockSize {
        BlockSize::new(4096).unwrap()
    }
    fn open(&self, path: &str) -> Result<Arc<dyn Mapper>> {
        let files = self.files.lock().unwrap();
        match files.0.get(path) {
            Some(f) => Ok(f.clone()),
            None => Err(Error::NotFound(path.to_string())),
        }
    }
    fn create(&self, path: &str) -> Result<Arc<dyn Mapper>> {
        let mut files = self.files.lock().unwrap();
        if files.0.contains_key(path) {
            return Err(Error::AlreadyExists(path.to_string()));
        }
        let base = files.1 * self.slot;
        files.1 += 1;
        let f = Arc::new(Flat::new(base, self.slot, 4096, 0)?);
        files.0.insert(path.to_string(), f.clone());
        Ok(f)
    }
    fn unlink(&self, path: &str) -> Result<()> {
        let mut files = self.files.lock().unwrap();
        files
            .0
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| Error::NotFound(path.to_string()))
    }
    fn sync_fs(&self) -> Result<()> {
        *self.syncs.lock().unwrap() += 1;
        Ok(())
    }
}

#[test]
fn mount_opens_creates_unlinks_and_shares_open_inodes() {
    let mem = Arc::new(Mem::new(4 * CAP));
    let fs = Arc::new(TinyFs::new(CAP));
    let mount = Mount::new(mem.clone(), fs.clone());
    let path = || Box::new(IomapPath::new());
    let opts = FileOptions::default();
    let create = OpenFlags {
        create: true,
        ..OpenFlags::default()
    };
    assert!(matches!(
        mount.open("/a", OpenFlags::default(), path(), opts),
        Err(Error::NotFound(_))
    ));
    let a = mount.open("/a", create, path(), opts).unwrap();
    a.pwrite(0, b"hello").unwrap();
    // A second open shares the inode's cache: it sees the first one's
    // unwritten bytes, and its own writes are the first one's.
    let a2 = mount.open("/a", create, path(), opts).unwrap();
    let mut five = [0u8; 5];
    assert_eq!(a2.pread(0, &mut five).unwrap(), 5);
    assert_eq!(&five, b"hello");
    a2.pwrite(5, b"!").unwrap();
    assert_eq!(a.size(), 6);
    // Unlink waits for the last close.
    assert!(matches!(mount.unlink("/a"), Err(Error::Busy(_))));
    drop(a2);
    assert!(matches!(mount.unlink("/a"), Err(Error::Busy(_))));
    let exclusive = OpenFlags {
        create: true,
        exclusive: true,
        truncate: false,
    };
    assert!(matches!(
        mount.open("/a", exclusive, path(), opts),
        Err(Error::AlreadyExists(_))
    ));
    let b = mount.open("/b", exclusive, path(), opts).unwrap();
    b.pwrite(0, b"world").unwrap();
    a.close().unwrap();
    // Closed: it opens again, with what was written.
    let a = mount
        .open("/a", OpenFlags::default(), path(), opts)
        .unwrap();
    let mut buf = [0u8; 6];
    assert_eq!(a.pread(0, &mut buf).unwrap(), 6);
    assert_eq!(&buf, b"hello!");
    drop(a);
    // O_TRUNC empties it.
    let trunc = OpenFlags {
        truncate: true,
        ..OpenFlags::default()
    };
    let a = mount.open("/a", trunc, path(), opts).unwrap();
    assert_eq!(a.size(), 0);
    drop(a);
    mount.unlink("/a").unwrap();
    assert!(matches!(mount.unlink("/a"), Err(Error::NotFound(_))));
    drop(b);
    mount.sync().unwrap();
    assert_eq!(*fs.syncs.lock().unwrap(), 1);
    assert_eq!(mem.snapshot(CAP, 5), b"world".to_vec());
    assert_eq!(mount.device().size(), 4 * CAP);
}
