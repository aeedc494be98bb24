//! Building the device and files of a run from the command line's flags,
//! and the warnings and limits they share.

use anyhow::Context;
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::device::{open_device, Backend, OpenOptions};
use bufwrite_engine::folio::MAX_ORDER;
use bufwrite_engine::{BlockDevice, File, FileOptions, Flat, OrderPolicy};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The flags every command shares: how device I/O is done, the block size
/// and the folio order.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Device I/O backend: sync (pread/pwrite) or uring (io_uring, O_DIRECT).
    #[arg(long, default_value = "sync", value_parser = parse_backend)]
    pub backend: Backend,
    /// Filesystem block size in bytes: 1024, 2048 or 4096.
    #[arg(long, default_value_t = 4096, value_parser = parse_block_size)]
    pub block_size: u32,
    /// Order of every folio (0..=9: 4 KiB .. 2 MiB); 9 is the seed's
    /// large-folio case.
    #[arg(long, default_value_t = MAX_ORDER, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub order: u8,
}

impl CommonArgs {
    /// Folio size in bytes.
    pub fn folio_size(&self) -> u64 {
        folio_size(self.order)
    }

    /// File options for the chosen order.
    pub fn file_options(&self) -> FileOptions {
        FileOptions {
            order: OrderPolicy::Fixed(self.order),
        }
    }
}

/// Bytes in a folio of `order`.
pub fn folio_size(order: u8) -> u64 {
    bufwrite_engine::folio::folio_size(order) as u64
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a backend (expected sync or uring)"))
}

fn parse_block_size(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(bs @ (1024 | 2048 | 4096)) => Ok(bs),
        _ => Err(format!(
            "{s:?} is not a block size (expected 1024, 2048 or 4096)"
        )),
    }
}

/// Parses a size with an optional binary suffix: `65536`, `64K`, `16M`,
/// `1G` (also lower case, and `0x` hex without a suffix).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad =
        || format!("{s:?} is not a size (expected a number with an optional K, M or G suffix)");
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n = crate::trace::parse_number(digits).ok_or_else(bad)?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Where a run's device comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A RAM device of exactly the size the run needs.
    Mem,
    /// A temporary image file in the system temp dir, sized for the run and
    /// deleted afterwards.
    TempImage,
    /// An existing image file or block device.
    Device(PathBuf),
}

/// An opened device, and the temporary image behind it (kept alive, and
/// deleted on drop).
pub struct Opened {
    /// The device.
    pub device: Arc<dyn BlockDevice>,
    _temp: Option<tempfile::NamedTempFile>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("device", &self.device.describe())
            .finish_non_exhaustive()
    }
}

/// Opens the device of `target` with room for at least `needed` bytes
/// (a RAM device or temporary image is made exactly that big).
pub fn open_target(target: &Target, needed: u64, backend: Backend) -> anyhow::Result<Opened> {
    let opened = match target {
        Target::Mem => {
            let size = usize::try_from(needed)
                .with_context(|| format!("a RAM device of {needed} bytes is too large"))?;
            Opened {
                device: Arc::new(Mem::with_block_size(size as u64, 512)),
                _temp: None,
            }
        }
        Target::TempImage => {
            let temp = tempfile::Builder::new()
                .prefix("bufwrite-")
                .suffix(".img")
                .tempfile()
                .context("cannot create a temporary image in the system temp dir")?;
            temp.as_file().set_len(needed).with_context(|| {
                format!("cannot size {} to {needed} bytes", temp.path().display())
            })?;
            Opened {
                device: open_path(temp.path(), backend)?,
                _temp: Some(temp),
            }
        }
        Target::Device(path) => Opened {
            device: open_path(path, backend)?,
            _temp: None,
        },
    };
    let size = opened.device.size();
    if size < needed {
        anyhow::bail!(
            "{} holds {size} bytes; this run needs {needed}",
            opened.device.describe()
        );
    }
    Ok(opened)
}

/// The memory the kernel says can be allocated without swapping
/// (`MemAvailable` in /proc/meminfo), or `None` when it does not say.
pub fn memory_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Opens an image file or block device with `backend` (io_uring always
/// O_DIRECT; sync buffered).
pub fn open_path(path: &Path, backend: Backend) -> anyhow::Result<Arc<dyn BlockDevice>> {
    let opts = OpenOptions {
        backend,
        // io_uring always goes O_DIRECT; the sync baseline stays buffered
        // unless a caller asks otherwise.
        direct: backend == Backend::Uring,
        ..OpenOptions::default()
    };
    open_device(path, opts)
        .with_context(|| format!("cannot open {} with the {backend} backend", path.display()))
}

// ---- Warnings ----

/// One warning line on stderr.
pub fn warn(msg: &str) {
    eprintln!("warning: {msg}");
}

/// Opens a Flat file at device offset `base` with room for `capacity`
/// bytes and current size `size`, written through the path `path`.
pub fn flat_file(
    device: &Arc<dyn BlockDevice>,
    base: u64,
    capacity: u64,
    size: u64,
    common: &CommonArgs,
    path: &str,
) -> anyhow::Result<File> {
    let flat = Flat::new(base, capacity, common.block_size, size)
        .context("cannot lay out the file on the device")?;
    let file = File::open(
        Arc::clone(device),
        Arc::new(flat),
        crate::paths::make_path(path)?,
        common.file_options(),
    )
    .with_context(|| format!("cannot open a file on {}", device.describe()))?;
    Ok(file)
}

/// `n` rounded up to a multiple of `unit` (a power of two).
pub fn round_up(n: u64, unit: u64) -> u64 {
    n.div_ceil(unit) * unit
}

/// Writes the first `size` bytes of the file with pattern bytes (seed 1,
/// every folio it covers) and fsyncs: every folio uptodate and clean before
/// the timed calls. A Flat file grows to `size`; an ext4 file is overwritten
/// in place (a larger file keeps its tail, which timed calls never touch).
pub fn prefill(file: &File, size: u64) -> anyhow::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut off = 0;
    while off < size {
        let n = CHUNK.min(size - off);
        crate::trace::fill_pattern(1, off, &mut buf[..n as usize]);
        file.pwrite(off, &buf[..n as usize])?;
        off += n;
    }
    file.fsync()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("16m"), Ok(16 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("0x1000"), Ok(4096));
        for bad in ["", "K", "-1", "1T", "1.5M", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn block_size_and_backend_flags() {
        assert_eq!(parse_block_size("2048"), Ok(2048));
        assert!(parse_block_size("512")
            .unwrap_err()
            .contains("1024, 2048 or 4096"));
        assert_eq!(parse_backend("uring"), Ok(Backend::Uring));
        assert!(parse_backend("aio").is_err());
    }

    #[test]
    fn mem_target_is_sized_as_asked() {
        let opened = open_target(&Target::Mem, 1 << 20, Backend::Sync).unwrap();
        assert_eq!(opened.device.size(), 1 << 20);
    }
}
