//! The gap report on every image variant mkfs can make here, checked
//! against what e2fsprogs says about the same image: the regular files
//! `debugfs ls` lists, the flags `debugfs stat` shows, the features and
//! default mount options `dumpe2fs -h` prints. Every variant parses or is
//! refused with a clear error, never a panic; every file the report
//! counts reads back through bufwrite as debugfs dumps it, or is refused
//! with a clear error. A variant mkfs refuses here is skipped, with a line
//! saying so. Run with `--nocapture` to see the per-variant summary.

use crate::common::*;
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{BlockDevice, File, FileOptions};
use bufwrite_ext4::{Ext4, GapReport};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// One image variant: how to make it and what to do to it afterwards.
struct Variant {
    name: &'static str,
    /// mkfs program and arguments before the image path.
    mkfs: (&'static str, &'static [&'static str]),
    size_mb: u32,
    /// debugfs commands after the files are written; `{dir}` stands for
    /// the directory holding the source files (`src-ea`: 100 KB of xattr
    /// value).
    after: &'static [&'static str],
    /// tune2fs arguments, if any.
    tune: &'static [&'static str],
}

const fn v(
    name: &'static str,
    prog: &'static str,
    args: &'static [&'static str],
    size_mb: u32,
) -> Variant {
    Variant {
        name,
        mkfs: (prog, args),
        size_mb,
        after: &[],
        tune: &[],
    }
}

fn variants() -> Vec<Variant> {
    let e4 = "mkfs.ext4";
    vec![
        v("1k-blocks", e4, &["-b", "1024"], 32),
        v("4k-blocks", e4, &["-b", "4096"], 32),
        v("64k-blocks", e4, &["-b", "65536"], 128),
        v("ext2", "mkfs.ext2", &[], 32),
        v("ext2-style ext4", e4, &["-O", "^has_journal"], 32),
        v("ext3", "mkfs.ext3", &[], 32),
        v("ext3 1k", "mkfs.ext3", &["-b", "1024"], 32),
        v("ext4 without extents", e4, &["-O", "^extent,^64bit"], 32),
        v("inline_data", e4, &["-O", "inline_data"], 32),
        v("encrypt", e4, &["-O", "encrypt"], 32),
        v("verity", e4, &["-O", "verity"], 32),
        v("casefold", e4, &["-O", "casefold"], 32),
        v("bigalloc 4k", e4, &["-O", "bigalloc", "-C", "65536"], 64),
        v(
            "bigalloc 1k",
            e4,
            &["-b", "1024", "-O", "bigalloc", "-C", "65536"],
            64,
        ),
        v("orphan_file", e4, &["-O", "orphan_file"], 32),
        v(
            "quota",
            e4,
            &["-O", "quota", "-E", "quotatype=usrquota:grpquota"],
            32,
        ),
        v(
            "project quota",
            e4,
            &["-O", "quota,project", "-E", "quotatype=prjquota"],
            32,
        ),
        v(
            "orphan_file + all quotas",
            e4,
            &[
                "-O",
                "orphan_file,quota,project",
                "-E",
                "quotatype=usrquota:grpquota:prjquota",
            ],
            32,
        ),
        v("huge_file", e4, &["-O", "huge_file"], 32),
        v("no huge_file", e4, &["-O", "^huge_file"], 32),
        v("no csum, 32-bit", e4, &["-O", "^metadata_csum,^64bit"], 32),
        v("meta_bg", e4, &["-O", "meta_bg,^resize_inode"], 32),
        v("128-byte inodes", e4, &["-I", "128"], 32),
        Variant {
            // A 100 KB value goes to an EA inode.
            after: &["ea_set -f {dir}/src-ea /mid user.big"],
            ..v(
                "ea_inode + large_dir",
                e4,
                &["-O", "ea_inode,large_dir"],
                32,
            )
        },
        v("metadata_csum_seed", e4, &["-O", "metadata_csum_seed"], 32),
        v("fast_commit", e4, &["-O", "fast_commit"], 32),
        v("mmp", e4, &["-O", "mmp"], 32),
        v("no flex_bg", e4, &["-O", "^flex_bg"], 32),
        Variant {
            tune: &["-o", "journal_data"],
            ..v("data=journal default", e4, &[], 32)
        },
        Variant {
            tune: &["-o", "journal_data"],
            ..v(
                "data=journal default, no journal",
                e4,
                &["-O", "^has_journal"],
                32,
            )
        },
        Variant {
            tune: &["-o", "nodelalloc"],
            ..v("nodelalloc default", e4, &[], 32)
        },
        Variant {
            tune: &["-E", "mount_opts=data=journal"],
            ..v("mount_opts data=journal", e4, &[], 32)
        },
        Variant {
            after: &["ssv mount_opts buffered_iomap,nodelalloc"],
            ..v("mount_opts buffered_iomap", e4, &[], 32)
        },
        Variant {
            after: &[
                "set_inode_field /mid flags 0x84000",
                "set_inode_field /small flags 0x2080000",
            ],
            ..v("+j and DAX flags", e4, &[], 32)
        },
        Variant {
            after: &[
                "set_inode_field /mid flags 0x80800",
                "set_inode_field /small flags 0x180000",
            ],
            ..v("encrypt/verity flags without features", e4, &[], 32)
        },
    ]
}

/// What e2fsprogs says about an image.
#[derive(Debug, Default)]
struct Truth {
    /// Regular files in `/`, with their `i_flags`.
    files: Vec<(String, u32)>,
    features: Vec<String>,
    default_mount_opts: String,
    mount_opts: String,
}

fn truth(img: &Path) -> Truth {
    let mut t = Truth::default();
    for l in debugfs_r(img, "ls -p /").lines() {
        // /ino/mode/uid/gid/name/size/
        let f: Vec<&str> = l.split('/').collect();
        if f.len() >= 7 && f[2].starts_with("100") {
            t.files.push((f[5].to_string(), 0));
        }
    }
    for (name, flags) in &mut t.files {
        let stat = debugfs_r(img, &format!("stat /{name}"));
        let hex = stat
            .split("Flags: 0x")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("0");
        *flags = u32::from_str_radix(hex, 16).unwrap();
    }
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(img)
        .output()
        .unwrap();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let value = |k: &str| l.strip_prefix(k).map(|v| v.trim().to_string());
        if let Some(v) = value("Filesystem features:") {
            t.features = v.split_whitespace().map(String::from).collect();
        } else if let Some(v) = value("Default mount options:") {
            t.default_mount_opts = v;
        } else if let Some(v) = value("Mount options:") {
            t.mount_opts = v;
        }
    }
    t
}

impl Truth {
    fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    /// Files upstream's gate (-next v2) would put on iomap under
    /// `buffered_iomap`, computed from e2fsprogs' view alone.
    /// data=journal is a default and a journal is there to honour it.
    fn data_journal(&self) -> bool {
        (self.default_mount_opts.contains("journal_data")
            || self.mount_opts.split(',').any(|o| o == "data=journal"))
            && self.has("has_journal")
    }

    fn eligible(&self) -> usize {
        if self.data_journal()
            || self.has("inline_data")
            || self.has("encrypt")
            || self.has("verity")
        {
            return 0;
        }
        self.files
            .iter()
            .filter(|(_, fl)| {
                fl & 0x80000 != 0 && fl & (0x4000 | 0x800 | 0x100000 | 0x1000_0000) == 0
            })
            .count()
    }

    fn flagged(&self, bits: u32) -> usize {
        self.files.iter().filter(|(_, fl)| fl & bits != 0).count()
    }
}

fn make(dir: &Path, v: &Variant) -> Result<PathBuf, String> {
    let img = dir.join(format!("{}.img", v.name.replace([' ', '/', '+', ','], "_")));
    let (prog, args) = v.mkfs;
    let out = Command::new(prog)
        .args(["-q", "-F"])
        .args(args)
        .arg(&img)
        .arg(format!("{}M", v.size_mb))
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let mut cmds = Vec::new();
    for (name, len, seed) in [
        ("small", 40usize, 1u64),
        ("mid", 5000, 2),
        ("big", 300_000, 3),
    ] {
        let src = dir.join(format!("src-{name}"));
        std::fs::write(&src, pattern(len, seed)).unwrap();
        cmds.push(format!("write {} /{name}", src.display()));
    }
    std::fs::write(dir.join("src-ea"), pattern(100_000, 4)).unwrap();
    let d = dir.display().to_string();
    cmds.extend(v.after.iter().map(|s| s.replace("{dir}", &d)));
    debugfs_w(&img, &cmds);
    if !v.tune.is_empty() {
        let out = Command::new("tune2fs")
            .args(v.tune)
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: tune2fs {:?}: {}",
            v.name,
            v.tune,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(img)
}

/// The report of one row, `name=files`, for the rows that block.
fn blocked(r: &GapReport) -> String {
    let v: Vec<String> = r
        .blocking()
        .map(|g| format!("{}={}", g.name, g.files_affected))
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn row_files(r: &GapReport, prefix: &str) -> u64 {
    r.features
        .iter()
        .find(|g| g.name.starts_with(prefix))
        .map_or(0, |g| g.files_affected)
}

/// Reads every file the report counted through bufwrite and compares it
/// with debugfs dump; files bufwrite cannot map must be refused with an
/// error that names why. Returns a note on what was refused.
fn read_back(img: &Path, fs: &Ext4, dev: &Arc<dyn BlockDevice>, t: &Truth) -> String {
    let mut refused = Vec::new();
    for (name, _) in &t.files {
        let path = format!("/{name}");
        let mapper = match fs.open_file_read_only(&path) {
            Ok(m) => m,
            Err(e) => {
                let s = e.to_string();
                assert!(
                    s.contains("inline") || s.contains("encrypted"),
                    "{path}: unexpected refusal {s}"
                );
                refused.push(format!("{name}: {}", s.split(": ").last().unwrap_or(&s)));
                continue;
            }
        };
        let file = match File::open(dev.clone(), mapper, paths()[0].1(), FileOptions::default()) {
            Ok(f) => f,
            Err(e) => {
                // The engine's File handles 1, 2 and 4 KiB blocks.
                assert!(fs.block_size() > 4096, "{path}: {e}");
                refused.push(format!("{name}: File::open: {e}"));
                continue;
            }
        };
        let model = dump(img, &path);
        let mut buf = vec![0u8; model.len() + 64];
        let n = file.pread(0, &mut buf).unwrap();
        assert!(
            n == model.len() && buf[..n] == model[..],
            "{path}: bufwrite's read differs from debugfs dump"
        );
    }
    if refused.is_empty() {
        String::new()
    } else {
        format!("; not read: {}", refused.join("; "))
    }
}

#[test]
fn every_variant_parses_and_matches_e2fsprogs() {
    let dir = tempfile::tempdir().unwrap();
    let mut summary = Vec::new();
    for v in variants() {
        let img = match make(dir.path(), &v) {
            Ok(img) => img,
            Err(e) => {
                let line = format!("skip {}: mkfs refused it: {e}", v.name);
                eprintln!("{line}");
                summary.push(line);
                continue;
            }
        };
        let t = truth(&img);
        let dev: Arc<dyn BlockDevice> =
            Arc::new(Mem::from_bytes(std::fs::read(&img).unwrap(), 512));
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Ext4::open(dev.clone()).and_then(|fs| fs.gaps().map(|r| (fs, r)))
        }));
        let (fs, r) = match opened {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => panic!("{}: refused: {e}", v.name),
            Err(_) => panic!("{}: the report panicked", v.name),
        };
        assert_eq!(dev.stats().writes, 0, "{}", v.name);
        let name = v.name;
        assert_eq!(
            r.regular_files as usize,
            t.files.len(),
            "{name}: files\n{r}"
        );
        assert_eq!(
            r.iomap_eligible_files as usize,
            t.eligible(),
            "{name}: eligible\n{r}"
        );
        assert_eq!(
            row_files(&r, "journal_data inode flag") as usize,
            t.flagged(0x4000),
            "{name}: +j"
        );
        assert_eq!(
            row_files(&r, "non-extent") as usize,
            t.files
                .iter()
                .filter(|(_, fl)| fl & (0x80000 | 0x1000_0000) == 0)
                .count(),
            "{name}: non-extent"
        );
        if !t.has("encrypt") {
            assert_eq!(
                row_files(&r, "encrypt") as usize,
                t.flagged(0x800),
                "{name}"
            );
        }
        if !t.has("verity") {
            assert_eq!(
                row_files(&r, "verity") as usize,
                t.flagged(0x100000),
                "{name}"
            );
        }
        assert_eq!(
            r.mount_defaults.data_journal,
            t.data_journal(),
            "{name}: data=journal\n{r}"
        );
        if v.after.iter().any(|c| c.starts_with("ea_set")) {
            let ea = r
                .features
                .iter()
                .find(|g| g.name.starts_with("EA inodes"))
                .unwrap();
            assert!(ea.detail.starts_with("1 files"), "{name}: {ea:?}");
            assert!(!ea.blocks_iomap, "{name}: an EA inode is no user file");
        }
        let read = read_back(&img, &fs, &dev, &t);
        let line = format!(
            "{name}: {} files (debugfs ls: {}), eligible {} (from debugfs/dumpe2fs: {}), \
             blocked: {}; defaults: {}{read}",
            r.regular_files,
            t.files.len(),
            r.iomap_eligible_files,
            t.eligible(),
            blocked(&r),
            r.mount_defaults.summary(),
        );
        eprintln!("{line}");
        summary.push(line);
    }
    assert!(summary.len() >= 30, "only {} variants ran", summary.len());
}
