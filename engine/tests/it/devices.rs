//! Device backends against real files: the `Sync` backend (buffered and
//! O_DIRECT) on image files under /tmp (ext4 here, so O_DIRECT really
//! bypasses the cache; tmpfs would not), and the `Faulty` wrapper driving
//! the File API through injected errors and crashes.

use bufwrite_engine::device::faulty::{CrashMode, Faulty, UnflushedWrite};
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::device::sync::SyncDevice;
use bufwrite_engine::device::{open_device, Backend, OpenOptions};
use bufwrite_engine::{
    AlignedBuf, BlockDevice, Error, File, FileOptions, Flat, IoKind, IoRequest, IomapPath,
};
use smallvec::smallvec;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const IMAGE_SIZE: u64 = 1 << 20;

/// A zero-filled image file in a fresh directory under /tmp.
fn image(size: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("bufwrite-devices")
        .tempdir_in("/tmp")
        .unwrap();
    let path = dir.path().join("image");
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    (dir, path)
}

fn opts(direct: bool, read_only: bool) -> OpenOptions {
    OpenOptions {
        direct,
        read_only,
        ..OpenOptions::default()
    }
}

fn open(path: &Path, direct: bool) -> SyncDevice {
    SyncDevice::open(path, opts(direct, false)).unwrap()
}

/// An aligned buffer of `len` bytes of `(i * 7 + add) % 251`.
fn pattern(len: usize, add: usize) -> AlignedBuf {
    let mut b = AlignedBuf::zeroed(len);
    for (i, x) in b.iter_mut().enumerate() {
        *x = ((i * 7 + add) % 251) as u8;
    }
    b
}

fn file_bytes(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let all = std::fs::read(path).unwrap();
    all[offset as usize..offset as usize + len].to_vec()
}

/// `stx_dio_mem_align`, `stx_dio_offset_align` of a file opened O_DIRECT
/// (0 when not reported).
fn statx_dio(path: &Path) -> (u32, u32) {
    use rustix::fs::{AtFlags, StatxFlags};
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let st = rustix::fs::statx(&f, "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN).unwrap();
    (st.stx_dio_mem_align, st.stx_dio_offset_align)
}

fn round_trip_single(direct: bool) {
    let (_dir, path) = image(IMAGE_SIZE);
    let dev = open(&path, direct);
    let data = pattern(8192, 1);
    dev.write_at(4096, &data).unwrap();
    let mut back = AlignedBuf::zeroed(8192);
    dev.read_at(4096, &mut back).unwrap();
    assert_eq!(&back[..], &data[..]);
    dev.flush().unwrap();
    assert_eq!(file_bytes(&path, 4096, 8192), &data[..]);
    assert_eq!(file_bytes(&path, 0, 4096), vec![0u8; 4096]);
}

fn round_trip_multi(direct: bool) {
    let (_dir, path) = image(IMAGE_SIZE);
    let dev = open(&path, direct);
    let (a, b, c) = (pattern(4096, 1), pattern(8192, 2), pattern(4096, 3));
    let mut batch = [IoRequest::writev(65536, smallvec![&a[..], &b[..], &c[..]])];
    dev.submit(&mut batch);
    batch[0].take_result().unwrap();
    let expect = [&a[..], &b[..], &c[..]].concat();
    assert_eq!(file_bytes(&path, 65536, expect.len()), expect);

    let (mut x, mut y) = (AlignedBuf::zeroed(12288), AlignedBuf::zeroed(4096));
    let mut batch = [IoRequest::readv(65536, smallvec![&mut x[..], &mut y[..]])];
    dev.submit(&mut batch);
    batch[0].take_result().unwrap();
    drop(batch);
    assert_eq!([&x[..], &y[..]].concat(), expect);
    let s = dev.stats();
    assert_eq!((s.reads, s.writes), (1, 1));
    assert_eq!((s.bytes_read, s.bytes_written), (16384, 16384));
}

#[test]
fn sync_round_trip_buffered() {
    round_trip_single(false);
    round_trip_multi(false);
}

#[test]
fn sync_round_trip_direct() {
    round_trip_single(true);
    round_trip_multi(true);
}

#[test]
fn sync_reports_backend_and_path() {
    let (_dir, path) = image(IMAGE_SIZE);
    let dev = open(&path, true);
    assert_eq!(dev.backend(), "sync");
    assert_eq!(dev.describe(), format!("{} (O_DIRECT)", path.display()));
    assert_eq!(dev.size(), IMAGE_SIZE);
    // One writer at a time: the image is locked while a device has it open.
    drop(dev);
    let buffered = open_device(&path, opts(false, false)).unwrap();
    assert_eq!(buffered.backend(), "sync");
    assert_eq!(buffered.describe(), path.display().to_string());
    assert_eq!(buffered.logical_block_size(), 512);
    assert_eq!(OpenOptions::default().backend, Backend::Sync);
}

#[test]
fn direct_block_size_is_what_statx_reports() {
    let (_dir, path) = image(IMAGE_SIZE);
    let dev = open(&path, true);
    let (mem, off) = statx_dio(&path);
    let or_4096 = |v: u32| if v == 0 { 4096 } else { v };
    assert_eq!(dev.logical_block_size(), or_4096(off));
    assert_eq!(dev.mem_align(), or_4096(mem) as usize);
}

#[test]
fn direct_misaligned_memory_is_bounced() {
    let (_dir, path) = image(IMAGE_SIZE);
    let dev = open(&path, true);
    let lbs = dev.logical_block_size() as usize;
    // One byte past a page boundary: misaligned for any DIO memory rule.
    let mut raw = AlignedBuf::zeroed(2 * lbs + 1);
    let data = pattern(2 * lbs, 5);
    raw[1..].copy_from_slice(&data);
    dev.write_at(lbs as u64, &raw[1..]).unwrap();
    assert_eq!(file_bytes(&path, lbs as u64, 2 * lbs), &data[..]);

    let mut back = AlignedBuf::zeroed(2 * lbs + 1);
    dev.read_at(lbs as u64, &mut back[1..]).unwrap();
    assert_eq!(&back[1..], &data[..]);

    // A scatter list with one misaligned segment bounces as a whole.
    let (mut a, mut b) = (AlignedBuf::zeroed(lbs), AlignedBuf::zeroed(lbs + 1));
    let mut batch = [IoRequest::readv(
        lbs as u64,
        smallvec![&mut a[..], &mut b[1..]],
    )];
    dev.submit(&mut batch);
    batch[0].take_result().unwrap();
    drop(batch);
    assert_eq!([&a[..], &b[1..]].concat(), &data[..]);
}

#[test]
fn misaligned_offset_or_length_is_refused_and_nothing_written() {
    for direct in [false, true] {
        let (_dir, path) = image(IMAGE_SIZE);
        let dev = open(&path, direct);
        let lbs = u64::from(dev.logical_block_size());
        let data = pattern(2 * lbs as usize, 9);
        let e = dev.write_at(lbs + 100, &data).unwrap_err();
        assert!(
            matches!(e, Error::Misaligned { op: IoKind::Write, align, .. } if align == lbs),
            "{e}"
        );
        let e = dev.write_at(lbs, &data[..100]).unwrap_err();
        assert!(matches!(e, Error::Misaligned { .. }), "{e}");
        let mut short = AlignedBuf::zeroed(100);
        assert!(matches!(
            dev.read_at(0, &mut short),
            Err(Error::Misaligned {
                op: IoKind::Read,
                ..
            })
        ));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            vec![0u8; IMAGE_SIZE as usize]
        );
        assert_eq!(dev.stats(), Default::default());
    }
}

#[test]
fn out_of_bounds_is_refused() {
    let (_dir, path) = image(IMAGE_SIZE);
    let dev = open(&path, false);
    let data = pattern(4096, 0);
    let e = dev.write_at(IMAGE_SIZE - 512, &data).unwrap_err();
    assert!(matches!(
        e,
        Error::OutOfBounds {
            op: IoKind::Write,
            size: IMAGE_SIZE,
            ..
        }
    ));
    assert!(dev.write_at(IMAGE_SIZE, &data[..512]).is_err());
    let mut buf = AlignedBuf::zeroed(1024);
    assert!(matches!(
        dev.read_at(u64::MAX - 511, &mut buf),
        Err(Error::OutOfBounds { .. })
    ));
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), IMAGE_SIZE);
    assert_eq!(file_bytes(&path, IMAGE_SIZE - 4096, 4096), vec![0; 4096]);
    assert_eq!(dev.stats().writes, 0);
}

#[test]
fn a_bad_request_fails_alone_in_its_batch() {
    let (_dir, path) = image(IMAGE_SIZE);
    let dev = open(&path, false);
    let (a, b) = (pattern(512, 1), pattern(512, 2));
    let mut batch = [
        IoRequest::write(0, &a),
        IoRequest::write(IMAGE_SIZE, &b),
        IoRequest::write(1024, &b),
    ];
    dev.submit(&mut batch);
    assert!(batch[0].take_result().is_ok());
    assert!(matches!(
        batch[1].take_result(),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(batch[2].take_result().is_ok());
    assert_eq!(file_bytes(&path, 1024, 512), &b[..]);
    assert_eq!(dev.stats().writes, 2);
}

#[test]
fn read_only_refuses_writes() {
    let (_dir, path) = image(IMAGE_SIZE);
    std::fs::write(&path, vec![3u8; IMAGE_SIZE as usize]).unwrap();
    let dev = SyncDevice::open(&path, opts(false, true)).unwrap();
    assert!(dev.read_only());
    assert!(matches!(dev.write_at(0, &[0u8; 512]), Err(Error::ReadOnly)));
    let mut buf = [0u8; 512];
    dev.read_at(512, &mut buf).unwrap();
    assert_eq!(buf, [3u8; 512]);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        vec![3u8; IMAGE_SIZE as usize]
    );
}

#[test]
fn counters_are_exact() {
    let (_dir, path) = image(IMAGE_SIZE);
    let dev = open(&path, true);
    let data = pattern(8192, 4);
    for i in 0..3u64 {
        dev.write_at(i * 8192, &data).unwrap();
    }
    let mut buf = AlignedBuf::zeroed(4096);
    dev.read_at(0, &mut buf).unwrap();
    dev.read_at(4096, &mut buf).unwrap();
    let _ = dev.write_at(3, &data);
    dev.flush().unwrap();
    let s = dev.stats();
    assert_eq!((s.writes, s.bytes_written), (3, 3 * 8192));
    assert_eq!((s.reads, s.bytes_read), (2, 8192));
    assert_eq!(s.flushes, 1);
}

#[test]
fn a_read_past_the_files_end_is_an_error_with_its_offset() {
    let (_dir, path) = image(IMAGE_SIZE);
    let dev = open(&path, false);
    // The file shrinks under the device, so a read inside the size the
    // device saw at open meets EOF.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let mut buf = [0u8; 8192];
    let e = dev.read_at(0, &mut buf).unwrap_err();
    match e {
        Error::Io {
            op: IoKind::Read,
            offset,
            len,
            source,
        } => {
            assert_eq!((offset, len), (4096, 4096));
            assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof);
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(dev.stats().reads, 0);
}

#[test]
fn open_errors_name_the_path() {
    let (dir, _path) = image(4096);
    let missing = dir.path().join("no-such-image");
    let e = SyncDevice::open(&missing, OpenOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Open { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("no-such-image"), "{text}");
    let e = SyncDevice::open(dir.path(), OpenOptions::default()).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
}

/// The device that holds the root filesystem, which is mounted.
fn root_block_device() -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let path = PathBuf::from(format!("/dev/block/{major}:{minor}"));
    path.exists().then_some(path)
}

// Root only (opening a disk needs it): run with `cargo test -- --ignored`.
#[test]
#[ignore = "needs root: opens the mounted root block device"]
fn a_mounted_block_device_is_refused() {
    let Some(path) = root_block_device() else {
        eprintln!("skipped: the root filesystem is not on a block device");
        return;
    };
    let e = SyncDevice::open(&path, opts(false, true)).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("mounted or in use"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
}

/// A loop device over an image, detached on drop.
struct Loop(PathBuf);

impl Loop {
    fn attach(image: &Path, sector: u32) -> Option<Loop> {
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show", "--sector-size", &sector.to_string()])
            .arg(image)
            .output()
            .ok()?;
        let name = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !name.trim().is_empty()).then(|| Loop(name.trim().into()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.0)
            .status();
    }
}

// Root only (losetup needs it): run with `cargo test -- --ignored`.
#[test]
#[ignore = "needs root: attaches a loop device"]
fn a_block_device_is_exclusive_and_reports_its_sector_size() {
    let (_dir, img) = image(IMAGE_SIZE);
    let Some(lo) = Loop::attach(&img, 4096) else {
        eprintln!("skipped: no loop device could be attached");
        return;
    };
    let dev = SyncDevice::open(&lo.0, opts(true, false)).unwrap();
    assert_eq!(dev.logical_block_size(), 4096);
    assert_eq!(dev.size(), IMAGE_SIZE);
    let e = SyncDevice::open(&lo.0, opts(false, true)).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("mounted or in use"), "{text}");
    let data = pattern(4096, 8);
    dev.write_at(8192, &data).unwrap();
    assert!(matches!(
        dev.write_at(512, &data[..512]),
        Err(Error::Misaligned { align: 4096, .. })
    ));
    dev.flush().unwrap();
    let mut back = AlignedBuf::zeroed(4096);
    dev.read_at(8192, &mut back).unwrap();
    assert_eq!(&back[..], &data[..]);
}

// ---- Faulty under the File API ----

const DEV_SIZE: u64 = 1 << 20;

struct Rig {
    mem: Arc<Mem>,
    faulty: Arc<Faulty>,
    file: File,
}

/// A Flat file of `bs`-byte blocks at device offset 0, through Faulty over Mem.
fn rig(bs: u32) -> Rig {
    let mem = Arc::new(Mem::new(DEV_SIZE));
    let faulty = Arc::new(Faulty::new(mem.clone()));
    let flat = Arc::new(Flat::new(0, DEV_SIZE, bs, 0).unwrap());
    let file = File::open(
        faulty.clone(),
        flat,
        Box::new(IomapPath::new()),
        FileOptions::default(),
    )
    .unwrap();
    Rig { mem, faulty, file }
}

/// Writes 64 KiB of a pattern and makes it durable.
fn settled(bs: u32) -> (Rig, AlignedBuf) {
    let r = rig(bs);
    let base = pattern(65536, 11);
    r.file.pwrite(0, &base).unwrap();
    r.file.fsync().unwrap();
    assert_eq!(r.mem.snapshot(0, 65536), &base[..]);
    (r, base)
}

#[test]
fn writeback_error_names_the_file_offset_and_keeps_the_data_dirty() {
    let (r, base) = settled(4096);
    r.faulty.fail_writes_in(20480..20481);
    r.file.pwrite(4096 + 10, &[1u8; 100]).unwrap();
    r.file.pwrite(20480 + 10, &[2u8; 100]).unwrap();
    let flushes = r.faulty.stats().flushes;

    match r.file.fsync().unwrap_err() {
        Error::Writeback {
            file_offset,
            source,
        } => {
            assert_eq!(file_offset, 20480);
            assert!(
                matches!(
                    *source,
                    Error::Io {
                        op: IoKind::Write,
                        offset: 20480,
                        ..
                    }
                ),
                "{source}"
            );
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(r.faulty.injected().writes, 1);
    assert_eq!(r.faulty.stats().flushes, flushes);
    // The other block went out; the failed one did not.
    assert_eq!(r.mem.snapshot(4096 + 10, 100), vec![1u8; 100]);
    assert_eq!(r.mem.snapshot(20480, 4096), &base[20480..24576]);
    // Still cached, still dirty.
    let mut buf = [0u8; 100];
    assert_eq!(r.file.pread(20480 + 10, &mut buf).unwrap(), 100);
    assert_eq!(buf, [2u8; 100]);
    assert_eq!(r.file.mapping().cache.nr_dirty(), 1);

    r.faulty.heal();
    r.file.fsync().unwrap();
    assert_eq!(r.mem.snapshot(20480 + 10, 100), vec![2u8; 100]);
    assert_eq!(r.file.mapping().cache.nr_dirty(), 0);
}

#[test]
fn a_failed_read_in_leaves_file_and_cache_as_acknowledged() {
    for bs in [1024, 4096] {
        let (r, base) = settled(bs);
        assert!(r.file.drop_caches() > 0);
        r.faulty.fail_next_reads(1);
        let e = r.file.pwrite(4096 + 1000, &[7u8; 100]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Io {
                    op: IoKind::Read,
                    ..
                }
            ),
            "bs {bs}: {e}"
        );
        assert_eq!(r.faulty.injected().reads, 1);
        assert_eq!(r.file.size(), 65536);
        assert_eq!(r.file.mapping().cache.nr_dirty(), 0, "bs {bs}");

        let mut back = vec![0u8; 65536];
        assert_eq!(r.file.pread(0, &mut back).unwrap(), 65536);
        assert_eq!(back, &base[..], "bs {bs}");
        let before = r.faulty.stats();
        r.file.fsync().unwrap();
        assert_eq!((r.faulty.stats() - before).writes, 0, "bs {bs}");
        assert_eq!(r.mem.snapshot(0, 65536), &base[..]);
    }
}

#[test]
fn a_crash_after_a_failed_flush_loses_the_unflushed_writes() {
    let (r, base) = settled(4096);
    r.faulty.set_crash_mode(CrashMode::Lose);
    r.faulty.fail_next_flushes(1);
    r.file.pwrite(8192, &[5u8; 4096]).unwrap();
    let e = r.file.fsync().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Io {
                op: IoKind::Flush,
                ..
            }
        ),
        "{e}"
    );
    // The write reached the device's volatile cache, not the media.
    assert_eq!(r.mem.snapshot(8192, 4096), vec![5u8; 4096]);
    let lost = r.faulty.crash().unwrap();
    assert_eq!(
        lost,
        [UnflushedWrite {
            offset: 8192,
            len: 4096
        }]
    );
    assert_eq!(r.mem.snapshot(0, 65536), &base[..]);
}
