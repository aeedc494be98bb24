//! `BUFWRITE_RECORD`: real programs (dd, cat, sh's redirections) run with
//! the library preloaded, and the trace they leave is checked line by line
//! with the replay grammar's own parser: exact offsets and lengths, one
//! file per trace, chosen by `BUFWRITE_RECORD_FILE` or by the first open,
//! and the calls on other files counted as `not_recorded` in the stats.

mod common;
use bufwrite_engine::trace::{parse, Op};
use bufwrite_testkit::e2fs;
use common::so;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Output};

struct Env {
    dir: tempfile::TempDir,
    img: PathBuf,
}

impl Env {
    fn new() -> Env {
        let (dir, img) = common::image();
        Env { dir, img }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `sh -c SCRIPT` with the library preloaded, recording to `trace`,
    /// asserting success.
    fn sh(&self, script: &str, env: &[(&str, &str)]) -> Output {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(script)
            .current_dir(self.dir.path())
            .env("LD_PRELOAD", so())
            .env("BUFWRITE_IMAGE", &self.img)
            .env("BUFWRITE_MOUNT_AT", "/bufwrite")
            .env("BUFWRITE_STATS", self.path("stats.jsonl"))
            .env("BUFWRITE_RECORD", self.path("trace"))
            .env_remove("BUFWRITE_RECORD_FILE");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{script}: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn trace(&self) -> String {
        std::fs::read_to_string(self.path("trace")).unwrap()
    }

    /// The sum of `"not_recorded":N` over every process's stats line.
    fn not_recorded(&self) -> u64 {
        let stats = std::fs::read_to_string(self.path("stats.jsonl")).unwrap();
        stats
            .match_indices("\"not_recorded\":")
            .map(|(i, k)| {
                let rest = &stats[i + k.len()..];
                let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap();
                rest[..end].parse::<u64>().unwrap()
            })
            .sum()
    }
}

fn ops(text: &str) -> Vec<Op> {
    parse(text).unwrap().into_iter().map(|l| l.op).collect()
}

#[test]
fn dd_then_cat_record_sixteen_exact_pwrites_and_the_reads() {
    let env = Env::new();
    let copy = env.path("copy");
    env.sh(
        &format!(
            "dd if=/dev/urandom of=/bufwrite/f bs=4k count=16 status=none && cat /bufwrite/f > {}",
            copy.display()
        ),
        &[],
    );
    let text = env.trace();
    assert_eq!(text.lines().next(), Some("# file /bufwrite/f"), "{text}");
    let ops = ops(&text);
    let writes: Vec<_> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Pwrite { off, len, seed } => Some((*off, *len, *seed)),
            _ => None,
        })
        .collect();
    assert_eq!(writes.len(), 16, "{text}");
    for (i, (off, len, _)) in writes.iter().enumerate() {
        assert_eq!((*off, *len), (i as u64 * 4096, 4096), "{text}");
    }
    let seeds: HashSet<u64> = writes.iter().map(|w| w.2).collect();
    assert_eq!(seeds.len(), 16, "every write has its own seed");
    // dd opened with O_TRUNC (and ftruncates to its seek): size 0 first.
    assert_eq!(ops[0], Op::Truncate { size: 0 }, "{text}");
    // cat reads from 0 until a read at EOF returns nothing; each read
    // starts where the bytes of the one before ended.
    let reads: Vec<_> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Read { off, len } => Some((*off, *len)),
            _ => None,
        })
        .collect();
    assert!(reads.len() >= 2, "{text}");
    assert_eq!(reads[0].0, 0);
    assert_eq!(reads.last().unwrap().0, 16 * 4096, "{text}");
    for w in reads.windows(2) {
        assert_eq!(w[1].0, (w[0].0 + w[0].1).min(16 * 4096), "{text}");
    }
    // Reads come after every write (dd exited before cat started).
    let first_read = ops.iter().position(|o| o.name() == "read").unwrap();
    assert!(ops[first_read..].iter().all(|o| o.name() == "read"));
    assert_eq!(std::fs::read(&copy).unwrap(), e2fs::dump(&env.img, "/f"));
    assert_eq!(env.not_recorded(), 0);
}

#[test]
fn the_first_file_opened_is_recorded_and_appends_are_exact() {
    let env = Env::new();
    env.sh(
        "echo hi > /bufwrite/a && echo hi >> /bufwrite/a && \
         dd if=/dev/zero of=/bufwrite/b bs=1k count=2 status=none && cat /bufwrite/a",
        &[],
    );
    let text = env.trace();
    assert_eq!(text.lines().next(), Some("# file /bufwrite/a"), "{text}");
    let ops = ops(&text);
    assert_eq!(ops.len(), 5, "{text}");
    assert_eq!(ops[0], Op::Truncate { size: 0 });
    assert!(
        matches!(ops[1], Op::Pwrite { off: 0, len: 3, .. }),
        "{text}"
    );
    // The O_APPEND write lands at EOF: offset 3, although the fd's
    // position was 0.
    assert!(
        matches!(ops[2], Op::Pwrite { off: 3, len: 3, .. }),
        "{text}"
    );
    // cat's reads: the length asked for, at the position the last one
    // left (the second one at EOF).
    assert!(
        matches!(ops[3], Op::Read { off: 0, len } if len >= 6),
        "{text}"
    );
    assert!(matches!(ops[4], Op::Read { off: 6, .. }), "{text}");
    // dd's calls on b (its ftruncate, two writes) were not recorded.
    assert!(env.not_recorded() >= 3, "{}", env.not_recorded());
}

#[test]
fn record_file_names_the_one_file_recorded() {
    let env = Env::new();
    env.sh(
        "echo one > /bufwrite/a && dd if=/dev/zero of=/bufwrite/b bs=4k count=3 \
         conv=notrunc status=none && cat /bufwrite/a > /dev/null",
        &[("BUFWRITE_RECORD_FILE", "/bufwrite/b")],
    );
    let text = env.trace();
    assert_eq!(text.lines().next(), Some("# file /bufwrite/b"), "{text}");
    let ops = ops(&text);
    let want: Vec<(u64, u64)> = (0..3).map(|i| (i * 4096, 4096)).collect();
    let got: Vec<(u64, u64)> = ops
        .iter()
        .map(|op| match op {
            Op::Pwrite { off, len, .. } => (*off, *len),
            other => panic!("only b's writes are recorded, got {other}: {text}"),
        })
        .collect();
    assert_eq!(got, want);
    assert!(env.not_recorded() >= 2, "a's write and read are counted");
}
