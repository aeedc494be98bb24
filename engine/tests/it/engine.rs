//! Specific behaviour of the engine's iomap path: what a write costs in
//! device I/O, which bits it touches, how writeback merges, and what an
//! invalid write leaves behind.

use crate::common::Rig;
use bufwrite_engine::{Error, File, IoStats, OrderPolicy};
use bufwrite_testkit::{apply, check_device, fill, flat_bytes, Model, Op, TraceOp};
use std::io::IoSlice;
use std::sync::Arc;

const MIB: u64 = 1 << 20;
const ZERO: IoStats = IoStats {
    reads: 0,
    writes: 0,
    bytes_read: 0,
    bytes_written: 0,
    flushes: 0,
};

/// Per-block (uptodate, dirty) bits of the folio holding `pos`; a folio
/// without state reports its flags for every block.
fn bits(file: &File, pos: u64) -> Vec<(bool, bool)> {
    let folio = file.mapping().cache.find(pos).expect("folio cached");
    let g = folio.lock();
    let n = g.size() / file.mapping().bs().as_usize();
    match g.iomap_state() {
        Some(s) => (0..n)
            .map(|b| (s.is_uptodate(b, b + 1), s.is_dirty(b)))
            .collect(),
        None => vec![(g.uptodate(), g.dirty()); n],
    }
}

fn bytes(seed: u64, pos: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    fill(seed, pos, &mut b);
    b
}

/// A file of `len` bytes written with seed 1, written back and (if `cold`)
/// dropped from the cache.
fn prepared(bs: u32, order: OrderPolicy, len: u64, cold: bool) -> Rig {
    let rig = Rig::mem(bs, order, 8 * MIB);
    rig.file.pwrite(0, &bytes(1, 0, len as usize)).unwrap();
    rig.file.fsync().unwrap();
    if cold {
        rig.file.drop_caches();
        assert!(rig.file.mapping().cache.is_empty());
    }
    rig
}

fn read_back(file: &File, pos: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    assert_eq!(file.pread(pos, &mut b).unwrap(), len);
    b
}

#[test]
fn cached_overwrite_does_no_io_and_touches_only_its_bits() {
    for bs in [1024u32, 2048, 4096] {
        let rig = prepared(bs, OrderPolicy::Fixed(9), 2 * MIB, false);
        let f = &rig.file;
        // After writeback the folio is uptodate and clean.
        let before = bits(f, 0);
        assert!(before.iter().all(|&(u, d)| u && !d), "bs {bs}");
        let (pos, len) = (5000u64, 3000usize);
        let s0 = f.device_stats();
        assert_eq!(f.pwrite(pos, &bytes(2, pos, len)).unwrap(), len);
        assert_eq!(f.device_stats() - s0, ZERO, "bs {bs}");
        let after = bits(f, 0);
        let bsz = bs as u64;
        let written = (pos / bsz) as usize..(pos + len as u64).div_ceil(bsz) as usize;
        for (b, (&(u0, d0), &(u1, d1))) in before.iter().zip(&after).enumerate() {
            assert!(u1 && u0, "bs {bs} block {b} uptodate");
            assert_eq!(d1, written.contains(&b) || d0, "bs {bs} block {b} dirty");
        }
        // A second overwrite of the now dirty folio: still no I/O.
        let s1 = f.device_stats();
        f.pwrite(MIB, &bytes(3, MIB, 100)).unwrap();
        assert_eq!(f.device_stats() - s1, ZERO);
        assert_eq!(read_back(f, pos, len), bytes(2, pos, len));
    }
}

#[test]
fn cold_partial_writes_read_only_the_edge_blocks() {
    // (offset, length, blocks read): middle of a block, aligned block,
    // straddling two blocks, two whole blocks, a partial head and tail.
    let cases = [
        (MIB + 100, 1024u64, 1u64),
        (MIB, 4096, 0),
        (MIB + 4096 - 512, 1024, 2),
        (MIB, 8192, 0),
        (MIB + 100, 3 * 4096, 2),
        (MIB + 4096, 4000, 1),
    ];
    for (pos, len, blocks) in cases {
        let rig = prepared(4096, OrderPolicy::Fixed(9), 2 * MIB, true);
        let f = &rig.file;
        let s0 = f.device_stats();
        f.pwrite(pos, &bytes(2, pos, len as usize)).unwrap();
        let d = f.device_stats() - s0;
        assert_eq!(
            (d.reads, d.bytes_read),
            (blocks, blocks * 4096),
            "{pos} {len}"
        );
        assert_eq!(d.writes, 0);
        // The written blocks are uptodate and dirty, every other block
        // neither (nothing else was read).
        let first = pos / 4096;
        let last = (pos + len).div_ceil(4096);
        for (b, &(u, dirty)) in bits(f, pos).iter().enumerate() {
            let inside = (first..last).contains(&(b as u64));
            assert_eq!((u, dirty), (inside, inside), "{pos} {len} block {b}");
        }
        let mut want = bytes(1, 0, 2 * MIB as usize);
        want[pos as usize..(pos + len) as usize].copy_from_slice(&bytes(2, pos, len as usize));
        assert_eq!(read_back(f, 0, want.len()), want);
        f.fsync().unwrap();
        assert_eq!(rig.region_bytes()[..want.len()], want[..]);
    }
}

#[test]
fn cold_writes_with_small_blocks() {
    // 1 KiB blocks: a 100-byte write inside a block reads that block,
    // one straddling two blocks reads both.
    for (pos, blocks) in [(2100u64, 1u64), (3000, 2)] {
        let rig = prepared(1024, OrderPolicy::Fixed(9), 2 * MIB, true);
        let s0 = rig.file.device_stats();
        rig.file.pwrite(pos, &bytes(2, pos, 100)).unwrap();
        let d = rig.file.device_stats() - s0;
        assert_eq!((d.reads, d.bytes_read), (blocks, blocks * 1024));
    }
}

#[test]
fn writes_past_eof_zero_without_reading() {
    let rig = prepared(4096, OrderPolicy::Fixed(9), 5000, true);
    let f = &rig.file;
    let s0 = f.device_stats();
    // Starts in the EOF block (which holds data: one read), then a gap.
    f.pwrite(100_000, &bytes(2, 100_000, 10)).unwrap();
    let d = f.device_stats() - s0;
    assert_eq!((d.reads, d.bytes_read), (1, 4096));
    let mut want = bytes(1, 0, 5000);
    want.resize(100_000, 0);
    want.extend(bytes(2, 100_000, 10));
    assert_eq!(read_back(f, 0, want.len()), want);
}

#[test]
fn writeback_merges_runs_across_folios() {
    for bs in [1024u32, 4096] {
        let bsz = u64::from(bs);
        let rig = prepared(bs, OrderPolicy::Fixed(9), 4 * MIB, false);
        let f = &rig.file;
        // One block each side of the folio boundary at 2 MiB.
        f.pwrite(2 * MIB - bsz, &bytes(2, 2 * MIB - bsz, 2 * bs as usize))
            .unwrap();
        assert_eq!(f.mapping().cache.nr_dirty(), 2);
        let s0 = f.device_stats();
        f.fsync().unwrap();
        let d = f.device_stats() - s0;
        assert_eq!(
            (d.writes, d.bytes_written, d.flushes),
            (1, 2 * bsz, 1),
            "bs {bs}"
        );
        assert_eq!(f.mapping().cache.nr_dirty(), 0);

        // Two dirty runs separated by one clean block: two writes, and only
        // the dirty blocks.
        f.pwrite(10 * bsz + 1, &[7u8; 3]).unwrap();
        f.pwrite(12 * bsz, &[8u8; 2]).unwrap();
        let s0 = f.device_stats();
        f.fsync().unwrap();
        let d = f.device_stats() - s0;
        assert_eq!((d.writes, d.bytes_written), (2, 2 * bsz), "bs {bs}");

        // Small unaligned writes in scattered blocks: bytes written is the
        // dirty block bytes.
        let offs = [5u64, 3 * MIB + 17, MIB + 3 * bsz - 1, 100 * bsz + 40];
        let mut blocks = std::collections::BTreeSet::new();
        for &o in &offs {
            f.pwrite(o, &[9u8; 2]).unwrap();
            blocks.insert(o / bsz);
            blocks.insert((o + 1) / bsz);
        }
        let s0 = f.device_stats();
        f.fsync().unwrap();
        let d = f.device_stats() - s0;
        assert_eq!(d.bytes_written, blocks.len() as u64 * bsz, "bs {bs}");
        assert_eq!(d.reads, 0);
    }
}

#[test]
fn writeback_merges_small_folios() {
    // Order-0 folios: 16 dirty 4 KiB folios in a row are one write.
    let rig = Rig::mem(4096, OrderPolicy::Fixed(0), 4 * MIB);
    rig.file.pwrite(0, &bytes(1, 0, 65536)).unwrap();
    let s0 = rig.file.device_stats();
    rig.file.fsync().unwrap();
    let d = rig.file.device_stats() - s0;
    assert_eq!((d.writes, d.bytes_written), (1, 65536));
}

#[test]
fn folio_state_invariants() {
    // Rules 1, 3 and 4: uptodate folio <=> every block uptodate; a dirty
    // block is uptodate; dirty blocks only in dirty folios.
    let mut model = Model::new(4 * MIB);
    let rig = Rig::mem(1024, OrderPolicy::FromWrite { max_order: 9 }, 4 * MIB);
    let ops = [
        Op::Trace(TraceOp::Pwrite {
            off: 0,
            len: 2 * MIB,
            seed: 1,
        }),
        Op::Trace(TraceOp::Fsync),
        Op::DropCaches,
        Op::Trace(TraceOp::Pwrite {
            off: 3000,
            len: 100,
            seed: 2,
        }),
        Op::Trace(TraceOp::Read {
            off: 40_000,
            len: 10_000,
        }),
        Op::Trace(TraceOp::Pwrite {
            off: MIB + 5,
            len: 70_000,
            seed: 3,
        }),
        Op::Trace(TraceOp::Pwrite {
            off: 2 * MIB + 100,
            len: 10,
            seed: 4,
        }),
        Op::Trace(TraceOp::Fsync),
        Op::Trace(TraceOp::Pwrite {
            off: 500,
            len: 10,
            seed: 5,
        }),
    ];
    for op in &ops {
        apply(&rig.file, &mut model, op).unwrap();
        crate::common::check_invariants(&rig.file).unwrap_or_else(|e| panic!("after {op}: {e}"));
    }
    apply(&rig.file, &mut model, &Op::Trace(TraceOp::Fsync)).unwrap();
    crate::common::check_invariants(&rig.file).unwrap();
    check_device(&rig.region_bytes(), &model).unwrap();
}

#[test]
fn zero_length_writes_are_no_ops() {
    let rig = prepared(4096, OrderPolicy::Fixed(2), 10_000, true);
    let f = &rig.file;
    let s0 = f.device_stats();
    f.seek(1 << 40);
    assert_eq!(f.pwrite(1 << 40, &[]).unwrap(), 0);
    assert_eq!(f.pwrite(u64::MAX, &[]).unwrap(), 0);
    assert_eq!(f.write(&[]).unwrap(), 0);
    assert_eq!(f.writev(&[]).unwrap(), 0);
    let empty = [IoSlice::new(&[]), IoSlice::new(&[])];
    assert_eq!(f.writev(&empty).unwrap(), 0);
    assert_eq!(f.pwritev(1 << 50, &empty).unwrap(), 0);
    assert_eq!(f.size(), 10_000);
    assert_eq!(f.position(), 1 << 40);
    assert!(f.mapping().cache.is_empty());
    assert_eq!(f.device_stats() - s0, ZERO);
}

/// Runs a failing op and checks that nothing changed: contents, size,
/// cache, device I/O.
fn assert_refused(rig: &Rig, model: &Model, what: &str, run: impl FnOnce(&File) -> Error) {
    let f = &rig.file;
    let cached = f.mapping().cache.len();
    let dirty = f.mapping().cache.nr_dirty();
    let s0 = f.device_stats();
    let err = run(f);
    assert!(
        matches!(
            err,
            Error::RangeOverflow { .. } | Error::FileTooLarge { .. }
        ),
        "{what}: {err}"
    );
    assert_eq!(f.device_stats() - s0, ZERO, "{what}");
    assert_eq!(f.size(), model.size(), "{what}");
    assert_eq!(f.mapping().cache.len(), cached, "{what}");
    assert_eq!(f.mapping().cache.nr_dirty(), dirty, "{what}");
    let mut m = model.clone();
    m.seek(f.position());
    let all = Op::Trace(TraceOp::Read {
        off: 0,
        len: model.size() + 10,
    });
    apply(f, &mut m, &all).unwrap_or_else(|e| panic!("{what}: {e}"));
}

#[test]
fn invalid_writes_change_nothing() {
    let cap = 4 * MIB;
    let rig = Rig::mem(4096, OrderPolicy::FromWrite { max_order: 9 }, cap);
    let mut model = Model::new(cap);
    // Acknowledged: some data, part of it written back, part dirty.
    for op in [
        Op::Trace(TraceOp::Pwrite {
            off: 0,
            len: 10_000,
            seed: 1,
        }),
        Op::Trace(TraceOp::Fsync),
        Op::Trace(TraceOp::Pwrite {
            off: 5000,
            len: 100,
            seed: 2,
        }),
    ] {
        apply(&rig.file, &mut model, &op).unwrap();
    }
    let buf = vec![1u8; 20];
    assert_refused(&rig, &model, "pwrite overflow", |f| {
        f.pwrite(u64::MAX - 10, &buf).unwrap_err()
    });
    assert_refused(&rig, &model, "pwrite past capacity", |f| {
        f.pwrite(cap - 10, &buf).unwrap_err()
    });
    assert_refused(
        &rig,
        &model,
        "pwrite far past capacity (no gap zeroing)",
        |f| f.pwrite(cap + 100_000, &buf).unwrap_err(),
    );
    assert_refused(&rig, &model, "pwrite at capacity", |f| {
        f.pwrite(cap, &buf[..1]).unwrap_err()
    });
    assert_refused(&rig, &model, "write at a position near u64::MAX", |f| {
        f.seek(u64::MAX - 3);
        let e = f.write(&buf).unwrap_err();
        assert_eq!(f.position(), u64::MAX - 3);
        e
    });
    assert_refused(&rig, &model, "writev past capacity", |f| {
        f.seek(cap - 30);
        let v = [IoSlice::new(&buf), IoSlice::new(&buf)];
        let e = f.writev(&v).unwrap_err();
        assert_eq!(f.position(), cap - 30);
        e
    });
    assert_refused(&rig, &model, "pwritev overflow", |f| {
        let v = [IoSlice::new(&buf), IoSlice::new(&buf)];
        f.pwritev(u64::MAX - 30, &v).unwrap_err()
    });
    // A write that exactly fills the capacity still works.
    f_fill_to_capacity(&rig, &mut model, cap);
}

fn f_fill_to_capacity(rig: &Rig, model: &mut Model, cap: u64) {
    apply(&rig.file, model, &Op::Trace(TraceOp::Seek { off: 0 })).unwrap();
    apply(
        &rig.file,
        model,
        &Op::Trace(TraceOp::Pwrite {
            off: cap - 3000,
            len: 3000,
            seed: 9,
        }),
    )
    .unwrap();
    apply(&rig.file, model, &Op::Trace(TraceOp::Fsync)).unwrap();
    // The file as the device and the mapper hold it: the gap the write
    // past EOF left is unwritten (reads as zeroes), not written.
    let bytes = flat_bytes(rig.dev.as_ref(), &rig.flat, model.size()).unwrap();
    check_device(&bytes, model).unwrap();
    rig.check_outside().unwrap();
}

#[test]
fn file_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<File>();
}

#[test]
fn concurrent_writers_and_reader() {
    let rig = Rig::mem(1024, OrderPolicy::FromWrite { max_order: 9 }, 8 * MIB);
    let file = Arc::new(rig.file);
    let half = 3 * MIB;
    // Give the file its size first, so the writers never zero a gap.
    file.pwrite(0, &vec![0u8; 2 * half as usize]).unwrap();
    std::thread::scope(|s| {
        for (t, base) in [(1u64, 0u64), (2, half)] {
            let file = &file;
            s.spawn(move || {
                let mut pos = base;
                let mut n = 0u64;
                while pos < base + half {
                    let len = (1 + (n * 7919) % 50_000).min(base + half - pos);
                    file.pwrite(pos, &bytes(t, pos, len as usize)).unwrap();
                    pos += len;
                    n += 1;
                }
            });
        }
        let file = &file;
        s.spawn(move || {
            let mut buf = vec![0u8; 100_000];
            for i in 0..200u64 {
                let pos = (i * 31_337) % (2 * half - 100_000);
                assert_eq!(file.pread(pos, &mut buf).unwrap(), buf.len());
                if i % 50 == 0 {
                    file.fsync().unwrap();
                }
            }
        });
    });
    file.fsync().unwrap();
    let mut want = bytes(1, 0, half as usize);
    want.extend(bytes(2, half, half as usize));
    let mut got = vec![0u8; want.len()];
    assert_eq!(file.pread(0, &mut got).unwrap(), want.len());
    assert!(got == want, "cached contents differ");
    let m = rig.mem.as_ref().unwrap();
    assert!(
        m.snapshot(0, want.len() as u64) == want,
        "device contents differ"
    );
}

#[test]
fn drop_caches_keeps_folios_in_use() {
    // A writer or reader that found a folio and is about to lock it must
    // not lose it to drop_caches: its write would land in a folio the cache
    // no longer holds, and never be written back.
    let rig = prepared(4096, OrderPolicy::Fixed(0), 64 << 10, false);
    let cache = &rig.file.mapping().cache;
    let held = cache.find(8192).unwrap();
    assert!(rig.file.drop_caches() > 0);
    let now = cache.find(8192).expect("a folio in use stays cached");
    assert!(Arc::ptr_eq(&held, &now));
    drop((held, now));
    rig.file.drop_caches();
    assert!(cache.is_empty());
}

#[test]
fn concurrent_writes_and_drop_caches_lose_nothing() {
    let rig = Rig::mem(4096, OrderPolicy::Fixed(0), 4 * MIB);
    let file = &rig.file;
    let len = 64 << 10;
    file.pwrite(0, &vec![0u8; len]).unwrap();
    file.fsync().unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                file.drop_caches();
                std::thread::yield_now();
            }
        });
        for round in 0..300u64 {
            let pos = (round * 4096) % len as u64;
            file.pwrite(pos, &bytes(round + 1, pos, 4096)).unwrap();
            if round % 4 == 3 {
                file.fsync().unwrap();
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    file.fsync().unwrap();
    file.drop_caches();
    let mut want = vec![0u8; len];
    for round in 0..300u64 {
        let pos = ((round * 4096) % len as u64) as usize;
        want[pos..pos + 4096].copy_from_slice(&bytes(round + 1, pos as u64, 4096));
    }
    assert!(read_back(file, 0, len) == want, "a write was lost");
}

/// A Flat file whose writeback mapping reports a hole over one range, so
/// that writeback of a folio fails part-way through mapping it.
struct HoleAtWriteback {
    flat: bufwrite_engine::Flat,
    hole: std::ops::Range<u64>,
}

impl bufwrite_engine::Mapper for HoleAtWriteback {
    fn block_size(&self) -> bufwrite_engine::BlockSize {
        self.flat.block_size()
    }
    fn iomap_begin(
        &self,
        pos: bufwrite_engine::FilePos,
        len: u64,
        intent: bufwrite_engine::MapIntent,
    ) -> bufwrite_engine::Result<bufwrite_engine::Iomap> {
        let mut m = self.flat.iomap_begin(pos, len, intent)?;
        let pos = pos.get();
        if intent == bufwrite_engine::MapIntent::Writeback {
            if self.hole.contains(&pos) {
                m.kind = bufwrite_engine::ExtentKind::Hole;
                m.length = m.length.min(self.hole.end - pos);
            } else if pos < self.hole.start {
                m.length = m.length.min(self.hole.start - pos);
            }
        }
        Ok(m)
    }
    fn get_block(
        &self,
        block: bufwrite_engine::FileBlock,
        create: bool,
    ) -> bufwrite_engine::Result<bufwrite_engine::BlockMapping> {
        self.flat.get_block(block, create)
    }
    fn size(&self) -> u64 {
        self.flat.size()
    }
    fn set_size(&self, size: u64) {
        self.flat.set_size(size)
    }
    fn max_size(&self) -> u64 {
        self.flat.max_size()
    }
}

#[test]
fn writeback_mapping_failure_writes_nothing_wrong() {
    use bufwrite_engine::device::mem::Mem;
    // Folio A = [0, 16K), folio B = [16K, 32K); block 3 of A cannot be
    // mapped for writeback.
    let mem = Arc::new(Mem::new(MIB));
    let mapper = Arc::new(HoleAtWriteback {
        flat: bufwrite_engine::Flat::new(0, MIB, 4096, 0).unwrap(),
        hole: 12288..16384,
    });
    let opts = bufwrite_engine::FileOptions {
        order: OrderPolicy::Fixed(2),
    };
    let file = File::open(
        mem.clone(),
        mapper,
        Box::new(bufwrite_engine::IomapPath::new()),
        opts,
    )
    .unwrap();
    file.pwrite(0, &bytes(1, 0, 32768)).unwrap();
    let err = file.fsync().unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    // A failed entirely and stays dirty; B went out, at its own address.
    assert!(
        mem.snapshot(0, 16384).iter().all(|&b| b == 0),
        "folio A's blocks were written"
    );
    assert!(mem.snapshot(16384, 16384) == bytes(1, 16384, 16384));
    assert_eq!(file.mapping().cache.nr_dirty(), 1);
    // Another fsync retries A and fails the same way, writing nothing.
    let s0 = file.device_stats();
    assert!(file.fsync().is_err());
    assert_eq!((file.device_stats() - s0).writes, 0);
}

/// A Flat file whose `iomap_end` fails for writes.
struct EndFails(bufwrite_engine::Flat);

impl bufwrite_engine::Mapper for EndFails {
    fn block_size(&self) -> bufwrite_engine::BlockSize {
        self.0.block_size()
    }
    fn iomap_begin(
        &self,
        pos: bufwrite_engine::FilePos,
        len: u64,
        intent: bufwrite_engine::MapIntent,
    ) -> bufwrite_engine::Result<bufwrite_engine::Iomap> {
        self.0.iomap_begin(pos, len, intent)
    }
    fn iomap_end(
        &self,
        _pos: bufwrite_engine::FilePos,
        _len: u64,
        _written: u64,
        _intent: bufwrite_engine::MapIntent,
    ) -> bufwrite_engine::Result<()> {
        Err(Error::Unsupported("iomap_end fails".into()))
    }
    fn get_block(
        &self,
        block: bufwrite_engine::FileBlock,
        create: bool,
    ) -> bufwrite_engine::Result<bufwrite_engine::BlockMapping> {
        self.0.get_block(block, create)
    }
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn set_size(&self, size: u64) {
        self.0.set_size(size)
    }
    fn max_size(&self) -> u64 {
        self.0.max_size()
    }
}

#[test]
fn iomap_end_failure_after_progress_reports_the_bytes() {
    use bufwrite_engine::device::mem::Mem;
    let mem = Arc::new(Mem::new(MIB));
    let mapper = Arc::new(EndFails(
        bufwrite_engine::Flat::new(0, MIB, 4096, 0).unwrap(),
    ));
    let file = File::open(
        mem,
        mapper,
        Box::new(bufwrite_engine::IomapPath::new()),
        bufwrite_engine::FileOptions::default(),
    )
    .unwrap();
    // The bytes reached the cache and i_size: the call says so.
    assert_eq!(file.pwrite(0, &bytes(1, 0, 5000)).unwrap(), 5000);
    assert_eq!(file.size(), 5000);
    assert_eq!(read_back(&file, 0, 5000), bytes(1, 0, 5000));
}

#[test]
fn appends_racing_fsync_keep_every_byte() {
    // Writeback zeroes a folio past i_size (DESIGN.md R14); a writer moves i_size
    // before unlocking the folio it wrote (R12), so appends racing
    // fsync must never lose bytes to that zeroing.
    for order in [
        OrderPolicy::Fixed(9),
        OrderPolicy::FromWrite { max_order: 9 },
    ] {
        let rig = Rig::mem(1024, order, 4 * MIB);
        let file = &rig.file;
        let done = std::sync::atomic::AtomicBool::new(false);
        let mut total = 0u64;
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    file.fsync().unwrap();
                }
            });
            for i in 0..400u64 {
                let len = 1 + (i * 104_729) % 3000;
                file.write(&bytes(7, total, len as usize)).unwrap();
                total += len;
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        file.fsync().unwrap();
        let want = bytes(7, 0, total as usize);
        assert!(
            read_back(file, 0, total as usize) == want,
            "{order:?}: cache"
        );
        assert!(
            rig.region_bytes()[..total as usize] == want[..],
            "{order:?}: device"
        );
    }
}
