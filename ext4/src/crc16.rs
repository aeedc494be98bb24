//! CRC-16 (reflected polynomial 0x8005, the kernel's `lib/crc16.c`), the
//! group descriptor checksum of images with `gdt_csum` / `uninit_bg` and
//! without metadata_csum.
//!
//! Like the kernel's `crc16(crc, buf, len)` this is the bare register
//! update: the caller passes the initial value (ext4 uses `!0`) and no
//! final inversion is applied. With an initial value of 0 it is CRC-16/ARC.

/// The byte-wise lookup table, built at compile time so there is no
/// hand-copied table to get wrong.
const TABLE: [u16; 256] = build_table();

const fn build_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u16;
        let mut k = 0;
        while k < 8 {
            // 0xA001 is 0x8005 bit-reversed: the reflected form.
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xA001
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// Updates `crc` with `data`.
pub(crate) fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc = (crc >> 8) ^ TABLE[usize::from((crc ^ u16::from(b)) & 0xFF)];
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-at-a-time reference, independent of the table.
    fn bitwise(mut crc: u16, data: &[u8]) -> u16 {
        for &b in data {
            crc ^= u16::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xA001
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    #[test]
    fn known_values() {
        // CRC-16/ARC check value.
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
        // CRC-16/MODBUS is the same register started at 0xFFFF.
        assert_eq!(crc16(0xFFFF, b"123456789"), 0x4B37);
        assert_eq!(crc16(0x1234, b""), 0x1234);
        // Chaining equals one pass; table equals bitwise.
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        assert_eq!(
            crc16(crc16(!0, &data[..300]), &data[300..]),
            crc16(!0, &data)
        );
        assert_eq!(crc16(!0, &data), bitwise(!0, &data));
    }
}
