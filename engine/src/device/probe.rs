//! Asking the kernel about an opened device or image file: is it a block
//! device, how big is it, and what alignment does O_DIRECT need.
//!
//! Shared by the backends that open paths (`sync`, `uring`), so that every
//! backend queries alignment the same way instead of assuming 512 or 4096.

use rustix::fs::{AtFlags, FileType, StatxFlags};
use rustix::ioctl::{opcode, Getter, Opcode};
use std::io;
use std::os::fd::AsFd;

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
}
