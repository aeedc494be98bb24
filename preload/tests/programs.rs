//! Real programs (sh, dd, cat, cmp, cp, python3, rm) run with the library
//! preloaded on a fresh ext4 image; e2fsprogs then judge the image: the
//! bytes are where the programs put them (`debugfs dump`) and `e2fsck -fn`
//! is clean. The host has no `/bufwrite`: the kernel never saw those paths.
//!
//! The .so: `cargo test` builds the package's lib target (cdylib and rlib
//! are one target) before the integration tests, into the same `deps/`
//! directory as the test executable (`target/debug/deps/
//! libbufwrite_preload.so`; checked: it does not uplift it to
//! `target/debug/`, which only `cargo build` refreshes). So it is found
//! next to the test executable's own path first (fresh, and right for any
//! `CARGO_TARGET_DIR`), then in `target/debug/`.

mod common;
use bufwrite_testkit::e2fs;
use common::so;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MOUNT: &str = "/bufwrite";

struct Env {
    dir: tempfile::TempDir,
    img: PathBuf,
}

impl Env {
    fn new() -> Env {
        let (dir, img) = common::image_off_host(MOUNT);
        Env { dir, img }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn stats(&self) -> PathBuf {
        self.path("stats.jsonl")
    }

    /// `sh -c SCRIPT` with the library preloaded (the shell and every
    /// program it starts), in the temp dir.
    fn sh_with(&self, script: &str, env: &[(&str, &str)]) -> Output {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(script)
            .current_dir(self.dir.path())
            .env("LD_PRELOAD", so())
            .env("BUFWRITE_IMAGE", &self.img)
            .env("BUFWRITE_MOUNT_AT", MOUNT)
            .env("BUFWRITE_STATS", self.stats());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// As `sh_with`, asserting success.
    fn sh(&self, script: &str) -> Output {
        let out = self.sh_with(script, &[]);
        assert!(
            out.status.success(),
            "{script}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// After the programs: the image is clean and the host has no mount
    /// directory.
    fn check_clean(&self) {
        e2fs::fsck_ok(&self.img);
        assert!(!Path::new(MOUNT).exists());
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn shell_redirections_create_and_append() {
    let env = Env::new();
    env.sh("echo hello > /bufwrite/a && echo more >> /bufwrite/a");
    assert_eq!(e2fs::dump(&env.img, "/a"), b"hello\nmore\n");
    // Read back under the preload, through a relative path from a cwd
    // outside the mount and through `..`.
    let out = env.sh("cat /bufwrite/a && cat /bufwrite/x/../a && cd / && cat bufwrite/./a");
    assert_eq!(stdout(&out), "hello\nmore\n".repeat(3));
    // O_TRUNC
    env.sh("echo new > /bufwrite/a");
    assert_eq!(e2fs::dump(&env.img, "/a"), b"new\n");
    env.check_clean();
}

#[test]
fn dd_writes_overwrites_and_cat_cmp_read_back() {
    let env = Env::new();
    let x = env.path("x");
    env.sh("dd if=/dev/urandom of=/bufwrite/b bs=4k count=64 conv=notrunc status=none");
    let b = e2fs::dump(&env.img, "/b");
    assert_eq!(b.len(), 64 * 4096);
    env.sh(&format!("cat /bufwrite/b > {}", x.display()));
    assert_eq!(std::fs::read(&x).unwrap(), b);
    env.sh(&format!("cmp /bufwrite/b {}", x.display()));
    // An overwrite in the middle (conv=notrunc keeps the rest), 1 KiB
    // blocks, not block aligned.
    env.sh("dd if=/dev/zero of=/bufwrite/b bs=1k seek=5 count=3 conv=notrunc status=none");
    let mut want = b.clone();
    want[5 * 1024..8 * 1024].fill(0);
    assert_eq!(e2fs::dump(&env.img, "/b"), want);
    // cmp sees the difference.
    let out = env.sh_with(&format!("cmp /bufwrite/b {}", x.display()), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // dd reading the file back.
    env.sh(&format!(
        "dd if=/bufwrite/b of={} bs=64k status=none",
        x.display()
    ));
    assert_eq!(std::fs::read(&x).unwrap(), want);
    env.check_clean();
}

#[test]
fn cp_in_and_out() {
    let env = Env::new();
    let src = env.path("src");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    env.sh(&format!("cp {} /bufwrite/d", src.display()));
    assert_eq!(e2fs::dump(&env.img, "/d"), data);
    let back = env.path("back");
    env.sh(&format!(
        "cp /bufwrite/d {} && cp /bufwrite/d /bufwrite/e",
        back.display()
    ));
    assert_eq!(std::fs::read(&back).unwrap(), data);
    assert_eq!(e2fs::dump(&env.img, "/e"), data);
    env.check_clean();
}

#[test]
fn python_open_seek_write_read_truncate() {
    let env = Env::new();
    let script = r#"
import os
open('/bufwrite/c', 'w').write('x' * 100000)
f = open('/bufwrite/c', 'r+b')
f.seek(10); f.write(b'HELLO'); f.flush()
f.truncate(50000)
f.seek(0); d = f.read()
assert len(d) == 50000 and d[10:15] == b'HELLO', (len(d), d[:20])
f.close()
st = os.stat('/bufwrite/c')
assert st.st_size == 50000 and st.st_blksize == 4096, st
assert not os.path.exists('/bufwrite/nope')
fd = os.open('/bufwrite/c', os.O_RDONLY)
assert os.lseek(fd, 0, os.SEEK_END) == 50000
assert os.lseek(fd, 100, os.SEEK_DATA) == 100
assert os.lseek(fd, 100, os.SEEK_HOLE) == 50000
try:
    os.lseek(fd, 50000, os.SEEK_DATA); raise SystemExit('SEEK_DATA at EOF')
except OSError as e:
    assert e.errno == 6, e  # ENXIO
assert os.pread(fd, 5, 10) == b'HELLO'
os.close(fd)
print('ok')
"#;
    let out = env.sh(&format!("python3 -c \"{}\"", script.replace('"', "\\\"")));
    assert_eq!(stdout(&out), "ok\n");
    let mut want = vec![b'x'; 50000];
    want[10..15].copy_from_slice(b"HELLO");
    assert_eq!(e2fs::dump(&env.img, "/c"), want);
    env.check_clean();
}

#[test]
fn refused_calls_get_the_fallback_errno() {
    let env = Env::new();
    let script = r#"
import mmap, errno, os
open('/bufwrite/m', 'w').write('abc')
f = open('/bufwrite/m', 'rb')
try:
    mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); raise SystemExit('mapped')
except OSError as e:
    assert e.errno == errno.ENODEV, e
try:
    os.rmdir('/bufwrite/m'); raise SystemExit('rmdir')
except OSError as e:
    assert e.errno == errno.ENOTDIR, e
print('ok')
"#;
    let out = env.sh(&format!("python3 -c \"{}\"", script.replace('"', "\\\"")));
    assert_eq!(stdout(&out), "ok\n");
    // One line about mmap, and it is in the stats' not_served list.
    assert!(stderr(&out).contains("bufwrite-preload: mmap on /bufwrite/m is not served"));
    let stats = std::fs::read_to_string(env.stats()).unwrap();
    assert!(
        stats.contains(r#"{"call":"mmap","path":"/bufwrite/m"}"#),
        "{stats}"
    );
    env.check_clean();
}

#[test]
fn unlink_removes_the_file() {
    let env = Env::new();
    env.sh("echo a > /bufwrite/u && echo b > /bufwrite/v && rm /bufwrite/u");
    let ls = e2fs::debugfs_r(&env.img, "ls -l /");
    assert!(!ls.contains(" u\n") && !ls.contains(" u "), "{ls}");
    assert_eq!(e2fs::dump(&env.img, "/v"), b"b\n");
    let out = env.sh_with("rm /bufwrite/u", &[]);
    assert!(!out.status.success());
    env.check_clean();
}

#[test]
fn other_paths_still_reach_the_kernel() {
    let env = Env::new();
    let plain = env.path("plain");
    std::fs::write(&plain, b"kernel file\n").unwrap();
    let copy = env.path("copy");
    let out = env.sh(&format!(
        "cat {p} && cp {p} {c} && echo appended >> {c} && cat {c}",
        p = plain.display(),
        c = copy.display()
    ));
    assert_eq!(stdout(&out), "kernel file\nkernel file\nappended\n");
    assert_eq!(std::fs::read(&copy).unwrap(), b"kernel file\nappended\n");
    // A name that only looks like the prefix is the kernel's.
    let out = env.sh_with("cat /bufwritex/a", &[]);
    assert!(!out.status.success());
    assert!(
        !stderr(&out).contains("bufwrite-preload"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn stats_line_counts_the_served_calls() {
    let env = Env::new();
    env.sh("dd if=/dev/zero of=/bufwrite/s bs=4k count=16 status=none");
    let stats = std::fs::read_to_string(env.stats()).unwrap();
    let dd = stats
        .lines()
        .find(|l| l.contains(r#""write":16"#))
        .unwrap_or_else(|| panic!("no line with 16 writes: {stats}"));
    assert!(dd.starts_with(r#"{"pid":"#), "{dd}");
    assert!(
        dd.contains(r#""device":{"#) && dd.contains(r#""mem":{"#),
        "{dd}"
    );
    // The data went to the device: at least 64 KiB written.
    let bw: u64 = dd
        .split(r#""bytes_written":"#)
        .nth(1)
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(bw >= 16 * 4096, "{dd}");
}

#[test]
fn bad_configuration_fails_the_first_mount_call_with_one_line() {
    let env = Env::new();
    let out = env.sh_with("cat /bufwrite/a", &[("BUFWRITE_PATH", "ext2")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("bufwrite-preload:"))
        .collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(
        ours[0].contains("BUFWRITE_PATH") && ours[0].contains("ext2"),
        "{err}"
    );
    assert!(err.contains("Input/output error"), "{err}");

    // A missing image: ENOENT, naming the variable.
    let out = env.sh_with("cat /bufwrite/a", &[("BUFWRITE_IMAGE", "/nonexistent/img")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("bufwrite-preload: BUFWRITE_IMAGE"), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
    // Kernel paths are unaffected by the bad configuration.
    let out = env.sh_with("echo ok", &[("BUFWRITE_PATH", "ext2")]);
    assert_eq!(stdout(&out), "ok\n");
}

#[test]
fn every_write_path_serves_dd() {
    for path in ["iomap", "bh-legacy", "bh-tailskip", "bh-seek"] {
        let env = Env::new();
        let out = env.sh_with(
            "dd if=/dev/urandom of=/bufwrite/p bs=1k count=100 status=none && \
             dd if=/dev/zero of=/bufwrite/p bs=512 seek=3 count=1 conv=notrunc status=none",
            &[("BUFWRITE_PATH", path), ("BUFWRITE_ORDER", "2")],
        );
        assert!(out.status.success(), "{path}: {}", stderr(&out));
        let got = e2fs::dump(&env.img, "/p");
        assert_eq!(got.len(), 100 * 1024, "{path}");
        assert!(got[1536..2048].iter().all(|&b| b == 0), "{path}");
        env.check_clean();
    }
}

#[test]
fn stdio_streams_through_fopen() {
    // sed and awk open their files with fopen, whose internal open never
    // reaches an interposed `open`: served through fopencookie streams.
    let env = Env::new();
    let input = env.path("in.txt");
    std::fs::write(&input, "apple\nbanana\ncherry\n").unwrap();
    let out = env.sh(&format!(
        "sed -n 'w /bufwrite/s' {i} && sed 's/a/A/g' /bufwrite/s && \
         awk '{{print $0 > \"/bufwrite/w\"}}' {i} && awk 'END {{print NR}}' /bufwrite/w",
        i = input.display()
    ));
    assert_eq!(stdout(&out), "Apple\nbAnAnA\ncherry\n3\n");
    assert_eq!(e2fs::dump(&env.img, "/s"), b"apple\nbanana\ncherry\n");
    assert_eq!(e2fs::dump(&env.img, "/w"), b"apple\nbanana\ncherry\n");
    env.check_clean();
}

#[test]
fn open_flags_and_fd_operations() {
    let env = Env::new();
    let script = r#"
import os, errno, fcntl
fd = os.open('/bufwrite/f', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
try:
    os.open('/bufwrite/f', os.O_WRONLY | os.O_CREAT | os.O_EXCL); raise SystemExit('excl')
except OSError as e:
    assert e.errno == errno.EEXIST, e
try:
    os.open('/bufwrite/none', os.O_RDONLY); raise SystemExit('enoent')
except OSError as e:
    assert e.errno == errno.ENOENT, e
os.write(fd, b'abc')
try:
    os.read(fd, 1); raise SystemExit('read on O_WRONLY')
except OSError as e:
    assert e.errno == errno.EBADF, e
# dup shares the offset; F_SETFL O_APPEND appends at EOF.
d = os.dup(fd)
os.write(d, b'def')
os.lseek(fd, 0, os.SEEK_SET)
fl = fcntl.fcntl(fd, fcntl.F_GETFL)
assert fl & os.O_ACCMODE == os.O_WRONLY, fl
fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_APPEND)
os.write(d, b'ghi')
assert fcntl.fcntl(d, fcntl.F_GETFL) & os.O_APPEND
# FD_CLOEXEC lives on the fd (the placeholder): os.open sets it, dup not.
assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
os.close(fd)
# The dup still works after the original is closed; on an O_APPEND fd
# pwrite appends whatever the offset (Linux).
os.pwrite(d, b'X', 0)
assert os.fstat(d).st_size == 10
os.fsync(d)
os.close(d)
a = os.open('/bufwrite/g', os.O_WRONLY | os.O_CREAT | os.O_APPEND)
os.write(a, b'12'); os.write(a, b'34')
os.pwrite(a, b'5', 0)
os.close(a)
assert open('/bufwrite/g', 'rb').read() == b'12345'
os.truncate('/bufwrite/g', 3)
assert os.access('/bufwrite/g', os.R_OK | os.W_OK) and not os.access('/bufwrite/nope', os.F_OK)
print('ok')
"#;
    let out = env.sh(&format!("python3 -c \"{}\"", script.replace('"', "\\\"")));
    assert_eq!(stdout(&out), "ok\n", "{}", stderr(&out));
    assert_eq!(e2fs::dump(&env.img, "/f"), b"abcdefghiX");
    assert_eq!(e2fs::dump(&env.img, "/g"), b"123");
    env.check_clean();
}

#[test]
fn shell_fd_numbers_never_clobber_the_image() {
    // `exec 3>FILE` makes the shell dup2 onto fd 3, the number the image
    // would get if the library kept its own fds low.
    let env = Env::new();
    env.sh("exec 3>/bufwrite/f; echo a >&3; exec 4>/bufwrite/g; echo b >&4; echo c >&3");
    assert_eq!(e2fs::dump(&env.img, "/f"), b"a\nc\n");
    assert_eq!(e2fs::dump(&env.img, "/g"), b"b\n");
    env.check_clean();
}

#[test]
fn bufwrite_fds_survive_exec_with_their_shared_offsets() {
    // A shell opens a redirection (in a forked child, or in itself for a
    // group) and execs programs with it as stdout: the fds and their
    // offsets pass to each program, which writes on where the previous
    // one stopped, as on the kernel.
    let env = Env::new();
    let input = env.path("in.txt");
    std::fs::write(&input, "data\n").unwrap();
    let i = input.display();
    env.sh(&format!("cat {i} > /bufwrite/y"));
    assert_eq!(e2fs::dump(&env.img, "/y"), b"data\n");
    // seq writes through glibc's stdout stream (rebound at start-up).
    env.sh("{ seq 2; seq 5 6; } > /bufwrite/s");
    assert_eq!(e2fs::dump(&env.img, "/s"), b"1\n2\n5\n6\n");
    // A group: the builtin echo writes in the shell, cat in children.
    env.sh(&format!(
        "{{ echo one; cat {i}; cat {i}; echo two; }} > /bufwrite/z; \
         exec 3>>/bufwrite/z; cat {i} >&3; echo three >&3; exec 3>&-; cat /bufwrite/z > z.out"
    ));
    let want = "one\ndata\ndata\ntwo\ndata\nthree\n";
    assert_eq!(std::fs::read_to_string(env.path("z.out")).unwrap(), want);
    assert_eq!(e2fs::dump(&env.img, "/z"), want.as_bytes());
    // dd reading a redirected stdin from the mount, two programs in turn
    // on one inherited read offset.
    let out = env.sh("{ head -c 4 > a.out; cat > b.out; } < /bufwrite/z");
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(env.path("a.out")).unwrap(), "one\n");
    assert_eq!(
        std::fs::read_to_string(env.path("b.out")).unwrap(),
        &want[4..]
    );
    env.check_clean();
}

#[test]
fn a_forked_child_takes_the_mount_over_through_inherited_fds() {
    // The parent opens and writes, forks; the child writes through the
    // inherited fd (taking the mount over: the parent let go at the fork)
    // and exits; the parent reads everything, and its offset is where the
    // child left it (one open file description, as on the kernel).
    let env = Env::new();
    let script = r#"
import os
fd = os.open('/bufwrite/f', os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b'parent ')
pid = os.fork()
if pid == 0:
    os.write(fd, b'child ' * 1000)
    os.fsync(fd)
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, status
assert os.lseek(fd, 0, os.SEEK_CUR) == 7 + 6000, os.lseek(fd, 0, os.SEEK_CUR)
os.write(fd, b'end')
os.lseek(fd, 0, os.SEEK_SET)
d = os.read(fd, 100000)
assert d == b'parent ' + b'child ' * 1000 + b'end', len(d)
os.close(fd)
print('ok')
"#;
    let out = env.sh(&format!("python3 -c \"{}\"", script.replace('"', "\\\"")));
    assert_eq!(stdout(&out), "ok\n", "{}", stderr(&out));
    let mut want = b"parent ".to_vec();
    want.extend(b"child ".repeat(1000));
    want.extend(b"end");
    assert_eq!(e2fs::dump(&env.img, "/f"), want);
    env.check_clean();
}

#[test]
fn a_second_process_waits_for_the_image_or_is_refused() {
    // One process at a time uses an image: a second one waits for the
    // first to let go (BUFWRITE_WAIT seconds), or with BUFWRITE_WAIT=0 is
    // refused at once with EBUSY and one line naming the image; the image
    // stays intact either way.
    let env = Env::new();
    // Python holds the file (and so the image) while it sleeps (a shell
    // would let go while it runs `sleep`: see the exec hand-over).
    let holder = "import os, time\n\
                  fd = os.open('/bufwrite/held', os.O_WRONLY | os.O_CREAT, 0o644)\n\
                  os.write(fd, b'held\\n'); time.sleep(2); os.write(fd, b'done\\n')\n";
    let mut c = Command::new("python3");
    c.arg("-c")
        .arg(holder)
        .current_dir(env.dir.path())
        .env("LD_PRELOAD", so())
        .env("BUFWRITE_IMAGE", &env.img)
        .env("BUFWRITE_MOUNT_AT", MOUNT);
    let mut h = c.spawn().unwrap();
    // Wait until the holder has the image (its file exists).
    let t0 = std::time::Instant::now();
    loop {
        let o = env.sh_with("test -e /bufwrite/held", &[("BUFWRITE_WAIT", "0")]);
        if !o.status.success() && stderr(&o).contains("in use") {
            break;
        }
        assert!(
            t0.elapsed().as_secs() < 20,
            "the holder never took the image"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let refused = env.sh_with("cat /bufwrite/held", &[("BUFWRITE_WAIT", "0")]);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(err.contains("gave up after"), "{err}");
    assert!(err.contains("Device or resource busy"), "{err}");
    // With a wait it gets the image once the holder exits.
    let waited = env.sh_with("cat /bufwrite/held", &[("BUFWRITE_WAIT", "30")]);
    assert!(waited.status.success(), "{}", stderr(&waited));
    assert!(stderr(&waited).contains("waiting up to 30 s"));
    assert_eq!(stdout(&waited), "held\ndone\n");
    assert!(h.wait().unwrap().success());
    env.check_clean();
}

#[test]
fn python_shutil_and_a_forked_child_that_writes() {
    // shutil.copyfile tries sendfile (EINVAL on bufwrite fds: it falls
    // back to read/write). The parent holds no bufwrite fd at the fork, so
    // the child opens the image itself; the parent sees its data after.
    let env = Env::new();
    let input = env.path("in.txt");
    std::fs::write(&input, "apple\n").unwrap();
    let out_file = env.path("c.out");
    let script = format!(
        r#"
import os, shutil
open('/bufwrite/a', 'wb').write(b'1' * 5000)
shutil.copyfile('/bufwrite/a', '/bufwrite/b')
shutil.copyfile('{i}', '/bufwrite/c')
shutil.copyfile('/bufwrite/c', '{o}')
pid = os.fork()
if pid == 0:
    with open('/bufwrite/a', 'ab') as f:
        f.write(b'2' * 100)
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0
d = open('/bufwrite/a', 'rb').read()
assert d == b'1' * 5000 + b'2' * 100, len(d)
print('ok')
"#,
        i = input.display(),
        o = out_file.display()
    );
    let out = env.sh(&format!("python3 -c \"{}\"", script.replace('"', "\\\"")));
    assert_eq!(stdout(&out), "ok\n", "{}", stderr(&out));
    assert_eq!(std::fs::read(&out_file).unwrap(), b"apple\n");
    assert_eq!(e2fs::dump(&env.img, "/b"), vec![b'1'; 5000]);
    let mut want = vec![b'1'; 5000];
    want.extend_from_slice(&[b'2'; 100]);
    assert_eq!(e2fs::dump(&env.img, "/a"), want);
    env.check_clean();
}

#[test]
fn fallocate_truncate_and_ls() {
    let env = Env::new();
    let out = env.sh(
        "fallocate -l 1M /bufwrite/z && ls -l /bufwrite/z && truncate -s 10000 /bufwrite/t && \
         stat -c %s /bufwrite/t && \
         dd if=/dev/urandom of=/bufwrite/p bs=4k count=4 status=none && \
         fallocate -p -o 4096 -l 4096 /bufwrite/p",
    );
    let text = stdout(&out);
    assert!(
        text.contains(" 1048576 ") && text.ends_with("10000\n"),
        "{text}"
    );
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert_eq!(e2fs::dump(&env.img, "/z"), vec![0u8; 1 << 20]);
    assert_eq!(e2fs::dump(&env.img, "/t"), vec![0u8; 10000]);
    let p = e2fs::dump(&env.img, "/p");
    assert_eq!(p.len(), 16384);
    assert!(p[4096..8192].iter().all(|&b| b == 0));
    assert!(p[..4096].iter().any(|&b| b != 0) && p[8192..].iter().any(|&b| b != 0));
    // ZERO_RANGE is not served: EOPNOTSUPP, which fallocate(1) reports.
    let out = env.sh_with("fallocate -z -l 4096 /bufwrite/p", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Operation not supported"),
        "{}",
        stderr(&out)
    );
    env.check_clean();
}

/// Every binding the dynamic linker makes for `sym` from a program file
/// (not from libc or from this library itself) goes to this library.
fn assert_bound_to_us(ld_debug: &str, sym: &str) {
    let tag = format!("normal symbol `{sym}'");
    let lines: Vec<&str> = ld_debug
        .lines()
        .filter(|l| l.contains("binding file") && l.contains(&tag))
        .filter(|l| !l.contains("binding file /lib") && !l.contains("binding file /usr/lib"))
        .filter(|l| {
            !l.contains("binding file /work")
                && !l.contains("libbufwrite_preload.so [0]: normal symbol `_")
        })
        .collect();
    assert!(!lines.is_empty(), "no binding of {sym}");
    for l in lines {
        assert!(l.contains("libbufwrite_preload.so"), "{sym}: {l}");
    }
}

#[test]
fn the_programs_imports_bind_to_the_library() {
    // LD_DEBUG=bindings proves the interposition took: versioned
    // references (fstat@GLIBC_2.33) bind to the unversioned exports.
    // Binding is lazy: only the symbols a run calls show up.
    let env = Env::new();
    let input = env.path("in.txt");
    std::fs::write(&input, "x\n").unwrap();
    let out = env.sh_with(
        &format!("cp {} /bufwrite/q", input.display()),
        &[("LD_DEBUG", "bindings")],
    );
    assert!(out.status.success());
    let err = stderr(&out);
    for sym in [
        "openat",
        "fstat",
        "read",
        "write",
        "close",
        "ioctl",
        "copy_file_range",
        "posix_fadvise",
    ] {
        assert_bound_to_us(&err, sym);
    }
    let out = env.sh_with(
        "dd if=/bufwrite/q of=/dev/null status=none",
        &[("LD_DEBUG", "bindings")],
    );
    assert!(out.status.success());
    let err = stderr(&out);
    for sym in ["open", "dup2", "lseek", "read", "write", "close"] {
        assert_bound_to_us(&err, sym);
    }
}

#[test]
fn strict_mode_fails_what_is_not_served() {
    let env = Env::new();
    let script = r#"
import mmap, errno
open('/bufwrite/m', 'w').write('abc')
f = open('/bufwrite/m', 'rb')
try:
    mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); raise SystemExit('mapped')
except OSError as e:
    assert e.errno == errno.EOPNOTSUPP, e
print('ok')
"#;
    let out = env.sh_with(
        &format!("python3 -c \"{}\"", script.replace('"', "\\\"")),
        &[("BUFWRITE_STRICT", "1")],
    );
    assert_eq!(stdout(&out), "ok\n", "{}", stderr(&out));
}

#[test]
fn directories_mkdir_ls_cp_r_mv_rm_r_cd_and_python() {
    // Programs that walk trees (mkdir -p walks into each directory it
    // makes; cp -r, rm -r, tar and shutil use the *at calls, fdopendir and
    // readdir), renames of files and directories, and a working directory
    // inside the mount; debugfs sees the same tree, e2fsck is clean and
    // everything removed leaves the free counts where they were.
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("a"), "alpha\n").unwrap();
    std::fs::write(src.join("sub/b"), vec![b'b'; 70_000]).unwrap();
    std::fs::write(src.join("sub/deeper/c"), "gamma\n").unwrap();
    let before = e2fs::debugfs_r(&env.img, "stats");
    let free = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("Free blocks:"))
            .map(str::to_owned)
    };
    let out = env.sh("mkdir -p /bufwrite/x/y && echo hi > /bufwrite/x/y/f && \
         cp -r src /bufwrite/s && diff -r src /bufwrite/s && \
         mv /bufwrite/s/a /bufwrite/x/a2 && mv /bufwrite/s /bufwrite/s2 && \
         ls /bufwrite && (cd /bufwrite/x && pwd && ls && cat y/f) && \
         mkdir /bufwrite/t && tar -C src -cf - . | tar -C /bufwrite/t -xf - && \
         find /bufwrite/t -type f | sort && \
         rmdir /bufwrite/x 2>/dev/null; echo rmdir=$?");
    let text = stdout(&out);
    assert!(text.contains("lost+found\ns2\nx\n"), "{text}");
    assert!(text.contains("/bufwrite/x\na2\ny\nhi\n"), "{text}");
    assert!(
        text.contains("/bufwrite/t/a\n/bufwrite/t/sub/b\n/bufwrite/t/sub/deeper/c\n"),
        "{text}"
    );
    assert!(text.ends_with("rmdir=1\n"), "{text}");
    let ls = e2fs::debugfs_r(&env.img, "ls -l /s2/sub");
    assert!(ls.contains(" b") && ls.contains(" deeper"), "{ls}");
    assert_eq!(e2fs::dump(&env.img, "/x/a2"), b"alpha\n");
    assert_eq!(e2fs::dump(&env.img, "/s2/sub/b"), vec![b'b'; 70_000]);
    env.check_clean();
    let script = r#"
import os, shutil
shutil.copytree('src', '/bufwrite/p')
assert sorted(os.listdir('/bufwrite/p')) == ['a', 'sub'], os.listdir('/bufwrite/p')
assert sorted(e.name for e in os.scandir('/bufwrite/p/sub')) == ['b', 'deeper']
os.rename('/bufwrite/p/a', '/bufwrite/p/sub/a')
os.replace('/bufwrite/p/sub/a', '/bufwrite/p/sub/b')
assert open('/bufwrite/p/sub/b').read() == 'alpha\n'
try:
    os.rmdir('/bufwrite/p')
    raise SystemExit('rmdir of a non-empty directory worked')
except OSError as e:
    assert e.errno == 39, e
for d in ['/bufwrite/p', '/bufwrite/s2', '/bufwrite/t', '/bufwrite/x']:
    shutil.rmtree(d)
assert os.listdir('/bufwrite') == ['lost+found'], os.listdir('/bufwrite')
print('ok')
"#;
    let out = env.sh(&format!("python3 -c \"{}\"", script.replace('"', "\\\"")));
    assert_eq!(stdout(&out), "ok\n", "{}", stderr(&out));
    env.check_clean();
    assert_eq!(free(&e2fs::debugfs_r(&env.img, "stats")), free(&before));
}
