//! `bufwrite gaps IMAGE [--json]`: the ext4 iomap feature-gap report.

use anyhow::Context;
use bufwrite_engine::device::{open_device, Backend, OpenOptions};
use bufwrite_ext4::Ext4;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `bufwrite gaps`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ext4 image file or unmounted block device.
    image: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Opens the image read-only, scans it and prints the report.
pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = OpenOptions {
        backend: Backend::Sync,
        read_only: true,
        ..OpenOptions::default()
    };
    let dev = open_device(&args.image, opts)
        .with_context(|| format!("opening {}", args.image.display()))?;
    let fs = Ext4::open(dev).with_context(|| format!("reading {}", args.image.display()))?;
    let report = fs.gaps().context("scanning inodes")?;
    let text = if args.json {
        report.to_json() + "\n"
    } else {
        report.to_string()
    };
    // A closed pipe (`| head`) is not worth a panic.
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing the report"),
    }
}
