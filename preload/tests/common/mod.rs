//! What the preload tests share: the built library and a fresh image.

use bufwrite_testkit::e2fs;
use std::path::PathBuf;

/// The library beside the test executable: `cargo test` builds the cdylib
/// into `target/<profile>/deps/` before the integration tests run (only
/// `cargo build` copies it up one level, which is the fallback).
pub fn so() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let candidates = [
        deps.join("libbufwrite_preload.so"),
        deps.parent().unwrap().join("libbufwrite_preload.so"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("libbufwrite_preload.so not found in {candidates:?}"))
        .clone()
}

/// A temp dir holding a fresh 64 MiB ext4 image with 4 KiB blocks.
pub fn image() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let img = e2fs::mkfs(dir.path(), "img", 4096, "", 64, &[]);
    (dir, img)
}
