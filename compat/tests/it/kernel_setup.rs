//! Opt-in (`BUFWRITE_ROOT_TESTS=1`; needs root, `losetup`, `mount` and
//! mkfs.ext4): the kernel side of the `kernel_bh_cost` example sets up and
//! tears down, and the kernel's page cache holds the folio sizes the
//! example compares: one 2 MiB folio for the file written in one 2 MiB
//! write, 4 KiB folios for the file written in 4 KiB writes. Nothing is
//! timed here. Skipped (with a line saying so) otherwise.

#[path = "../../examples/kernel_bh_cost/setup.rs"]
mod setup;

use setup::{Fill, KernelExt4, FILE_SIZE};
use std::os::unix::fs::FileExt;

fn enabled() -> bool {
    std::env::var_os("BUFWRITE_ROOT_TESTS").is_some_and(|v| v == "1")
}

#[test]
fn the_kernel_caches_the_one_write_file_as_a_2mib_folio() {
    if !enabled() {
        eprintln!("skip: set BUFWRITE_ROOT_TESTS=1 to run (needs root, losetup and mount)");
        return;
    }
    let fs = KernelExt4::create(std::path::Path::new("/var/tmp")).unwrap();
    let mount_point = fs.dir().to_path_buf();
    let (big, big_huge) = fs.make_file("folio2m", Fill::OneWrite).unwrap();
    assert!(big_huge >= 2048, "FileHugePages rose only {big_huge} kB");
    let (small, small_huge) = fs.make_file("folio4k", Fill::PageWrites).unwrap();
    assert!(
        small_huge < 2048,
        "FileHugePages rose {small_huge} kB for 4 KiB writes"
    );
    // The overwrites the example times work and land.
    for f in [&big, &small] {
        assert_eq!(f.write_at(&[7u8; 1024], 0).unwrap(), 1024);
        assert_eq!(
            f.write_at(&[8u8; 1024], FILE_SIZE as u64 - 1024).unwrap(),
            1024
        );
        let mut back = [0u8; 1024];
        f.read_exact_at(&mut back, 0).unwrap();
        assert!(back.iter().all(|&b| b == 7));
    }
    drop((big, small));
    let gone = fs.remove_file("folio2m").unwrap();
    assert!(gone >= 2048, "FileHugePages fell only {gone} kB");
    drop(fs);
    // Torn down: the mount point went with the image directory.
    assert!(!mount_point.exists());
}

#[test]
fn a_missing_parent_directory_is_an_error_not_a_panic() {
    if !enabled() {
        eprintln!("skip: set BUFWRITE_ROOT_TESTS=1 to run (needs root, losetup and mount)");
        return;
    }
    let err = KernelExt4::create(std::path::Path::new("/nonexistent/bufwrite"))
        .err()
        .expect("no image can be made there");
    assert!(!err.to_string().is_empty());
}
