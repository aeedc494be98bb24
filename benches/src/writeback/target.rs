//! The device or image file written to: opening it as every run does
//! (O_DIRECT on each backend, the window memory beside it), checking it
//! before anything is written, and the temporary image made when no
//! `--device` is given.

use super::plan::{Config, Plan};
use crate::setup::{remove_on_signal, RemoveOnSignal};
use crate::units::approx;
use anyhow::{bail, Context, Result};
use bufwrite_engine::device::uring::{UringConfig, UringDevice};
use bufwrite_engine::device::{open_device, Backend, OpenOptions};
use bufwrite_engine::{AlignedBuf, BlockDevice};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Free space a temporary image must leave on its filesystem, at least
/// (and at least 1/16 of the image): the disk is shared.
const FREE_MARGIN: u64 = 256 << 20;

/// Refuses an image of `size` bytes that would not fit in `dir` with
/// [`FREE_MARGIN`] (or 1/16 of the image, if more) to spare: the space
/// statvfs reports available to unprivileged users.
pub fn check_free_space(dir: &Path, size: u64) -> Result<()> {
    let st = rustix::fs::statvfs(dir)
        .map_err(std::io::Error::from)
        .with_context(|| format!("--dir {}: cannot read its free space", dir.display()))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let margin = FREE_MARGIN.max(size / 16);
    if size.saturating_add(margin) > free {
        bail!(
            "--image-size: a temporary image of {} does not fit in {} ({} free; an image \
             must leave at least {} free)",
            approx(size),
            dir.display(),
            approx(free),
            approx(margin)
        );
    }
    Ok(())
}

/// Opens `target` once, as the first set-up would, and checks it before
/// anything is written to it: for `--device-only` that every I/O size is a
/// multiple of its logical block size, for the engine that the file's
/// block size is not smaller than it; and (`check_size`: not for a
/// temporary image still empty) that it holds one I/O of each size (one
/// block of the file, for the engine).
pub fn check_target(target: &Path, plan: &Plan, check_size: bool) -> Result<()> {
    let Some(first) = plan.groups.first().and_then(|g| g.first()) else {
        bail!("--backend: no backend to measure");
    };
    let dev = open(target, first, 0)?.dev;
    let lbs = u64::from(dev.logical_block_size());
    if let Some(bs) = plan.block_size {
        if u64::from(bs) < lbs {
            bail!(
                "--block-size {bs} is smaller than the logical block size of {} ({lbs})",
                dev.describe()
            );
        }
        if check_size && dev.size() < u64::from(bs) {
            bail!(
                "{} holds {} bytes, less than one block of {bs}",
                dev.describe(),
                dev.size()
            );
        }
    }
    for &io_size in &plan.sizes {
        if plan.block_size.is_none() && !io_size.is_multiple_of(lbs) {
            bail!(
                "--io-size {io_size} is not a multiple of the block size of {} ({lbs})",
                dev.describe()
            );
        }
        if check_size && dev.size() < io_size {
            bail!(
                "{} holds {} bytes, less than one I/O of {io_size}",
                dev.describe(),
                dev.size()
            );
        }
    }
    Ok(())
}

/// An opened device and the memory writeback hands it (`window_len` bytes,
/// the device's own registered buffer when `c.registered_buffers`).
pub struct Opened {
    /// The device, whichever the backend.
    pub dev: Arc<dyn BlockDevice>,
    /// The same device as io_uring, for its registered buffers.
    uring: Option<Arc<UringDevice>>,
    /// The window memory when it is not registered with the ring.
    window: Option<AlignedBuf>,
}

impl Opened {
    /// The window memory the requests are cut from.
    pub fn window(&self) -> &[u8] {
        match (&self.window, &self.uring) {
            (Some(w), _) => w,
            (None, Some(u)) => &u.registered_buffers()[0],
            (None, None) => &[],
        }
    }

    /// Whether the kernel accepted the buffer registration (false: plain
    /// writes are what gets measured).
    pub fn buffers_registered(&self) -> bool {
        self.uring.as_ref().is_some_and(|u| u.buffers_registered())
    }
}

/// An engine error from opening the target, with the advice this command
/// can give: it always opens with O_DIRECT, also on the sync backend.
fn open_error(e: bufwrite_engine::Error, backend: Backend) -> anyhow::Error {
    if e.is_direct_io_unsupported() {
        return anyhow::Error::new(e).context(
            "writeback opens its target with O_DIRECT on every backend: give --dir (or \
             --device) on a filesystem that supports it (not tmpfs)",
        );
    }
    crate::setup::with_advice(e, backend)
}

/// Opens `target` for set-up `c`, with `window_len` bytes of window memory
/// (registered with the ring when `c` asks for it). Not
/// `setup::open_path`: that opens the sync backend buffered, and writeback
/// must reach the device on both.
pub fn open(target: &Path, c: &Config, window_len: usize) -> Result<Opened> {
    let opened = match c.backend {
        Backend::Uring => {
            let cfg = UringConfig {
                queue_depth: c.qd,
                batch: c.qd,
                register_file: c.registered_file,
                read_only: false,
            };
            let u = Arc::new(
                UringDevice::open_with(target, &cfg).map_err(|e| open_error(e, c.backend))?,
            );
            let window = if c.registered_buffers {
                u.register_buffers(vec![AlignedBuf::zeroed(window_len)])?;
                None
            } else {
                Some(AlignedBuf::zeroed(window_len))
            };
            Opened {
                dev: u.clone(),
                uring: Some(u),
                window,
            }
        }
        Backend::Sync => {
            let opts = OpenOptions {
                backend: Backend::Sync,
                direct: true,
                ..OpenOptions::default()
            };
            Opened {
                dev: open_device(target, opts).map_err(|e| open_error(e, c.backend))?,
                uring: None,
                window: Some(AlignedBuf::zeroed(window_len)),
            }
        }
    };
    Ok(opened)
}

/// A temporary image's directory, removed on drop or by a signal.
pub struct TempImage {
    _dir: tempfile::TempDir,
    // After `_dir`: forgotten once the directory is gone.
    _guard: RemoveOnSignal,
}

/// A temp image of `size` bytes, written through once so that the runs
/// overwrite allocated blocks (as fio lays out its file) instead of
/// allocating them. It is opened as the runs will open it (O_DIRECT, the
/// block size) before the first byte is written.
pub fn make_image(dir: &Path, size: u64, plan: &Plan) -> Result<(TempImage, PathBuf)> {
    let tmp = tempfile::Builder::new()
        .prefix("bufwrite-writeback-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot make a temporary directory in {}", dir.display()))?;
    let guard = remove_on_signal(tmp.path())?;
    let path = tmp.path().join("writeback.img");
    let write_err = || format!("cannot write the temporary image {}", path.display());
    let mut f = std::fs::File::create(&path).with_context(write_err)?;
    check_target(&path, plan, false)?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).with_context(write_err)?;
        left -= n as u64;
    }
    f.sync_all().with_context(write_err)?;
    Ok((
        TempImage {
            _dir: tmp,
            _guard: guard,
        },
        path,
    ))
}
