//! ext4 targets: a temporary image made with e2fsprogs (`mkfs.ext4`, then
//! `debugfs -w -R "write ..."` for the file: no mount, no root), or an
//! existing image, opened with a chosen backend and mapped through
//! `bufwrite-ext4`.

use crate::setup::{remove_on_signal, run_helper, RemoveOnSignal};
use anyhow::Context;
use bufwrite_engine::device::{open_device, uring, Backend, OpenOptions};
use bufwrite_engine::{AllocPolicy, BlockDevice};
use bufwrite_ext4::{Ext4, Ext4File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// The file a temporary image holds.
pub const FILE: &str = "/bufwrite.dat";

/// Where the e2fsprogs tools live when `PATH` lacks the sbin directories
/// (a non-root user's `PATH` often does).
const SBIN_DIRS: &[&str] = &["/usr/sbin", "/sbin"];

/// Finds an e2fsprogs tool on `PATH`, then in `/usr/sbin` and `/sbin`.
pub fn find_tool(name: &str) -> anyhow::Result<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{name} was not found on PATH or in {}: install e2fsprogs \
                 (it makes the ext4 image), or run on --mem or --device PATH",
                SBIN_DIRS.join(" or ")
            )
        })
}

/// Bytes of image for a file of `file_size` bytes in `block_size` blocks:
/// the file, plus a quarter for the metadata that grows with the image
/// (inode tables: mkfs's "small" type puts a 256-byte inode per 4 KiB;
/// block group descriptors and bitmaps; extent blocks), plus 16 MiB for
/// the journal (mkfs gives an image under 128 MiB a 1024-block journal,
/// at most 4 MiB) and the fixed overhead. Rounded to whole MiB. The image
/// is sparse, so the slack costs no disk.
pub fn image_size(block_size: u32, file_size: u64) -> u64 {
    let data = file_size.div_ceil(u64::from(block_size)) * u64::from(block_size);
    let bytes = data + data / 4 + (16 << 20);
    bytes.div_ceil(1 << 20) << 20
}

/// A temporary ext4 image in the system temp dir holding [`FILE`] of a
/// given size, its blocks written (extents mapped, not unwritten) with the
/// replay pattern of seed 1. Deleted on drop, and by SIGINT, SIGTERM or
/// SIGHUP (see [`crate::setup::remove_on_signal`]).
#[derive(Debug)]
pub struct TempExt4 {
    image: tempfile::TempPath,
    // After `image`: dropped once the file is gone.
    _guard: RemoveOnSignal,
}

impl TempExt4 {
    /// Makes the image: `mkfs.ext4 -q -F -b BS IMG SIZE`, then
    /// `debugfs -w -R "write SRC /bufwrite.dat" IMG` from a temporary
    /// source file of `file_size` pattern bytes.
    pub fn create(block_size: u32, file_size: u64) -> anyhow::Result<TempExt4> {
        let debugfs = find_tool("debugfs")?;
        let TempExt4 {
            image,
            _guard: guard,
        } = Self::empty(block_size, image_size(block_size, file_size))?;

        // Bound first, so dropped last: the file is gone before the guard.
        let (_src_guard, src) = source_file(file_size)?;
        // debugfs splits its request on spaces, so the source is named by a
        // bare file name relative to its directory: the temp dir's own path
        // may hold spaces; tempfile's random names never do.
        let (dir, name) = (
            src.parent().unwrap_or(Path::new(".")),
            src.file_name().unwrap_or_default().to_string_lossy(),
        );
        let out = run(Command::new(&debugfs)
            .current_dir(dir)
            .arg("-w")
            .arg("-R")
            .arg(format!("write {name} {FILE}"))
            .arg(&image))
        .with_context(|| format!("debugfs failed on {}", image.display()))?;
        let made = TempExt4 {
            image,
            _guard: guard,
        };
        // debugfs exits 0 even when a request fails, so the result is read
        // back: the file must exist with the size that was asked for.
        made.check_file(file_size)
            .with_context(|| format!("debugfs did not create {FILE}: {}", out.trim()))?;
        Ok(made)
    }

    /// Makes an empty image of about `size` bytes (`mkfs.ext4 -q -F -b BS
    /// IMG SIZE`, whole MiB, at least 16 MiB) in the system temp dir, for
    /// commands that create their own files. It has mkfs's default journal.
    pub fn empty(block_size: u32, size: u64) -> anyhow::Result<TempExt4> {
        Self::empty_with(block_size, size, true)
    }

    /// As [`TempExt4::empty`], with mkfs's journal or, when `journal` is
    /// false, without one (`-O ^has_journal`: the layout whose metadata is
    /// written in place), for comparing the two.
    pub fn empty_with(block_size: u32, size: u64, journal: bool) -> anyhow::Result<TempExt4> {
        let mkfs = find_tool("mkfs.ext4")?;
        let image = tempfile::Builder::new()
            .prefix("bufwrite-")
            .suffix(".ext4.img")
            .tempfile()
            .context("cannot create a temporary image in the system temp dir")?
            .into_temp_path();
        let guard = remove_on_signal(&image)?;
        let size_kib = size.max(16 << 20).div_ceil(1 << 20) << 10;
        run(Command::new(&mkfs)
            .args(["-q", "-F", "-b", &block_size.to_string()])
            .args(if journal {
                &[][..]
            } else {
                &["-O", "^has_journal"][..]
            })
            .arg(&image)
            .arg(format!("{size_kib}k")))
        .with_context(|| format!("mkfs.ext4 failed on {}", image.display()))?;
        Ok(TempExt4 {
            image,
            _guard: guard,
        })
    }

    /// The image file.
    pub fn path(&self) -> &Path {
        &self.image
    }

    fn check_file(&self, want: u64) -> anyhow::Result<()> {
        let dev = open_device(
            self.path(),
            OpenOptions {
                read_only: true,
                ..OpenOptions::default()
            },
        )?;
        let inode = Ext4::open(dev)?.lookup(FILE)?;
        if inode.size != want {
            anyhow::bail!("{FILE} holds {} bytes, not {want}", inode.size);
        }
        Ok(())
    }
}

/// A temporary file of `size` pattern bytes (seed 1, as libmicro's prefill
/// writes them), for debugfs to copy into the image; removed on drop or by
/// a signal (drop the path before the guard).
fn source_file(size: u64) -> anyhow::Result<(RemoveOnSignal, tempfile::TempPath)> {
    let mut src = tempfile::Builder::new()
        .prefix("bufwrite-src-")
        .tempfile()
        .context("cannot create a temporary source file in the system temp dir")?;
    let guard = remove_on_signal(src.path())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        crate::trace::fill_pattern(1, off, &mut buf[..n]);
        src.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", src.path().display()))?;
        off += n as u64;
    }
    src.flush()?;
    Ok((guard, src.into_temp_path()))
}

/// Runs a tool; a failure is an error carrying its stderr. Returns stderr
/// (debugfs reports there, even on success). A signal that ends this
/// process kills the tool first (it works on a temporary image).
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let out = run_helper(cmd).with_context(|| format!("cannot run {prog}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        anyhow::bail!("{prog} exited with {}: {}", out.status, stderr.trim());
    }
    Ok(stderr)
}

/// The backend for an ext4 target when `--backend` was not given: io_uring,
/// or sync with a note saying why when io_uring cannot be set up here.
pub fn preferred_backend() -> (Backend, Option<String>) {
    match uring::probe() {
        Ok(()) => (Backend::Uring, None),
        // `{:#}`: the engine's message, then its OS error.
        Err(e) => (
            Backend::Sync,
            Some(format!(
                "{:#}; using the sync backend",
                anyhow::Error::new(e)
            )),
        ),
    }
}

/// An opened ext4 image: the device and the filesystem on it.
pub struct Ext4Image {
    /// The image file or block device.
    pub path: PathBuf,
    /// The device, opened with the run's backend.
    pub device: Arc<dyn BlockDevice>,
    /// The filesystem.
    pub fs: Ext4,
    /// A temporary image behind it, deleted on drop.
    _temp: Option<TempExt4>,
}

impl std::fmt::Debug for Ext4Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ext4Image")
            .field("path", &self.path)
            .field("device", &self.device.describe())
            .finish_non_exhaustive()
    }
}

impl Ext4Image {
    /// Opens an existing image or unmounted device (a mounted one, or one
    /// another process writes, is refused by the engine's open). Its block
    /// size is the image's: a `--block-size` given with `--image` draws a
    /// warning.
    pub fn open(path: &Path, backend: Backend) -> anyhow::Result<Ext4Image> {
        Self::open_with(path, backend, AllocPolicy::default())
    }

    /// [`Ext4Image::open`] with the writeback allocation policy its files
    /// use.
    pub fn open_with(
        path: &Path,
        backend: Backend,
        policy: AllocPolicy,
    ) -> anyhow::Result<Ext4Image> {
        let image = Self::open_unchecked(path, backend, policy)?;
        crate::setup::warn_block_size_ignored(image.fs.block_size());
        Ok(image)
    }

    /// [`Ext4Image::open`] without the warning: for an image made with the
    /// block size asked for.
    fn open_unchecked(
        path: &Path,
        backend: Backend,
        policy: AllocPolicy,
    ) -> anyhow::Result<Ext4Image> {
        let device = crate::setup::open_path(path, backend)?;
        let fs = Ext4::open_with(Arc::clone(&device), policy)
            .with_context(|| format!("cannot read {} as ext4", path.display()))?;
        crate::setup::note_recovery(&fs, path);
        Ok(Ext4Image {
            path: path.to_path_buf(),
            device,
            fs,
            _temp: None,
        })
    }

    /// Makes a temporary image holding [`FILE`] of `file_size` bytes and
    /// opens it.
    pub fn temporary(
        block_size: u32,
        file_size: u64,
        backend: Backend,
    ) -> anyhow::Result<Ext4Image> {
        let temp = TempExt4::create(block_size, file_size)?;
        let mut img = Ext4Image::open_unchecked(temp.path(), backend, AllocPolicy::default())?;
        img._temp = Some(temp);
        Ok(img)
    }

    /// True for a temporary image made by this run.
    pub fn is_temporary(&self) -> bool {
        self._temp.is_some()
    }

    /// Opens `file` for overwriting, after checking that its first `need`
    /// bytes are inside i_size and all written extents (the ext4 mapper
    /// refuses anything else), so that a run fails before it writes.
    pub fn open_file(&self, file: &str, need: u64) -> anyhow::Result<Arc<Ext4File>> {
        let f = self
            .fs
            .open_file(file)
            .with_context(|| format!("cannot open {file} in {}", self.path.display()))?;
        let size = bufwrite_engine::Mapper::size(f.as_ref());
        if size < need {
            anyhow::bail!(
                "{file} in {} holds {size} bytes; this run overwrites its first {need} bytes \
                 and cannot grow it (make the file at least {need} bytes)",
                self.path.display()
            );
        }
        bufwrite_engine::Mapper::prepare_write(f.as_ref(), bufwrite_engine::FilePos::new(0), need)
            .with_context(|| {
                format!(
                    "the first {need} bytes of {file} must be written extents (no holes, \
                 no unwritten extents)"
                )
            })?;
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_size_covers_the_file_and_metadata_in_whole_mib() {
        assert_eq!(image_size(4096, 0), 16 << 20);
        assert_eq!(image_size(4096, 2 << 20), 19 << 20);
        assert_eq!(image_size(1024, 1), 17 << 20);
        let big = image_size(4096, 1 << 30);
        assert!(big >= (1 << 30) + (1 << 28) && big.is_multiple_of(1 << 20));
    }

    #[test]
    fn a_missing_tool_names_e2fsprogs() {
        let e = find_tool("mkfs.bufwrite-no-such-tool")
            .unwrap_err()
            .to_string();
        assert!(e.contains("install e2fsprogs"), "{e}");
    }
}
