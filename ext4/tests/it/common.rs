//! Image building with e2fsprogs (no root, no mounts) and the write paths.

use bufwrite_compat::{BufferHeadPath, Mode};
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::device::{open_device, Backend, OpenOptions};
use bufwrite_engine::{BlockDevice, IomapPath, WritePath};
use std::path::Path;
use std::sync::Arc;

pub use bufwrite_testkit::e2fs::{debugfs_r, debugfs_w, dump, fsck_ok, mkfs};

/// Deterministic bytes for file contents (the engine's trace pattern).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    bufwrite_engine::pattern::fill(seed, 0, &mut v);
    v
}

/// Makes a fresh write path.
pub type MakePath = fn() -> Box<dyn WritePath>;

/// The write paths under test.
pub fn paths() -> Vec<(&'static str, MakePath)> {
    vec![
        ("iomap", || Box::new(IomapPath::new())),
        ("bh-legacy", || Box::new(BufferHeadPath::new(Mode::Legacy))),
        ("bh-tailskip", || {
            Box::new(BufferHeadPath::new(Mode::TailSkip))
        }),
        ("bh-seek", || {
            Box::new(BufferHeadPath::new(Mode::SeekToFrom))
        }),
    ]
}

/// A device over an image file, by backend name. `mem` loads the file
/// into RAM and is written back by [`finish`]. Returns `None` when the
/// backend is unavailable here (io_uring in a sandbox).
pub fn device(img: &Path, backend: &str) -> Option<Arc<dyn BlockDevice>> {
    match backend {
        "mem" => Some(Arc::new(Mem::from_bytes(std::fs::read(img).unwrap(), 512))),
        "sync" => Some(
            open_device(
                img,
                OpenOptions {
                    backend: Backend::Sync,
                    ..Default::default()
                },
            )
            .unwrap(),
        ),
        "uring" => open_device(
            img,
            OpenOptions {
                backend: Backend::Uring,
                direct: true,
                ..Default::default()
            },
        )
        .ok(),
        _ => unreachable!(),
    }
}

/// Writes a `mem` device back to its image file.
pub fn finish(img: &Path, backend: &str, dev: &Arc<dyn BlockDevice>) {
    if backend == "mem" {
        let mut buf = vec![0u8; dev.size() as usize];
        dev.read_at(0, &mut buf).unwrap();
        std::fs::write(img, buf).unwrap();
    }
}

/// Byte offset of the inode of `path` in the image, from `debugfs imap`.
pub fn inode_offset(img: &Path, path: &str, bs: u64) -> u64 {
    let out = debugfs_r(img, &format!("imap {path}"));
    let w: Vec<&str> = out.split_whitespace().collect();
    let blk = w
        .iter()
        .position(|&x| x == "located")
        .map(|i| w[i + 3].trim_end_matches(',').parse::<u64>().unwrap())
        .unwrap();
    let off = w
        .iter()
        .position(|&x| x == "offset")
        .map(|i| u64::from_str_radix(w[i + 1].trim_start_matches("0x"), 16).unwrap())
        .unwrap();
    blk * bs + off
}
