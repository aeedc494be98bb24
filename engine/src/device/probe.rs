//! Opening a device or image file and asking the kernel about it: is it a
//! block device, how big is it, and what alignment does O_DIRECT need.
//!
//! Shared by the backends that open paths (`sync`, `uring`) through
//! [`open_for_io`], so that every backend opens (exclusively, for a block
//! device), refuses a mounted device or image, locks an image against a
//! second writer, reports open failures and queries alignment the same way
//! instead of assuming 512 or 4096.

use crate::error::{Error, Result};
use rustix::fs::{AtFlags, FileType, FlockOperation, StatxFlags};
use rustix::ioctl::{opcode, Getter, Opcode};
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `BLKGETSIZE64` is `_IOR(0x12, 114, size_t)`; libc does not export it.
/// The kernel writes a `u64` whatever the width of `size_t` in the opcode.
const BLKGETSIZE64: Opcode = opcode::read::<usize>(0x12, 114);

/// The O_DIRECT alignment a file reports through `statx(STATX_DIOALIGN)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DioAlign {
    /// Alignment of a buffer's address (`stx_dio_mem_align`).
    pub mem: u32,
    /// Alignment of the file offset and length (`stx_dio_offset_align`).
    pub offset: u32,
}

/// True when `fd` is a block device (fstat, so symlinks were already
/// followed by the open).
pub fn is_block_device(fd: impl AsFd) -> io::Result<bool> {
    let st = rustix::fs::fstat(fd)?;
    Ok(FileType::from_raw_mode(st.st_mode) == FileType::BlockDevice)
}

/// A block device's logical block size (`BLKSSZGET`).
pub fn logical_block_size(fd: impl AsFd) -> io::Result<u32> {
    Ok(rustix::fs::ioctl_blksszget(fd)?)
}

/// A block device's size in bytes (`BLKGETSIZE64`).
pub fn block_device_size(fd: impl AsFd) -> io::Result<u64> {
    // SAFETY: BLKGETSIZE64 is a read-only getter whose argument is a
    // pointer to one u64, which is exactly the room Getter<_, u64> provides.
    let size = unsafe {
        let ctl = Getter::<BLKGETSIZE64, u64>::new();
        rustix::ioctl::ioctl(fd, ctl)?
    };
    Ok(size)
}

/// The O_DIRECT alignment reported by `statx(STATX_DIOALIGN)` (Linux 6.1+),
/// or `None` when the kernel or filesystem does not report it, or reports
/// 0 (no direct I/O support, e.g. tmpfs).
pub fn dio_align(fd: impl AsFd) -> Option<DioAlign> {
    let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN).ok()?;
    let reported = st.stx_mask & StatxFlags::DIOALIGN.bits() != 0;
    (reported && st.stx_dio_offset_align != 0).then_some(DioAlign {
        mem: st.stx_dio_mem_align,
        offset: st.stx_dio_offset_align,
    })
}

/// Offset and memory alignment assumed when a file opened O_DIRECT does not
/// report one (statx without STATX_DIOALIGN, or a filesystem that answers
/// 0, e.g. tmpfs or a kernel before 6.1): a page, which every device accepts.
const DIO_FALLBACK_ALIGN: u32 = 4096;

/// Logical block size of a buffered (not O_DIRECT) regular file: the sector
/// size, so that images behave like the 512-byte devices they stand for.
const BUFFERED_FILE_LBS: u32 = 512;

/// What an opened device or image file holds and needs, as the kernel
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Size in bytes.
    pub size: u64,
    /// Logical block size: the alignment of I/O offsets and lengths.
    pub lbs: u32,
    /// Buffer address alignment an I/O needs (1 without O_DIRECT).
    pub mem_align: usize,
}

/// The size and alignment rules of `file`, opened with O_DIRECT or not.
///
/// A block device: `BLKGETSIZE64`, `BLKSSZGET`, and with O_DIRECT the memory
/// alignment from `statx(STATX_DIOALIGN)` or else the logical block size.
/// A regular file: its length; without O_DIRECT 512-byte blocks and any
/// address; with O_DIRECT what `STATX_DIOALIGN` reports, or 4096.
pub fn geometry(file: &fs::File, is_block: bool, direct: bool) -> io::Result<Geometry> {
    let dio = if direct { dio_align(file) } else { None };
    if is_block {
        // A block device's metadata length is 0.
        let size = block_device_size(file)?;
        let lbs = logical_block_size(file)?;
        let mem_align = match dio {
            Some(d) if d.mem > 0 => d.mem as usize,
            // Before block devices reported STATX_DIOALIGN the rule was
            // "aligned to the logical block size".
            _ if direct => lbs as usize,
            _ => 1,
        };
        return Ok(Geometry {
            size,
            lbs,
            mem_align,
        });
    }
    let size = file.metadata()?.len();
    if !direct {
        return Ok(Geometry {
            size,
            lbs: BUFFERED_FILE_LBS,
            mem_align: 1,
        });
    }
    let d = dio.unwrap_or(DioAlign { mem: 0, offset: 0 });
    let or_fallback = |v: u32| if v == 0 { DIO_FALLBACK_ALIGN } else { v };
    Ok(Geometry {
        size,
        lbs: or_fallback(d.offset),
        mem_align: or_fallback(d.mem) as usize,
    })
}

/// Opens the regular file or block device at `path` for I/O (read-write
/// unless `read_only`, O_DIRECT when `direct`) and returns it with its
/// [`Geometry`].
///
/// An open for writing is refused ([`Error::InUse`]) while the device or
/// image is mounted, directly or through a loop device it backs, or held by
/// a device built on it (see [`in_use`]): writing under a mounted
/// filesystem corrupts it, and the ext4 journal's needs_recovery flag only
/// shows a mount of a filesystem that has a journal. A block device is also
/// opened with O_EXCL, which the kernel refuses (EBUSY) while it is mounted
/// or claimed, also from another mount namespace. An image file opened for
/// writing carries an exclusive advisory lock (`flock`) for as long as the
/// returned file is open, so that a second writer gets [`Error::Locked`].
/// Read-only opens skip both: they cannot corrupt anything.
///
/// Anything else than a regular file or a block device is an
/// [`Error::InvalidArgument`]; a failed open is an [`Error::Open`], a failed
/// query an [`Error::Query`], each naming the path.
pub fn open_for_io(path: &Path, direct: bool, read_only: bool) -> Result<(fs::File, Geometry)> {
    let meta = fs::metadata(path).map_err(|e| open_error(path, direct, e))?;
    let is_block = meta.file_type().is_block_device();
    if !is_block && !meta.is_file() {
        return Err(Error::InvalidArgument(format!(
            "{} is neither a regular file nor a block device",
            path.display()
        )));
    }
    if !read_only {
        if let Some(why) = in_use(&meta) {
            return Err(Error::InUse {
                path: path.to_path_buf(),
                why,
            });
        }
    }
    let mut flags = 0;
    if direct {
        flags |= libc::O_DIRECT;
    }
    if is_block {
        // On a block device O_EXCL (without O_CREAT) claims it exclusively:
        // the open fails with EBUSY while it is mounted or claimed.
        flags |= libc::O_EXCL;
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| open_error(path, direct, e))?;
    if !read_only && !is_block {
        lock_exclusive(&file, path)?;
    }
    let geo = geometry(&file, is_block, direct).map_err(|source| Error::Query {
        what: "read the size and block size of",
        path: path.to_path_buf(),
        source,
    })?;
    Ok((file, geo))
}

/// An open failure naming the path; its text says what EBUSY and EINVAL
/// (with O_DIRECT) mean here.
fn open_error(path: &Path, direct: bool, source: io::Error) -> Error {
    Error::Open {
        path: path.to_path_buf(),
        direct,
        source,
    }
}

/// Drops the image write lock of `file` now (a no-op on an unlocked file).
/// Devices call it when they go: the lock belongs to the open file
/// description, which can outlive the device's descriptor — a child forked
/// by another thread holds it until it execs, and an io_uring request's
/// reference can be put after its completion — so closing alone would leave
/// the image locked for a moment (a reopen right after was refused, seen in
/// the tests when a test spawning a process ran beside them).
pub fn unlock(file: &fs::File) {
    let _ = rustix::fs::flock(file, FlockOperation::Unlock);
}

/// Takes the exclusive advisory lock of an image file opened for writing,
/// without waiting. `flock` locks belong to the open file description, so
/// a second open conflicts even inside one process, and the lock goes
/// away with the last descriptor of this open (the device's).
fn lock_exclusive(file: &fs::File, path: &Path) -> Result<()> {
    loop {
        match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(Error::Locked {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => {
                return Err(Error::Query {
                    what: "lock",
                    path: path.to_path_buf(),
                    source: e.into(),
                })
            }
        }
    }
}

// ---- Is it mounted? ----
//
// The idea is e2fsprogs' (lib/ext2fs/ismounted.c, check_mntent_file and
// check_loop_mounted): a device is mounted when its device number is the
// device of a mounted filesystem; an image file is mounted when a loop
// device backed by it (same st_dev and st_ino) is. Written here from the
// kernel's own interfaces: /proc/self/mountinfo (Documentation/filesystems/
// proc.rst, "mountinfo"), /sys/block/loopN/loop/{backing_file,offset}
// (drivers/block/loop.c) and /sys/block/*/holders (block/holder.c).

/// Where the block device or image file `meta` describes is in use, as a
/// phrase for [`Error::InUse`] (`it is mounted at /mnt (ext4)`), or `None`.
///
/// A block device is in use when it or one of its partitions is mounted or
/// held by another device (device-mapper, md, ...). An image file is in use
/// when a loop device backed by it is, or when that loop device cannot be
/// claimed exclusively (a mount in another mount namespace). A loop device
/// that is merely attached is not. Without /proc and /sys nothing can be found and `None` is the
/// answer; block devices keep the kernel's O_EXCL check even then.
pub fn in_use(meta: &fs::Metadata) -> Option<String> {
    let mounts = mount_table();
    if meta.file_type().is_block_device() {
        let rdev = meta.rdev();
        let dev = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
        let sys = PathBuf::from(format!("/sys/dev/block/{}:{}", dev.0, dev.1));
        let mut usage = block_use(&sys);
        if usage.devs.is_empty() {
            // No sysfs: the device's own number still finds a mount.
            usage.devs.push(BlockDev {
                dev,
                name: format!("{}:{}", dev.0, dev.1),
                partition: false,
            });
        }
        describe_use(&usage, &mounts, &source_rdev).map(|what| format!("it {what}"))
    } else {
        loops_backed_by(Path::new("/sys/block"), meta.dev(), meta.ino())
            .into_iter()
            .find_map(|lo| {
                let what = describe_use(&block_use(&lo.sys_dir), &mounts, &source_rdev)
                    .or_else(|| claimed(&lo.name))?;
                Some(format!(
                    "it backs loop device /dev/{} (offset {}), which {what}",
                    lo.name, lo.offset
                ))
            })
    }
}

/// Whether the kernel refuses an exclusive claim of `/dev/NAME` (EBUSY): a
/// filesystem mounted from it claims it, also one mounted in another mount
/// namespace, which this process's mount table does not show. The claim
/// is read-only and dropped at once; a device that cannot be opened here
/// (no node, no permission) tells nothing.
fn claimed(name: &str) -> Option<String> {
    let busy = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(Path::new("/dev").join(name))
        .err()
        .is_some_and(|e| e.raw_os_error() == Some(libc::EBUSY));
    busy.then(|| {
        "is claimed by someone else (mounted, perhaps in another mount namespace)".to_string()
    })
}

/// One mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// `major:minor` of the filesystem's device (mountinfo only).
    dev: Option<(u32, u32)>,
    /// What was mounted (`/dev/loop3`, `tmpfs`, ...).
    source: String,
    /// Where.
    point: String,
    /// Filesystem type.
    fstype: String,
}

/// The mount table of this process's mount namespace: mountinfo, else
/// /proc/mounts, else nothing.
fn mount_table() -> Vec<Mount> {
    if let Ok(text) = fs::read_to_string("/proc/self/mountinfo") {
        return parse_mountinfo(&text);
    }
    fs::read_to_string("/proc/mounts")
        .map(|text| parse_proc_mounts(&text))
        .unwrap_or_default()
}

/// Parses /proc/self/mountinfo: `ID PARENT MAJ:MIN ROOT POINT OPTS
/// [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS`. Lines that do not parse are
/// skipped.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            // Spaces inside fields are escaped (\040), so " - " only ever
            // ends the optional fields.
            let (pre, post) = line.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let (maj, min) = f.get(2)?.split_once(':')?;
            let mut post = post.split(' ');
            let fstype = unescape(post.next()?);
            let source = unescape(post.next()?);
            Some(Mount {
                dev: Some((maj.parse().ok()?, min.parse().ok()?)),
                source,
                point: unescape(f.get(4)?),
                fstype,
            })
        })
        .collect()
}

/// Parses /proc/mounts (`SOURCE POINT FSTYPE OPTS 0 0`), which has no device
/// numbers: a mount is then matched through its source's node.
fn parse_proc_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            Some(Mount {
                dev: None,
                source: unescape(f.next()?),
                point: unescape(f.next()?),
                fstype: unescape(f.next()?),
            })
        })
        .collect()
}

/// Undoes the kernel's octal escapes of space, tab, newline and backslash
/// in mount table fields (`\040` is a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let digits = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match digits.map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'))) {
            Some(v) if v <= 0xff => {
                out.push(v as u8);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The device number of a block device node, for mount sources such as
/// `/dev/loop3` (only `/dev/` paths are looked at: a source may be anything).
fn source_rdev(source: &str) -> Option<(u32, u32)> {
    if !source.starts_with("/dev/") {
        return None;
    }
    let meta = fs::metadata(source).ok()?;
    meta.file_type().is_block_device().then(|| {
        (
            rustix::fs::major(meta.rdev()),
            rustix::fs::minor(meta.rdev()),
        )
    })
}

/// The first mount of the device numbered `dev`: by mountinfo's number, or
/// (btrfs's anonymous numbers, /proc/mounts) by its source's node.
fn mounted<'m>(
    mounts: &'m [Mount],
    dev: (u32, u32),
    source_rdev: &dyn Fn(&str) -> Option<(u32, u32)>,
) -> Option<&'m Mount> {
    mounts
        .iter()
        .find(|m| m.dev == Some(dev))
        .or_else(|| mounts.iter().find(|m| source_rdev(&m.source) == Some(dev)))
}

/// A block device or one of its partitions, from sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlockDev {
    dev: (u32, u32),
    name: String,
    partition: bool,
}

/// A block device's numbers (its own first, then its partitions') and the
/// devices holding it or its partitions.
#[derive(Debug, Default)]
struct BlockUse {
    devs: Vec<BlockDev>,
    holders: Vec<String>,
}

/// Reads a block device's sysfs directory (`/sys/dev/block/MAJ:MIN` or
/// `/sys/block/NAME`): its `dev`, the partitions below it (directories
/// with a `partition` file) and every `holders/` entry.
fn block_use(sys_dir: &Path) -> BlockUse {
    let mut usage = BlockUse::default();
    let real = fs::canonicalize(sys_dir).unwrap_or_else(|_| sys_dir.to_path_buf());
    let name = real
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    add_block(&mut usage, &real, name, false);
    let mut parts: Vec<_> = fs::read_dir(&real)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("partition").is_file())
        .map(|e| (e.path(), e.file_name().to_string_lossy().into_owned()))
        .collect();
    parts.sort();
    for (dir, name) in parts {
        add_block(&mut usage, &dir, name, true);
    }
    usage
}

fn add_block(usage: &mut BlockUse, dir: &Path, name: String, partition: bool) {
    if let Some(dev) = read_dev(&dir.join("dev")) {
        usage.devs.push(BlockDev {
            dev,
            name,
            partition,
        });
    }
    let mut holders: Vec<String> = fs::read_dir(dir.join("holders"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    holders.sort();
    usage.holders.extend(holders);
}

/// A sysfs `dev` file: `MAJ:MIN`.
fn read_dev(path: &Path) -> Option<(u32, u32)> {
    let text = fs::read_to_string(path).ok()?;
    let (maj, min) = text.trim().split_once(':')?;
    Some((maj.parse().ok()?, min.parse().ok()?))
}

/// What `usage` says about a device, as a verb phrase (`is mounted at /mnt
/// (ext4)`), or `None` when nothing mounts or holds it.
fn describe_use(
    usage: &BlockUse,
    mounts: &[Mount],
    source_rdev: &dyn Fn(&str) -> Option<(u32, u32)>,
) -> Option<String> {
    for d in &usage.devs {
        if let Some(m) = mounted(mounts, d.dev, source_rdev) {
            let at = format!("mounted at {} ({})", m.point, m.fstype);
            return Some(if d.partition {
                format!("has its partition {} {at}", d.name)
            } else {
                format!("is {at}")
            });
        }
    }
    (!usage.holders.is_empty()).then(|| {
        format!(
            "is held by {} (a device built on it)",
            usage.holders.join(", ")
        )
    })
}

/// A loop device attached to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LoopBacking {
    /// `loop3`.
    name: String,
    /// Where in the file the loop device starts.
    offset: u64,
    /// Its sysfs directory.
    sys_dir: PathBuf,
}

/// The loop devices under `sys_block` (`/sys/block`) whose backing file is
/// the file with device `dev` and inode `ino`. The backing path is stat'ed
/// and compared by identity, not by name: the same file has many names.
fn loops_backed_by(sys_block: &Path, dev: u64, ino: u64) -> Vec<LoopBacking> {
    let mut found: Vec<LoopBacking> = fs::read_dir(sys_block)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                return None;
            }
            let dir = e.path();
            let backing = fs::read_to_string(dir.join("loop/backing_file")).ok()?;
            // A deleted backing file reads as "PATH (deleted)"; its stat
            // fails or finds another file, and an open path cannot be it.
            let meta = fs::metadata(backing.trim_end_matches('\n')).ok()?;
            if meta.dev() != dev || meta.ino() != ino {
                return None;
            }
            let offset = fs::read_to_string(dir.join("loop/offset"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            Some(LoopBacking {
                name,
                offset,
                sys_dir: dir,
            })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn blkgetsize64_opcode_matches_the_uapi_value() {
        assert_eq!(BLKGETSIZE64 as u64, 0x8008_1272);
    }

    #[test]
    fn a_regular_file_is_not_a_block_device() {
        let f = tempfile::tempfile().unwrap();
        assert!(!is_block_device(&f).unwrap());
        assert!(logical_block_size(&f).is_err());
    }

    #[test]
    fn file_geometry() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, vec![0u8; 1 << 16]).unwrap();
        let (_f, g) = open_for_io(&p, false, true).unwrap();
        assert_eq!(
            g,
            Geometry {
                size: 1 << 16,
                lbs: BUFFERED_FILE_LBS,
                mem_align: 1
            }
        );
        let (_f, g) = open_for_io(&p, true, false).unwrap();
        assert_eq!(g.size, 1 << 16);
        assert!(g.lbs.is_power_of_two() && g.lbs >= 512, "{g:?}");
        assert!(g.mem_align.is_power_of_two(), "{g:?}");
    }

    #[test]
    fn open_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-image");
        let e = open_for_io(&missing, true, false).unwrap_err();
        assert!(matches!(e, Error::Open { direct: true, .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("no-such-image"), "{text}");
        assert!(!text.contains("offset"), "{text}");
        let e = open_for_io(dir.path(), false, true).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        let busy = open_error(&missing, false, io::Error::from_raw_os_error(libc::EBUSY));
        assert!(busy.to_string().contains("mounted or in use"), "{busy}");
        let einval = open_error(&missing, true, io::Error::from_raw_os_error(libc::EINVAL));
        let text = einval.to_string();
        assert!(text.contains("O_DIRECT") && !text.contains("--"), "{text}");
    }

    #[test]
    fn a_second_writer_of_an_image_is_refused_and_a_reader_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, vec![0u8; 1 << 16]).unwrap();
        let (held, _) = open_for_io(&p, false, false).unwrap();
        // flock locks belong to the open file description: a second open in
        // this same process conflicts as another process would.
        let e = open_for_io(&p, false, false).unwrap_err();
        assert!(matches!(e, Error::Locked { .. }), "{e}");
        assert!(e.to_string().contains("in use by another process"), "{e}");
        assert!(open_for_io(&p, false, true).is_ok());
        drop(held);
        assert!(open_for_io(&p, false, false).is_ok());
    }

    #[test]
    fn a_fresh_image_is_not_in_use() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(in_use(&f.as_file().metadata().unwrap()), None);
    }

    const MOUNTINFO: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
25 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw
60 22 7:3 / /mnt/my\\040disk rw,relatime shared:30 master:2 - ext4 /dev/loop3 rw
61 22 0:45 /sub /srv ro - btrfs /dev/vdb ro,space_cache
garbage line
";

    #[test]
    fn mountinfo_lines_parse_with_escapes_and_optional_fields() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(
            m[2],
            Mount {
                dev: Some((7, 3)),
                source: "/dev/loop3".into(),
                point: "/mnt/my disk".into(),
                fstype: "ext4".into(),
            }
        );
        assert_eq!(
            (m[3].fstype.as_str(), m[3].point.as_str()),
            ("btrfs", "/srv")
        );
        let none = |_: &str| None;
        assert_eq!(
            mounted(&m, (7, 3), &none).map(|m| &*m.point),
            Some("/mnt/my disk")
        );
        assert_eq!(mounted(&m, (7, 4), &none), None);
        // btrfs reports an anonymous 0:N: the source's node finds it.
        let vdb = |s: &str| (s == "/dev/vdb").then_some((253, 16));
        assert_eq!(
            mounted(&m, (253, 16), &vdb).map(|m| &*m.point),
            Some("/srv")
        );
    }

    #[test]
    fn proc_mounts_lines_parse() {
        let m = parse_proc_mounts("/dev/loop0 /mnt/a\\134b ext4 rw 0 0\nproc /proc proc rw 0 0\n");
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].dev, m[0].point.as_str()), (None, "/mnt/a\\b"));
        let loop0 = |s: &str| (s == "/dev/loop0").then_some((7, 0));
        assert_eq!(
            mounted(&m, (7, 0), &loop0).map(|m| &*m.fstype),
            Some("ext4")
        );
    }

    #[test]
    fn unescape_leaves_what_is_not_an_octal_escape() {
        assert_eq!(unescape("a\\040b\\011c"), "a b\tc");
        assert_eq!(unescape("x\\04"), "x\\04");
        assert_eq!(unescape("x\\999\\"), "x\\999\\");
        assert_eq!(unescape("\\777"), "\\777");
    }

    /// A fake /sys/block: loop0 backed by `img` at offset 4096, loop1 backed
    /// by another file, loop2 backed by `img` with a partition held by dm-0,
    /// loop7 detached.
    fn fake_sys(dir: &Path, img: &Path, other: &Path) -> PathBuf {
        let sys = dir.join("block");
        let put = |rel: &str, text: &str| {
            let p = sys.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        };
        put("loop0/dev", "7:0\n");
        put("loop0/loop/backing_file", &format!("{}\n", img.display()));
        put("loop0/loop/offset", "4096\n");
        fs::create_dir_all(sys.join("loop0/holders")).unwrap();
        put("loop1/dev", "7:1\n");
        put("loop1/loop/backing_file", &format!("{}\n", other.display()));
        put("loop2/dev", "7:2\n");
        put("loop2/loop/backing_file", &format!("{}\n", img.display()));
        put("loop2/loop2p1/dev", "259:5\n");
        put("loop2/loop2p1/partition", "1\n");
        put("loop2/loop2p1/holders/dm-0", "");
        put("loop7/dev", "7:7\n");
        put("sda/dev", "8:0\n");
        sys
    }

    #[test]
    fn loop_devices_are_matched_by_inode_and_read_with_their_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let (img, other) = (dir.path().join("img"), dir.path().join("other"));
        fs::write(&img, b"x").unwrap();
        fs::write(&other, b"y").unwrap();
        let sys = fake_sys(dir.path(), &img, &other);
        // The image by another name (a hard link) is the same file.
        let link = dir.path().join("link");
        fs::hard_link(&img, &link).unwrap();
        let meta = fs::metadata(&link).unwrap();
        let loops = loops_backed_by(&sys, meta.dev(), meta.ino());
        let names: Vec<_> = loops.iter().map(|l| (l.name.as_str(), l.offset)).collect();
        assert_eq!(names, [("loop0", 4096), ("loop2", 0)]);

        let none = |_: &str| None;
        let unmounted = block_use(&loops[0].sys_dir);
        assert_eq!(unmounted.devs.len(), 1);
        assert_eq!(describe_use(&unmounted, &[], &none), None, "attached only");
        let mounts = parse_mountinfo(MOUNTINFO);
        let held = block_use(&loops[1].sys_dir);
        assert_eq!(
            held.devs
                .iter()
                .map(|d| (d.dev, d.partition))
                .collect::<Vec<_>>(),
            [((7, 2), false), ((259, 5), true)]
        );
        assert_eq!(
            describe_use(&held, &mounts, &none).as_deref(),
            Some("is held by dm-0 (a device built on it)")
        );
        let part_mounted = [Mount {
            dev: Some((259, 5)),
            source: "/dev/loop2p1".into(),
            point: "/media/p".into(),
            fstype: "vfat".into(),
        }];
        assert_eq!(
            describe_use(&held, &part_mounted, &none).as_deref(),
            Some("has its partition loop2p1 mounted at /media/p (vfat)")
        );
        let own = BlockUse {
            devs: vec![BlockDev {
                dev: (7, 3),
                name: "loop3".into(),
                partition: false,
            }],
            holders: vec![],
        };
        assert_eq!(
            describe_use(&own, &mounts, &none).as_deref(),
            Some("is mounted at /mnt/my disk (ext4)")
        );
    }
}
