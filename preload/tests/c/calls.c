/*
 * calls: every libc file call libbufwrite_preload.so hooks, with its usual
 * errors, run against a bufwrite mount directory (the library preloaded).
 *
 *   calls MOUNT OUTSIDE [FDS]
 *
 * MOUNT    the mount directory (BUFWRITE_MOUNT_AT); it does not exist on the
 *          host, so anything that reached the kernel with such a path fails.
 * OUTSIDE  a host file outside the mount, written through the same calls.
 * FDS      a side file: the bufwrite fd numbers held open during the "fd
 *          phase" (and one kernel control fd), for a strace check that no
 *          data system call on them reaches the kernel. The phase is marked
 *          by access(FDS.begin) and access(FDS.end) (two kernel calls
 *          strace shows by name). FDS.ctl is the control file.
 *
 * Output (stdout): one "FAIL calls.c:LINE: ..." line per failed check,
 * "LEFT name size seed zeros" for each file left in the mount (its bytes are
 * pat(seed, i), with the listed off:len ranges zero), "OUTSIDE size seed"
 * for the OUTSIDE file, and a closing "ok N checks" or "FAILED: N of M
 * checks". Exit status 1 when any check failed.
 *
 * Built twice by the test: -O1, and -O2 -D_FORTIFY_SOURCE=2 (so the
 * fortified __open_2, __openat_2, __read_chk, __pread_chk ... are called:
 * those need non-constant flags or lengths, hence the volatile values).
 * No output line names a mount path: the strace check looks for the mount
 * directory's name in every traced call.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>

static int failures, checks;
static const char *mnt;     /* the mount directory */
static const char *outside; /* the host file outside the mount */

/* ------------------------------------------------------------ checks */

static void fail_line(int line, const char *what, int err)
{
    printf("FAIL calls.c:%d: %s (errno %d: %s)\n", line, what, err, strerror(err));
    failures++;
}

/* `c` holds. */
#define CHECK(c)                                                                   \
    do {                                                                           \
        checks++;                                                                  \
        errno = 0;                                                                 \
        if (!(c))                                                                  \
            fail_line(__LINE__, #c, errno);                                        \
    } while (0)

/* `expr` evaluates to `want`. */
#define EQ(expr, want)                                                             \
    do {                                                                           \
        checks++;                                                                  \
        errno = 0;                                                                 \
        long long got_ = (long long)(expr);                                        \
        int e_ = errno;                                                            \
        long long want_ = (long long)(want);                                       \
        if (got_ != want_) {                                                       \
            printf("FAIL calls.c:%d: %s = %lld, want %lld (errno %d: %s)\n",       \
                   __LINE__, #expr, got_, want_, e_, strerror(e_));                \
            failures++;                                                            \
        }                                                                          \
    } while (0)

#define OK(expr) EQ(expr, 0)

/* `expr` fails: returns -1 with errno `err`. */
#define FAILS(expr, err)                                                           \
    do {                                                                           \
        checks++;                                                                  \
        errno = 0;                                                                 \
        long long got_ = (long long)(expr);                                        \
        int e_ = errno;                                                            \
        if (got_ != -1 || e_ != (err)) {                                           \
            printf("FAIL calls.c:%d: %s = %lld errno %d (%s), want -1 errno %s\n", \
                   __LINE__, #expr, got_, e_, strerror(e_), #err);                 \
            failures++;                                                            \
        }                                                                          \
    } while (0)

/* A pointer-returning `expr` fails: returns `bad` with errno `err`. */
#define FAILS_PTR(expr, bad, err)                                                  \
    do {                                                                           \
        checks++;                                                                  \
        errno = 0;                                                                 \
        void *got_ = (void *)(expr);                                               \
        int e_ = errno;                                                            \
        if (got_ != (void *)(bad) || e_ != (err)) {                                \
            printf("FAIL calls.c:%d: %s = %p errno %d (%s), want errno %s\n",      \
                   __LINE__, #expr, got_, e_, strerror(e_), #err);                 \
            failures++;                                                            \
        }                                                                          \
    } while (0)

/* A valid fd (>= 0), or a failed check; returns it either way. */
static int fd_ok(int fd, int line)
{
    checks++;
    if (fd < 0)
        fail_line(line, "open/dup returned -1", errno);
    return fd;
}
#define FD(expr) fd_ok((expr), __LINE__)

/* ------------------------------------------------------------ data */

/* The byte at offset `i` of a file written with `seed` (the test's Rust
 * side computes the same). */
static unsigned char pat(unsigned seed, uint64_t i)
{
    return (unsigned char)((i * 131 + seed * 17 + (i >> 12)) % 251);
}

static void fill(unsigned char *b, unsigned seed, uint64_t off, size_t n)
{
    for (size_t k = 0; k < n; k++)
        b[k] = pat(seed, off + k);
}

static int is_pat(const unsigned char *b, unsigned seed, uint64_t off, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (b[k] != pat(seed, off + k))
            return 0;
    return 1;
}

static int is_zero(const unsigned char *b, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (b[k])
            return 0;
    return 1;
}

/* A buffer of `n` pattern bytes from `off` (rotating, so two can be live). */
static unsigned char *pbuf(unsigned seed, uint64_t off, size_t n)
{
    static unsigned char bufs[4][1 << 17];
    static int next;
    unsigned char *b = bufs[next++ % 4];
    if (n > sizeof bufs[0])
        abort();
    fill(b, seed, off, n);
    return b;
}

/* `name` inside the mount, in a string of its own (never freed: the
 * program is short-lived, and callers keep several paths live at once). */
static const char *mp(const char *name)
{
    size_t n = strlen(mnt) + strlen(name) + 2;
    char *b = malloc(n);
    if (!b)
        abort();
    snprintf(b, n, "%s/%s", mnt, name);
    return b;
}

static off_t fsize(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -1;
    return st.st_size;
}

static off_t psize(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    return st.st_size;
}

static off_t pos(int fd)
{
    return lseek(fd, 0, SEEK_CUR);
}

/* The whole file through open/read (a fresh open file), into a malloc'd
 * buffer; its length in *len. */
static unsigned char *slurp(const char *path, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    unsigned char *b = malloc(cap);
    int fd = open(path, O_RDONLY);
    if (fd < 0 || !b) {
        free(b);
        return NULL;
    }
    for (;;) {
        if (n == cap) {
            cap *= 2;
            b = realloc(b, cap);
            if (!b)
                abort();
        }
        ssize_t r = read(fd, b + n, cap - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    *len = n;
    return b;
}

/* The file holds pat(seed) over `size` bytes, with the `zeros` ranges
 * ("off:len,off:len") zero. */
static int holds(const char *path, uint64_t size, unsigned seed, const char *zeros)
{
    size_t n;
    unsigned char *b = slurp(path, &n);
    if (!b || n != size) {
        free(b);
        return 0;
    }
    unsigned char *want = malloc(size ? size : 1);
    fill(want, seed, 0, size);
    for (const char *z = zeros; z && *z;) {
        char *end;
        uint64_t off = strtoull(z, &end, 10);
        uint64_t len = strtoull(end + 1, &end, 10);
        memset(want + off, 0, len);
        z = *end ? end + 1 : end;
    }
    int same = memcmp(b, want, size) == 0;
    free(b);
    free(want);
    return same;
}

/* A file left in the mount: checked here after every fd on it is closed
 * (a fresh open reads what the mount has), then named for the test. */
static void left(const char *name, uint64_t size, unsigned seed, const char *zeros)
{
    checks++;
    if (!holds(mp(name), size, seed, zeros)) {
        printf("FAIL calls.c: %s does not hold %llu bytes of pattern %u (zeros %s)\n",
               name, (unsigned long long)size, seed, zeros);
        failures++;
    }
    printf("LEFT %s %llu %u %s\n", name, (unsigned long long)size, seed, *zeros ? zeros : "-");
}

/* Creates `name` holding `n` bytes of pattern `seed`. */
static void make(const char *name, unsigned seed, size_t n)
{
    int fd = FD(open(mp(name), O_WRONLY | O_CREAT | O_TRUNC, 0644));
    EQ(write(fd, pbuf(seed, 0, n), n), n);
    OK(close(fd));
}

/* Values the compiler cannot see through: the fortified wrappers call the
 * __*_chk / __open_2 variants only for non-constant flags and lengths. */
static volatile int v_rdonly = O_RDONLY;
static volatile int v_rdwr = O_RDWR;
static volatile size_t v_len = 64;
/* Bad iovec counts, hidden from the compiler's own checks. */
static volatile int v_neg = -1, v_toomany = 1025;

/* ------------------------------------------------------------ open */

static void t_open(void)
{
    const char *f = mp("open-a");
    char b[64];
    int fd = FD(open(f, O_WRONLY | O_CREAT | O_EXCL, 0644));
    EQ(write(fd, "hello", 5), 5);
    FAILS(open(f, O_WRONLY | O_CREAT | O_EXCL, 0644), EEXIST);
    FAILS(open64(f, O_RDWR | O_CREAT | O_EXCL, 0644), EEXIST);
    FAILS(openat(AT_FDCWD, f, O_RDONLY | O_CREAT | O_EXCL, 0644), EEXIST);
    FAILS(openat64(AT_FDCWD, f, O_WRONLY | O_CREAT | O_EXCL, 0644), EEXIST);
    OK(close(fd));

    /* O_CREAT alone opens the existing file, contents kept. */
    fd = FD(open(f, O_RDWR | O_CREAT, 0644));
    EQ(read(fd, b, sizeof b), 5);
    CHECK(memcmp(b, "hello", 5) == 0);
    OK(close(fd));
    /* O_TRUNC empties it. */
    fd = FD(open64(f, O_WRONLY | O_TRUNC));
    EQ(fsize(fd), 0);
    OK(close(fd));
    EQ(psize(f), 0);

    /* Missing files. */
    FAILS(open(mp("missing"), O_RDONLY), ENOENT);
    FAILS(open64(mp("missing"), O_RDWR), ENOENT);
    FAILS(openat(AT_FDCWD, mp("missing"), O_WRONLY), ENOENT);
    FAILS(openat64(AT_FDCWD, mp("missing"), O_RDONLY), ENOENT);
    FAILS(open(mp("nodir/x"), O_WRONLY | O_CREAT, 0644), ENOENT);
    FAILS(open(mp("nodir/x"), O_RDONLY), ENOENT);
    /* A file is no directory to look or create in. */
    FAILS(open(mp("open-a/x"), O_RDONLY), ENOTDIR);
    FAILS(open(mp("open-a/x"), O_WRONLY | O_CREAT, 0644), ENOTDIR);
    struct stat st;
    FAILS(stat(mp("open-a/x"), &st), ENOTDIR);
    /* A trailing / or /. names a directory. */
    FAILS(open(mp("open-a/"), O_RDONLY), ENOTDIR);
    FAILS(open(mp("open-a/"), O_WRONLY | O_CREAT, 0644), ENOTDIR);
    FAILS(stat(mp("open-a/"), &st), ENOTDIR);
    FAILS(stat(mp("open-a/."), &st), ENOTDIR);
    FAILS(access(mp("open-a/"), F_OK), ENOTDIR);
    FAILS(truncate(mp("open-a/"), 0), ENOTDIR);
    FAILS(unlink(mp("open-a/")), ENOTDIR);
    OK(stat(mp("lost+found/"), &st));
    CHECK(S_ISDIR(st.st_mode));
    OK(stat(mp("lost+found/."), &st));
    CHECK(S_ISDIR(st.st_mode));
    FAILS(open(mp("missing"), O_RDONLY | O_TRUNC), ENOENT);

    /* creat = O_WRONLY|O_CREAT|O_TRUNC. */
    fd = FD(creat(mp("open-c"), 0644));
    EQ(write(fd, "abc", 3), 3);
    FAILS(read(fd, b, 1), EBADF);
    EQ(fcntl(fd, F_GETFL) & O_ACCMODE, O_WRONLY);
    OK(close(fd));
    EQ(psize(mp("open-c")), 3);
    fd = FD(creat64(mp("open-c"), 0644));
    EQ(fsize(fd), 0);
    OK(close(fd));
    FAILS(creat(mp("nodir/c"), 0644), ENOENT);

    /* O_APPEND: every write lands at EOF, wherever the offset was. */
    fd = FD(open(f, O_WRONLY | O_APPEND));
    EQ(write(fd, "12", 2), 2);
    EQ(lseek(fd, 0, SEEK_SET), 0);
    EQ(write(fd, "34", 2), 2);
    EQ(pos(fd), 4);
    OK(close(fd));
    fd = FD(open(f, O_RDONLY));
    EQ(read(fd, b, sizeof b), 4);
    CHECK(memcmp(b, "1234", 4) == 0);
    OK(close(fd));

    /* O_EXCL without O_CREAT is ignored; O_PATH opens for fstat only. */
    fd = FD(open(f, O_RDONLY | O_EXCL));
    OK(close(fd));
    fd = FD(open(f, O_PATH));
    FAILS(read(fd, b, 1), EBADF);
    FAILS(write(fd, b, 1), EBADF);
    EQ(fsize(fd), 4);
    OK(close(fd));
    /* O_TRUNC through one fd empties the file under another. */
    fd = FD(open(f, O_RDONLY));
    int t = FD(open(f, O_WRONLY | O_TRUNC));
    EQ(fsize(fd), 0);
    EQ(read(fd, b, sizeof b), 0);
    EQ(write(t, "1234", 4), 4);
    EQ(read(fd, b, sizeof b), 4);
    OK(close(t));
    OK(close(fd));

    /* A file is not a directory; O_TMPFILE is not served. */
    FAILS(open(f, O_RDONLY | O_DIRECTORY), ENOTDIR);
    FAILS(open(mnt, O_TMPFILE | O_RDWR, 0600), EOPNOTSUPP);

    /* Non-constant flags, no mode: __open_2 and friends when fortified. */
    fd = FD(open(f, v_rdonly));
    EQ(read(fd, b, 4), 4);
    OK(close(fd));
    fd = FD(open64(f, v_rdwr));
    EQ(pread(fd, b, 2, 2), 2);
    CHECK(memcmp(b, "34", 2) == 0);
    OK(close(fd));
    fd = FD(openat(AT_FDCWD, f, v_rdonly));
    EQ(fsize(fd), 4);
    OK(close(fd));
    fd = FD(openat64(AT_FDCWD, f, v_rdonly));
    EQ(fsize(fd), 4);
    OK(close(fd));
    FAILS(open(mp("missing"), v_rdonly), ENOENT);
    FAILS(openat(AT_FDCWD, mp("missing"), v_rdonly), ENOENT);

    /* O_CLOEXEC lands on the fd; without it, the fd has no FD_CLOEXEC. */
    fd = FD(open(f, O_RDONLY | O_CLOEXEC));
    EQ(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    OK(close(fd));
    fd = FD(open(f, O_RDONLY));
    EQ(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
    OK(close(fd));

    /* O_DIRECT is served buffered (no alignment needed); O_SYNC and
     * O_DSYNC write through. */
    fd = FD(open(f, O_RDWR | O_DIRECT));
    EQ(pwrite(fd, "xyz", 3, 1), 3);
    OK(close(fd));
    fd = FD(open(f, O_WRONLY | O_SYNC));
    EQ(write(fd, "S", 1), 1);
    OK(close(fd));
    fd = FD(open(f, O_WRONLY | O_DSYNC | O_APPEND));
    EQ(write(fd, "D", 1), 1);
    OK(close(fd));
    fd = FD(open(f, O_RDONLY));
    EQ(read(fd, b, sizeof b), 5);
    CHECK(memcmp(b, "SxyzD", 5) == 0);
    OK(close(fd));
    EQ(psize(f), 5);
}

/* ------------------------------------------------------------ directories */

static void t_dirs(void)
{
    const char *lf = mp("lost+found");
    struct stat st;
    OK(stat(mnt, &st));
    CHECK(S_ISDIR(st.st_mode));
    OK(stat(lf, &st));
    CHECK(S_ISDIR(st.st_mode));
    /* A directory opens read-only (a directory fd: fstat, fsync, the base
       of *at calls, fdopendir); asking to write one is EISDIR. */
    int d = FD(open(mnt, O_RDONLY));
    OK(fstat(d, &st));
    CHECK(S_ISDIR(st.st_mode));
    char b1[8];
    FAILS(read(d, b1, sizeof b1), EISDIR);
    FAILS(write(d, "x", 1), EBADF);
    OK(fsync(d));
    OK(close(d));
    d = FD(open(mnt, O_RDONLY | O_DIRECTORY));
    OK(fstatat(d, "lost+found", &st, 0));
    CHECK(S_ISDIR(st.st_mode));
    OK(close(d));
    d = FD(openat(AT_FDCWD, lf, O_RDONLY));
    OK(close(d));
    FAILS(open(lf, O_WRONLY), EISDIR);
    FAILS(open(lf, O_RDWR), EISDIR);
    FAILS(open(lf, O_RDONLY | O_CREAT, 0644), EISDIR);
    FAILS(open(lf, O_RDWR | O_CREAT | O_EXCL, 0644), EEXIST);
    d = FD(open(mp("lost+found/"), O_RDONLY));
    OK(close(d));
    FAILS(creat(lf, 0644), EISDIR);
    FAILS_PTR(fopen(lf, "w"), NULL, EISDIR);
    FAILS(truncate(lf, 0), EISDIR);
    FAILS(unlink(lf), EISDIR);
    FAILS(unlinkat(AT_FDCWD, lf, 0), EISDIR);
    /* Directories are made and removed (empty ones; not while open). */
    FAILS(mkdir(lf, 0755), EEXIST);
    OK(mkdir(mp("newdir"), 0755));
    FAILS(mkdirat(AT_FDCWD, mp("newdir"), 0755), EEXIST);
    OK(stat(mp("newdir"), &st));
    CHECK(S_ISDIR(st.st_mode));
    d = FD(open(mp("newdir"), O_RDONLY | O_DIRECTORY));
    OK(mkdirat(d, "sub", 0755));
    FAILS(rmdir(mp("newdir")), ENOTEMPTY);
    OK(unlinkat(d, "sub", AT_REMOVEDIR));
    FAILS(rmdir(mp("missing")), ENOENT);
    /* As on Linux, an open directory can be removed. */
    OK(rmdir(mp("newdir")));
    OK(close(d));
    FAILS(stat(mp("newdir"), &st), ENOENT);
}

/* ------------------------------------------------------------ read, write */

static void t_rw(void)
{
    enum { N = 300000 };
    const char *f = mp("rw");
    unsigned char *w = malloc(N), *r = malloc(N + 100);
    char small[64];
    fill(w, 4, 0, N);
    int fd = FD(open(f, O_RDWR | O_CREAT | O_TRUNC, 0644));
    EQ(write(fd, w, 1000), 1000);
    EQ(write(fd, w + 1000, N - 1000), N - 1000);
    EQ(pos(fd), N);
    EQ(read(fd, r, 10), 0);
    EQ(write(fd, w, 0), 0);
    EQ(read(fd, r, 0), 0);
    /* Read back in odd-sized pieces. */
    EQ(lseek(fd, 0, SEEK_SET), 0);
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, r + got, 4093);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    EQ(got, N);
    CHECK(memcmp(r, w, N) == 0);
    /* pread/pwrite leave the offset alone. */
    EQ(lseek(fd, 77, SEEK_SET), 77);
    EQ(pread(fd, r, 5000, 12345), 5000);
    CHECK(is_pat(r, 4, 12345, 5000));
    EQ(pread64(fd, r, 100, N - 10), 10);
    CHECK(is_pat(r, 4, N - 10, 10));
    EQ(pread(fd, r, 100, N), 0);
    EQ(pread(fd, r, 100, N + 5000), 0);
    EQ(pwrite(fd, w + 4090, 777, 4090), 777);
    EQ(pwrite64(fd, w + 8191, 2, 8191), 2);
    EQ(pos(fd), 77);
    EQ(read(fd, r, 10), 10);
    CHECK(is_pat(r, 4, 77, 10));
    /* Negative offsets. */
    FAILS(pread(fd, r, 1, -1), EINVAL);
    FAILS(pwrite(fd, w, 1, -1), EINVAL);
    FAILS(pread64(fd, r, 1, -4096), EINVAL);
    FAILS(pwrite64(fd, w, 1, -4096), EINVAL);
    /* Non-constant lengths into a known-size buffer: __read_chk and
     * __pread_chk when fortified. */
    EQ(lseek(fd, 100, SEEK_SET), 100);
    EQ(read(fd, small, v_len), 64);
    CHECK(is_pat((unsigned char *)small, 4, 100, 64));
    EQ(pread(fd, small, v_len, 200), 64);
    CHECK(is_pat((unsigned char *)small, 4, 200, 64));
    EQ(pread64(fd, small, v_len, 300), 64);
    CHECK(is_pat((unsigned char *)small, 4, 300, 64));
    OK(close(fd));

    /* A read-only fd refuses writes, a write-only one reads. */
    struct iovec iov = {.iov_base = w, .iov_len = 10};
    struct iovec riov = {.iov_base = r, .iov_len = 10};
    int ro = FD(open(f, O_RDONLY));
    FAILS(write(ro, w, 1), EBADF);
    FAILS(pwrite(ro, w, 1, 0), EBADF);
    FAILS(writev(ro, &iov, 1), EBADF);
    FAILS(pwritev(ro, &iov, 1, 0), EBADF);
    FAILS(pwritev2(ro, &iov, 1, -1, 0), EBADF);
    FAILS(ftruncate(ro, 0), EINVAL);
    FAILS(fallocate(ro, 0, 0, 4096), EBADF);
    EQ(posix_fallocate(ro, 0, 4096), EBADF);
    EQ(fsize(ro), N);
    int wo = FD(open(f, O_WRONLY));
    FAILS(read(wo, r, 1), EBADF);
    FAILS(pread(wo, r, 1, 0), EBADF);
    FAILS(readv(wo, &riov, 1), EBADF);
    FAILS(preadv(wo, &riov, 1, 0), EBADF);
    FAILS(preadv2(wo, &riov, 1, -1, 0), EBADF);
    FAILS(read(wo, small, v_len), EBADF);
    OK(close(wo));
    /* A closed fd is EBADF (the kernel's answer: the number is free). */
    OK(close(ro));
    FAILS(read(ro, r, 1), EBADF);
    FAILS(write(ro, w, 1), EBADF);
    FAILS(lseek(ro, 0, SEEK_SET), EBADF);
    FAILS(fsync(ro), EBADF);
    FAILS(close(ro), EBADF);
    struct stat st;
    FAILS(fstat(ro, &st), EBADF);
    /* The file after close and reopen. */
    CHECK(holds(f, N, 4, ""));
    free(w);
    free(r);
}

static void t_vec(void)
{
    enum { N = 20000 };
    const char *f = mp("vec");
    unsigned char *w = pbuf(6, 0, N);
    unsigned char r[N];
    int fd = FD(open(f, O_RDWR | O_CREAT | O_TRUNC, 0644));
    struct iovec wv[3] = {{w, 100}, {w + 100, 5000}, {w + 5100, 4900}};
    EQ(writev(fd, wv, 3), 10000);
    EQ(pos(fd), 10000);
    struct iovec pv[2] = {{w + 10000, 7000}, {w + 17000, 1000}};
    EQ(pwritev(fd, pv, 2, 10000), 8000);
    EQ(pos(fd), 10000);
    /* pwritev2 at the file offset (-1) moves it; at an offset it does not. */
    EQ(lseek(fd, 18000, SEEK_SET), 18000);
    struct iovec v2 = {w + 18000, 1000};
    EQ(pwritev2(fd, &v2, 1, -1, 0), 1000);
    EQ(pos(fd), 19000);
    struct iovec v3 = {w + 19000, 1000};
    EQ(pwritev2(fd, &v3, 1, 19000, RWF_HIPRI), 1000);
    EQ(pos(fd), 19000);
    EQ(fsize(fd), N);
    EQ(writev(fd, wv, 0), 0);
    /* Reads. */
    memset(r, 0, sizeof r);
    EQ(lseek(fd, 0, SEEK_SET), 0);
    struct iovec rv[3] = {{r, 1}, {r + 1, 9999}, {r + 10000, 5000}};
    EQ(readv(fd, rv, 3), 15000);
    EQ(pos(fd), 15000);
    CHECK(is_pat(r, 6, 0, 15000));
    struct iovec tail[2] = {{r, 600}, {r + 600, 600}};
    EQ(preadv(fd, tail, 2, N - 1000), 1000);
    CHECK(is_pat(r, 6, N - 1000, 1000));
    EQ(pos(fd), 15000);
    struct iovec one = {r, 2000};
    EQ(preadv2(fd, &one, 1, -1, 0), 2000);
    CHECK(is_pat(r, 6, 15000, 2000));
    EQ(pos(fd), 17000);
    EQ(preadv2(fd, &one, 1, 3, RWF_HIPRI), 2000);
    CHECK(is_pat(r, 6, 3, 2000));
    EQ(pos(fd), 17000);
    EQ(preadv64(fd, &one, 1, 5), 2000);
    CHECK(is_pat(r, 6, 5, 2000));
    EQ(pwritev64(fd, &v3, 1, 19000), 1000);
    EQ(preadv64v2(fd, &one, 1, 7, 0), 2000);
    CHECK(is_pat(r, 6, 7, 2000));
    EQ(pwritev64v2(fd, &v3, 1, 19000, 0), 1000);
    EQ(readv(fd, rv, 0), 0);
    /* RWF flags other than RWF_HIPRI: EOPNOTSUPP. */
    FAILS(preadv2(fd, &one, 1, 0, RWF_NOWAIT), EOPNOTSUPP);
    FAILS(preadv2(fd, &one, 1, -1, RWF_DSYNC), EOPNOTSUPP);
    FAILS(pwritev2(fd, &v3, 1, 19000, RWF_DSYNC), EOPNOTSUPP);
    FAILS(pwritev2(fd, &v3, 1, 19000, RWF_SYNC), EOPNOTSUPP);
    FAILS(pwritev2(fd, &v3, 1, -1, RWF_APPEND), EOPNOTSUPP);
    FAILS(pwritev2(fd, &v3, 1, -1, RWF_NOWAIT), EOPNOTSUPP);
    /* Bad counts and offsets. */
    FAILS(readv(fd, rv, v_neg), EINVAL);
    FAILS(writev(fd, wv, v_toomany), EINVAL);
    FAILS(preadv(fd, &one, 1, -5), EINVAL);
    FAILS(pwritev(fd, &v3, 1, -5), EINVAL);
    FAILS(preadv2(fd, &one, 1, -2, 0), EINVAL);
    FAILS(pwritev2(fd, &v3, 1, -2, 0), EINVAL);
    EQ(fsize(fd), N);
    OK(close(fd));
    left("vec", N, 6, "");
}

/* ------------------------------------------------------------ lseek */

static void t_seek(void)
{
    const char *f = mp("seek");
    int fd = FD(open(f, O_RDWR | O_CREAT | O_TRUNC, 0644));
    EQ(write(fd, pbuf(7, 0, 10000), 10000), 10000);
    EQ(lseek(fd, 100, SEEK_SET), 100);
    EQ(lseek(fd, 50, SEEK_CUR), 150);
    EQ(lseek(fd, -50, SEEK_CUR), 100);
    EQ(lseek(fd, 0, SEEK_END), 10000);
    EQ(lseek(fd, -10, SEEK_END), 9990);
    EQ(lseek64(fd, 10, SEEK_END), 10010);
    /* Data everywhere below EOF. */
    EQ(lseek(fd, 100, SEEK_DATA), 100);
    EQ(lseek(fd, 100, SEEK_HOLE), 10000);
    EQ(lseek(fd, 0, SEEK_DATA), 0);
    FAILS(lseek(fd, 10000, SEEK_DATA), ENXIO);
    FAILS(lseek(fd, 10000, SEEK_HOLE), ENXIO);
    FAILS(lseek(fd, 20000, SEEK_HOLE), ENXIO);
    FAILS(lseek(fd, -1, SEEK_DATA), ENXIO);
    FAILS(lseek(fd, -1, SEEK_HOLE), ENXIO);
    EQ(pos(fd), 0);
    /* Bad whence, and results below 0: EINVAL, the offset unchanged. */
    FAILS(lseek(fd, 0, 99), EINVAL);
    FAILS(lseek(fd, 0, -1), EINVAL);
    FAILS(lseek(fd, -1, SEEK_SET), EINVAL);
    FAILS(lseek(fd, -20000, SEEK_END), EINVAL);
    FAILS(lseek(fd, -20000, SEEK_CUR), EINVAL);
    FAILS(lseek64(fd, -1, SEEK_SET), EINVAL);
    EQ(pos(fd), 0);
    /* Far past EOF is a valid offset; a write there leaves a hole. */
    EQ(lseek(fd, (off_t)1 << 40, SEEK_SET), (off_t)1 << 40);
    EQ(lseek(fd, 20000, SEEK_SET), 20000);
    EQ(write(fd, pbuf(7, 20000, 100), 100), 100);
    EQ(fsize(fd), 20100);
    unsigned char r[10000];
    EQ(pread(fd, r, sizeof r, 10000), 10000);
    CHECK(is_zero(r, sizeof r));
    OK(close(fd));
    left("seek", 20100, 7, "10000:10000");
}

/* ------------------------------------------------------------ stat */

static void t_stat(void)
{
    const char *f = mp("stat");
    struct stat a, b;
    struct stat64 a64;
    struct statx x;
    int fd = FD(open(f, O_RDWR | O_CREAT | O_TRUNC, 0644));
    EQ(write(fd, pbuf(18, 0, 5000), 5000), 5000);
    /* Before any writeback: every view sees the cache's size. */
    OK(fstat(fd, &a));
    EQ(a.st_size, 5000);
    CHECK(S_ISREG(a.st_mode));
    EQ(a.st_blksize, 4096);
    EQ(a.st_blocks, 16);
    EQ(a.st_nlink, 1);
    OK(fstat64(fd, &a64));
    EQ(a64.st_size, 5000);
    EQ(a64.st_ino, a.st_ino);
    OK(stat(f, &b));
    EQ(b.st_size, 5000);
    EQ(b.st_ino, a.st_ino);
    EQ(b.st_dev, a.st_dev);
    CHECK(S_ISREG(b.st_mode));
    OK(stat64(f, &a64));
    EQ(a64.st_size, 5000);
    OK(lstat(f, &b));
    EQ(b.st_size, 5000);
    OK(lstat64(f, &a64));
    EQ(a64.st_size, 5000);
    OK(fstatat(AT_FDCWD, f, &b, 0));
    EQ(b.st_size, 5000);
    OK(fstatat(AT_FDCWD, f, &b, AT_SYMLINK_NOFOLLOW));
    EQ(b.st_ino, a.st_ino);
    OK(fstatat64(AT_FDCWD, f, &a64, 0));
    EQ(a64.st_size, 5000);
    memset(&b, 0, sizeof b);
    OK(fstatat(fd, "", &b, AT_EMPTY_PATH));
    EQ(b.st_size, 5000);
    EQ(b.st_ino, a.st_ino);
    memset(&x, 0, sizeof x);
    OK(statx(AT_FDCWD, f, 0, STATX_SIZE, &x));
    CHECK(x.stx_mask & STATX_SIZE);
    EQ(x.stx_size, 5000);
    EQ(x.stx_ino, a.st_ino);
    CHECK(S_ISREG(x.stx_mode));
    memset(&x, 0, sizeof x);
    OK(statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &x));
    EQ(x.stx_size, 5000);
    EQ(x.stx_blocks, 16);
    /* A write past EOF: every view follows. */
    EQ(pwrite(fd, "z", 1, 9000), 1);
    EQ(fsize(fd), 9001);
    EQ(psize(f), 9001);
    OK(statx(AT_FDCWD, f, AT_SYMLINK_NOFOLLOW, STATX_SIZE, &x));
    EQ(x.stx_size, 9001);
    /* Another file is another inode; missing names are ENOENT. */
    OK(stat(mp("rw"), &b));
    CHECK(b.st_ino != a.st_ino);
    FAILS(stat(mp("missing"), &b), ENOENT);
    FAILS(lstat(mp("missing"), &b), ENOENT);
    FAILS(stat64(mp("missing"), &a64), ENOENT);
    FAILS(fstatat(AT_FDCWD, mp("missing"), &b, 0), ENOENT);
    FAILS(statx(AT_FDCWD, mp("missing"), 0, STATX_SIZE, &x), ENOENT);
    OK(ftruncate(fd, 5000));
    OK(close(fd));
    EQ(psize(f), 5000);
    left("stat", 5000, 18, "");
}

/* ------------------------------------------------------------ size */

static void t_trunc(void)
{
    const char *f = mp("trunc");
    unsigned char r[10000];
    int fd = FD(open(f, O_RDWR | O_CREAT | O_TRUNC, 0644));
    EQ(write(fd, pbuf(8, 0, 10000), 10000), 10000);
    OK(ftruncate(fd, 3000));
    EQ(fsize(fd), 3000);
    EQ(pread(fd, r, sizeof r, 0), 3000);
    CHECK(is_pat(r, 8, 0, 3000));
    OK(ftruncate(fd, 8000));
    EQ(pread(fd, r, sizeof r, 0), 8000);
    CHECK(is_zero(r + 3000, 5000));
    /* truncate by name while the fd is open: one inode. */
    OK(truncate(f, 6000));
    EQ(fsize(fd), 6000);
    OK(truncate64(f, 6000));
    OK(ftruncate64(fd, 6000));
    /* The offset is not moved by truncation. */
    EQ(pos(fd), 10000);
    FAILS(ftruncate(fd, -1), EINVAL);
    FAILS(truncate(f, -1), EINVAL);
    FAILS(truncate(mp("missing"), 0), ENOENT);
    /* Past the largest ext4 file (2^32 blocks of 4 KiB): EFBIG. */
    FAILS(ftruncate(fd, ((off_t)1 << 44) + 1), EFBIG);
    FAILS(pwrite(fd, "x", 1, (off_t)1 << 44), EFBIG);
    FAILS(fallocate(fd, 0, LLONG_MAX - 10, 100), EFBIG);
    EQ(fsize(fd), 6000);
    OK(close(fd));
    left("trunc", 6000, 8, "3000:3000");
}

static void t_falloc(void)
{
    const char *f = mp("falloc");
    unsigned char r[40000];
    int fd = FD(open(f, O_RDWR | O_CREAT | O_TRUNC, 0644));
    EQ(write(fd, pbuf(10, 0, 16384), 16384), 16384);
    /* Mode 0 extends the size; the new range reads zero. */
    OK(fallocate(fd, 0, 16384, 8192));
    EQ(fsize(fd), 24576);
    EQ(pread(fd, r, 8192, 16384), 8192);
    CHECK(is_zero(r, 8192));
    /* KEEP_SIZE allocates past EOF without growing. */
    OK(fallocate(fd, FALLOC_FL_KEEP_SIZE, 24576, 8192));
    EQ(fsize(fd), 24576);
    OK(fallocate64(fd, FALLOC_FL_KEEP_SIZE, 0, 4096));
    /* PUNCH_HOLE|KEEP_SIZE zeroes, aligned or not. */
    OK(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096));
    OK(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 10000, 100));
    EQ(fsize(fd), 24576);
    EQ(pread(fd, r, 16384, 0), 16384);
    CHECK(is_pat(r, 10, 0, 4096));
    CHECK(is_zero(r + 4096, 4096));
    CHECK(is_pat(r + 8192, 10, 8192, 10000 - 8192));
    CHECK(is_zero(r + 10000, 100));
    CHECK(is_pat(r + 10100, 10, 10100, 16384 - 10100));
    /* Refused modes. */
    FAILS(fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096), EOPNOTSUPP);
    FAILS(fallocate(fd, FALLOC_FL_ZERO_RANGE, 0, 4096), EOPNOTSUPP);
    FAILS(fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 0, 4096), EOPNOTSUPP);
    FAILS(fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, 4096), EOPNOTSUPP);
    FAILS(fallocate(fd, FALLOC_FL_INSERT_RANGE, 0, 4096), EOPNOTSUPP);
    /* Bad ranges. */
    FAILS(fallocate(fd, 0, 0, 0), EINVAL);
    FAILS(fallocate(fd, 0, -1, 4096), EINVAL);
    FAILS(fallocate(fd, 0, 0, -1), EINVAL);
    EQ(fsize(fd), 24576);
    /* posix_fallocate returns the error number and leaves errno alone. */
    errno = 1234;
    int rc = posix_fallocate(fd, 0, 40000);
    int e = errno;
    EQ(rc, 0);
    EQ(e, 1234);
    EQ(fsize(fd), 40000);
    EQ(posix_fallocate64(fd, 0, 100), 0);
    EQ(fsize(fd), 40000);
    errno = 1234;
    rc = posix_fallocate(fd, 0, 0);
    e = errno;
    EQ(rc, EINVAL);
    EQ(e, 1234);
    EQ(posix_fallocate(fd, -1, 10), EINVAL);
    OK(close(fd));
    left("falloc", 40000, 10, "4096:4096,10000:100,16384:23616");
}

/* ------------------------------------------------------------ sync, advice */

static void t_sync(void)
{
    const char *f = mp("sync");
    int fd = FD(open(f, O_RDWR | O_CREAT | O_TRUNC, 0644));
    EQ(write(fd, pbuf(11, 0, 4096), 4096), 4096);
    OK(fsync(fd));
    OK(fdatasync(fd));
    OK(sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE));
    OK(sync_file_range(fd, 0, 4096,
                       SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                           SYNC_FILE_RANGE_WAIT_AFTER));
    OK(sync_file_range(fd, 100, 1, 0));
    FAILS(sync_file_range(fd, -1, 0, SYNC_FILE_RANGE_WRITE), EINVAL);
    FAILS(sync_file_range(fd, 0, -1, SYNC_FILE_RANGE_WRITE), EINVAL);
    FAILS(sync_file_range(fd, 0, 0, 0x100), EINVAL);
    EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL), 0);
    EQ(posix_fadvise(fd, 0, 4096, POSIX_FADV_WILLNEED), 0);
    EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_NOREUSE), 0);
    EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0);
    EQ(posix_fadvise64(fd, 0, 0, POSIX_FADV_NORMAL), 0);
    /* posix_fadvise returns the error number, errno untouched. */
    errno = 1234;
    int rc = posix_fadvise(fd, 0, 0, 99);
    int e = errno;
    EQ(rc, EINVAL);
    EQ(e, 1234);
    EQ(posix_fadvise(fd, 0, -1, POSIX_FADV_NORMAL), EINVAL);
    OK(close(fd));
    /* fsync needs no write access. */
    fd = FD(open(f, O_RDONLY));
    OK(fsync(fd));
    OK(fdatasync(fd));
    OK(close(fd));
    left("sync", 4096, 11, "");
}

/* ------------------------------------------------------------ names */

static void t_names(void)
{
    struct stat st;
    char buf[64];
    make("del-a", 1, 1);
    make("del-b", 1, 1);
    make("del-c", 1, 1);
    OK(unlink(mp("del-a")));
    FAILS(unlink(mp("del-a")), ENOENT);
    FAILS(open(mp("del-a"), O_RDONLY), ENOENT);
    FAILS(stat(mp("del-a"), &st), ENOENT);
    FAILS(access(mp("del-a"), F_OK), ENOENT);
    OK(unlinkat(AT_FDCWD, mp("del-b"), 0));
    FAILS(unlinkat(AT_FDCWD, mp("del-b"), 0), ENOENT);
    FAILS(unlinkat(AT_FDCWD, mp("del-c"), AT_REMOVEDIR), ENOTDIR);
    FAILS(rmdir(mp("del-c")), ENOTDIR);
    FAILS(unlink(mp("missing")), ENOENT);
    /* A file open in this process is not unlinked (EBUSY, documented). */
    int fd = FD(open(mp("del-c"), O_RDONLY));
    FAILS(unlink(mp("del-c")), EBUSY);
    OK(close(fd));
    OK(unlink(mp("del-c")));
    /* The name can be made again. */
    fd = FD(open(mp("del-a"), O_WRONLY | O_CREAT | O_EXCL, 0644));
    EQ(write(fd, pbuf(12, 0, 3000), 3000), 3000);
    OK(close(fd));
    left("del-a", 3000, 12, "");

    /* access: existence; read and write always; X_OK by the mode bits. */
    const char *f = mp("del-a");
    OK(access(f, F_OK));
    OK(access(f, R_OK | W_OK));
    OK(stat(f, &st));
    if (st.st_mode & 0111)
        OK(access(f, X_OK));
    else
        FAILS(access(f, X_OK), EACCES);
    FAILS(access(mp("missing"), F_OK), ENOENT);
    FAILS(access(mp("missing"), R_OK), ENOENT);
    OK(faccessat(AT_FDCWD, f, R_OK, 0));
    OK(faccessat(AT_FDCWD, f, W_OK, AT_EACCESS));
    FAILS(faccessat(AT_FDCWD, mp("missing"), F_OK, 0), ENOENT);
    /* Unknown mode bits and flags. */
    FAILS(access(f, 0x100), EINVAL);
    FAILS(faccessat(AT_FDCWD, f, R_OK, 0x4000), EINVAL);
    FAILS(unlinkat(AT_FDCWD, f, 0x1), EINVAL);
    OK(access(f, F_OK));
    OK(access(mnt, F_OK));

    /* rename within the mount; into or out of it EXDEV (mv copies). */
    FAILS(rename(outside, mp("renamed")), EXDEV);
    FAILS(rename(f, outside), EXDEV);
    OK(rename(f, mp("renamed")));
    FAILS(stat(f, &st), ENOENT);
    OK(renameat(AT_FDCWD, mp("renamed"), AT_FDCWD, f));
    OK(stat(f, &st));
    FAILS(renameat2(AT_FDCWD, f, AT_FDCWD, mnt, RENAME_NOREPLACE), EEXIST);
    FAILS(renameat2(AT_FDCWD, f, AT_FDCWD, mp("renamed"), RENAME_EXCHANGE), EINVAL);
    OK(renameat2(AT_FDCWD, f, AT_FDCWD, mp("renamed"), RENAME_NOREPLACE));
    OK(rename(mp("renamed"), f));
    FAILS(rename(mp("missing"), mp("renamed")), ENOENT);
    FAILS(stat(mp("renamed"), &st), ENOENT);

    /* Extended attributes are not kept. */
    FAILS(getxattr(f, "user.x", buf, sizeof buf), ENOTSUP);
    FAILS(lgetxattr(f, "user.x", buf, sizeof buf), ENOTSUP);
    FAILS(getxattr(mp("missing"), "user.x", buf, sizeof buf), ENOENT);
    EQ(listxattr(f, buf, sizeof buf), 0);
    EQ(llistxattr(f, buf, sizeof buf), 0);
    FAILS(listxattr(mp("missing"), buf, sizeof buf), ENOENT);
    fd = FD(open(f, O_RDONLY));
    FAILS(fgetxattr(fd, "user.x", buf, sizeof buf), ENOTSUP);
    EQ(flistxattr(fd, buf, sizeof buf), 0);
    OK(close(fd));
}

/* ------------------------------------------------------------ fds */

static void t_fds(void)
{
    const char *f = mp("fds");
    struct stat a, b;
    unsigned char r[400];
    int fd = FD(open(f, O_RDWR | O_CREAT | O_TRUNC, 0644));
    OK(fstat(fd, &a));
    /* A dup shares the open file and its offset. */
    int d = FD(dup(fd));
    CHECK(d != fd);
    EQ(write(fd, pbuf(13, 0, 100), 100), 100);
    EQ(write(d, pbuf(13, 100, 200), 200), 200);
    EQ(pos(fd), 300);
    EQ(pos(d), 300);
    EQ(lseek(d, 0, SEEK_SET), 0);
    EQ(pos(fd), 0);
    OK(fstat(d, &b));
    EQ(b.st_ino, a.st_ino);
    /* F_DUPFD: the lowest free number >= the argument. */
    int h = FD(fcntl(fd, F_DUPFD, 100));
    CHECK(h >= 100);
    EQ(fcntl(h, F_GETFD) & FD_CLOEXEC, 0);
    EQ(lseek(h, 50, SEEK_SET), 50);
    EQ(pos(fd), 50);
    int c = FD(fcntl(fd, F_DUPFD_CLOEXEC, 0));
    EQ(fcntl(c, F_GETFD), FD_CLOEXEC);
    EQ(pos(c), 50);
    /* F_SETFD is per fd. */
    OK(fcntl(c, F_SETFD, 0));
    EQ(fcntl(c, F_GETFD), 0);
    OK(fcntl(c, F_SETFD, FD_CLOEXEC));
    EQ(fcntl(c, F_GETFD), FD_CLOEXEC);
    EQ(fcntl(fd, F_GETFD), 0);
    /* F_GETFL / F_SETFL: the open file's flags, shared by its dups. */
    int fl = fcntl(fd, F_GETFL);
    EQ(fl & O_ACCMODE, O_RDWR);
    EQ(fl & O_APPEND, 0);
    OK(fcntl(fd, F_SETFL, fl | O_NONBLOCK));
    EQ(fcntl(d, F_GETFL) & O_NONBLOCK, O_NONBLOCK);
    OK(fcntl(fd, F_SETFL, fl | O_APPEND));
    EQ(fcntl(d, F_GETFL) & O_APPEND, O_APPEND);
    EQ(lseek(d, 0, SEEK_SET), 0);
    EQ(write(d, pbuf(13, 300, 100), 100), 100);
    EQ(pos(fd), 400);
    EQ(fsize(fd), 400);
    /* The access mode is not F_SETFL's to change. */
    OK(fcntl(fd, F_SETFL, O_RDONLY));
    EQ(fcntl(fd, F_GETFL) & (O_ACCMODE | O_APPEND), O_RDWR);
    /* Locks are granted; F_GETLK sees none. */
    struct flock lk = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    OK(fcntl(fd, F_SETLK, &lk));
    OK(fcntl(fd, F_SETLKW, &lk));
    lk.l_type = F_WRLCK;
    OK(fcntl(fd, F_GETLK, &lk));
    EQ(lk.l_type, F_UNLCK);

    /* dup2 onto another bufwrite fd closes that file and names this one. */
    int t = FD(open(mp("fds-t"), O_RDWR | O_CREAT | O_TRUNC, 0644));
    EQ(write(t, pbuf(14, 0, 10), 10), 10);
    EQ(dup2(fd, t), t);
    OK(fstat(t, &b));
    EQ(b.st_ino, a.st_ino);
    EQ(dup2(fd, fd), fd);
    EQ(dup3(fd, t, O_CLOEXEC), t);
    EQ(fcntl(t, F_GETFD), FD_CLOEXEC);
    FAILS(dup3(fd, fd, 0), EINVAL);
    FAILS(dup3(fd, t, 0x1234), EINVAL);
    /* A kernel fd dup2'd onto a bufwrite fd makes it the kernel's. */
    int k = FD(open("/dev/null", O_WRONLY));
    EQ(dup2(k, t), t);
    OK(fstat(t, &b));
    CHECK(S_ISCHR(b.st_mode));
    EQ(write(t, "x", 1), 1);
    OK(close(t));
    /* And a bufwrite fd dup2'd onto a kernel fd makes that one ours. */
    EQ(dup2(fd, k), k);
    OK(fstat(k, &b));
    EQ(b.st_ino, a.st_ino);
    EQ(pos(k), 400);
    OK(close(k));
    left("fds-t", 10, 14, "");
    /* Closing the first fd leaves the dups working. */
    OK(close(fd));
    EQ(pread(d, r, sizeof r, 0), 400);
    CHECK(is_pat(r, 13, 0, 400));
    EQ(fsize(h), 400);
    FAILS(fcntl(fd, F_GETFL), EBADF);
    FAILS(dup(fd), EBADF);
    FAILS(dup2(fd, 200), EBADF);
    FAILS(read(fd, r, 1), EBADF);
    OK(close(d));
    OK(close(h));
    OK(close(c));
    left("fds", 400, 13, "");
}

/* Two O_APPEND fds take turns: each write lands at the EOF the other
 * left, so the file is one pattern written in order. */
static void t_append(void)
{
    const char *f = mp("append");
    int a = FD(open(f, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644));
    int b = FD(open(f, O_WRONLY | O_APPEND));
    int lag = FD(open(f, O_RDWR));
    uint64_t total = 0;
    for (int i = 0; i < 20; i++) {
        int fd = i % 2 ? b : a;
        size_t n = (size_t)(i % 2 ? 37 : 100) + (size_t)i;
        EQ(write(fd, pbuf(15, total, n), n), n);
        total += n;
        EQ(pos(fd), total);
    }
    /* pwrite and pwritev on an O_APPEND fd append too (Linux). */
    EQ(pwrite(a, pbuf(15, total, 10), 10, 0), 10);
    total += 10;
    struct iovec v = {pbuf(15, total, 33), 33};
    EQ(pwritev(b, &v, 1, 5), 33);
    total += 33;
    v.iov_base = pbuf(15, total, 44);
    v.iov_len = 44;
    EQ(writev(a, &v, 1), 44);
    total += 44;
    /* A third fd without O_APPEND writes where its own offset says. */
    EQ(pos(lag), 0);
    EQ(lseek(lag, (off_t)total, SEEK_SET), (off_t)total);
    EQ(write(lag, pbuf(15, total, 5), 5), 5);
    total += 5;
    EQ(fsize(b), (off_t)total);
    OK(close(a));
    OK(close(b));
    OK(close(lag));
    left("append", total, 15, "");
}

/* ------------------------------------------------------------ stdio */

static void t_stdio(void)
{
    const char *f = mp("stdio");
    unsigned char r[60000];
    FILE *s = fopen(f, "w");
    CHECK(s != NULL);
    if (!s)
        return;
    for (uint64_t off = 0; off < 50000; off += 1000)
        EQ(fwrite(pbuf(16, off, 1000), 1, 1000, s), 1000);
    EQ(ftell(s), 50000);
    OK(fflush(s));
    EQ(psize(f), 50000);
    OK(fseek(s, 100, SEEK_SET));
    EQ(ftell(s), 100);
    EQ(fwrite(pbuf(16, 100, 100), 1, 100, s), 100);
    EQ(fputc(pat(16, 200), s), pat(16, 200));
    EQ(ftell(s), 201);
    OK(fclose(s));

    s = fopen(f, "r");
    CHECK(s != NULL);
    if (!s)
        return;
    EQ(fread(r, 1, sizeof r, s), 50000);
    CHECK(feof(s));
    CHECK(is_pat(r, 16, 0, 50000));
    OK(fseek(s, -10, SEEK_END));
    EQ(ftell(s), 49990);
    EQ(fgetc(s), pat(16, 49990));
    rewind(s);
    EQ(ftell(s), 0);
    EQ(fread(r, 1, 10, s), 10);
    CHECK(is_pat(r, 16, 0, 10));
    /* A read-only stream refuses writes. */
    EQ(fwrite("x", 1, 1, s), 0);
    CHECK(ferror(s));
    OK(fclose(s));

    /* r+: overwrite in the middle, read it back. */
    s = fopen64(f, "r+");
    CHECK(s != NULL);
    if (!s)
        return;
    OK(fseek(s, 1000, SEEK_SET));
    EQ(fwrite(pbuf(16, 1000, 100), 1, 100, s), 100);
    OK(fflush(s));
    OK(fseek(s, 990, SEEK_SET));
    EQ(fread(r, 1, 120, s), 120);
    CHECK(is_pat(r, 16, 990, 120));
    OK(fclose(s));

    /* a: starts at EOF and appends; a+ reads from the start. */
    s = fopen(f, "a");
    CHECK(s != NULL);
    if (!s)
        return;
    EQ(ftell(s), 50000);
    EQ(fwrite(pbuf(16, 50000, 1000), 1, 1000, s), 1000);
    EQ(ftell(s), 51000);
    OK(fclose(s));
    EQ(psize(f), 51000);
    s = fopen(f, "a+");
    CHECK(s != NULL);
    if (!s)
        return;
    EQ(fread(r, 1, 10, s), 10);
    CHECK(is_pat(r, 16, 0, 10));
    OK(fclose(s));

    FAILS_PTR(fopen(f, "wx"), NULL, EEXIST);
    FAILS_PTR(fopen(mp("missing"), "r"), NULL, ENOENT);
    FAILS_PTR(fopen(mp("missing"), "r+"), NULL, ENOENT);
    FAILS_PTR(fopen(mp("nodir/x"), "w"), NULL, ENOENT);

    /* fdopen: the stream reads from the fd's offset and owns the fd. */
    int fd = FD(open(f, O_RDWR));
    EQ(lseek(fd, 500, SEEK_SET), 500);
    s = fdopen(fd, "r+");
    CHECK(s != NULL);
    if (!s)
        return;
    EQ(fread(r, 1, 100, s), 100);
    CHECK(is_pat(r, 16, 500, 100));
    OK(fseek(s, 0, SEEK_END));
    EQ(ftell(s), 51000);
    OK(fseek(s, 20000, SEEK_SET));
    EQ(fwrite(pbuf(16, 20000, 300), 1, 300, s), 300);
    OK(fclose(s));
    FAILS(fcntl(fd, F_GETFD), EBADF);

    /* Text through fputs/fprintf/fgets, then gone. */
    s = fopen(mp("text"), "w+");
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK(fputs("line one\n", s) >= 0);
    CHECK(fprintf(s, "line %d\n", 2) == 7);
    rewind(s);
    char line[32];
    CHECK(fgets(line, sizeof line, s) && strcmp(line, "line one\n") == 0);
    CHECK(fgets(line, sizeof line, s) && strcmp(line, "line 2\n") == 0);
    CHECK(fgets(line, sizeof line, s) == NULL);
    OK(fclose(s));
    EQ(psize(mp("text")), 16);
    OK(unlink(mp("text")));
    left("stdio", 51000, 16, "");
}

/* ------------------------------------------------------------ refused */

static void t_refused(void)
{
    const char *f = mp("ref");
    unsigned char r[8192];
    int fd = FD(open(f, O_RDWR | O_CREAT | O_TRUNC, 0644));
    EQ(write(fd, pbuf(19, 0, 8192), 8192), 8192);
    FAILS_PTR(mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0), MAP_FAILED, ENODEV);
    FAILS_PTR(mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0), MAP_FAILED, ENODEV);
    FAILS_PTR(mmap64(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 4096), MAP_FAILED,
              ENODEV);
    /* Anonymous maps are the kernel's. */
    void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED);
    if (m != MAP_FAILED)
        OK(munmap(m, 4096));
    int k = FD(open(outside, O_RDWR | O_CREAT, 0644));
    int g = FD(open(f, O_RDWR));
    FAILS(copy_file_range(fd, NULL, k, NULL, 100, 0), EXDEV);
    FAILS(copy_file_range(k, NULL, fd, NULL, 100, 0), EXDEV);
    FAILS(copy_file_range(fd, NULL, g, NULL, 100, 0), EXDEV);
    FAILS(ioctl(fd, FICLONE, g), EOPNOTSUPP);
    struct file_clone_range cr = {.src_fd = g, .src_offset = 0, .src_length = 4096, .dest_offset = 0};
    FAILS(ioctl(fd, FICLONERANGE, &cr), EOPNOTSUPP);
    int avail = 0;
    FAILS(ioctl(fd, FIONREAD, &avail), ENOTTY);
    FAILS(sendfile(k, fd, NULL, 100), EINVAL);
    FAILS(sendfile(fd, k, NULL, 100), EINVAL);
    int pp[2];
    OK(pipe(pp));
    FAILS(splice(fd, NULL, pp[1], NULL, 100, 0), EINVAL);
    FAILS(splice(pp[0], NULL, fd, NULL, 100, 0), EINVAL);
    OK(close(pp[0]));
    OK(close(pp[1]));
    /* Nothing changed. */
    EQ(pread(fd, r, sizeof r, 0), 8192);
    CHECK(is_pat(r, 19, 0, 8192));
    OK(close(g));
    OK(close(k));
    OK(close(fd));
    OK(unlink(f));
}

/* ------------------------------------------------------------ persistence */

/* A larger file, written in pieces and overwritten in places, read back
 * after close (the mount lets go of the image when nothing is open) and
 * reopen, through the fd calls and through stdio. */
static void t_persist(void)
{
    enum { N = (1 << 20) + 123, CHUNK = 65536 };
    const char *f = mp("big");
    int fd = FD(open(f, O_WRONLY | O_CREAT | O_TRUNC, 0644));
    for (uint64_t off = 0; off < N; off += CHUNK) {
        size_t n = N - off < CHUNK ? (size_t)(N - off) : CHUNK;
        EQ(write(fd, pbuf(1, off, n), n), n);
    }
    /* Overwrite unaligned spans with a different pattern, then put the
     * right bytes back: the last write wins. */
    EQ(pwrite(fd, pbuf(2, 0, 5000), 5000, 4000), 5000);
    EQ(pwrite(fd, pbuf(1, 4000, 5000), 5000, 4000), 5000);
    EQ(pwrite(fd, pbuf(2, 0, 100), 100, N - 50), 100);
    EQ(ftruncate(fd, N), 0);
    EQ(pwrite(fd, pbuf(1, N - 50, 50), 50, N - 50), 50);
    OK(close(fd));
    left("big", N, 1, "");
    FILE *s = fopen(f, "rb");
    CHECK(s != NULL);
    if (!s)
        return;
    unsigned char *r = malloc(N);
    EQ(fread(r, 1, N, s), N);
    CHECK(is_pat(r, 1, 0, N));
    OK(fclose(s));
    free(r);
}

/* ------------------------------------------------------------ relative */

/* Relative names from a cwd outside the mount (its parent), and names
 * relative to a directory fd. */
static void t_relative(void)
{
    char parent[PATH_MAX], rel[PATH_MAX], dots[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", mnt);
    char *slash = strrchr(parent, '/');
    if (!slash || slash == parent) {
        fail_line(__LINE__, "the mount directory needs a parent other than /", 0);
        return;
    }
    *slash = 0;
    const char *base = slash + 1;
    snprintf(rel, sizeof rel, "%s/rel", base);
    snprintf(dots, sizeof dots, "./%s/../%s/./rel", base, base);
    int cwd = FD(open(".", O_RDONLY | O_DIRECTORY));
    OK(chdir(parent));
    int fd = FD(open(rel, O_RDWR | O_CREAT | O_TRUNC, 0644));
    EQ(write(fd, pbuf(17, 0, 3000), 3000), 3000);
    OK(close(fd));
    EQ(psize(dots), 3000);
    OK(access(rel, R_OK));
    int dfd = FD(open(parent, O_RDONLY | O_DIRECTORY));
    fd = FD(openat(dfd, rel, O_RDONLY));
    unsigned char r[3000];
    EQ(read(fd, r, sizeof r), 3000);
    CHECK(is_pat(r, 17, 0, 3000));
    OK(close(fd));
    struct stat st;
    OK(fstatat(dfd, rel, &st, 0));
    EQ(st.st_size, 3000);
    OK(faccessat(dfd, dots, F_OK, 0));
    snprintf(dots, sizeof dots, "%s/gone", base);
    FAILS(openat(dfd, dots, O_RDONLY), ENOENT);
    FAILS(unlinkat(dfd, dots, 0), ENOENT);
    OK(close(dfd));
    OK(fchdir(cwd));
    OK(close(cwd));
    left("rel", 3000, 17, "");
}

/* ------------------------------------------------------------ outside */

/* The host file outside the mount, through the same calls: the kernel's. */
static void t_outside(void)
{
    enum { N = 30000 };
    unsigned char r[N + 1000];
    int fd = FD(open(outside, O_RDWR | O_CREAT | O_TRUNC, 0644));
    EQ(write(fd, pbuf(9, 0, 10000), 10000), 10000);
    struct iovec wv[2] = {{pbuf(9, 10000, 4000), 4000}, {pbuf(9, 14000, 6000), 6000}};
    EQ(writev(fd, wv, 2), 10000);
    struct iovec pv = {pbuf(9, 20000, 10000), 10000};
    EQ(pwritev(fd, &pv, 1, 20000), 10000);
    EQ(pos(fd), 20000);
    EQ(lseek(fd, 0, SEEK_END), N);
    EQ(fsize(fd), N);
    OK(ftruncate(fd, N + 10000));
    OK(ftruncate(fd, N));
    int fr = fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, N);
    CHECK(fr == 0 || errno == EOPNOTSUPP);
    OK(fsync(fd));
    OK(fdatasync(fd));
    EQ(pread(fd, r, N, 0), N);
    CHECK(is_pat(r, 9, 0, N));
    EQ(lseek(fd, 0, SEEK_SET), 0);
    struct iovec rv[2] = {{r, 100}, {r + 100, N}};
    EQ(readv(fd, rv, 2), N);
    CHECK(is_pat(r, 9, 0, N));
    EQ(pwrite(fd, pbuf(9, 5, 10), 10, 5), 10);
    EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL), 0);
    OK(close(fd));
    FILE *s = fopen(outside, "a");
    CHECK(s != NULL);
    if (!s)
        return;
    EQ(fwrite(pbuf(9, N, 1000), 1, 1000, s), 1000);
    OK(fclose(s));
    s = fopen(outside, "r");
    CHECK(s != NULL);
    if (!s)
        return;
    EQ(fread(r, 1, sizeof r, s), N + 1000);
    CHECK(is_pat(r, 9, 0, N + 1000));
    OK(fclose(s));
    EQ(psize(outside), N + 1000);
    OK(access(outside, R_OK | W_OK));
    printf("OUTSIDE %d 9\n", N + 1000);
}

/* ------------------------------------------------------------ fd phase */

/* Every fd call on one bufwrite fd `x` (read-write), leaving it holding
 * pat(seed) over 0..4096 and zeros over 4096..6000. */
static void fd_ops(int x, unsigned seed)
{
    unsigned char r[6000];
    char small[64];
    struct stat st;
    struct stat64 st64;
    struct statx stx;
    OK(ftruncate(x, 0));
    EQ(lseek(x, 0, SEEK_SET), 0);
    EQ(write(x, pbuf(seed, 0, 1000), 1000), 1000);
    EQ(pwrite(x, pbuf(seed, 1000, 1000), 1000, 1000), 1000);
    EQ(pwrite64(x, pbuf(seed, 2000, 10), 10, 2000), 10);
    EQ(lseek(x, 2000, SEEK_SET), 2000);
    struct iovec wv[2] = {{pbuf(seed, 2000, 400), 400}, {pbuf(seed, 2400, 600), 600}};
    EQ(writev(x, wv, 2), 1000);
    struct iovec pv = {pbuf(seed, 3000, 1000), 1000};
    EQ(pwritev(x, &pv, 1, 3000), 1000);
    EQ(lseek(x, 4000, SEEK_SET), 4000);
    struct iovec v2 = {pbuf(seed, 4000, 1000), 1000};
    EQ(pwritev2(x, &v2, 1, -1, 0), 1000);
    v2.iov_base = pbuf(seed, 5000, 1000);
    EQ(pwritev2(x, &v2, 1, 5000, RWF_HIPRI), 1000);
    EQ(lseek(x, 0, SEEK_SET), 0);
    EQ(read(x, r, 1000), 1000);
    EQ(read(x, small, v_len), 64);
    EQ(pread(x, r + 1000, 1000, 1000), 1000);
    EQ(pread64(x, r + 2000, 1000, 2000), 1000);
    EQ(pread(x, small, v_len, 0), 64);
    EQ(lseek(x, 3000, SEEK_SET), 3000);
    struct iovec rv[2] = {{r + 3000, 500}, {r + 3500, 500}};
    EQ(readv(x, rv, 2), 1000);
    struct iovec pr = {r + 4000, 1000};
    EQ(preadv(x, &pr, 1, 4000), 1000);
    EQ(lseek(x, 5000, SEEK_SET), 5000);
    struct iovec p2 = {r + 5000, 1000};
    EQ(preadv2(x, &p2, 1, -1, 0), 1000);
    CHECK(is_pat(r, seed, 0, 6000));
    EQ(preadv2(x, &p2, 1, 5000, RWF_HIPRI), 1000);
    EQ(lseek(x, 0, SEEK_END), 6000);
    EQ(lseek64(x, -6000, SEEK_CUR), 0);
    EQ(lseek(x, 10, SEEK_DATA), 10);
    EQ(lseek(x, 10, SEEK_HOLE), 6000);
    OK(fstat(x, &st));
    EQ(st.st_size, 6000);
    OK(fstat64(x, &st64));
    OK(fstatat(x, "", &st, AT_EMPTY_PATH));
    EQ(st.st_size, 6000);
    OK(statx(x, "", AT_EMPTY_PATH, STATX_SIZE, &stx));
    EQ(stx.stx_size, 6000);
    OK(fallocate(x, 0, 6000, 2192));
    OK(fallocate(x, FALLOC_FL_KEEP_SIZE, 8192, 4096));
    OK(fallocate(x, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096));
    EQ(posix_fallocate(x, 0, 10000), 0);
    EQ(fsize(x), 10000);
    OK(ftruncate64(x, 6000));
    OK(fsync(x));
    OK(fdatasync(x));
    OK(sync_file_range(x, 0, 0, SYNC_FILE_RANGE_WRITE));
    EQ(posix_fadvise(x, 0, 0, POSIX_FADV_DONTNEED), 0);
    int fl = fcntl(x, F_GETFL);
    EQ(fl & O_ACCMODE, O_RDWR);
    OK(fcntl(x, F_SETFL, fl));
    struct flock lk = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
    OK(fcntl(x, F_SETLK, &lk));
    /* Errors, served without the kernel too. */
    FAILS(lseek(x, 0, 42), EINVAL);
    FAILS(pread(x, r, 1, -1), EINVAL);
    FAILS(fallocate(x, FALLOC_FL_ZERO_RANGE, 0, 1), EOPNOTSUPP);
    FAILS(preadv2(x, &p2, 1, 0, RWF_NOWAIT), EOPNOTSUPP);
    FAILS_PTR(mmap(NULL, 4096, PROT_READ, MAP_SHARED, x, 0), MAP_FAILED, ENODEV);
    FAILS(ioctl(x, FICLONE, x), EOPNOTSUPP);
    FAILS(ioctl(x, FIONREAD, &fl), ENOTTY);
    FAILS(fgetxattr(x, "user.x", small, sizeof small), ENOTSUP);
    EQ(flistxattr(x, small, sizeof small), 0);
    EQ(pread(x, r, sizeof r, 0), 6000);
    CHECK(is_pat(r, seed, 0, 4096) && is_zero(r + 4096, 1904));
}

/* Marks the phase's start or end with a kernel call strace shows. */
static void mark(const char *fds, const char *what)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s.%s", fds, what);
    FAILS(access(p, F_OK), ENOENT);
}

/* The fd phase: opens bufwrite fds every way, names them in FDS, and
 * between the two marks runs every fd call on them while they all stay
 * open (so no number changes hands). */
static void t_phase(const char *fds)
{
    char ctl[PATH_MAX];
    snprintf(ctl, sizeof ctl, "%s.ctl", fds);
    int a = FD(open(mp("ph-a"), O_RDWR | O_CREAT | O_TRUNC, 0644));
    int b = FD(open64(mp("ph-b"), O_RDWR | O_CREAT | O_TRUNC, 0644));
    int c = FD(openat(AT_FDCWD, mp("ph-c"), O_RDWR | O_CREAT | O_TRUNC, 0644));
    int d = FD(creat(mp("ph-d"), 0644));
    int ro = FD(open(mp("ph-a"), O_RDONLY | O_CLOEXEC));
    int e = FD(dup(a));
    int g = FD(fcntl(b, F_DUPFD_CLOEXEC, 300));
    int h = FD(dup2(c, 400));
    int i = FD(dup3(c, 401, O_CLOEXEC));
    int sfd = FD(dup(a));
    FILE *s = fdopen(sfd, "r+");
    CHECK(s != NULL);
    /* fopen's placeholder takes the lowest free number: find it first. */
    int probe = FD(dup(0));
    OK(close(probe));
    FILE *sp = fopen(mp("ph-s"), "w+");
    CHECK(sp != NULL);
    CHECK(fcntl(probe, F_GETFD) >= 0);
    int k = FD(open(ctl, O_RDWR | O_CREAT | O_TRUNC, 0644));
    int pp[2];
    OK(pipe(pp));
    if (!s || !sp)
        return;

    FILE *side = fopen(fds, "w");
    CHECK(side != NULL);
    if (!side)
        return;
    fprintf(side, "FDS %d %d %d %d %d %d %d %d %d %d %d\nCTL %d\n", a, b, c, d, ro, e, g, h, i,
            sfd, probe, k);
    OK(fclose(side));

    mark(fds, "begin");
    /* The kernel control fd: the strace check must see these. */
    EQ(write(k, "control", 7), 7);
    char cbuf[8];
    EQ(pread(k, cbuf, 7, 0), 7);
    EQ(lseek(k, 0, SEEK_END), 7);
    struct stat st;
    OK(fstat(k, &st));
    OK(fsync(k));

    int rw[] = {a, b, c, e, g, h, i, sfd};
    for (unsigned n = 0; n < sizeof rw / sizeof rw[0]; n++)
        fd_ops(rw[n], 20 + (rw[n] == b || rw[n] == g));
    /* Dups share one offset. */
    EQ(lseek(e, 123, SEEK_SET), 123);
    EQ(pos(a), 123);
    EQ(pos(sfd), 123);
    EQ(lseek(h, 7, SEEK_SET), 7);
    EQ(pos(c), 7);
    EQ(pos(i), 7);
    EQ(pos(g), pos(b));
    /* Write-only and read-only fds. */
    unsigned char r[100];
    EQ(write(d, pbuf(21, 0, 100), 100), 100);
    FAILS(read(d, r, 1), EBADF);
    FAILS(pread(d, r, 1, 0), EBADF);
    EQ(pread(ro, r, 100, 0), 100);
    CHECK(is_pat(r, 20, 0, 100));
    FAILS(write(ro, r, 1), EBADF);
    FAILS(pwrite(ro, r, 1, 0), EBADF);
    FAILS(ftruncate(ro, 0), EINVAL);
    FAILS(copy_file_range(ro, NULL, k, NULL, 10, 0), EXDEV);
    FAILS(copy_file_range(k, NULL, a, NULL, 10, 0), EXDEV);
    FAILS(sendfile(k, ro, NULL, 10), EINVAL);
    FAILS(splice(ro, NULL, pp[1], NULL, 10, 0), EINVAL);
    /* Streams. */
    OK(fseek(s, 0, SEEK_SET));
    EQ(fread(r, 1, 100, s), 100);
    CHECK(is_pat(r, 20, 0, 100));
    OK(fseek(s, 10, SEEK_SET));
    EQ(fwrite(pbuf(20, 10, 50), 1, 50, s), 50);
    OK(fflush(s));
    EQ(ftell(s), 60);
    EQ(fwrite(pbuf(22, 0, 3000), 1, 3000, sp), 3000);
    OK(fseek(sp, 0, SEEK_SET));
    EQ(fread(r, 1, 100, sp), 100);
    CHECK(is_pat(r, 22, 0, 100));
    EQ(ftell(sp), 100);
    /* Path calls. */
    struct statx stx;
    OK(stat(mp("ph-a"), &st));
    EQ(st.st_size, 6000);
    OK(lstat(mp("ph-b"), &st));
    OK(statx(AT_FDCWD, mp("ph-c"), 0, STATX_SIZE, &stx));
    OK(access(mp("ph-a"), R_OK));
    OK(faccessat(AT_FDCWD, mp("ph-a"), W_OK, 0));
    OK(truncate(mp("ph-d"), 100));
    FAILS(getxattr(mp("ph-a"), "user.x", r, sizeof r), ENOTSUP);
    OK(rename(mp("ph-a"), mp("ph-z")));
    OK(rename(mp("ph-z"), mp("ph-a")));
    OK(mkdir(mp("ph-dir"), 0755));
    OK(rmdir(mp("ph-dir")));
    int t = FD(open(mp("ph-t"), O_WRONLY | O_CREAT | O_EXCL, 0644));
    EQ(write(t, "t", 1), 1);
    OK(close(t));
    OK(unlink(mp("ph-t")));
    FAILS(open(mp("ph-t"), O_RDONLY), ENOENT);
    FILE *s2 = fopen(mp("ph-c"), "r");
    CHECK(s2 != NULL);
    if (s2) {
        EQ(fread(r, 1, 100, s2), 100);
        OK(fclose(s2));
    }
    mark(fds, "end");

    OK(fclose(sp));
    OK(fclose(s));
    OK(close(a));
    OK(close(b));
    OK(close(c));
    OK(close(d));
    OK(close(ro));
    OK(close(e));
    OK(close(g));
    OK(close(h));
    OK(close(i));
    OK(close(k));
    OK(close(pp[0]));
    OK(close(pp[1]));
    left("ph-a", 6000, 20, "4096:1904");
    left("ph-b", 6000, 21, "4096:1904");
    left("ph-c", 6000, 20, "4096:1904");
    left("ph-s", 3000, 22, "");
    left("ph-d", 100, 21, "");
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: calls MOUNT OUTSIDE [FDS]\n");
        return 2;
    }
    mnt = argv[1];
    outside = argv[2];
    setvbuf(stdout, NULL, _IOLBF, 0);
    t_open();
    t_dirs();
    t_rw();
    t_vec();
    t_seek();
    t_stat();
    t_trunc();
    t_falloc();
    t_sync();
    t_names();
    t_fds();
    t_append();
    t_stdio();
    t_refused();
    t_persist();
    t_relative();
    if (argc > 3)
        t_phase(argv[3]);
    t_outside();
    if (failures)
        printf("FAILED: %d of %d checks\n", failures, checks);
    else
        printf("ok %d checks\n", checks);
    return failures ? 1 : 0;
}
