//! Inodes: mode, size, flags and the 60-byte `i_block` area (extent root,
//! block map or inline data), with metadata_csum verification.

use crate::checksum::{chksum, inode_seed};
use crate::error::{CorruptKind, Ext4Error, Location, Result, Structure};
use crate::util::{hilo, le16, le32};

/// `i_flags` bits bufwrite looks at.
pub mod flags {
    /// fscrypt-encrypted inode.
    pub const ENCRYPT: u32 = 0x800;
    /// Hashed-index (htree) directory.
    pub const INDEX: u32 = 0x1000;
    /// Per-file data journalling (`chattr +j`).
    pub const JOURNAL_DATA: u32 = 0x4000;
    /// Extent-mapped.
    pub const EXTENTS: u32 = 0x80000;
    /// fs-verity file.
    pub const VERITY: u32 = 0x100000;
    /// The inode holds a large extended-attribute value.
    pub const EA_INODE: u32 = 0x200000;
    /// DAX access.
    pub const DAX: u32 = 0x2000000;
    /// Data stored in the inode.
    pub const INLINE_DATA: u32 = 0x10000000;
}

const S_IFMT: u16 = 0xF000;
const S_IFREG: u16 = 0x8000;
const S_IFDIR: u16 = 0x4000;

/// The file type in `i_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A character device node.
    CharDevice,
    /// A block device node.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A type value no file type has (the `i_mode` bits given).
    Unknown(u16),
}

impl FileType {
    /// The type of a raw `i_mode`.
    pub fn of_mode(mode: u16) -> FileType {
        match mode & S_IFMT {
            S_IFREG => FileType::Regular,
            S_IFDIR => FileType::Directory,
            0xA000 => FileType::Symlink,
            0x2000 => FileType::CharDevice,
            0x6000 => FileType::BlockDevice,
            0x1000 => FileType::Fifo,
            0xC000 => FileType::Socket,
            other => FileType::Unknown(other),
        }
    }
}

impl std::fmt::Display for FileType {
    /// With its article: "a symbolic link", "an unknown file type 0xe000".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileType::Regular => f.write_str("a regular file"),
            FileType::Directory => f.write_str("a directory"),
            FileType::Symlink => f.write_str("a symbolic link"),
            FileType::CharDevice => f.write_str("a character device"),
            FileType::BlockDevice => f.write_str("a block device"),
            FileType::Fifo => f.write_str("a named pipe (FIFO)"),
            FileType::Socket => f.write_str("a socket"),
            FileType::Unknown(bits) => write!(f, "an unknown file type (mode bits {bits:#06x})"),
        }
    }
}

/// The inode fields bufwrite uses.
#[derive(Debug, Clone)]
pub struct Inode {
    /// Inode number.
    pub ino: u32,
    /// `i_mode` (type and permissions).
    pub mode: u16,
    /// Hard links.
    pub links: u16,
    /// i_size in bytes.
    pub size: u64,
    /// `i_flags`.
    pub flags: u32,
    /// Generation (part of the checksum seed).
    pub generation: u32,
    /// The raw 60-byte `i_block` area.
    pub block: [u8; 60],
    /// Seed for this inode's extent and directory block checksums.
    pub csum_seed: u32,
}

impl Inode {
    /// Parses the on-disk inode `raw` (the full on-disk inode size) of
    /// number `ino`, read from device byte `offset` (errors name it).
    /// `fs_seed` is `Some` with metadata_csum.
    pub fn parse(ino: u32, raw: &[u8], fs_seed: Option<u32>, offset: u64) -> Result<Inode> {
        let location = Location::Byte(offset);
        let generation = le32(raw, 0x64);
        let seed = inode_seed(fs_seed.unwrap_or(0), ino, generation);
        if let Some(fs_seed) = fs_seed {
            verify(ino, raw, fs_seed, generation, location)?;
        }
        let mut block = [0u8; 60];
        block.copy_from_slice(&raw[0x28..0x64]);
        let size = hilo(le32(raw, 0x6C), le32(raw, 0x4));
        if size > i64::MAX as u64 {
            // The VFS keeps i_size in a signed 64-bit loff_t.
            return Err(Ext4Error::corrupt(
                Structure::Inode { ino },
                location,
                CorruptKind::OutOfRange {
                    field: "i_size",
                    value: size,
                    min: 0,
                    end: i64::MAX as u64 + 1,
                },
            ));
        }
        Ok(Inode {
            ino,
            mode: le16(raw, 0x0),
            links: le16(raw, 0x1A),
            size,
            flags: le32(raw, 0x20),
            generation,
            block,
            csum_seed: seed,
        })
    }

    /// The file type.
    pub fn file_type(&self) -> FileType {
        FileType::of_mode(self.mode)
    }

    /// True for a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    /// True when the inode is in use (has a type and links).
    pub fn in_use(&self) -> bool {
        self.mode != 0 && self.links > 0
    }

    /// True when an `i_flags` bit is set.
    pub fn has_flag(&self, bit: u32) -> bool {
        self.flags & bit != 0
    }

    /// How the file's contents are protected: the one rule the gap report
    /// and [`crate::Ext4::open_file`] share.
    ///
    /// Decided from the inode's own flags, whatever the superblock's
    /// `encrypt` / `verity` features say: the kernel marks the VFS inode
    /// `S_ENCRYPTED` / `S_VERITY` from `EXT4_ENCRYPT_FL` / `EXT4_VERITY_FL`
    /// alone (`ext4_set_inode_flags`, fs/ext4/inode.c) and sends every read
    /// and write of such an inode through fscrypt / fs-verity. A flag
    /// without its feature is an inconsistency (e2fsck reports the encrypt
    /// flag without an encryption context), but the data on disk is still
    /// ciphertext, or still covered by a Merkle tree.
    pub fn protection(&self) -> Protection {
        Protection {
            encrypted: self.has_flag(flags::ENCRYPT),
            verity: self.has_flag(flags::VERITY),
        }
    }
}

/// How an inode's contents are protected (see [`Inode::protection`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Protection {
    /// fscrypt: the blocks hold ciphertext.
    pub encrypted: bool,
    /// fs-verity: the contents are immutable and verified on read.
    pub verity: bool,
}

impl Protection {
    /// True when either applies.
    pub fn any(&self) -> bool {
        self.encrypted || self.verity
    }

    /// Why the file must not be read through bufwrite, if it must not:
    /// without the key its blocks are ciphertext.
    pub fn read_refusal(&self) -> Option<&'static str> {
        self.encrypted.then_some(
            "it is encrypted (fscrypt): its blocks cannot be read or written without the key",
        )
    }

    /// Why the file must not be written through bufwrite, if it must not.
    pub fn write_refusal(&self) -> Option<&'static str> {
        if self.encrypted {
            Some("it is encrypted (fscrypt): bufwrite would write plaintext")
        } else if self.verity {
            Some("it is an fs-verity file: its contents are immutable")
        } else {
            None
        }
    }
}

/// Checks the inode checksum: crc32c over the whole on-disk inode with the
/// checksum fields zeroed, seeded with inode number and generation. The low
/// 16 bits live in the base inode, the high 16 bits in the extra area when
/// `i_extra_isize` reaches them.
fn verify(ino: u32, raw: &[u8], fs_seed: u32, generation: u32, location: Location) -> Result<()> {
    let has_hi = raw.len() > 128 && {
        let extra = usize::from(le16(raw, 0x80));
        128 + extra >= 0x84 && 128 + extra <= raw.len()
    };
    let mut copy = raw.to_vec();
    copy[0x7C] = 0;
    copy[0x7D] = 0;
    if has_hi {
        copy[0x82] = 0;
        copy[0x83] = 0;
    }
    let got = chksum(inode_seed(fs_seed, ino, generation), &copy);
    let lo = u32::from(le16(raw, 0x7C));
    let (want, got) = if has_hi {
        (lo | (u32::from(le16(raw, 0x82)) << 16), got)
    } else {
        (lo, got & 0xFFFF)
    };
    if want != got {
        return Err(Ext4Error::corrupt(
            Structure::Inode { ino },
            location,
            CorruptKind::ChecksumMismatch {
                on_disk: want,
                computed: got,
                bits: if has_hi { 32 } else { 16 },
            },
        ));
    }
    Ok(())
}
