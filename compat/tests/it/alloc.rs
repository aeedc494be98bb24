//! Allocation on the buffer-head path: reservations per head at write
//! time, released when write_begin fails; delayed heads allocated as one
//! run at writeback; invalidation of part of a folio by punch and truncate.

use bufwrite_compat::{folio_ring, BhState, BufferHeadPath, Mode};
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{AllocPolicy, Error, FallocMode, File, FileOptions, Flat, OrderPolicy};
use bufwrite_testkit::Reserving;
use std::sync::Arc;

const CAP: u64 = 1 << 20;

fn open(mode: Mode, mapper: Arc<Reserving>, mem: &Arc<Mem>, order: u8) -> File {
    let opts = FileOptions {
        order: OrderPolicy::Fixed(order),
    };
    File::open(
        mem.clone(),
        mapper,
        Box::new(BufferHeadPath::new(mode)),
        opts,
    )
    .unwrap()
}

/// A write into a fresh folio whose third get_block fails: the two blocks
/// the call reserved are given back (no leak), the heads are holes again,
/// and a retry writes everything.
#[test]
fn a_failed_write_begin_releases_what_it_reserved() {
    for mode in Mode::ALL {
        let mem = Arc::new(Mem::new(CAP));
        let mapper = Arc::new(Reserving::new(0, CAP, 1024, 1024, AllocPolicy::Unwritten));
        // One 4 KiB folio holds four 1 KiB blocks.
        let file = open(mode, mapper.clone(), &mem, 0);
        mapper.fail_get_block_at(3);
        let err = file.pwrite(0, &[5u8; 4096]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{mode:?}: {err}");
        assert_eq!(mapper.reserved(), 0, "{mode:?}: reservation leaked");
        assert_eq!(mapper.used(), 0, "{mode:?}");
        assert_eq!(mapper.releases(), vec![(0, 2048)], "{mode:?}");
        assert_eq!(file.size(), 0);
        {
            let folio = file.mapping().cache.find(0).unwrap();
            let g = folio.lock();
            let ring = folio_ring(&g).unwrap();
            for bh in ring.iter() {
                let s = bh.state();
                assert!(
                    !s.intersects(BhState::MAPPED | BhState::DELAY | BhState::NEW | BhState::DIRTY),
                    "{mode:?}: {s:?}"
                );
            }
        }
        mapper.fail_get_block_at(0);
        assert_eq!(file.pwrite(0, &[5u8; 4096]).unwrap(), 4096);
        assert_eq!(mapper.reserved(), 4);
        file.fsync().unwrap();
        assert_eq!(
            (mapper.reserved(), mapper.used(), mapper.unwritten()),
            (0, 4, 0)
        );
        assert_eq!(mem.snapshot(0, 4096), vec![5u8; 4096]);
    }
}

/// ENOSPC at write time: a write that could reserve only some folios'
/// blocks is short, the next one fails with NoSpace, and nothing reserved
/// is left unused.
#[test]
fn no_space_is_a_short_write_then_an_error() {
    for mode in Mode::ALL {
        let mem = Arc::new(Mem::new(CAP));
        // Room for 6 blocks: one 4-block folio and half of the next.
        let mapper = Arc::new(Reserving::new(0, CAP, 1024, 6, AllocPolicy::Ordered));
        let file = open(mode, mapper.clone(), &mem, 0);
        assert_eq!(file.pwrite(0, &[1u8; 8192]).unwrap(), 4096, "{mode:?}");
        assert_eq!(file.size(), 4096);
        assert_eq!(
            mapper.reserved(),
            4,
            "{mode:?}: the failed folio's blocks stay reserved"
        );
        let err = file.pwrite(4096, &[2u8; 4096]).unwrap_err();
        assert!(matches!(err, Error::NoSpace { .. }), "{mode:?}: {err}");
        // A write that fits in the room left works.
        assert_eq!(file.pwrite(4096, &[3u8; 2048]).unwrap(), 2048);
        file.fsync().unwrap();
        assert_eq!((mapper.reserved(), mapper.used()), (0, 6));
        assert_eq!(mem.snapshot(4096, 2048), vec![3u8; 2048]);
    }
}

/// Writeback allocates a run of delayed heads with one map_blocks and the
/// heads take its blocks (unwritten under that policy until end_io).
#[test]
fn delayed_heads_are_allocated_at_writeback() {
    for mode in Mode::ALL {
        for policy in [AllocPolicy::Unwritten, AllocPolicy::Ordered] {
            let mem = Arc::new(Mem::new(CAP));
            let mapper = Arc::new(Reserving::new(0, CAP, 1024, 1024, policy));
            let file = open(mode, mapper.clone(), &mem, 2);
            file.pwrite(1000, &[4u8; 6000]).unwrap();
            {
                let folio = file.mapping().cache.find(0).unwrap();
                let g = folio.lock();
                let delayed = folio_ring(&g)
                    .unwrap()
                    .iter()
                    .filter(|bh| bh.test(BhState::DELAY | BhState::MAPPED | BhState::DIRTY))
                    .count();
                assert_eq!(delayed, 7, "{mode:?}");
            }
            file.fsync().unwrap();
            let folio = file.mapping().cache.find(0).unwrap();
            let g = folio.lock();
            for (i, bh) in folio_ring(&g).unwrap().iter().enumerate().take(7) {
                assert!(!bh.test(BhState::DELAY) && bh.mapped(), "{mode:?} head {i}");
                assert_eq!(bh.blocknr().get(), i as u64);
                assert_eq!(
                    bh.test(BhState::UNWRITTEN),
                    policy == AllocPolicy::Unwritten
                );
            }
            drop(g);
            assert_eq!((mapper.reserved(), mapper.unwritten()), (0, 0));
            let mut want = vec![0u8; 7168];
            want[1000..7000].fill(4);
            assert_eq!(mem.snapshot(0, 7168), want);
        }
    }
}

/// Punching whole blocks in the middle of a cached folio invalidates their
/// heads (unmapped, not uptodate, not dirty), zeroes them, leaves the
/// others as they were, and the folio is not uptodate any more.
#[test]
fn punch_invalidates_the_heads_inside() {
    for mode in Mode::ALL {
        let mem = Arc::new(Mem::from_bytes(vec![0x77; CAP as usize], 512));
        let flat = Arc::new(Flat::new(0, CAP, 1024, 16384).unwrap());
        let opts = FileOptions {
            order: OrderPolicy::Fixed(2),
        };
        let file = File::open(
            mem.clone(),
            flat.clone(),
            Box::new(BufferHeadPath::new(mode)),
            opts,
        )
        .unwrap();
        file.pwrite(0, &[9u8; 16384]).unwrap();
        file.fallocate(1500, 2600, FallocMode::PunchHole).unwrap();
        {
            let folio = file.mapping().cache.find(0).unwrap();
            let g = folio.lock();
            assert!(!g.uptodate());
            let states: Vec<(bool, bool, bool)> = folio_ring(&g)
                .unwrap()
                .iter()
                .map(|bh| (bh.uptodate(), bh.dirty(), bh.mapped()))
                .collect();
            // 16 heads of 1 KiB; the punch [1500, 4100) frees heads 2 and 3
            // and zeroes the edges in heads 1 and 4 (which stay dirty).
            let mut want = vec![(true, true, true); 16];
            want[2] = (false, false, false);
            want[3] = (false, false, false);
            assert_eq!(states, want, "{mode:?}");
            assert!(g.data[1500..4100].iter().all(|&b| b == 0));
            assert!(g.data[4100..].iter().all(|&b| b == 9));
            assert!(g.data[..1500].iter().all(|&b| b == 9));
        }
        assert_eq!(flat.unwritten_ranges()[0], 2048..4096);
        file.fsync().unwrap();
        file.drop_caches();
        let mut buf = vec![0u8; 16384];
        assert_eq!(file.pread(0, &mut buf).unwrap(), 16384);
        let mut want = vec![9u8; 16384];
        want[1500..4100].fill(0);
        assert_eq!(buf, want, "{mode:?}");
    }
}
