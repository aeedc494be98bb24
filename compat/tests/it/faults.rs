//! Device errors on the buffer-head path: a failed read-in fails the write
//! and leaves nothing wrong behind; a failed writeback keeps the data dirty.

use bufwrite_compat::{BufferHeadPath, Mode};
use bufwrite_engine::device::faulty::Faulty;
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{File, FileOptions, Flat, OrderPolicy};
use std::sync::Arc;

const MIB: u64 = 1 << 20;

fn open(mode: Mode) -> (File, Arc<Faulty>, Arc<Mem>) {
    let mem = Arc::new(Mem::from_bytes(vec![0x11; 4 * MIB as usize], 512));
    let faulty = Arc::new(Faulty::new(mem.clone()));
    let flat = Arc::new(Flat::new(0, 4 * MIB, 4096, 4 * MIB).unwrap());
    let opts = FileOptions {
        order: OrderPolicy::Fixed(9),
    };
    let path = Box::new(BufferHeadPath::new(mode));
    (
        File::open(faulty.clone(), flat, path, opts).unwrap(),
        faulty,
        mem,
    )
}

#[test]
fn failed_read_in_fails_the_write_cleanly() {
    for mode in Mode::ALL {
        let (file, faulty, mem) = open(mode);
        faulty.fail_next_reads(1);
        assert!(file.pwrite(100, &[7u8; 10]).is_err(), "{mode:?}");
        assert_eq!(file.mapping().cache.nr_dirty(), 0);
        faulty.heal();
        // The retry reads the block again and writes.
        assert_eq!(file.pwrite(100, &[7u8; 10]).unwrap(), 10);
        let mut buf = [0u8; 200];
        file.pread(0, &mut buf).unwrap();
        assert!(buf[..100].iter().all(|&b| b == 0x11));
        assert!(buf[100..110].iter().all(|&b| b == 7));
        assert!(buf[110..].iter().all(|&b| b == 0x11));
        file.fsync().unwrap();
        assert_eq!(mem.snapshot(100, 10), vec![7u8; 10]);
    }
}

#[test]
fn failed_writeback_keeps_the_heads_dirty() {
    for mode in Mode::ALL {
        let (file, faulty, mem) = open(mode);
        file.pwrite(0, &[9u8; 4096]).unwrap();
        faulty.fail_next_writes(1);
        assert!(file.fsync().is_err(), "{mode:?}");
        assert_eq!(file.mapping().cache.nr_dirty(), 1);
        faulty.heal();
        file.fsync().unwrap();
        assert_eq!(file.mapping().cache.nr_dirty(), 0);
        assert_eq!(mem.snapshot(0, 4096), vec![9u8; 4096]);
    }
}
