//! Handing the fd table to the next program image across exec.
//!
//! exec replaces the process's memory (the fd table, the offsets, the
//! cache) but keeps its kernel fds: a bufwrite fd's placeholder without
//! `FD_CLOEXEC` stays open. So the exec hooks write the open file
//! descriptions those fds name into the environment variable
//! `BUFWRITE_FDS`, and the new image's constructor ([`adopt`]) rebuilds
//! them, detached: each attaches to the mount at its first use. The value
//! carries the pid: exec keeps it, so a process that merely inherits the
//! environment (a `posix_spawn`ed child, whose fds with these numbers are
//! something else) ignores it; and the constructor removes it from the
//! environment. Shared descriptions stay shared (dups are listed under one
//! entry).
//!
//! The offsets themselves stay shared through [`crate::offsets`]' table,
//! whose fd the value names.
//!
//! Format: `1;PID;TABLEFD` then, per open file description, `;POS,SLOT,
//! FLAGS,INO,MODE,REC,REL,PATH,FD.FD...` with REL and PATH hex-encoded (any
//! bytes) and SLOT -1 for a private offset.

use crate::state::{self, OpenFile};
use libc::c_int;
use std::sync::Arc;

/// The environment variable.
pub const VAR: &str = "BUFWRITE_FDS";

/// One open file description handed across an exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handed {
    /// The file offset (if it is not in the shared table).
    pub pos: u64,
    /// Its slot in the family's offset table.
    pub slot: Option<usize>,
    /// The status flags.
    pub flags: c_int,
    /// The inode number (checked when the file attaches again).
    pub ino: u64,
    /// The inode's mode.
    pub mode: u32,
    /// It is the recorded file.
    pub recorded: bool,
    /// The name inside the mount.
    pub rel: String,
    /// The path the program used.
    pub path: String,
    /// The fds that name it.
    pub fds: Vec<c_int>,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The value of [`VAR`] for `entries` (fd, description) in process `pid`
/// whose offset table is `table_fd`; `None` when there are none.
pub fn encode(pid: i64, table_fd: c_int, entries: &[(c_int, Arc<OpenFile>)]) -> Option<String> {
    let mut groups: Vec<(Arc<OpenFile>, Vec<c_int>)> = Vec::new();
    for (fd, of) in entries {
        match groups.iter_mut().find(|(g, _)| Arc::ptr_eq(g, of)) {
            Some((_, fds)) => fds.push(*fd),
            None => groups.push((Arc::clone(of), vec![*fd])),
        }
    }
    if groups.is_empty() {
        return None;
    }
    let mut s = format!("1;{pid};{table_fd}");
    for (of, fds) in groups {
        let fds: Vec<String> = fds.iter().map(c_int::to_string).collect();
        s.push_str(&format!(
            ";{},{},{},{},{},{},{},{},{}",
            *of.pos(),
            of.offset_slot().map_or(-1, |i| i as i64),
            of.flags(),
            of.ino,
            of.mode,
            u8::from(of.recorded),
            hex(&of.rel()),
            hex(&of.path),
            fds.join(".")
        ));
    }
    Some(s)
}

/// Parses a value of [`VAR`]: the offset table's fd and the descriptions,
/// if it was written by process `pid` (else an empty list). A malformed
/// value is an error.
pub fn decode(value: &str, pid: i64) -> Result<(c_int, Vec<Handed>), String> {
    let mut parts = value.split(';');
    if parts.next() != Some("1") {
        return Err("unknown format version".into());
    }
    let writer: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or("no pid")?;
    let table_fd: c_int = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or("no offset table fd")?;
    if writer != pid {
        return Ok((-1, Vec::new()));
    }
    let handed = parts
        .map(|e| {
            let f: Vec<&str> = e.split(',').collect();
            let [pos, slot, flags, ino, mode, rec, rel, path, fds] = f[..] else {
                return Err(format!("entry {e:?}: expected 9 fields"));
            };
            let bad = |what: &str| format!("entry {e:?}: bad {what}");
            Ok(Handed {
                pos: pos.parse().map_err(|_| bad("offset"))?,
                slot: match slot.parse::<i64>().map_err(|_| bad("slot"))? {
                    -1 => None,
                    i => Some(usize::try_from(i).map_err(|_| bad("slot"))?),
                },
                flags: flags.parse().map_err(|_| bad("flags"))?,
                ino: ino.parse().map_err(|_| bad("inode"))?,
                mode: mode.parse().map_err(|_| bad("mode"))?,
                recorded: rec == "1",
                rel: unhex(rel).ok_or_else(|| bad("name"))?,
                path: unhex(path).ok_or_else(|| bad("path"))?,
                fds: fds
                    .split('.')
                    .map(|d| d.parse().map_err(|_| bad("fd")))
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((table_fd, handed))
}

/// True if `fd` is open and is a placeholder (`/dev/null`).
fn is_placeholder(fd: c_int) -> bool {
    // SAFETY: fstat into a zeroed stat buffer of the right type.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; an invalid fd is an error return, nothing more.
    let r = unsafe { libc::syscall(libc::SYS_fstat, fd, &mut st as *mut libc::stat) };
    r == 0
        && st.st_mode & libc::S_IFMT == libc::S_IFCHR
        && libc::major(st.st_rdev) == 1
        && libc::minor(st.st_rdev) == 3
}

/// The constructor's part: rebuilds the descriptions the previous image
/// of this process handed over, and removes [`VAR`] from the environment.
/// An fd that is no longer a placeholder is skipped (the program closed
/// or replaced it before the exec, with a call not hooked).
pub fn adopt() {
    let Ok(value) = std::env::var(VAR) else {
        return;
    };
    // SAFETY: the constructor runs before the program's threads exist;
    // the name is a valid C string.
    unsafe { libc::unsetenv(c"BUFWRITE_FDS".as_ptr()) };
    let (table_fd, handed) = match decode(&value, crate::real::sys_getpid()) {
        Ok(h) => h,
        Err(e) => {
            crate::real::log_line(&format!("{VAR}: {e}; the inherited bufwrite fds are lost"));
            return;
        }
    };
    if !handed.is_empty() && !crate::offsets::adopt(table_fd) {
        crate::real::log_line(&format!(
            "{VAR}: fd {table_fd} is not the offset table any more; the inherited fds' \
             offsets are this process's own from now on"
        ));
    }
    for h in handed {
        let fds: Vec<c_int> = h
            .fds
            .iter()
            .copied()
            .filter(|fd| is_placeholder(*fd))
            .collect();
        if fds.is_empty() {
            continue;
        }
        let of = Arc::new(OpenFile::inherited(h));
        for fd in fds {
            drop(state::insert_fd(fd, Arc::clone(&of)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_reads_what_encode_writes_and_ignores_other_pids() {
        let v = "1;42;900;10,-1,1025,12,33188,1,2f61,2f627566777269746521,1.5;0,3,0,13,33188,0,2f62,2f62,7";
        let (tfd, h) = decode(v, 42).unwrap();
        assert_eq!(tfd, 900);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].pos, 10);
        assert_eq!(h[0].slot, None);
        assert_eq!(h[1].slot, Some(3));
        assert_eq!(h[0].flags, 1025);
        assert!(h[0].recorded);
        assert_eq!(h[0].rel, "/a");
        assert_eq!(h[0].path, "/bufwrite!");
        assert_eq!(h[0].fds, vec![1, 5]);
        assert_eq!(h[1].fds, vec![7]);
        assert!(decode(v, 43).unwrap().1.is_empty());
    }

    #[test]
    fn decode_refuses_malformed_values() {
        for v in [
            "",
            "2;1;3",
            "1;x;3",
            "1;1",
            "1;1;3;1,2",
            "1;1;3;a,-1,0,0,0,0,,,1",
            "1;1;3;0,-2,0,0,0,0,,,1",
            "1;1;3;0,-1,0,0,0,0,zz,,1",
            "1;1;3;0,-1,0,0,0,0,,,",
        ] {
            assert!(decode(v, 1).is_err(), "{v:?}");
        }
    }

    #[test]
    fn hex_round_trips_any_utf8() {
        for s in ["", "/a b", "/ä/\u{1F600}", "a,b;c.d"] {
            assert_eq!(unhex(&hex(s)).as_deref(), Some(s));
        }
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
