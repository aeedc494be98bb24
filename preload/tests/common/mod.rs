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

/// Panics, naming the Debian package and `.ci/run`, when `tool` cannot be
/// started: the default suite needs what `.ci/run` installs, so a missing
/// tool fails loudly instead of skipping.
// Not every test binary that includes this module calls it.
#[allow(dead_code)]
pub fn require_tool(tool: &str, package: &str) {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if let Err(e) = found {
        panic!(
            "`{tool}` cannot be run ({e}): install the Debian package `{package}` \
             (.ci/run installs it: `apt-get install {package}`)"
        );
    }
}

/// [`image`], after checking that `mount` does not exist on the host (the
/// tests prove the kernel never sees those paths).
#[allow(dead_code)]
pub fn image_off_host(mount: &str) -> (tempfile::TempDir, PathBuf) {
    assert!(
        !std::path::Path::new(mount).exists(),
        "{mount} exists on the host: these tests prove the kernel never sees it"
    );
    image()
}
