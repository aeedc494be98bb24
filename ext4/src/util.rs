//! Explicit little-endian readers and aligned metadata reads.
//!
//! The readers take a slice whose length the caller has already checked
//! against the structure's size; they never see image-controlled offsets
//! without such a check.

use crate::error::{CorruptKind, Ext4Error, Location, Result, Structure};
use bufwrite_engine::BlockDevice;

/// Reads a little-endian u16 at `off`.
pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// Reads a little-endian u32 at `off`.
pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Joins the low and high halves of a split on-disk field.
pub(crate) fn hilo(hi: u32, lo: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Reads `len` bytes at device byte `offset` for `structure`, widening the
/// request to the device's logical block size as the device requires.
///
/// A read past the device's end is reported as a corrupt (truncated) image
/// naming the structure, not as a device error.
pub(crate) fn read_meta(
    dev: &dyn BlockDevice,
    structure: Structure,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>> {
    let lbs = u64::from(dev.logical_block_size().max(1));
    let len64 = len as u64;
    let truncated = || {
        Ext4Error::corrupt(
            structure,
            Location::Byte(offset),
            CorruptKind::PastDeviceEnd {
                len: len64,
                device_size: dev.size(),
            },
        )
    };
    let end = offset.checked_add(len64).ok_or_else(truncated)?;
    if end > dev.size() {
        return Err(truncated());
    }
    let start = offset - offset % lbs;
    let aligned_end = end.div_ceil(lbs).checked_mul(lbs).ok_or_else(truncated)?;
    if aligned_end > dev.size() {
        return Err(truncated());
    }
    let span = usize::try_from(aligned_end - start).map_err(|_| truncated())?;
    let mut buf = vec![0u8; span];
    dev.read_at(start, &mut buf)?;
    let skip = (offset - start) as usize;
    if skip == 0 && span == len {
        return Ok(buf);
    }
    Ok(buf[skip..skip + len].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bufwrite_engine::device::mem::Mem;

    #[test]
    fn readers_and_aligned_reads() {
        let b = [1u8, 2, 3, 4];
        assert_eq!(le16(&b, 1), 0x0302);
        assert_eq!(le32(&b, 0), 0x0403_0201);
        assert_eq!(hilo(1, 2), (1 << 32) | 2);
        let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        let dev = Mem::from_bytes(data, 512);
        assert_eq!(
            read_meta(&dev, Structure::Superblock, 1000, 4).unwrap(),
            vec![232, 233, 234, 235]
        );
        let e = read_meta(&dev, Structure::Inode { ino: 3 }, 4000, 200).unwrap_err();
        let c = e.as_corrupt().expect("a corruption");
        assert_eq!(c.structure(), &Structure::Inode { ino: 3 });
        assert_eq!(c.location(), &Location::Byte(4000));
        assert_eq!(
            c.kind(),
            &CorruptKind::PastDeviceEnd {
                len: 200,
                device_size: 4096
            }
        );
        assert!(read_meta(&dev, Structure::Superblock, u64::MAX, 2).is_err());
    }
}
