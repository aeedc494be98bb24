//! Directories made, listed, renamed and removed through the ext4 layer,
//! judged by e2fsprogs after every step: `e2fsck -fn` clean, `debugfs ls`
//! and `dump` agree, and the free counts return to where they started.

use crate::common::*;
use bufwrite_engine::{Mount, OpenFlags};
use bufwrite_ext4::{Ext4, Ext4Error};
use std::sync::Arc;

const VARIANTS: &[(u32, &str)] = &[
    (4096, "metadata_csum,64bit"),
    (1024, "^metadata_csum,^64bit"),
    (4096, "^dir_index"),
];

fn names(fs: &Ext4, path: &str) -> Vec<String> {
    let mut v: Vec<String> = fs
        .read_dir(path)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn mkdir_rename_rmdir_are_fsck_clean() {
    for &(bs, features) in VARIANTS {
        let dir = tempfile::tempdir().unwrap();
        let img = mkfs(dir.path(), "d.img", bs, features, 32, &[]);
        let free0 = debugfs_r(&img, "stats");
        let free_line = |s: &str| {
            s.lines()
                .find(|l| l.starts_with("Free blocks:"))
                .map(str::to_owned)
        };
        let dev = device(&img, "sync").unwrap();
        let fs = Arc::new(Ext4::open(dev.clone()).unwrap());
        let mount = Mount::new(dev.clone(), fs.clone());
        let step = |what: &str| {
            bufwrite_engine::Filesystem::sync_fs(&*fs).unwrap();
            fsck_ok(&img);
            eprintln!("{bs} {features}: {what} ok");
        };
        fs.make_dir("/d").unwrap();
        step("mkdir /d");
        assert!(matches!(
            fs.make_dir("/d"),
            Err(Ext4Error::AlreadyExists(_))
        ));
        fs.make_dir("/d/e").unwrap();
        let f = mount
            .open(
                "/d/e/f",
                OpenFlags {
                    create: true,
                    exclusive: true,
                    truncate: false,
                },
                paths()[0].1(),
                Default::default(),
            )
            .unwrap();
        let data = pattern(3 * bs as usize + 17, 9);
        f.pwrite(0, &data).unwrap();
        f.fsync().unwrap();
        drop(f);
        step("file in /d/e");
        assert_eq!(names(&fs, "/d"), [".", "..", "e"]);
        assert_eq!(names(&fs, "/d/e"), [".", "..", "f"]);
        let ls = debugfs_r(&img, "ls -l /d/e");
        assert!(ls.contains(" f"), "{ls}");
        assert!(matches!(fs.remove_dir("/d/e"), Err(Ext4Error::NotEmpty(_))));
        // A file to another directory, then within one, then over another.
        fs.rename("/d/e/f", "/g").unwrap();
        step("rename to /g");
        fs.rename("/g", "/d/h").unwrap();
        step("rename to /d/h");
        fs.create_file("/d/victim").unwrap();
        fs.rename("/d/h", "/d/victim").unwrap();
        step("rename over /d/victim");
        assert_eq!(names(&fs, "/d"), [".", "..", "e", "victim"]);
        assert_eq!(dump(&img, "/d/victim"), data);
        // A directory within its parent; not to another one.
        fs.rename("/d/e", "/d/e2").unwrap();
        step("rename dir");
        assert!(matches!(
            fs.rename("/d/e2", "/e3"),
            Err(Ext4Error::CrossDir(_))
        ));
        fs.remove_dir("/d/e2").unwrap();
        step("rmdir /d/e2");
        fs.unlink_file("/d/victim").unwrap();
        fs.remove_dir("/d").unwrap();
        step("rmdir /d");
        assert_eq!(names(&fs, "/"), [".", "..", "lost+found"]);
        drop(mount);
        drop(fs);
        finish(&img, "sync", &dev);
        drop(dev);
        fsck_ok(&img);
        assert_eq!(free_line(&debugfs_r(&img, "stats")), free_line(&free0));
    }
}
