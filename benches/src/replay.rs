//! `bufwrite replay`: applies a trace of writes, reads and fsyncs to a new,
//! empty Flat file (`--mem`, `--device`) or to a file in an ext4 image
//! (`--image PATH --file /f`) and prints `read OFF LEN HASH` for each read.

use crate::image::Ext4Image;
use crate::setup::{self, CommonArgs, Target};
use crate::trace::{self, Line, Op};
use anyhow::Context;
use bufwrite_engine::File;
use std::io::{Read, Write};
use std::path::PathBuf;

/// Arguments of `bufwrite replay`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["mem", "device", "image"]))]
pub struct Args {
    /// Run on a RAM device of SIZE bytes (suffixes K, M, G): the file starts
    /// empty and can grow to SIZE.
    #[arg(long, value_name = "SIZE", value_parser = setup::parse_size)]
    pub mem: Option<u64>,
    /// Run on this image file or block device: the file starts empty and
    /// can grow to the device's size. Its old contents are overwritten.
    #[arg(long, value_name = "PATH")]
    pub device: Option<PathBuf>,
    /// Run on the file --file in this ext4 image or unmounted device: its
    /// size is the inode's and it never grows; writes that would need
    /// allocation (holes, unwritten extents, past EOF) are refused before
    /// anything runs. The block size is the image's.
    #[arg(long, value_name = "PATH", requires = "file")]
    pub image: Option<PathBuf>,
    /// The file inside --image, e.g. /dir/f.
    #[arg(long, value_name = "/f", requires = "image")]
    pub file: Option<String>,
    /// The write path.
    #[arg(long, default_value = "iomap")]
    pub path: String,
    /// Read the trace from FILE instead of stdin.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub timing: crate::replay_timing::TimingArgs,
}

/// Runs the command.
pub fn run(mut args: Args) -> anyhow::Result<()> {
    crate::paths::make_path(&args.path)?;
    crate::report::check_json_path(
        args.timing.json.as_deref(),
        &[args.image.as_deref(), args.device.as_deref()],
    )?;
    let text = read_trace(args.trace.as_deref())?;
    // The whole trace is checked before anything touches the file.
    let lines = trace::parse(&text)?;
    if args.timing.timing {
        // Every path replays on a fresh file made from the same flags.
        let timing = std::mem::take(&mut args.timing);
        let (order, bs) = (args.common.order, args.common.block_size);
        return crate::replay_timing::run(&lines, &timing, order, bs, |path| {
            args.path = path.to_string();
            open_file(&args)
        });
    }
    let (file, _image) = open_file(&args)?;
    if args.image.is_some() {
        // The image is the user's filesystem: a trace that would fail part
        // way must not leave it half written, so every write is checked
        // against the ext4 mapper first (positions are known statically).
        check_writes(&file, &lines)?;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = lines.iter().try_for_each(|line| {
        apply(&file, line, &mut out)
            .with_context(|| format!("trace line {} ({}) failed", line.number, describe(&line.op)))
    });
    // The reads before a failure are still printed.
    out.flush().context("cannot write to stdout")?;
    result
}

fn read_trace(path: Option<&std::path::Path>) -> anyhow::Result<String> {
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

/// The file the trace runs on, and the ext4 image it lives in (kept open
/// for as long as the file is).
fn open_file(args: &Args) -> anyhow::Result<(File, Option<Ext4Image>)> {
    if let Some(image) = &args.image {
        let name = args
            .file
            .as_deref()
            .context("--image needs --file /f: the file inside the image")?;
        let img = Ext4Image::open(image, args.common.backend)?;
        let mapper = img.open_file(name, 0)?;
        let file = File::open(
            std::sync::Arc::clone(&img.device),
            mapper,
            crate::paths::make_path(&args.path)?,
            args.common.file_options(),
        )
        .with_context(|| format!("cannot open {name} in {}", image.display()))?;
        return Ok((file, Some(img)));
    }
    let bs = u64::from(args.common.block_size);
    let (target, size) = match (&args.device, args.mem) {
        (Some(path), _) => (Target::Device(path.clone()), 0),
        (None, Some(size)) => {
            if size == 0 || size % bs != 0 {
                anyhow::bail!(
                    "--mem {size}: the size must be a positive multiple of the block size {bs}"
                );
            }
            (Target::Mem, size)
        }
        (None, None) => anyhow::bail!("give --mem SIZE, --device PATH or --image PATH --file /f"),
    };
    let opened = setup::open_target(&target, size, args.common.backend)?;
    // A device's tail that is not a whole block cannot be part of the file.
    let capacity = opened.device.size() / bs * bs;
    let file = setup::flat_file(&opened.device, 0, capacity, 0, &args.common, &args.path)?;
    Ok((file, None))
}

/// Checks every write of the trace against the file's mapper without
/// running anything: the first one it would refuse is an error naming its
/// trace line.
fn check_writes(file: &File, lines: &[Line]) -> anyhow::Result<()> {
    let mapper = &file.inode().mapper;
    let mut pos = file.position();
    for line in lines {
        let range = match &line.op {
            Op::Pwrite { off, len, .. } => Some((*off, *len)),
            Op::Write { len, .. } => Some((pos, *len)),
            Op::Writev { lens, .. } => Some((pos, lens.iter().sum())),
            Op::Seek { off } => {
                pos = *off;
                None
            }
            Op::Read { .. } | Op::Fsync => None,
        };
        let Some((off, len)) = range else { continue };
        let checked = off
            .checked_add(len)
            .context("the write's end overflows 64 bits")
            .and_then(|_| Ok(mapper.prepare_write(off, len)?));
        checked.with_context(|| {
            format!(
                "trace line {} ({}) would fail, so nothing was run",
                line.number,
                describe(&line.op)
            )
        })?;
        if !matches!(line.op, Op::Pwrite { .. }) {
            pos += len;
        }
    }
    Ok(())
}

fn apply(file: &File, line: &Line, out: &mut impl Write) -> anyhow::Result<()> {
    // One executor of the trace grammar: `replay --timing` times the same calls.
    crate::replay_timing::timed(file, &line.op, out).map(|_| ())
}

fn describe(op: &Op) -> String {
    match op {
        Op::Pwrite { off, len, seed } => format!("pwrite {off} {len} {seed}"),
        Op::Write { len, seed } => format!("write {len} {seed}"),
        Op::Seek { off } => format!("seek {off}"),
        Op::Writev { seed, lens } => {
            let lens: Vec<String> = lens.iter().map(u64::to_string).collect();
            format!("writev {seed} {}", lens.join(" "))
        }
        Op::Read { off, len } => format!("read {off} {len}"),
        Op::Fsync => "fsync".to_string(),
    }
}
