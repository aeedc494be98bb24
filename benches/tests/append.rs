//! `bufwrite append`: the table and the JSON in the one schema, on a
//! temporary image (mkfs.ext4), and its flag checks.

mod common;
use common::{bufwrite, text};

#[test]
fn append_reports_every_path_and_policy_in_the_one_schema() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("append.json");
    let out = bufwrite(
        &[
            "append",
            "--total",
            "256K",
            "--size",
            "4K,64K",
            "--runs",
            "1",
            "--paths",
            "iomap,bh-legacy",
            "--fsync-every",
            "64K",
            "--json",
            json.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for want in [
        "iomap",
        "bh-legacy",
        "unwritten",
        "ordered",
        "meta blocks/MiB",
        "commits/MiB",
        "log/MiB",
        "logged/MiB",
        "revoked/MiB",
        "unwritten vs ordered (journal on)",
    ] {
        assert!(table.contains(want), "{want} not in {table}");
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // The temporary image has mkfs's journal by default.
    assert_eq!(doc["params"]["journal"], true);
    let rows = doc["results"].as_array().unwrap();
    // 2 paths x 2 policies x 2 sizes.
    assert_eq!(rows.len(), 8);
    for r in rows {
        assert_eq!(r["case"], "append");
        for field in [
            "path",
            "order",
            "block_size",
            "write_size",
            "usecs_per_call",
            "device_writes",
            "walked_heads",
            "policy",
            "fsync_usecs",
            "meta_blocks_per_mib",
        ] {
            assert!(!r[field].is_null(), "{field} missing in {r}");
        }
        // The journal's figures are numbers; every fsync commits.
        for field in [
            "commits",
            "log_blocks",
            "metadata_blocks",
            "revoked",
            "checkpoints",
        ] {
            let v = &r["journal_per_mib"][field];
            assert!(v.is_number(), "journal_per_mib.{field} in {r}");
        }
        assert!(
            r["journal_per_mib"]["commits"].as_f64().unwrap() > 0.0,
            "{r}"
        );
        let vs = &r["vs_ordered"];
        if r["policy"] == "unwritten" {
            for field in [
                "log_blocks",
                "logged_metadata_blocks",
                "commits",
                "meta_blocks",
                "fsync_usecs",
            ] {
                assert!(vs[field].is_number(), "vs_ordered.{field} in {r}");
            }
        } else {
            assert!(vs.is_null(), "{r}");
        }
        // 4 fsyncs of 64 KiB each: every one commits an allocation, so
        // metadata is written, and unwritten writes the inode twice.
        let inode = r["meta_blocks_per_mib"]["inode"].as_f64().unwrap();
        let per_fsync = inode / 4.0 * 256.0 / 1024.0;
        let want = if r["policy"] == "unwritten" { 2.0 } else { 1.0 };
        assert_eq!(per_fsync, want, "inode blocks per fsync in {r}");
        // Buffer heads walk the written blocks; iomap none.
        let heads = r["walked_heads"].as_u64().unwrap();
        assert_eq!(heads == 0, r["path"] == "iomap", "{r}");
    }
}

#[test]
fn append_without_a_journal_reports_no_journal_figures() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("append.json");
    let out = bufwrite(
        &[
            "append",
            "--total",
            "128K",
            "--size",
            "64K",
            "--runs",
            "1",
            "--paths",
            "iomap",
            "--journal",
            "off",
            "--json",
            json.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("unwritten vs ordered (no journal)"));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["params"]["journal"], false);
    let rows = doc["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        // Null, not zeros: there is no journal to cost anything.
        assert!(r["journal_per_mib"].is_null(), "{r}");
        assert!(r["meta_blocks_per_mib"]["total"].is_number(), "{r}");
        if r["policy"] == "unwritten" {
            assert!(r["vs_ordered"]["log_blocks"].is_null(), "{r}");
            assert!(r["vs_ordered"]["meta_blocks"].is_number(), "{r}");
        }
    }
}

#[test]
fn append_flags_are_checked_before_anything_runs() {
    for (args, want) in [
        (
            &["append", "--policy", "journal"][..],
            "unwritten or ordered",
        ),
        (&["append", "--size", "0"][..], "between 1 byte"),
        (
            &["append", "--size", "8M", "--total", "4M"][..],
            "between 1 byte",
        ),
        (&["append", "--runs", "0"][..], "at least 1"),
        (&["append", "--paths", "ext2"][..], "unknown write path"),
        (&["append", "--policy", "ordered,ordered"][..], "twice"),
        (&["append", "--journal", "maybe"][..], "invalid value"),
    ] {
        let out = bufwrite(args, "");
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{args:?}: {want:?} not in {err}");
    }
}

/// An image a kernel crash left with orphans (an interrupted truncate and
/// a file unlinked while open, made with debugfs): `append --image`
/// finishes the list on its writable open, says so on stderr, and leaves
/// the image e2fsck-clean.
#[test]
fn append_on_a_crashed_image_reports_the_orphans_it_finished() {
    use bufwrite_testkit::e2fs::{debugfs_w, fsck_ok, make_orphans, mkfs};
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "orph.img", 4096, "", 32, &[]);
    let src = dir.path().join("src");
    std::fs::write(&src, vec![7u8; 100_000]).unwrap();
    let s = src.display();
    debugfs_w(&img, &[format!("write {s} a"), format!("write {s} b")]);
    let (a, b) = make_orphans(&img, "/a", 5000, "/b");
    let out = bufwrite(
        &[
            "append",
            "--image",
            img.to_str().unwrap(),
            "--total",
            "64K",
            "--size",
            "4K",
            "--runs",
            "1",
            "--paths",
            "iomap",
            "--policy",
            "ordered",
        ],
        "",
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "finished the orphan list a crash left: inode {a} truncated to 5000 bytes, inode {b} freed"
        )),
        "{err}"
    );
    fsck_ok(&img);
}
