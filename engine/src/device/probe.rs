//! Opening a device or image file and asking the kernel about it: is it a
//! block device, how big is it, and what alignment does O_DIRECT need.
//!
//! Shared by the backends that open paths (`sync`, `uring`) through
//! [`open_for_io`], so that every backend opens (exclusively, for a block
//! device), reports open failures and queries alignment the same way
//! instead of assuming 512 or 4096.

use crate::error::{Error, Result};
use rustix::fs::{AtFlags, FileType, StatxFlags};
use rustix::ioctl::{opcode, Getter, Opcode};
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

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

/// A block device's physical block size (`BLKPBSZGET`): the unit that
/// avoids a read-modify-write inside the device.
pub fn physical_block_size(fd: impl AsFd) -> io::Result<u32> {
    Ok(rustix::fs::ioctl_blkpbszget(fd)?)
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
/// A block device is opened with O_EXCL, which the kernel refuses (EBUSY)
/// while the device is mounted or held open exclusively by someone else:
/// writing under a mounted filesystem would corrupt it. Anything else than
/// a regular file or a block device is an [`Error::InvalidArgument`]; a
/// failed open is an [`Error::Open`], a failed query an [`Error::Query`],
/// each naming the path.
pub fn open_for_io(path: &Path, direct: bool, read_only: bool) -> Result<(fs::File, Geometry)> {
    let meta = fs::metadata(path).map_err(|e| open_error(path, direct, e))?;
    let is_block = meta.file_type().is_block_device();
    if !is_block && !meta.is_file() {
        return Err(Error::InvalidArgument(format!(
            "{} is neither a regular file nor a block device",
            path.display()
        )));
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
}
