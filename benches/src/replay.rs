//! `bufwrite replay`: applies a trace of writes, reads and fsyncs to a new,
//! empty Flat file (`--mem`, `--device`) or to a file in an ext4 image
//! (`--image PATH --file /f`) and prints `read OFF LEN HASH` for each read.
//!
//! What it writes, and when:
//! - `--image` and `--device` hold the user's data: every write of the trace
//!   is checked before anything runs ([`check_writes`]), so a trace that
//!   would fail leaves them byte for byte as they were.
//! - At the end of a trace that ran to completion, what is still dirty is
//!   written back, as an unmount would (`--no-final-writeback` skips it).
//! - `--timing` never writes the given image or device: each round runs on a
//!   temporary copy (see [`Rounds`]).

use crate::image::Ext4Image;
use crate::replay_timing::HoldsFile;
use crate::setup::{self, CacheArgs, CommonArgs};
use crate::trace::{self, Clipped, Line, Op};
use anyhow::Context;
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{AllocPolicy, BlockDevice, CacheMemory, File, WritePath};
use bufwrite_ext4::Ext4File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Arguments of `bufwrite replay`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["mem", "device", "image"]))]
pub struct Args {
    /// Run on a RAM device of SIZE bytes (suffixes K, M, G; at most 2^64 - 1
    /// bytes): the file starts empty and can grow to SIZE. The device is
    /// sparse: only what is written back takes memory (a write far past the
    /// end of the file still zero-fills the gap in the page cache first).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub mem: Option<u64>,
    /// Run on this image file or block device: the file starts empty and
    /// can grow to the device's size. Its old contents are overwritten.
    /// Every write is checked before anything runs: a trace that would fail
    /// leaves the device untouched.
    #[arg(long, value_name = "PATH")]
    pub device: Option<PathBuf>,
    /// Run on the file --file in this ext4 image or unmounted device: its
    /// size is the inode's; writes past EOF, into holes and into unwritten
    /// extents allocate (delayed allocation, as ext4 does), truncate,
    /// fallocate and punch free and allocate blocks. The block size is the
    /// image's.
    #[arg(long, value_name = "PATH", requires = "file")]
    pub image: Option<PathBuf>,
    /// The file inside --image: an absolute path to a regular file, e.g.
    /// /dir/f (a trailing slash names a directory, as in the kernel's path
    /// walk, so /dir/f/ is refused).
    #[arg(long, value_name = "/f", requires = "image")]
    pub file: Option<String>,
    /// Create --file (an empty regular file) when it does not exist; its
    /// directory must.
    #[arg(long, requires = "file")]
    pub create: bool,
    /// The writeback allocation policy on --image: unwritten (allocate
    /// unwritten extents, convert them when the I/O completes) or ordered
    /// (allocate written extents, committed after the data).
    #[arg(long, default_value = "unwritten", value_parser = parse_policy)]
    pub policy: AllocPolicy,
    /// The write path.
    #[arg(long, default_value = "iomap")]
    pub path: String,
    /// Read the trace from FILE instead of stdin.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Do not write back what is dirty at the end of the trace. By default,
    /// once every line has run, the data no fsync line wrote back is written
    /// back (fsync, as an unmount would) and a failure there is an error
    /// naming the offset; with this flag it is dropped, and the device or
    /// image keeps only what the trace's own fsyncs wrote. A trace that
    /// fails part way never gets the final writeback.
    #[arg(long)]
    pub no_final_writeback: bool,
    /// At the end, print the page cache's memory counters (cached, peak,
    /// dirty, reclaimed, overcommits, throttling, flusher) and the
    /// process's peak RSS (VmHWM) to stderr, as one JSON object on a line
    /// starting `mem-stats:`.
    #[arg(long, conflicts_with = "timing")]
    pub mem_stats: bool,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub timing: crate::replay_timing::TimingArgs,
}

/// Runs the command.
pub fn run(mut args: Args) -> anyhow::Result<()> {
    crate::paths::make_path(&args.path)?;
    if let Some(name) = &args.file {
        check_file_name(name)?;
    }
    crate::report::check_json_path(
        args.timing.json.as_deref(),
        &[args.image.as_deref(), args.device.as_deref()],
    )?;
    let text = read_trace(args.trace.as_deref())?;
    // The whole trace is checked before anything touches the file.
    let lines = trace::parse(&text)?;
    if args.timing.timing {
        let timing = std::mem::take(&mut args.timing);
        return run_timed(&args, &timing, &lines);
    }
    let target = open_given(&args, crate::paths::make_path(&args.path)?)?;
    let file = target.file();
    if args.mem.is_none() {
        // The image or device is the user's: a trace that would fail part
        // way must not leave it half written, so every write is checked
        // against the mapper first (positions are known statically).
        check_writes(file, &lines)?;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = lines.iter().try_for_each(|line| {
        apply(file, line, &mut out)
            .with_context(|| format!("trace line {} ({}) failed", line.number, describe(&line.op)))
    });
    // The reads before a failure are still printed.
    out.flush().context("cannot write to stdout")?;
    if args.no_final_writeback {
        // Dropping the file would write back what the trace left dirty.
        file.set_writeback_on_drop(false);
        if args.mem_stats {
            print_mem_stats(&target.memory);
        }
        return result;
    }
    // What the trace's writes acknowledged is written back even when a
    // later line failed (ENOSPC, say), as an unmount would: the image then
    // holds exactly the bytes of the writes that succeeded.
    let wb = crate::replay_timing::final_writeback(file);
    if args.mem_stats {
        print_mem_stats(&target.memory);
    }
    match (result, wb) {
        (Ok(()), wb) => wb,
        (Err(e), Ok(())) => Err(e.context(
            "the data the lines before it wrote was written back (--no-final-writeback skips that)",
        )),
        (Err(e), Err(wb)) => Err(e.context(format!("{wb:#}"))),
    }
}

/// `--mem-stats`: the cache memory's counters and the peak RSS, one JSON
/// object on stderr (stdout holds the reads).
fn print_mem_stats(memory: &CacheMemory) {
    let mut j = setup::mem_stats_json(&memory.stats());
    j["budget"] = memory.limits().budget.into();
    j["peak_rss"] = setup::peak_rss().into();
    eprintln!("mem-stats: {j}");
}

/// Parses `--policy`.
fn parse_policy(s: &str) -> Result<AllocPolicy, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an allocation policy (expected unwritten or ordered)"))
}

/// `--timing`: the writes are checked against the given target (opened, so
/// its refusals apply, and never written), then every round runs on a
/// fresh copy.
fn run_timed(
    args: &Args,
    timing: &crate::replay_timing::TimingArgs,
    lines: &[Line],
) -> anyhow::Result<()> {
    let rounds = Rounds::new(args)?;
    let given = open_given(args, crate::paths::make_path(&args.path)?)?;
    check_writes(given.file(), lines)?;
    let device_size = given.file().mapping().device.size();
    let (order, bs) = (args.common.order, args.common.block_size);
    crate::replay_timing::run(lines, timing, order, bs, !args.no_final_writeback, |path| {
        rounds.open(args, path, device_size)
    })?;
    // Held to the end: the given image stays open (and whatever guards
    // opening it gives stays taken) while its copies run.
    drop(given);
    Ok(())
}

fn read_trace(path: Option<&Path>) -> anyhow::Result<String> {
    match path {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the trace {}", p.display())),
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the trace from stdin")?;
            Ok(s)
        }
    }
}

/// The file a trace runs on, and what keeps it open: the ext4 image it
/// lives in, the device, and a temporary copy (deleted on drop, after the
/// rest: fields drop in order).
struct Target {
    file: File,
    /// The cache memory the file charges (`--cache-budget`).
    memory: Arc<CacheMemory>,
    _image: Option<Ext4Image>,
    _device: Option<Arc<dyn BlockDevice>>,
    _copy: Option<tempfile::TempPath>,
}

impl HoldsFile for Target {
    fn file(&self) -> &File {
        &self.file
    }
}

impl Target {
    fn new(file: File, memory: Arc<CacheMemory>) -> Self {
        Target {
            file,
            memory,
            _image: None,
            _device: None,
            _copy: None,
        }
    }
}

/// Opens the file on the target the flags name, written through `path`.
fn open_given(args: &Args, path: Box<dyn WritePath>) -> anyhow::Result<Target> {
    if let Some(image) = &args.image {
        let name = args
            .file
            .as_deref()
            .context("--image needs --file /f: the file inside the image")?;
        return open_image(image, name, args, path);
    }
    let device: Arc<dyn BlockDevice> = match (&args.device, args.mem) {
        (Some(dev), _) => setup::open_path(dev, args.common.backend)?,
        (None, Some(size)) => Arc::new(Mem::sparse(mem_size(size, &args.common)?, 512)),
        (None, None) => anyhow::bail!("give --mem SIZE, --device PATH or --image PATH --file /f"),
    };
    open_flat(device, args, path)
}

/// Checks `--mem SIZE` against the block size.
fn mem_size(size: u64, common: &CommonArgs) -> anyhow::Result<u64> {
    let bs = u64::from(common.block_size);
    if size == 0 || !size.is_multiple_of(bs) {
        anyhow::bail!("--mem {size}: the size must be a positive multiple of the block size {bs}");
    }
    Ok(size)
}

/// A new, empty Flat file over the whole of `device`.
fn open_flat(
    device: Arc<dyn BlockDevice>,
    args: &Args,
    path: Box<dyn WritePath>,
) -> anyhow::Result<Target> {
    let bs = u64::from(args.common.block_size);
    // A device's tail that is not a whole block cannot be part of the file.
    let capacity = device.size() / bs * bs;
    let memory = args.cache.memory()?;
    let file = setup::flat_file_in(&memory, &device, 0, capacity, 0, &args.common, path)?;
    let mut t = Target::new(file, memory);
    t._device = Some(device);
    Ok(t)
}

/// The file `name` of the ext4 image at `image`.
fn open_image(
    image: &Path,
    name: &str,
    args: &Args,
    path: Box<dyn WritePath>,
) -> anyhow::Result<Target> {
    let img = Ext4Image::open_with(image, args.common.backend, args.policy)?;
    let mapper = open_image_file(&img, name, args.create)?;
    let memory = args.cache.memory()?;
    let file = File::open_in(
        &memory,
        Arc::clone(&img.device),
        mapper,
        path,
        args.common.file_options(),
    )
    .with_context(|| format!("cannot open {name} in {}", image.display()))?;
    let mut t = Target::new(file, memory);
    t._image = Some(img);
    Ok(t)
}

/// Refuses a `--file` that is not an absolute path: there is no working
/// directory inside an image to resolve a relative one against.
fn check_file_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() {
        anyhow::bail!("--file is empty: give the file's absolute path inside the image, e.g. /f");
    }
    if !name.starts_with('/') {
        anyhow::bail!(
            "--file {}: the path inside the image must be absolute (start with /); there is \
             no working directory inside an image (did you mean {}?)",
            Clipped(name, trace::LINE_CLIP),
            Clipped(&format!("/{name}"), trace::LINE_CLIP)
        );
    }
    Ok(())
}

/// Opens `name` in the image, refusing what the kernel's path walk refuses
/// for a regular file: a name ending in `/` (or `/.`) must resolve to a
/// directory, so for a regular file it is ENOTDIR (`open("/f/")`), and for a
/// directory opening it to write is EISDIR.
fn open_image_file(img: &Ext4Image, name: &str, create: bool) -> anyhow::Result<Arc<Ext4File>> {
    let mut base = name;
    while let Some(s) = base.strip_suffix('/').or_else(|| base.strip_suffix("/.")) {
        base = s;
    }
    if base.len() != name.len() {
        let shown = Clipped(name, trace::LINE_CLIP);
        let inode = img
            .fs
            .lookup(name)
            .with_context(|| format!("cannot open {shown} in {}", img.path.display()))?;
        if inode.is_dir() {
            anyhow::bail!(
                "--file {shown}: is a directory in {}; replay needs a regular file",
                img.path.display()
            );
        }
        anyhow::bail!(
            "--file {shown}: not a directory: a path ending in / names a directory, and {} in {} \
             is not one (to replay on the file, give {})",
            Clipped(base, trace::LINE_CLIP),
            img.path.display(),
            Clipped(base, trace::LINE_CLIP)
        );
    }
    if create {
        match img.fs.lookup(name) {
            Err(bufwrite_ext4::Ext4Error::NotFound(_)) => {
                return img.fs.create_file(name).with_context(|| {
                    format!(
                        "cannot create {} in {}",
                        Clipped(name, trace::LINE_CLIP),
                        img.path.display()
                    )
                });
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot open {} in {}",
                    Clipped(name, trace::LINE_CLIP),
                    img.path.display()
                )))
            }
            Ok(_) => {}
        }
    }
    img.open_file(name, 0)
}

/// How `--timing` gives every round the same starting state without writing
/// the given target.
enum Rounds {
    /// A new sparse RAM device of this size per round.
    Mem(u64),
    /// A temporary copy of this image file per round, next to it.
    ImageCopy(PathBuf),
    /// A new empty file of the device's size per round, next to this device
    /// file. The Flat file starts empty and every byte it can read is one
    /// the trace wrote or the zero-fill of a gap, so the device's old bytes
    /// are never seen: a zeroed file of the same size is the same start.
    EmptyFile(PathBuf),
}

impl Rounds {
    fn new(args: &Args) -> anyhow::Result<Rounds> {
        if let Some(image) = &args.image {
            regular_file(image, "--image")?;
            return Ok(Rounds::ImageCopy(image.clone()));
        }
        if let Some(device) = &args.device {
            regular_file(device, "--device")?;
            return Ok(Rounds::EmptyFile(device.clone()));
        }
        match args.mem {
            Some(size) => Ok(Rounds::Mem(mem_size(size, &args.common)?)),
            None => anyhow::bail!("give --mem SIZE, --device PATH or --image PATH --file /f"),
        }
    }

    /// One round's file, written through `path`. `device_size` is the
    /// given device's size (for [`Rounds::EmptyFile`]).
    fn open(
        &self,
        args: &Args,
        path: Box<dyn WritePath>,
        device_size: u64,
    ) -> anyhow::Result<Target> {
        match self {
            Rounds::Mem(size) => open_flat(Arc::new(Mem::sparse(*size, 512)), args, path),
            Rounds::ImageCopy(image) => {
                let copy = temp_next_to(image)?;
                copy_sparse(image, copy.as_file())?;
                let copy = copy.into_temp_path();
                let name = args.file.as_deref().unwrap_or_default();
                let mut t = open_image(&copy, name, args, path)?;
                t._copy = Some(copy);
                Ok(t)
            }
            Rounds::EmptyFile(device) => {
                let copy = temp_next_to(device)?;
                copy.as_file().set_len(device_size).with_context(|| {
                    format!(
                        "cannot size {} to {device_size} bytes",
                        copy.path().display()
                    )
                })?;
                let copy = copy.into_temp_path();
                let dev = setup::open_path(&copy, args.common.backend)?;
                let mut t = open_flat(dev, args, path)?;
                t._copy = Some(copy);
                Ok(t)
            }
        }
    }
}

/// Refuses `--timing` on anything but a regular file: a block device cannot
/// be copied cheaply, and rounds on the device itself would each start from
/// what the one before wrote.
fn regular_file(path: &Path, flag: &str) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    if !meta.is_file() {
        anyhow::bail!(
            "--timing with {flag} {}: it is not a regular file; --timing runs every round on a \
             temporary copy and will not copy or write a block device (replay on it without \
             --timing, or time on an image file or --mem)",
            path.display()
        );
    }
    Ok(())
}

/// A temporary file in the directory of `path` (the same filesystem, so a
/// round's I/O is timed where the given file lives), or in the system temp
/// dir when that directory is not writable.
fn temp_next_to(path: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let builder = || {
        let mut b = tempfile::Builder::new();
        b.prefix(".bufwrite-timing-").suffix(".img");
        b
    };
    match builder().tempfile_in(dir) {
        Ok(t) => Ok(t),
        Err(e) => {
            eprintln!(
                "bufwrite replay: note: cannot create a temporary copy in {} ({e}); using the \
                 system temp dir",
                dir.display()
            );
            builder()
                .tempfile()
                .context("cannot create a temporary copy in the system temp dir")
        }
    }
}

/// Copies the file at `src` into `dst`, leaving the all-zero MiBs as holes
/// (an image is mostly unused blocks; the copy reads as the original does).
fn copy_sparse(src: &Path, dst: &std::fs::File) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 1 << 20;
    let mut input =
        std::fs::File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .with_context(|| format!("cannot read {} at byte offset {off}", src.display()))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dst.write_all_at(&buf[..n], off).with_context(|| {
                format!(
                    "cannot write the copy of {} at byte offset {off}",
                    src.display()
                )
            })?;
        }
        off += n as u64;
    }
    dst.set_len(off)
        .with_context(|| format!("cannot size the copy of {} to {off} bytes", src.display()))?;
    Ok(())
}

/// Checks every write of the trace against the file without running
/// anything ([`trace::check_write`]: the file-offset limit, then the
/// mapper): the first one it would refuse is an error naming its trace line.
fn check_writes(file: &File, lines: &[Line]) -> anyhow::Result<()> {
    let mut pos = file.position();
    for line in lines {
        let (off, len) = match &line.op {
            Op::Pwrite { off, len, .. } => (*off, *len),
            Op::Write { len, .. } => (pos, *len),
            Op::Writev { lens, .. } => (pos, lens.iter().sum()),
            Op::Seek { off } => {
                pos = *off;
                continue;
            }
            Op::Read { .. }
            | Op::Fsync
            | Op::Fdatasync
            | Op::Truncate { .. }
            | Op::Fallocate { .. }
            | Op::Punch { .. } => continue,
        };
        trace::check_write(file, off, len).with_context(|| {
            format!(
                "trace line {} ({}) would fail, so nothing was run",
                line.number,
                describe(&line.op)
            )
        })?;
        if !matches!(line.op, Op::Pwrite { .. }) {
            // check_write proved pos + len <= 2^63 - 1.
            pos += len;
        }
    }
    Ok(())
}

fn apply(file: &File, line: &Line, out: &mut impl Write) -> anyhow::Result<()> {
    // One executor of the trace grammar: `replay --timing` times the same calls.
    crate::replay_timing::timed(file, &line.op, out).map(|_| ())
}

/// The trace line an op came from, rebuilt for an error message (clipped:
/// a `writev` may have thousands of buffers).
fn describe(op: &Op) -> String {
    let line = match op {
        Op::Pwrite { off, len, seed } => format!("pwrite {off} {len} {seed}"),
        Op::Write { len, seed } => format!("write {len} {seed}"),
        Op::Seek { off } => format!("seek {off}"),
        Op::Writev { seed, lens } => {
            let lens: Vec<String> = lens.iter().map(u64::to_string).collect();
            format!("writev {seed} {}", lens.join(" "))
        }
        Op::Read { off, len } => format!("read {off} {len}"),
        Op::Fsync => "fsync".to_string(),
        other => other.to_string(),
    };
    trace::clip(&line, trace::LINE_CLIP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_empty_file_names_are_refused() {
        assert!(check_file_name("/f").is_ok());
        assert!(check_file_name("//d/./f").is_ok());
        let e = check_file_name("f").unwrap_err().to_string();
        assert!(
            e.contains("must be absolute") && e.contains("\"/f\""),
            "{e}"
        );
        assert!(check_file_name("")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let e = check_file_name(&"x".repeat(10_000))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400, "{e}");
    }

    #[test]
    fn describe_clips_a_long_writev() {
        let op = Op::Writev {
            seed: 1,
            lens: vec![1; 10_000],
        };
        let d = describe(&op);
        assert!(
            d.starts_with("writev 1 1 1") && d.ends_with("(20008 characters)"),
            "{d}"
        );
        assert_eq!(describe(&Op::Fdatasync), "fdatasync");
    }

    #[test]
    fn sparse_copy_reads_back_as_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let mut bytes = vec![0u8; 3 << 20];
        bytes[5] = 1;
        bytes[(2 << 20) + 7] = 9;
        bytes.extend_from_slice(&[0u8; 100]);
        std::fs::write(&src, &bytes).unwrap();
        let dst = temp_next_to(&src).unwrap();
        assert_eq!(dst.path().parent(), Some(dir.path()));
        copy_sparse(&src, dst.as_file()).unwrap();
        assert!(std::fs::read(dst.path()).unwrap() == bytes);
    }
}
