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
    /// Print JSON instead of a table: the same rows, plus the stored mount
    /// defaults, the internal inodes skipped and the files on iomap for a
    /// mount without options (fields are only ever added).
    #[arg(long)]
    json: bool,
}

/// Opens the image read-only, scans it and renders the report.
fn render(args: &Args) -> anyhow::Result<String> {
    let opts = OpenOptions {
        backend: Backend::Sync,
        read_only: true,
        ..OpenOptions::default()
    };
    let dev = open_device(&args.image, opts)
        .with_context(|| format!("opening {}", args.image.display()))?;
    let fs = Ext4::open(dev).with_context(|| format!("reading {}", args.image.display()))?;
    let report = fs.gaps().context("scanning inodes")?;
    Ok(if args.json {
        report.to_json() + "\n"
    } else {
        report.to_string()
    })
}

/// Prints the report of `args.image`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let text = render(&args)?;
    // A closed pipe (`| head`) is not worth a panic.
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing the report"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::TempExt4;

    /// The text says "once mounted with buffered_iomap" and what a mount
    /// without options gets; the JSON keeps every field it had and carries
    /// the new ones.
    #[test]
    fn text_and_json_carry_the_same_report() {
        let img = match TempExt4::create(4096, 64 << 10) {
            Ok(img) => img,
            Err(e) => {
                eprintln!("skip: no e2fsprogs here: {e:#}");
                return;
            }
        };
        let args = |json| Args {
            image: img.path().to_path_buf(),
            json,
        };
        let text = render(&args(false)).unwrap();
        assert!(
            text.contains("1 regular files, 1 eligible for the iomap buffered path once mounted with buffered_iomap"),
            "{text}"
        );
        assert!(text.contains("keeps every file on buffer heads"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&render(&args(true)).unwrap()).unwrap();
        for field in [
            "device",
            "block_size",
            "regular_files",
            "iomap_eligible_files",
            "features",
            "bufwrite_write_blockers",
            "iomap_on_default_mount",
            "mount_defaults",
            "internal_inodes",
        ] {
            assert!(json.get(field).is_some(), "no {field} in {json}");
        }
        assert_eq!(json["regular_files"], 1);
        assert_eq!(json["iomap_on_default_mount"], 0);
        assert_eq!(json["mount_defaults"]["buffered_iomap"], false);
        for row in json["features"].as_array().unwrap() {
            for field in [
                "name",
                "present",
                "blocks_iomap",
                "files_affected",
                "detail",
                "why",
                "upstream",
            ] {
                assert!(row.get(field).is_some(), "no {field} in {row}");
            }
        }
        let missing = Args {
            image: img.path().with_extension("missing"),
            json: false,
        };
        let e = format!("{:#}", render(&missing).unwrap_err());
        assert!(e.contains("opening"), "{e}");
    }
}
