//! Walk counts per mode, read-in counts per path, writeback runs, memory.

use crate::common::{Rig, GARBAGE_SEED, PATHS};
use bufwrite_compat::WalkStats;
use bufwrite_compat::{folio_ring, Mode};
use bufwrite_engine::OrderPolicy;
use bufwrite_testkit::fill;

const MIB: u64 = 1 << 20;
const FOLIO: u64 = 2 * MIB;

fn walks(rig: &Rig) -> (u64, u64) {
    let WalkStats {
        write_begin,
        commit,
    } = rig.walk_stats();
    (write_begin, commit)
}

/// A 4K-block file with one uptodate order-9 folio at 0.
fn uptodate_folio(mode: Mode) -> Rig {
    let rig = Rig::new(mode.name(), 4096, OrderPolicy::Fixed(9), 0, 4 * MIB, 0);
    rig.file.pwrite(0, &vec![0x5a; FOLIO as usize]).unwrap();
    let f = rig.file.mapping().cache.find(0).unwrap();
    assert!(f.lock().uptodate());
    rig
}

/// Walks of one 1 KiB overwrite at `pos`.
fn overwrite_walks(rig: &Rig, pos: u64) -> (u64, u64) {
    rig.reset_walks();
    rig.file.pwrite(pos, &[1u8; 1024]).unwrap();
    walks(rig)
}

#[test]
fn uptodate_order9_folio_walks() {
    let last = FOLIO - 4096;
    // (mode, at the head, in the middle block 256, at the last block)
    let want = [
        (Mode::Legacy, (512, 512), (512, 512), (512, 512)),
        (Mode::TailSkip, (1, 1), (257, 257), (512, 512)),
        (Mode::SeekToFrom, (1, 1), (1, 1), (1, 1)),
    ];
    for (mode, head, mid, tail) in want {
        let rig = uptodate_folio(mode);
        assert_eq!(overwrite_walks(&rig, 0), head, "{mode:?} at the head");
        assert_eq!(overwrite_walks(&rig, 256 * 4096), mid, "{mode:?} mid");
        assert_eq!(overwrite_walks(&rig, last), tail, "{mode:?} at the tail");
        // A write straddling two blocks visits both.
        let two = overwrite_walks(&rig, 4096 - 512);
        assert_eq!(two.0, if mode == Mode::Legacy { 512 } else { 2 });
        // No device I/O on the cached overwrite path.
        assert_eq!(rig.reads(), 0);
    }
}

#[test]
fn non_uptodate_folio_walks_every_head() {
    for mode in Mode::ALL {
        // The file exists on the device; nothing is cached.
        let rig = Rig::new(mode.name(), 4096, OrderPolicy::Fixed(9), 0, 4 * MIB, FOLIO);
        assert_eq!(overwrite_walks(&rig, 0), (512, 512), "{mode:?}");
        assert_eq!(rig.reads(), 1, "{mode:?}: only the partial block is read");
        // Still not uptodate (511 heads never read): still full walks.
        assert_eq!(overwrite_walks(&rig, FOLIO - 4096), (512, 512), "{mode:?}");
        assert_eq!(rig.reads(), 2);
    }
}

#[test]
fn a_whole_folio_write_makes_it_uptodate_and_later_walks_short() {
    let rig = Rig::new("bh-tailskip", 1024, OrderPolicy::Fixed(2), 0, MIB, 0);
    rig.reset_walks();
    rig.file.pwrite(0, &[3u8; 16384]).unwrap();
    // Not uptodate on entry: 16 heads each; commit discovers it is now.
    assert_eq!(walks(&rig), (16, 16));
    assert_eq!(overwrite_walks(&rig, 2048), (3, 3));
}

/// Blocks a cold write of `[off, off + len)` must read: its partial edge blocks.
fn edge_blocks(off: u64, len: u64, bs: u64) -> u64 {
    let end = off + len;
    let first_partial = !off.is_multiple_of(bs);
    let last_partial = !end.is_multiple_of(bs);
    if (end - 1) / bs == off / bs {
        u64::from(first_partial || last_partial)
    } else {
        u64::from(first_partial) + u64::from(last_partial)
    }
}

#[test]
fn cold_partial_writes_read_exactly_the_edge_blocks() {
    let cases = [
        (1000u64, 10000u64),
        (100, 10),
        (4096, 8192),
        (3000, 6000),
        (FOLIO - 10, 20),
    ];
    for name in PATHS {
        for bs in [1024u64, 2048, 4096] {
            for order in [OrderPolicy::Fixed(0), OrderPolicy::Fixed(9)] {
                for (off, len) in cases {
                    let rig = Rig::new(name, bs as u32, order, 0, 4 * MIB, 4 * MIB);
                    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                    rig.file.pwrite(off, &data).unwrap();
                    let want = edge_blocks(off, len, bs);
                    assert_eq!(
                        rig.reads(),
                        want,
                        "{name} bs {bs} {order:?} write [{off}, +{len})"
                    );
                    // The bytes around the write are the device's.
                    let lo = off - off % bs;
                    let hi = (off + len).div_ceil(bs) * bs;
                    let mut got = vec![0u8; (hi - lo) as usize];
                    rig.file.pread(lo, &mut got).unwrap();
                    let mut expect = vec![0u8; (hi - lo) as usize];
                    fill(GARBAGE_SEED, lo, &mut expect);
                    let at = (off - lo) as usize;
                    expect[at..at + len as usize].copy_from_slice(&data);
                    assert!(got == expect, "{name} bs {bs} {order:?} [{off}, +{len})");
                }
            }
        }
    }
}

#[test]
fn writes_past_eof_read_nothing() {
    for name in PATHS {
        let rig = Rig::new(name, 1024, OrderPolicy::Fixed(9), 0, 4 * MIB, 5000);
        rig.file.pwrite(9000, &[7u8; 100]).unwrap();
        rig.file.pwrite(MIB + 3, &[8u8; 10]).unwrap();
        // Only the block holding the old EOF (4096..5120) is partial data.
        assert_eq!(rig.reads(), 1, "{name}");
        let mut buf = vec![0u8; 4000];
        rig.file.pread(5000, &mut buf).unwrap();
        assert!(
            buf[..4000].iter().all(|&b| b == 0),
            "{name}: gap reads zero"
        );
    }
}

#[test]
fn writeback_writes_only_dirty_heads_merged() {
    for name in PATHS {
        let rig = Rig::new(name, 4096, OrderPolicy::Fixed(9), 0, 4 * MIB, 4 * MIB);
        rig.file.pwrite(0, &vec![1u8; 3 * 4096]).unwrap();
        rig.file.pwrite(5 * 4096, &[2u8; 4096]).unwrap();
        // Disk-contiguous across the folio boundary: one I/O with the next folio.
        rig.file.pwrite(FOLIO - 4096, &[3u8; 8192]).unwrap();
        let before = rig.file.device_stats();
        rig.file.fsync().unwrap();
        let s = rig.file.device_stats();
        assert_eq!(s.writes - before.writes, 3, "{name}");
        assert_eq!(s.bytes_written - before.bytes_written, 6 * 4096, "{name}");
        let region = rig.region();
        assert!(region[5 * 4096..6 * 4096].iter().all(|&b| b == 2));
        assert_eq!(rig.file.mapping().cache.nr_dirty(), 0);
    }
}

#[test]
fn ring_memory_is_reported_and_freed_with_the_folio() {
    let mut per_path = Vec::new();
    for name in PATHS {
        let rig = Rig::new(name, 4096, OrderPolicy::Fixed(9), 0, 4 * MIB, 0);
        rig.file.pwrite(0, &[1u8; 1024]).unwrap();
        let (meta, data) = rig.file.metadata_bytes();
        assert_eq!(data, FOLIO as usize);
        if name != "iomap" {
            let f = rig.file.mapping().cache.find(0).unwrap();
            let g = f.lock();
            let ring = folio_ring(&g).unwrap();
            assert_eq!(ring.len(), 512);
            assert_eq!(ring.memory_bytes(), meta);
            assert_eq!(ring.has_seek_index(), name == "bh-seek");
        }
        per_path.push((name, meta, meta as u64 * 512));
        rig.file.fsync().unwrap();
        assert_eq!(rig.file.drop_caches(), 1);
        assert_eq!(rig.file.metadata_bytes(), (0, 0));
    }
    for (name, meta, per_gib) in &per_path {
        eprintln!("{name}: {meta} metadata bytes per 2 MiB folio, {per_gib} per cached GiB");
    }
    assert!(per_path[1].1 > 10 * per_path[0].1);
}

#[test]
fn mode_names_round_trip() {
    for m in Mode::ALL {
        assert_eq!(Mode::from_name(m.name()), Some(m));
        let rig = Rig::new(m.name(), 4096, OrderPolicy::Fixed(0), 0, MIB, 0);
        assert_eq!(rig.file.write_path_name(), m.name());
    }
    assert_eq!(Mode::from_name("iomap"), None);
}

/// A device that counts `submit` calls, over a Mem.
struct Submits {
    inner: std::sync::Arc<bufwrite_engine::device::mem::Mem>,
    calls: std::sync::atomic::AtomicU64,
}

impl bufwrite_engine::BlockDevice for Submits {
    fn backend(&self) -> &'static str {
        "submits"
    }
    fn describe(&self) -> String {
        "submit counter".into()
    }
    fn logical_block_size(&self) -> u32 {
        self.inner.logical_block_size()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn submit(&self, batch: &mut [bufwrite_engine::IoRequest<'_>]) {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.submit(batch);
    }
    fn flush(&self) -> bufwrite_engine::Result<()> {
        self.inner.flush()
    }
    fn stats(&self) -> bufwrite_engine::IoStats {
        self.inner.stats()
    }
}

/// A 4 KiB-block order-9 file of one folio, through a submit-counting device.
fn submit_rig(name: &str) -> (bufwrite_engine::File, std::sync::Arc<Submits>) {
    use bufwrite_engine::{device::mem::Mem, File, FileOptions, Flat};
    let dev = std::sync::Arc::new(Submits {
        inner: std::sync::Arc::new(Mem::new(4 * MIB)),
        calls: Default::default(),
    });
    let flat = std::sync::Arc::new(Flat::new(0, 4 * MIB, 4096, FOLIO).unwrap());
    let opts = FileOptions {
        order: OrderPolicy::Fixed(9),
    };
    let walks = bufwrite_compat::WalkCounter::new();
    let file = File::open(dev.clone(), flat, crate::common::path(name, &walks), opts).unwrap();
    (file, dev)
}

#[test]
fn buffered_read_in_is_one_submit_of_the_missing_runs_on_every_path() {
    use std::sync::atomic::Ordering::Relaxed;
    for name in PATHS {
        let (file, dev) = submit_rig(name);
        // Whole blocks 1 and 5 written: uptodate without any read.
        file.pwrite(4096, &[1u8; 4096]).unwrap();
        file.pwrite(5 * 4096, &[5u8; 4096]).unwrap();
        assert_eq!(file.device_stats().reads, 0, "{name}");
        let submits = dev.calls.load(Relaxed);
        let mut buf = vec![0u8; FOLIO as usize];
        file.pread(0, &mut buf).unwrap();
        // Missing: [0], [2, 5), [6, 512): one request each, one submit.
        assert_eq!(file.device_stats().reads, 3, "{name}");
        assert_eq!(dev.calls.load(Relaxed) - submits, 1, "{name}");
        assert!(buf[4096..8192].iter().all(|&b| b == 1), "{name}");
        assert!(buf[5 * 4096..6 * 4096].iter().all(|&b| b == 5), "{name}");
    }
}

#[test]
fn write_begin_reads_both_edge_blocks_as_the_kernel_does() {
    use std::sync::atomic::Ordering::Relaxed;
    for name in PATHS {
        let (file, dev) = submit_rig(name);
        // Partial in block 0 and block 1: both edges read, one request each.
        file.pwrite(1000, &[9u8; 4000]).unwrap();
        assert_eq!(file.device_stats().reads, 2, "{name}");
        // The kernel's paths differ here, and so do ours: iomap reads each
        // edge block synchronously (__iomap_write_begin), the buffer-head
        // write_begin submits both heads' reads and then waits on them.
        let want = if name == "iomap" { 2 } else { 1 };
        assert_eq!(dev.calls.load(Relaxed), want, "{name}");
    }
}

#[test]
fn heads_are_the_kernels_size_and_a_cached_gib_carries_their_metadata() {
    use bufwrite_compat::{BhState, BufferHead, BufferRing, KERNEL_BUFFER_HEAD_SIZE};
    // struct buffer_head on x86-64, Linux 6.18 (BTF: size=104).
    assert_eq!(size_of::<BufferHead>(), 104);
    assert_eq!(KERNEL_BUFFER_HEAD_SIZE, 104);
    // A 2 MiB folio with 4 KiB blocks: 512 heads plus the 40-byte ring
    // header (head pointer, count, block size, the optional seek index).
    let ring = BufferRing::new(512, 4096, BhState::empty(), false);
    assert_eq!(size_of::<BufferRing>(), 40);
    assert_eq!(ring.memory_bytes(), 512 * 104 + 40);
    assert_eq!(ring.memory_bytes(), 53_288);
    // 512 such folios per cached GiB.
    assert_eq!(ring.memory_bytes() * 512, 27_283_456);
    // Through the path: what File::metadata_bytes reports for one folio.
    let rig = Rig::new("bh-legacy", 4096, OrderPolicy::Fixed(9), 0, 4 * MIB, 0);
    rig.file.pwrite(0, &[1u8; 1024]).unwrap();
    assert_eq!(rig.file.metadata_bytes(), (53_288, FOLIO as usize));
    let f = rig.file.mapping().cache.find(0).unwrap();
    let g = f.lock();
    let ring = folio_ring(&g).unwrap();
    assert!(ring.iter().all(|bh| bh.folio() == 0 && bh.count() == 0));
    assert!(ring.iter().take(1).all(|bh| bh.dirty() && bh.uptodate()));
}
