//! What replay does with a parsed trace line beyond its grammar: the
//! pwrite(2) checks a write must pass before it runs, and the buffers it
//! writes. The grammar itself (the operations, how they print, the parser
//! and its clipped error echoes) is [`bufwrite_engine::trace`]; the fixed
//! byte pattern and the read hash are [`bufwrite_engine::pattern`]. All are
//! specified in docs/DESIGN.md §7 so that any other tool can reproduce a
//! replay byte for byte.

/// The byte pattern and read hash of the replay contract.
pub use bufwrite_engine::pattern::{fill as fill_pattern, fnv1a64};
/// The trace grammar, as replay and its timing use it.
pub use bufwrite_engine::trace::{clip, parse, parse_number, Clipped, Line, Op, LINE_CLIP};

/// The largest file offset a system call takes: Linux file offsets are
/// `loff_t`, signed 64-bit. A trace line stands for a pwrite(2) or write(2),
/// so replay refuses what those refuse, on every target alike.
pub const MAX_OFFSET: u64 = i64::MAX as u64;

/// Checks that a write of `len` bytes at `off` (a `pwrite`, or a `write` /
/// `writev` at the file position) can run on `file`, without running it, in
/// the order Linux checks a buffered write:
///
/// 1. the range must fit in a file offset: pwrite64 refuses a negative
///    `loff_t` offset, and `rw_verify_area` (fs/read_write.c) one whose end
///    is past 2^63 - 1, both with EINVAL, whatever the length (so
///    `pwrite 18446744073709551615 0 1` fails);
/// 2. a zero-length write then succeeds and writes nothing:
///    `generic_write_checks` (mm/filemap.c) returns 0 for a count of 0
///    before the size limits, so no capacity, i_size or s_maxbytes check
///    applies to it (`pwrite 9223372036854775807 0 1` succeeds);
/// 3. anything else goes to the file's mapper (`Mapper::prepare_write`: a
///    Flat file's capacity; the ext4 file's i_size and written extents).
pub fn check_write(file: &bufwrite_engine::File, off: u64, len: u64) -> anyhow::Result<()> {
    match off.checked_add(len) {
        Some(end) if end <= MAX_OFFSET => {}
        _ if off > MAX_OFFSET => anyhow::bail!(
            "write of {len} bytes at offset {off}: the offset is past the largest file offset \
             {MAX_OFFSET} (2^63 - 1); pwrite(2) refuses it with EINVAL, even for 0 bytes"
        ),
        _ => anyhow::bail!(
            "write of {len} bytes at offset {off} would end past the largest file offset \
             {MAX_OFFSET} (2^63 - 1); pwrite(2) refuses it with EINVAL"
        ),
    }
    if len == 0 {
        return Ok(());
    }
    file.mapping()
        .mapper
        .prepare_write(bufwrite_engine::FilePos::new(off), len)?;
    Ok(())
}

/// The pattern bytes of a write of `len` at `off` for `seed`, after
/// [`check_write`] (so a bad trace line cannot allocate past the file's
/// capacity). A buffer the allocator refuses is an error, not an abort.
pub fn write_bytes(
    file: &bufwrite_engine::File,
    seed: u64,
    off: u64,
    len: u64,
) -> anyhow::Result<Vec<u8>> {
    check_write(file, off, len)?;
    let mut buf = alloc_zeroed(len, "the write's bytes")?;
    fill_pattern(seed, off, &mut buf);
    Ok(buf)
}

/// A zeroed buffer of `len` bytes, or an error naming `what` when it does
/// not fit in memory.
pub fn alloc_zeroed(len: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let n = usize::try_from(len)
        .map_err(|_| anyhow::anyhow!("{what} ({len} bytes) do not fit in memory"))?;
    let mut buf = Vec::new();
    buf.try_reserve_exact(n)
        .map_err(|_| anyhow::anyhow!("cannot allocate {len} bytes for {what}"))?;
    buf.resize(n, 0);
    Ok(buf)
}

/// `all` cut into consecutive iovecs of `lens` (a `writev` line's buffers
/// are consecutive in the file, so one pattern covers them all).
pub fn split_iovec<'a>(all: &'a [u8], lens: &[u64]) -> Vec<std::io::IoSlice<'a>> {
    let mut slices = Vec::with_capacity(lens.len());
    let mut rest = all;
    for &l in lens {
        let (head, tail) = rest.split_at((l as usize).min(rest.len()));
        slices.push(std::io::IoSlice::new(head));
        rest = tail;
    }
    slices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_write_refuses_what_pwrite_refuses_in_its_order() {
        use bufwrite_engine::device::mem::Mem;
        use bufwrite_engine::{File, FileOptions, Flat, IomapPath};
        use std::sync::Arc;
        let cap = 1 << 20;
        let file = File::open(
            Arc::new(Mem::sparse(cap, 512)),
            Arc::new(Flat::new(0, cap, 4096, 0).unwrap()),
            Box::new(IomapPath::new()),
            FileOptions::default(),
        )
        .unwrap();
        // Zero bytes anywhere a file offset reaches: no size limit applies.
        for off in [0, cap, 1 << 40, MAX_OFFSET] {
            check_write(&file, off, 0).unwrap();
        }
        check_write(&file, 0, cap).unwrap();
        // Past 2^63 - 1 (even for zero bytes), or ending past it: EINVAL.
        for (off, len) in [
            (u64::MAX, 0),
            (MAX_OFFSET + 1, 0),
            (MAX_OFFSET, 1),
            (1, MAX_OFFSET),
            (u64::MAX, 1),
        ] {
            let e = check_write(&file, off, len).unwrap_err().to_string();
            assert!(
                e.contains("EINVAL") && e.contains("2^63 - 1"),
                "{off} {len}: {e}"
            );
        }
        // Inside the offset range, the mapper decides.
        let e = check_write(&file, cap, 1).unwrap_err().to_string();
        assert!(e.contains("capacity"), "{e}");
        // Nothing of it wrote anything.
        assert_eq!((file.size(), file.device_stats().writes), (0, 0));
        assert!(write_bytes(&file, 1, MAX_OFFSET, 0).unwrap().is_empty());
        assert!(write_bytes(&file, 1, u64::MAX, 0).is_err());
    }
}
