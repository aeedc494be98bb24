//! The feature-gap report names exactly what each image has.

use crate::common::*;
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::BlockDevice;
use bufwrite_ext4::{Ext4, GapReport};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn report(img: &Path) -> GapReport {
    let dev = Arc::new(Mem::from_bytes(std::fs::read(img).unwrap(), 512));
    let r = Ext4::open(dev.clone()).unwrap().gaps().unwrap();
    assert_eq!(dev.stats().writes, 0);
    r
}

/// Makes an image with `mkfs_args`, writes two small and one larger file,
/// runs `after` (debugfs commands) and `tune` (tune2fs args).
fn image(
    dir: &Path,
    name: &str,
    features: &str,
    extra: &[&str],
    after: &[&str],
    tune: &[&str],
) -> std::path::PathBuf {
    let img = mkfs(dir, name, 4096, features, 16, extra);
    let small = dir.join("small");
    std::fs::write(&small, pattern(40, 1)).unwrap();
    let large = dir.join("large");
    std::fs::write(&large, pattern(100_000, 2)).unwrap();
    let mut cmds = vec![
        format!("write {} /s1", small.display()),
        format!("write {} /s2", small.display()),
        "mkdir /d".into(),
        format!("write {} /d/l", large.display()),
    ];
    cmds.extend(after.iter().map(|s| s.to_string()));
    debugfs_w(&img, &cmds);
    if !tune.is_empty() {
        let out = Command::new("tune2fs")
            .args(tune)
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tune2fs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    img
}

fn blocking(r: &GapReport) -> Vec<(String, u64)> {
    r.blocking()
        .map(|g| (g.name.clone(), g.files_affected))
        .collect()
}

fn names(v: &[(&str, u64)]) -> Vec<(String, u64)> {
    v.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

#[test]
fn gaps_name_exactly_what_each_image_has() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(std::path::PathBuf, Vec<(&str, u64)>)> = vec![
        (image(d, "default.img", "", &[], &[], &[]), vec![]),
        (
            image(d, "inline.img", "inline_data", &[], &[], &[]),
            vec![("inline_data", 3)],
        ),
        (
            image(d, "encrypt.img", "encrypt", &[], &[], &[]),
            vec![("encrypt (fscrypt)", 3)],
        ),
        (
            image(d, "verity.img", "verity", &[], &[], &[]),
            vec![("verity (fs-verity)", 3)],
        ),
        (
            image(d, "dj-o.img", "", &[], &[], &["-o", "journal_data"]),
            vec![("data=journal (default mount option)", 3)],
        ),
        (
            image(
                d,
                "dj-e.img",
                "",
                &[],
                &[],
                &["-E", "mount_opts=data=journal"],
            ),
            vec![("data=journal (default mount option)", 3)],
        ),
        (
            image(
                d,
                "jflag.img",
                "",
                &[],
                &["set_inode_field /d/l flags 0x84000"],
                &[],
            ),
            vec![("journal_data inode flag (chattr +j)", 1)],
        ),
        (
            image(d, "noextent.img", "^extent,^64bit", &[], &[], &[]),
            vec![("non-extent (indirect-mapped) files", 3)],
        ),
    ];
    for (img, want) in cases {
        let r = report(&img);
        assert_eq!(blocking(&r), names(&want), "{}:\n{r}", img.display());
        assert_eq!(r.regular_files, 3, "{}", img.display());
        let eligible = if want.is_empty() {
            3
        } else if want[0].1 == 1 {
            2
        } else {
            0
        };
        assert_eq!(r.iomap_eligible_files, eligible, "{}", img.display());
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["features"].as_array().unwrap().len(), r.features.len());
        assert!(r.to_string().contains("feature"));
    }
    // mkfs.ext3 images: no extent feature, journal; files read-only mapped.
    let img = d.join("ext3.img");
    let out = Command::new("mkfs.ext3")
        .args(["-q", "-F"])
        .arg(&img)
        .arg("16M")
        .output()
        .unwrap();
    assert!(out.status.success());
    let large = d.join("large");
    debugfs_w(
        &img,
        &["mkdir /d".into(), format!("write {} /d/l", large.display())],
    );
    let r = report(&img);
    assert_eq!(
        blocking(&r),
        names(&[("non-extent (indirect-mapped) files", 1)])
    );
    let dev = Arc::new(Mem::from_bytes(std::fs::read(&img).unwrap(), 512));
    let fs = Ext4::open(dev.clone()).unwrap();
    let e = fs.open_file("/d/l").unwrap_err().to_string();
    assert!(e.contains("indirect blocks"), "{e}");
    let f = fs.open_file_read_only("/d/l").unwrap();
    let file = bufwrite_engine::File::open(dev, f, paths()[0].1(), Default::default()).unwrap();
    let mut buf = vec![0u8; 100_000];
    assert_eq!(file.pread(0, &mut buf).unwrap(), 100_000);
    assert!(buf == std::fs::read(&large).unwrap());
}

/// A journal that needs recovery refuses writing, naming it.
#[test]
fn needs_recovery_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(
        dir.path(),
        "rec.img",
        "",
        &[],
        &["feature needs_recovery"],
        &[],
    );
    let dev = Arc::new(Mem::from_bytes(std::fs::read(&img).unwrap(), 512));
    // A read-only open does not replay the journal.
    let fs = Ext4::open_read_only(dev.clone()).unwrap();
    let e = fs.open_file("/d/l").unwrap_err().to_string();
    assert!(e.contains("needs recovery"), "{e}");
    assert!(fs.open_file_read_only("/d/l").is_ok());
    // A writable open replays it (the log is empty: it only clears the
    // flag) and may write.
    let fs = Ext4::open(dev).unwrap();
    assert!(fs.recovery().is_some());
    assert!(fs.write_blockers().is_empty(), "{:?}", fs.write_blockers());
}

/// The journal, the three quota files and the orphan file are not user
/// files, even where mke2fs numbered them above `s_first_ino` (project
/// quota 12, orphan file 13 here): one user file is one regular file.
#[test]
fn internal_inodes_are_not_user_files() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(
        dir.path(),
        "quota.img",
        4096,
        "orphan_file,quota",
        16,
        &["-E", "quotatype=usrquota:grpquota:prjquota"],
    );
    let src = dir.path().join("src");
    std::fs::write(&src, pattern(5000, 3)).unwrap();
    debugfs_w(&img, &[format!("write {} /f", src.display())]);
    let r = report(&img);
    assert_eq!(r.regular_files, 1, "{r}");
    assert_eq!(r.iomap_eligible_files, 1, "{r}");
    let mut roles: Vec<&str> = r.internal_inodes.iter().map(|i| i.role.as_str()).collect();
    roles.sort_unstable();
    assert_eq!(
        roles,
        [
            "group quota",
            "journal",
            "orphan file",
            "project quota",
            "user quota"
        ]
    );
    // The numbers are the superblock's, not the classic ones.
    let sb = debugfs_r(&img, "stats");
    for i in &r.internal_inodes {
        let label = match i.role.as_str() {
            "journal" => "Journal inode:",
            "user quota" => "User quota inode:",
            "group quota" => "Group quota inode:",
            "project quota" => "Project quota inode:",
            _ => "Orphan file inode:",
        };
        let line = sb.lines().find(|l| l.starts_with(label)).unwrap();
        assert!(line.trim_end().ends_with(&format!(" {}", i.ino)), "{line}");
    }
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["regular_files"], 1);
    assert_eq!(json["internal_inodes"].as_array().unwrap().len(), 5);
}

/// Without a journal the kernel drops a default data=journal at mount, so
/// it blocks nothing there, wherever the default is stored.
#[test]
fn data_journal_default_without_a_journal_blocks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        ("nj-o.img", vec!["-o", "journal_data"]),
        ("nj-e.img", vec!["-E", "mount_opts=data=journal"]),
    ];
    for (name, tune) in cases {
        let img = image(d, name, "^has_journal", &[], &[], &tune);
        let r = report(&img);
        assert_eq!(blocking(&r), names(&[]), "{name}:\n{r}");
        assert_eq!(r.iomap_eligible_files, 3, "{name}");
        let md = &r.mount_defaults;
        assert!(
            md.wants_data_journal() && !md.journal && !md.data_journal,
            "{name}"
        );
        let row = &r.features[0];
        assert!(
            row.present && !row.blocks_iomap && row.files_affected == 0,
            "{row:?}"
        );
        assert!(row.detail.contains("ignored"), "{row:?}");
        assert!(r.to_string().contains("is ignored"), "{r}");
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["mount_defaults"]["data_mode"], "journal");
        assert_eq!(json["mount_defaults"]["data_journal"], false);
        assert_eq!(json["mount_defaults"]["journal"], false);
        assert_eq!(json["iomap_eligible_files"], 3);
    }
}

/// `buffered_iomap`, `nodelalloc` and `data=journal` in `s_mount_opts` (set
/// with tune2fs for one option, debugfs `ssv` for several, since tune2fs
/// splits -E on commas) are read, and the report says what a mount without
/// options gets.
#[test]
fn stored_mount_options_are_read_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let on = image(
        d,
        "on.img",
        "",
        &[],
        &["ssv mount_opts buffered_iomap,nodelalloc"],
        &[],
    );
    let r = report(&on);
    assert_eq!(blocking(&r), names(&[]), "{r}");
    let md = &r.mount_defaults;
    assert!(md.buffered_iomap && !md.delalloc && md.journal && !md.data_journal);
    assert_eq!(md.mount_opts, "buffered_iomap,nodelalloc");
    assert_eq!((r.iomap_eligible_files, r.iomap_on_default_mount), (3, 3));
    let text = r.to_string();
    assert!(text.contains("once mounted with buffered_iomap"), "{text}");
    assert!(
        text.contains("data=ordered, nodelalloc, buffered_iomap"),
        "{text}"
    );
    assert!(
        text.contains("a mount without options puts 3 files on iomap"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["iomap_on_default_mount"], 3);
    assert_eq!(json["mount_defaults"]["buffered_iomap"], true);
    assert_eq!(json["mount_defaults"]["delalloc"], false);
    assert_eq!(
        json["mount_defaults"]["mount_opts"],
        "buffered_iomap,nodelalloc"
    );

    let dj = image(
        d,
        "on-dj.img",
        "",
        &[],
        &["ssv mount_opts buffered_iomap,data=journal"],
        &[],
    );
    let r = report(&dj);
    assert_eq!(
        blocking(&r),
        names(&[("data=journal (default mount option)", 3)]),
        "{r}"
    );
    let md = &r.mount_defaults;
    assert!(md.buffered_iomap && md.data_journal && !md.delalloc);
    assert_eq!((r.iomap_eligible_files, r.iomap_on_default_mount), (0, 0));
    assert!(
        r.features[0].detail.contains("s_mount_opts"),
        "{:?}",
        r.features[0]
    );

    // The default: iomap is off until mounted with buffered_iomap.
    let plain = image(d, "plain.img", "", &[], &[], &[]);
    let r = report(&plain);
    assert_eq!((r.iomap_eligible_files, r.iomap_on_default_mount), (3, 0));
    assert!(r.mount_defaults.delalloc && !r.mount_defaults.buffered_iomap);
    assert!(
        r.to_string().contains("keeps every file on buffer heads"),
        "{r}"
    );
}

/// A `chattr +j` file is refused by upstream's gate on any mount, and the
/// report says what the flag itself does: nothing under delalloc (the
/// default) or without a journal, data journalling under nodelalloc.
#[test]
fn journal_flag_is_blocked_by_the_gate_with_the_right_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let j = "set_inode_field /d/l flags 0x84000";
    let cases = [
        (
            "j-delalloc.img",
            "",
            vec![],
            "journals nothing: the files use ext4_da_aops",
        ),
        (
            "j-nodelalloc.img",
            "",
            vec!["-o", "nodelalloc"],
            "these files journal their data (ext4_journalled_aops)",
        ),
        (
            "j-nojournal.img",
            "^has_journal",
            vec![],
            "no journal is loaded",
        ),
    ];
    for (name, features, tune, effect) in cases {
        let img = image(d, name, features, &[], &[j], &tune);
        let r = report(&img);
        assert_eq!(
            blocking(&r),
            names(&[("journal_data inode flag (chattr +j)", 1)]),
            "{name}:\n{r}"
        );
        assert_eq!(r.iomap_eligible_files, 2, "{name}");
        let row = r
            .features
            .iter()
            .find(|g| g.name.starts_with("journal_data"))
            .unwrap();
        assert!(row.detail.contains(effect), "{name}: {row:?}");
        assert!(row.why.contains("ext4_enable_buffered_iomap"), "{row:?}");
        assert!(
            row.why
                .contains("with delalloc, the default, it journals nothing"),
            "{row:?}"
        );
        assert!(
            !row.why.contains("stays on the journalled bh aops"),
            "{row:?}"
        );
    }
}

/// An encrypt or verity inode flag without the filesystem feature: the
/// report and `Ext4::open_file` apply the same rule (the inode's flag
/// decides), so a file the report counts as blocked by them is exactly a
/// file open_file refuses for them.
#[test]
fn encrypt_and_verity_flags_one_rule_for_report_and_open() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        ("flag-enc.img", "0x80800", "encrypt (fscrypt)", "encrypted"),
        (
            "flag-ver.img",
            "0x180000",
            "verity (fs-verity)",
            "fs-verity",
        ),
    ];
    for (name, flags, row_name, refusal) in cases {
        let set = format!("set_inode_field /d/l flags {flags}");
        let img = image(d, name, "", &[], &[&set], &[]);
        let r = report(&img);
        assert_eq!(blocking(&r), names(&[(row_name, 1)]), "{name}:\n{r}");
        assert_eq!(r.iomap_eligible_files, 2, "{name}");
        let row = r.features.iter().find(|g| g.name == row_name).unwrap();
        assert!(row.detail.contains("feature is off"), "{row:?}");
        let dev = Arc::new(Mem::from_bytes(std::fs::read(&img).unwrap(), 512));
        let fs = Ext4::open(dev).unwrap();
        for path in ["/s1", "/s2", "/d/l"] {
            let inode = fs.lookup(path).unwrap();
            let blocked = inode.protection().any();
            assert_eq!(blocked, path == "/d/l", "{name} {path}");
            match fs.open_file(path) {
                Ok(_) => assert!(!blocked, "{name}: open_file took {path}"),
                Err(e) => {
                    assert!(blocked, "{name} {path}: {e}");
                    assert!(e.to_string().contains(refusal), "{name} {path}: {e}");
                }
            }
        }
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let jrow = json["features"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == row_name)
            .unwrap()
            .clone();
        assert_eq!(jrow["files_affected"], 1);
        assert_eq!(jrow["present"], true);
    }
}

/// DAX and bigalloc are no gaps, and their rows say which version of the
/// gate each statement comes from.
#[test]
fn dax_and_bigalloc_rows_name_the_gate_versions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dax = image(
        d,
        "dax.img",
        "",
        &[],
        &["set_inode_field /d/l flags 0x2080000"],
        &[],
    );
    let r = report(&dax);
    assert_eq!(blocking(&r), names(&[]), "{r}");
    assert_eq!(r.iomap_eligible_files, 3);
    let row = r
        .features
        .iter()
        .find(|g| g.name == "DAX inode flag")
        .unwrap();
    assert!(
        row.present && !row.blocks_iomap && row.files_affected == 1,
        "{row:?}"
    );
    assert!(
        row.upstream.contains("-next v2") && row.upstream.contains("dropped"),
        "{row:?}"
    );
    assert!(row.why.contains("ext4_dax_aops"), "{row:?}");
    let ba = image(d, "ba.img", "bigalloc", &["-C", "65536"], &[], &[]);
    let r = report(&ba);
    assert_eq!(blocking(&r), names(&[]), "{r}");
    let row = r.features.iter().find(|g| g.name == "bigalloc").unwrap();
    assert!(row.present && !row.blocks_iomap, "{row:?}");
    assert!(row.upstream.contains("refused by RFC v1"), "{row:?}");
    assert!(
        row.upstream
            .contains("accepted from RFC v4 <20240410150313.2820364-2-yi.zhang@huaweicloud.com>"),
        "{row:?}"
    );
    assert!(
        r.to_string().contains("(upstream: refused by RFC v1"),
        "{r}"
    );
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    for g in json["features"].as_array().unwrap() {
        assert!(!g["upstream"].as_str().unwrap().is_empty(), "{g}");
    }
}
