//! The File API over a `Faulty` device that fails as real devices do: a
//! torn or short write during writeback, ENOSPC, and a failed flush. In
//! every case fsync reports the error, the data stays dirty in the cache,
//! and a retry after the device heals makes all of it durable.

use bufwrite_engine::device::faulty::{CrashMode, Faulty, FlushFault, WriteFault};
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::device::ShortWrite;
use bufwrite_engine::{BlockDevice, Error, File, FileOptions, Flat, IoKind, IomapPath};
use std::sync::Arc;

const DEV_SIZE: u64 = 1 << 20;

fn rig() -> (Arc<Mem>, Arc<Faulty>, File) {
    let mem = Arc::new(Mem::new(DEV_SIZE));
    let faulty = Arc::new(Faulty::new(mem.clone()));
    let flat = Arc::new(Flat::new(0, DEV_SIZE, 4096, 0).unwrap());
    let file = File::open(
        faulty.clone(),
        flat,
        Box::new(IomapPath::new()),
        FileOptions::default(),
    )
    .unwrap();
    (mem, faulty, file)
}

/// The device error under an fsync's writeback error.
fn device_error(e: Error) -> Error {
    match e {
        Error::Writeback { source, .. } => *source,
        other => other,
    }
}

#[test]
fn a_torn_writeback_lands_its_prefix_stays_dirty_and_retries_whole() {
    for fault in [
        WriteFault::Torn { blocks: 3 },
        WriteFault::Short { blocks: 3 },
        WriteFault::NoSpace,
    ] {
        let (mem, faulty, file) = rig();
        let data = vec![7u8; 16384];
        file.pwrite(0, &data).unwrap();
        faulty.fail_next_writes_with(1, fault);
        let err = device_error(file.fsync().unwrap_err());
        assert!(
            matches!(
                err,
                Error::Io {
                    op: IoKind::Write,
                    ..
                }
            ),
            "{fault:?}: {err}"
        );
        let landed = match fault {
            WriteFault::Short { .. } => {
                let short = ShortWrite::of(&err).copied();
                assert_eq!(short.map(|s| s.written), Some(1536), "{fault:?}");
                1536
            }
            WriteFault::Torn { .. } => 1536,
            _ => 0,
        };
        let dev = mem.snapshot(0, 16384);
        assert!(dev[..landed].iter().all(|&b| b == 7), "{fault:?}");
        assert!(dev[landed..].iter().all(|&b| b == 0), "{fault:?}");
        assert!(file.mapping().cache.nr_dirty() > 0, "{fault:?}");
        file.fsync().unwrap();
        assert_eq!(mem.snapshot(0, 16384), data, "{fault:?}");
        assert_eq!(file.mapping().cache.nr_dirty(), 0);
    }
}

#[test]
fn a_failed_flush_is_reported_and_a_crash_then_loses_the_writes() {
    let (mem, faulty, file) = rig();
    faulty.set_crash_mode(CrashMode::Lose);
    file.pwrite(0, &[1u8; 4096]).unwrap();
    file.fsync().unwrap();
    file.pwrite(8192, &[2u8; 4096]).unwrap();
    faulty.fail_next_flushes_with(1, FlushFault::NoSpace);
    match device_error(file.fsync().unwrap_err()) {
        Error::Io {
            op: IoKind::Flush,
            source,
            ..
        } => assert_eq!(source.raw_os_error(), Some(libc::ENOSPC)),
        other => panic!("{other}"),
    }
    // The write (with the zeroed gap before it, past the old EOF) is
    // still unflushed, and the crash undoes it.
    let lost = faulty.crash().unwrap();
    assert!(
        lost.iter()
            .any(|w| w.offset <= 8192 && w.offset + w.len >= 12288),
        "{lost:?}"
    );
    assert_eq!(mem.snapshot(0, 4096), vec![1u8; 4096]);
    assert_eq!(mem.snapshot(8192, 4096), vec![0u8; 4096]);
    assert_eq!(faulty.injected().no_space_flushes, 1);
    assert_eq!(faulty.stats().flushes, 1);
}
