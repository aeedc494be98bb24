//! metadata_csum checksums (CRC32C).
//!
//! ext4's checksum primitive is the raw CRC32C register update, without the
//! usual pre- and post-inversion; the `crc32c` crate inverts on both sides,
//! so the primitive is the crate's function with the seed and the result
//! inverted.

/// ext4's `chksum(seed, data)`.
pub(crate) fn chksum(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// The per-inode seed used for the inode itself, its extent blocks and its
/// directory blocks: the filesystem seed extended with the inode number and
/// generation.
pub(crate) fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    let s = chksum(fs_seed, &ino.to_le_bytes());
    chksum(s, &generation.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_standard_crc32c() {
        // Standard CRC32C("123456789") = 0xE3069283; the standard form is
        // the primitive with seed !0 and the result inverted.
        assert_eq!(!chksum(!0, b"123456789"), 0xE306_9283);
        // Chaining equals one pass.
        let a = chksum(chksum(7, b"1234"), b"56789");
        assert_eq!(a, chksum(7, b"123456789"));
    }
}
