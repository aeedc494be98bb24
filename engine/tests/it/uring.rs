//! The io_uring backend: round trips, short transfers, errors reaching
//! fsync, the model property test over a temp image, and (opt-in, root)
//! loop devices.
//!
//! Tests skip, printing `SKIP`, when io_uring is unavailable here.
//! `BUFWRITE_ROOT_TESTS=1` enables the loop-device tests (root, losetup,
//! mkfs.ext4, mount).

use bufwrite_engine::device::faulty::Faulty;
use bufwrite_engine::device::uring::{self, UringConfig, UringDevice};
use bufwrite_engine::device::{open_device, Backend, OpenOptions};
use bufwrite_engine::{
    BlockDevice, Error, File, FileOptions, Flat, IoRequest, IomapPath, OrderPolicy,
};
use bufwrite_testkit::loopdev::{LoopDevice, LoopOptions};
use bufwrite_testkit::{apply, apply_to, check_device, Model, Op, Subject, TraceOp};
use proptest::prelude::*;
use smallvec::smallvec;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// False (after saying so) when io_uring cannot be used on this machine.
fn uring_available() -> bool {
    match uring::probe() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIP: {e}");
            false
        }
    }
}

fn root_tests() -> bool {
    let on = std::env::var("BUFWRITE_ROOT_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("SKIP: set BUFWRITE_ROOT_TESTS=1 (root) for loop-device tests");
    }
    on
}

/// A zero-filled image of `size` bytes in a directory on a real filesystem
/// (O_DIRECT on tmpfs is not the real thing).
fn image(size: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("image");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    (dir, path)
}

fn open_uring(path: &Path, qd: u32) -> Arc<UringDevice> {
    let cfg = UringConfig {
        queue_depth: qd,
        batch: qd,
        ..UringConfig::default()
    };
    Arc::new(UringDevice::open_with(path, &cfg).unwrap())
}

fn aligned(len: usize, byte: u8) -> bufwrite_engine::AlignedBuf {
    let mut b = bufwrite_engine::AlignedBuf::zeroed(len);
    b.fill(byte);
    b
}

#[test]
fn round_trip_gather_scatter_and_bounce() {
    if !uring_available() {
        return;
    }
    let (_d, path) = image(1 << 20);
    let dev = open_uring(&path, 4);
    assert_eq!(dev.backend(), "uring");
    assert_eq!(dev.size(), 1 << 20);
    let lbs = dev.logical_block_size() as usize;
    let (a, b) = (aligned(4096, 1), aligned(8192, 2));
    let mut batch = [IoRequest::writev(4096, smallvec![&a[..], &b[..]])];
    dev.submit(&mut batch);
    batch[0].take_result().unwrap();
    // Misaligned memory goes through a bounce buffer.
    let mut unaligned = vec![0u8; lbs + 1];
    unaligned[1..].fill(3);
    dev.write_at(65536, &unaligned[1..]).unwrap();
    dev.flush().unwrap();

    let (mut x, mut y) = (aligned(8192, 0), aligned(4096, 0));
    let mut batch = [IoRequest::readv(4096, smallvec![&mut x[..], &mut y[..]])];
    dev.submit(&mut batch);
    batch[0].take_result().unwrap();
    drop(batch);
    assert!(x[..4096].iter().all(|&v| v == 1) && x[4096..].iter().all(|&v| v == 2));
    assert!(y.iter().all(|&v| v == 2));
    let mut back = vec![0u8; lbs + 1];
    dev.read_at(65536, &mut back[1..]).unwrap();
    assert!(back[1..].iter().all(|&v| v == 3));

    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes[4096..8192].iter().all(|&v| v == 1));
    assert!(bytes[8192..16384].iter().all(|&v| v == 2));
    let s = dev.stats();
    assert_eq!((s.writes, s.reads, s.flushes), (2, 2, 1));
    assert_eq!(s.bytes_written, 12288 + lbs as u64);
}

#[test]
fn many_requests_through_a_small_queue() {
    if !uring_available() {
        return;
    }
    let (_d, path) = image(1 << 20);
    for (qd, batch, register_file) in [(1, 1, false), (4, 2, true), (8, 8, false), (8, 3, true)] {
        let cfg = UringConfig {
            queue_depth: qd,
            batch,
            register_file,
            read_only: false,
        };
        let dev = UringDevice::open_with(&path, &cfg).unwrap();
        assert_eq!(dev.fixed_file(), register_file);
        let bufs: Vec<_> = (0..100u8).map(|i| aligned(4096, i)).collect();
        let mut reqs: Vec<_> = bufs
            .iter()
            .enumerate()
            .map(|(i, b)| IoRequest::write(i as u64 * 8192, &b[..]))
            .collect();
        dev.submit(&mut reqs);
        for r in &mut reqs {
            r.take_result().unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        for i in 0..100usize {
            assert!(bytes[i * 8192..i * 8192 + 4096]
                .iter()
                .all(|&v| v == i as u8));
        }
    }
}

#[test]
fn bounds_alignment_and_read_only_are_checked_before_submission() {
    if !uring_available() {
        return;
    }
    let (_d, path) = image(1 << 16);
    let dev = open_uring(&path, 4);
    let buf = aligned(8192, 9);
    let lbs = dev.logical_block_size() as u64;
    let mut batch = [
        IoRequest::write(1 << 16, &buf[..4096]),
        IoRequest::write((1 << 16) - 4096, &buf[..]),
        IoRequest::write(lbs / 2, &buf[..4096]),
        IoRequest::write(0, &buf[..4096]),
    ];
    dev.submit(&mut batch);
    assert!(matches!(
        batch[0].take_result(),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        batch[1].take_result(),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        batch[2].take_result(),
        Err(Error::Misaligned { .. })
    ));
    batch[3].take_result().unwrap();
    assert_eq!(dev.stats().writes, 1);

    let ro = OpenOptions {
        backend: Backend::Uring,
        read_only: true,
        ..OpenOptions::default()
    };
    let dev = open_device(&path, ro).unwrap();
    assert!(dev.read_only());
    assert!(matches!(
        dev.write_at(0, &buf[..4096]),
        Err(Error::ReadOnly)
    ));
    let mut back = aligned(4096, 0);
    dev.read_at(0, &mut back).unwrap();
    assert!(back.iter().all(|&v| v == 9));
}

#[test]
fn short_read_is_resubmitted_then_eof_is_an_error_with_its_offset() {
    if !uring_available() {
        return;
    }
    let (_d, path) = image(6144);
    std::fs::write(&path, vec![5u8; 6144]).unwrap();
    // The device claims more than the file holds: the kernel returns 6144
    // bytes, the rest is asked for again and comes back empty.
    let f = std::fs::File::open(&path).unwrap();
    let cfg = UringConfig {
        read_only: true,
        ..UringConfig::default()
    };
    let dev = UringDevice::from_file(f, "short".into(), 16384, 512, &cfg).unwrap();
    let mut buf = aligned(8192, 0);
    let err = dev.read_at(0, &mut buf).unwrap_err();
    match err {
        Error::Io { offset, len, .. } => assert_eq!((offset, len), (6144, 2048)),
        e => panic!("unexpected {e}"),
    }
    assert!(buf[..6144].iter().all(|&v| v == 5));
}

/// A file over an image through Uring, with a model of what it holds.
fn file_on(dev: Arc<dyn BlockDevice>, cap: u64, bs: u32, order: OrderPolicy) -> File {
    file_sized(dev, cap, bs, order, 0)
}

/// As [`file_on`], for a file that already holds `size` bytes.
fn file_sized(dev: Arc<dyn BlockDevice>, cap: u64, bs: u32, order: OrderPolicy, size: u64) -> File {
    let flat = Arc::new(Flat::new(0, cap, bs, size).unwrap());
    File::open(dev, flat, Box::new(IomapPath::new()), FileOptions { order }).unwrap()
}

#[test]
fn cold_1k_write_into_a_2m_folio_reads_one_block() {
    if !uring_available() {
        return;
    }
    let (_d, path) = image(8 << 20);
    let dev = open_uring(&path, 32);
    let flat = Arc::new(Flat::new(0, 8 << 20, 4096, 8 << 20).unwrap());
    let opts = FileOptions {
        order: OrderPolicy::Fixed(9),
    };
    let file = File::open(dev.clone(), flat, Box::new(IomapPath::new()), opts).unwrap();
    let before = file.device_stats();
    file.pwrite((2 << 20) + 1024, &[7u8; 1024]).unwrap();
    let d = file.device_stats() - before;
    assert_eq!((d.reads, d.bytes_read, d.writes), (1, 4096, 0));
    file.fsync().unwrap();
    let d = file.device_stats() - before;
    assert_eq!((d.writes, d.bytes_written, d.flushes), (1, 4096, 1));
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes[(2 << 20) + 1024..(2 << 20) + 2048]
        .iter()
        .all(|&v| v == 7));
}

#[test]
fn failing_fd_error_reaches_fsync_with_offset_and_data_stays_dirty() {
    if !uring_available() {
        return;
    }
    let (_d, path) = image(1 << 20);
    // Writes through a read-only descriptor fail with EBADF in the CQE.
    let f = std::fs::File::open(&path).unwrap();
    let dev =
        UringDevice::from_file(f, "ro fd".into(), 1 << 20, 512, &UringConfig::default()).unwrap();
    let file = file_sized(Arc::new(dev), 1 << 20, 4096, OrderPolicy::Fixed(2), 1 << 20);
    file.pwrite(20480, &[1u8; 4096]).unwrap();
    for _ in 0..2 {
        match file.fsync() {
            Err(Error::Writeback {
                file_offset,
                source,
            }) => {
                assert_eq!(file_offset, 20480);
                match *source {
                    Error::Io { offset, source, .. } => {
                        assert_eq!(offset, 20480);
                        assert_eq!(source.raw_os_error(), Some(libc::EBADF));
                    }
                    e => panic!("unexpected source {e}"),
                }
            }
            r => panic!("fsync should fail: {r:?}"),
        }
        assert_eq!(file.mapping().cache.nr_dirty(), 1);
    }
    let mut back = [0u8; 4096];
    file.pread(20480, &mut back).unwrap();
    assert_eq!(back, [1u8; 4096]);
}

#[test]
fn injected_fault_over_uring_keeps_data_dirty_until_a_retry_succeeds() {
    if !uring_available() {
        return;
    }
    let (_d, path) = image(1 << 20);
    let faulty = Arc::new(Faulty::new(open_uring(&path, 8)));
    let file = file_sized(
        faulty.clone(),
        1 << 20,
        4096,
        OrderPolicy::Fixed(0),
        1 << 20,
    );
    // Two runs, so two device writes: only the second one fails.
    file.pwrite(0, &[4u8; 65536]).unwrap();
    file.pwrite(131072, &[4u8; 65536]).unwrap();
    faulty.fail_writes_in(163840..167936);
    let err = file.fsync().unwrap_err();
    assert!(
        matches!(err, Error::Writeback { file_offset, .. } if file_offset == 131072),
        "{err}"
    );
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes[..65536].iter().all(|&v| v == 4));
    assert!(bytes[131072..196608].iter().all(|&v| v == 0));
    assert!(file.mapping().cache.nr_dirty() >= 1);
    faulty.heal();
    file.fsync().unwrap();
    assert_eq!(file.mapping().cache.nr_dirty(), 0);
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes[..65536].iter().all(|&v| v == 4));
    assert!(bytes[65536..131072].iter().all(|&v| v == 0));
    assert!(bytes[131072..196608].iter().all(|&v| v == 4));
}

fn op_strategy(cap: u64) -> impl Strategy<Value = Op> {
    let len = prop_oneof![1u64..64, 1u64..5000, 1u64..70000];
    prop_oneof![
        4 => (0..cap, len.clone(), any::<u64>()).prop_map(|(off, len, seed)| Op::Trace(TraceOp::Pwrite { off, len, seed })),
        1 => (len.clone(), any::<u64>()).prop_map(|(len, seed)| Op::Trace(TraceOp::Write { len, seed })),
        1 => (0..cap).prop_map(|off| Op::Trace(TraceOp::Seek { off })),
        2 => (0..cap, len).prop_map(|(off, len)| Op::Trace(TraceOp::Read { off, len })),
        1 => Just(Op::Trace(TraceOp::Fsync)),
        1 => Just(Op::DropCaches),
        1 => Just(Op::Trace(TraceOp::Fdatasync)),
        1 => (0..cap + 4096).prop_map(|size| Op::Trace(TraceOp::Truncate { size })),
        1 => (0..cap, 1..40000u64).prop_map(|(off, len)| Op::Trace(TraceOp::Punch { off, len })),
        1 => (0..cap, 1..40000u64, any::<bool>()).prop_map(|(off, len, keep_size)| {
            Op::Trace(TraceOp::Fallocate { off, len, keep_size })
        }),
        1 => Just(Op::Reopen),
    ]
}

const PROP_CAP: u64 = 1 << 20;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The random-sequence property over a temp image through Uring: the
    /// file behaves as the model at every step, and after the final fsync
    /// the image holds the model's bytes.
    #[test]
    fn random_sequence_over_uring_image(
        ops in proptest::collection::vec(op_strategy(PROP_CAP), 1..40),
        bs in prop_oneof![Just(1024u32), Just(4096u32)],
        max_order in 0u8..=9,
        qd in prop_oneof![Just(1u32), Just(4u32), Just(32u32)],
    ) {
        if !uring_available() {
            return Ok(());
        }
        let (_d, path) = image(PROP_CAP);
        let dev = open_uring(&path, qd);
        prop_assume!(bs >= dev.logical_block_size());
        let flat = Arc::new(Flat::new(0, PROP_CAP, bs, 0).unwrap());
        let opts = FileOptions { order: OrderPolicy::FromWrite { max_order } };
        let mut subject = Subject::flat(dev, flat.clone(), Box::new(|| Box::new(IomapPath::new())), opts)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut model = Model::new(PROP_CAP);
        // Every fsync, fdatasync and reopen also checks the device (with
        // the unwritten ranges as zeroes).
        for op in ops.iter().chain(std::iter::once(&Op::Trace(TraceOp::Fsync))) {
            apply_to(&mut subject, &mut model, op).map_err(TestCaseError::fail)?;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        for r in flat.unwritten_ranges() {
            let end = (r.end as usize).min(bytes.len());
            bytes[(r.start as usize).min(end)..end].fill(0);
        }
        check_device(&bytes, &model).map_err(TestCaseError::fail)?;
    }
}

/// Loop device with 4096-byte sectors: a write/fsync sequence through
/// Uring on /dev/loopN, then the image's bytes equal the model's.
#[test]
fn loop_device_4k_sectors_matches_model() {
    if !root_tests() || !uring_available() {
        return;
    }
    let cap = 4u64 << 20;
    let (_d, path) = image(cap);
    let lo = LoopDevice::attach(
        &path,
        LoopOptions {
            sector_size: Some(4096),
            direct_io: true,
            read_only: false,
        },
    )
    .unwrap();
    let dev = open_uring(lo.path(), 32);
    assert_eq!(dev.logical_block_size(), 4096);
    assert_eq!(dev.size(), cap);
    // A 1 KiB block could not be written alone on a 4Kn device.
    let flat = Arc::new(Flat::new(0, cap, 1024, 0).unwrap());
    assert!(File::open(
        dev.clone(),
        flat,
        Box::new(IomapPath::new()),
        FileOptions::default()
    )
    .is_err());

    let file = file_on(
        dev.clone(),
        cap,
        4096,
        OrderPolicy::FromWrite { max_order: 9 },
    );
    let mut model = Model::new(cap);
    let ops = [
        Op::Trace(TraceOp::Pwrite {
            off: 0,
            len: 3 << 20,
            seed: 1,
        }),
        Op::Trace(TraceOp::Fsync),
        Op::Trace(TraceOp::Pwrite {
            off: 5000,
            len: 100,
            seed: 2,
        }),
        Op::Trace(TraceOp::Pwrite {
            off: (2 << 20) + 4095,
            len: 70000,
            seed: 3,
        }),
        Op::DropCaches,
        Op::Trace(TraceOp::Read {
            off: 4000,
            len: 10000,
        }),
        Op::Trace(TraceOp::Write {
            len: 12345,
            seed: 4,
        }),
        Op::Trace(TraceOp::Fsync),
        Op::DropCaches,
        Op::Trace(TraceOp::Pwrite {
            off: (3 << 20) + 10,
            len: 1,
            seed: 5,
        }),
        Op::Trace(TraceOp::Read {
            off: 0,
            len: 4 << 20,
        }),
        Op::Trace(TraceOp::Fsync),
    ];
    for op in &ops {
        apply(&file, &mut model, op).unwrap();
    }
    drop(file);
    drop(dev);
    lo.detach().unwrap();
    check_device(&std::fs::read(&path).unwrap(), &model).unwrap();
}

/// A mounted loop device, or one another opener holds exclusively, is refused.
#[test]
fn mounted_or_held_loop_device_is_refused() {
    if !root_tests() || !uring_available() {
        return;
    }
    let (_d, path) = image(16 << 20);
    let lo = LoopDevice::attach(&path, LoopOptions::default()).unwrap();
    let held = open_uring(lo.path(), 4);
    let err = UringDevice::open_with(lo.path(), &UringConfig::default()).unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    drop(held);

    let mkfs = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(lo.path())
        .status()
        .unwrap();
    assert!(mkfs.success());
    let mnt = tempfile::tempdir().unwrap();
    let mount = std::process::Command::new("mount")
        .arg(lo.path())
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(mount.success());
    let res = UringDevice::open_with(lo.path(), &UringConfig::default());
    let umount = std::process::Command::new("umount")
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(umount.success());
    let err = res.unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    lo.detach().unwrap();
}

/// Writes `count` requests of `len` bytes, each from its own slice of
/// `mem`, to offsets `i * stride`, then reads them back with plain reads.
fn write_slices_and_read_back(dev: &UringDevice, mem: &[u8], len: usize, stride: u64) {
    let count = mem.len() / len;
    let mut reqs: Vec<_> = mem
        .chunks(len)
        .enumerate()
        .map(|(i, b)| IoRequest::write(i as u64 * stride, b))
        .collect();
    dev.submit(&mut reqs);
    for r in &mut reqs {
        r.take_result().unwrap();
    }
    dev.flush().unwrap();
    let mut back = aligned(count * len, 0xEE);
    let mut reads: Vec<_> = back
        .chunks_mut(len)
        .enumerate()
        .map(|(i, b)| IoRequest::read(i as u64 * stride, b))
        .collect();
    dev.submit(&mut reads);
    for r in &mut reads {
        r.take_result().unwrap();
    }
    drop(reads);
    assert!(
        back[..] == mem[..],
        "read back differs from what was written"
    );
}

fn patterned(len: usize, seed: u8) -> bufwrite_engine::AlignedBuf {
    let mut b = aligned(len, 0);
    for (i, v) in b.iter_mut().enumerate() {
        *v = (i / 512) as u8 ^ seed;
    }
    b
}

#[test]
fn registered_buffers_write_fixed_round_trip() {
    if !uring_available() {
        return;
    }
    let (_d, path) = image(1 << 20);
    for register_file in [false, true] {
        let cfg = UringConfig {
            queue_depth: 4,
            batch: 4,
            register_file,
            read_only: false,
        };
        let dev = UringDevice::open_with(&path, &cfg).unwrap();
        assert!(dev.registered_buffers().is_empty());
        let seed = u8::from(register_file);
        let ok = dev
            .register_buffers(vec![
                patterned(64 * 1024, seed),
                patterned(16 * 1024, !seed),
            ])
            .unwrap();
        if !ok {
            eprintln!("SKIP: the kernel refused 80 KiB of registered buffers here");
            return;
        }
        assert!(dev.buffers_registered());
        assert_eq!(dev.registered_buffers().len(), 2);
        // Twice is refused; the first registration stays.
        assert!(dev.register_buffers(vec![aligned(4096, 0)]).is_err());
        assert_eq!(dev.registered_buffers()[0].len(), 64 * 1024);
        // 16 writes of 4 KiB from buffer 0 (more than the queue depth).
        write_slices_and_read_back(&dev, &dev.registered_buffers()[0], 4096, 8192);
        assert_eq!(dev.fixed_sqes(), 16);
        // 2 writes of 8 KiB from buffer 1, elsewhere on the device.
        let b1 = &dev.registered_buffers()[1];
        let mut reqs: Vec<_> = b1
            .chunks(8192)
            .enumerate()
            .map(|(i, b)| IoRequest::write(512 * 1024 + i as u64 * 8192, b))
            .collect();
        dev.submit(&mut reqs);
        for r in &mut reqs {
            r.take_result().unwrap();
        }
        assert_eq!(dev.fixed_sqes(), 18);
        // A gather over two registered slices is one Writev, not fixed.
        let b0 = &dev.registered_buffers()[0];
        let mut v = [IoRequest::writev(
            768 * 1024,
            smallvec![&b0[..4096], &b1[..4096]],
        )];
        dev.submit(&mut v);
        v[0].take_result().unwrap();
        assert_eq!(dev.fixed_sqes(), 18);
        drop((v, reqs));
        drop(dev);
        let bytes = std::fs::read(&path).unwrap();
        let b1 = patterned(16 * 1024, !seed);
        assert!(bytes[512 * 1024..528 * 1024] == b1[..]);
        assert!(bytes[768 * 1024..768 * 1024 + 4096] == patterned(4096, seed)[..]);
        assert!(bytes[768 * 1024 + 4096..768 * 1024 + 8192] == b1[..4096]);
    }
}

#[test]
fn refused_buffer_registration_falls_back_to_plain_writes() {
    if !uring_available() {
        return;
    }
    let (_d, path) = image(1 << 20);
    // The kernel refuses a zero-length buffer (and an empty list): the
    // device keeps the buffers and writes over them plainly.
    let cases: [Vec<bufwrite_engine::AlignedBuf>; 2] =
        [vec![patterned(32 * 1024, 7), aligned(0, 0)], Vec::new()];
    for bufs in cases {
        let n = bufs.len();
        let dev = open_uring(&path, 4);
        let dev = Arc::into_inner(dev).unwrap();
        assert!(!dev.register_buffers(bufs).unwrap());
        assert!(!dev.buffers_registered());
        assert_eq!(dev.registered_buffers().len(), n);
        if n > 0 {
            write_slices_and_read_back(&dev, &dev.registered_buffers()[0], 4096, 4096);
        }
        // A later registration is still refused: the buffers stay owned.
        assert!(dev.register_buffers(vec![aligned(4096, 0)]).is_err());
        // Ordinary buffers still work.
        write_slices_and_read_back(&dev, &patterned(8192, 9), 4096, 65536);
        assert_eq!(dev.fixed_sqes(), 0);
    }
}
