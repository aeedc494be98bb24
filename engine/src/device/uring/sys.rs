//! Opening the file or block device and asking the kernel for its geometry
//! (size, O_DIRECT alignment), and the message for a missing io_uring.

use crate::error::{Error, IoKind, Result};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What the device needs and holds, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geometry {
    /// Size in bytes.
    pub size: u64,
    /// Offset and length alignment of O_DIRECT I/O.
    pub lbs: u32,
    /// Buffer address alignment of O_DIRECT I/O.
    pub mem_align: usize,
}

/// Opens `path` for O_DIRECT I/O. A block device is opened with O_EXCL, which
/// the kernel refuses (EBUSY) while the device is mounted or held open
/// exclusively by someone else: writing under a mounted filesystem would
/// corrupt it.
pub(super) fn open_direct(path: &Path, read_only: bool) -> Result<(File, bool)> {
    let is_block = std::fs::metadata(path)
        .map(|m| m.file_type().is_block_device())
        .map_err(|e| open_error(path, "stat", e))?;
    let mut flags = libc::O_DIRECT | libc::O_CLOEXEC;
    if is_block {
        flags |= libc::O_EXCL;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) if is_block => Error::io(
                IoKind::Open,
                0,
                0,
                io::Error::new(
                    e.kind(),
                    format!(
                        "block device {} is in use (mounted, or held open exclusively by \
                         another process); refusing to open it ({e})",
                        path.display()
                    ),
                ),
            ),
            Some(libc::EINVAL) => Error::io(
                IoKind::Open,
                0,
                0,
                io::Error::new(
                    e.kind(),
                    format!(
                        "{} does not support O_DIRECT, which the uring backend needs; \
                         use `--backend sync` ({e})",
                        path.display()
                    ),
                ),
            ),
            _ => open_error(path, "open", e),
        })?;
    Ok((file, is_block))
}

fn open_error(path: &Path, what: &str, e: io::Error) -> Error {
    Error::io(
        IoKind::Open,
        0,
        0,
        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display())),
    )
}

/// Size and O_DIRECT alignment: BLKGETSIZE64 / BLKSSZGET for a block device,
/// the file length and statx(STATX_DIOALIGN) for a regular file.
pub(super) fn geometry(file: &File, is_block: bool) -> io::Result<Geometry> {
    let (mem, off) = dio_align(file).unwrap_or((0, 0));
    if is_block {
        let size = blkgetsize64(file)?;
        let lbs = rustix::fs::ioctl_blksszget(file)?;
        let mem_align = if mem == 0 { lbs as usize } else { mem as usize };
        return Ok(Geometry {
            size,
            lbs,
            mem_align,
        });
    }
    let size = file.metadata()?.len();
    // 0 means the filesystem did not say (tmpfs, or a kernel before 6.1):
    // assume a page, which every device accepts.
    let lbs = if off == 0 { 4096 } else { off };
    let mem_align = if mem == 0 { 4096 } else { mem as usize };
    Ok(Geometry {
        size,
        lbs,
        mem_align,
    })
}

/// statx(STATX_DIOALIGN): (memory alignment, offset alignment), 0 when unknown.
fn dio_align(file: &File) -> io::Result<(u32, u32)> {
    use rustix::fs::{statx, AtFlags, StatxFlags};
    let st = statx(file, "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN)?;
    if st.stx_mask & StatxFlags::DIOALIGN.bits() == 0 {
        return Ok((0, 0));
    }
    Ok((st.stx_dio_mem_align, st.stx_dio_offset_align))
}

/// BLKGETSIZE64 (`_IOR(0x12, 114, size_t)`): libc does not define it.
fn blkgetsize64(file: &File) -> io::Result<u64> {
    use rustix::ioctl::{ioctl, opcode, Getter};
    // SAFETY: BLKGETSIZE64 is a read ioctl whose argument is one u64 the
    // kernel writes; the opcode is built for exactly that type.
    let size = unsafe {
        let ctl = Getter::<{ opcode::read::<u64>(0x12, 114) }, u64>::new();
        ioctl(file, ctl)?
    };
    Ok(size)
}

/// The error for a failed io_uring_setup: when the kernel says no (EPERM,
/// ENOSYS, EACCES), the message says io_uring is unavailable, why it may be,
/// and names the backend that works without it.
pub(super) fn setup_error(e: io::Error) -> Error {
    let unavailable = matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::ENOSYS | libc::EACCES)
    );
    let msg = if unavailable {
        let why = match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
            Ok(v) if v.trim() != "0" => format!("kernel.io_uring_disabled = {}", v.trim()),
            _ => "a seccomp filter (e.g. a container's default profile) or a kernel \
                  without io_uring"
                .to_string(),
        };
        format!(
            "io_uring is unavailable on this system ({why}; io_uring_setup: {e}); \
             use `--backend sync`"
        )
    } else {
        format!("io_uring_setup failed: {e}; `--backend sync` does not need io_uring")
    };
    Error::io(IoKind::Open, 0, 0, io::Error::new(e.kind(), msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_error_names_sync_backend() {
        for errno in [libc::EPERM, libc::ENOSYS] {
            let e = setup_error(io::Error::from_raw_os_error(errno)).to_string();
            assert!(e.contains("io_uring is unavailable"), "{e}");
            assert!(e.contains("--backend sync"), "{e}");
        }
        let e = setup_error(io::Error::from_raw_os_error(libc::ENOMEM)).to_string();
        assert!(e.contains("--backend sync"), "{e}");
    }

    #[test]
    fn file_geometry() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, vec![0u8; 1 << 16]).unwrap();
        let (f, is_block) = open_direct(&p, false).unwrap();
        assert!(!is_block);
        let g = geometry(&f, false).unwrap();
        assert_eq!(g.size, 1 << 16);
        assert!(g.lbs.is_power_of_two() && g.lbs >= 512, "{g:?}");
        assert!(g.mem_align.is_power_of_two(), "{g:?}");
    }
}
