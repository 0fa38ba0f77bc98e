/* Small file and byte helpers shared by the format readers and writers:
 * atomic whole-file writes, whole-file reads, half-float decoding. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* fsync, O_DIRECTORY, O_CLOEXEC */
#endif

#include "formats.h"
#include <libgen.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void reed_array_free(reed_array *a) {
    if (!a)
        return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* Writes all of buf to fd, retrying short writes and EINTR. */
static int write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* fsyncs the directory holding path so that a rename inside it is durable. */
static int fsync_parent_dir(const char *path, reed_error *err) {
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) >= sizeof dir)
        return reed_errorf(err, "%s: directory name too long", path);
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);

    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return reed_errorf(err, "%s: cannot open directory %s: %s", path, dir,
                           strerror(errno));
    /* Some file systems cannot fsync directories (EINVAL); the rename has
     * still happened, so only report real I/O errors. */
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    if (rc != 0 && saved != EINVAL)
        return reed_errorf(err, "%s: fsync of directory %s failed: %s", path,
                           dir, strerror(saved));
    return 0;
}

int write_file_atomic(const char *path, const void *data, size_t len,
                      reed_error *err) {
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return reed_errorf(err, "%s: path too long", path);

    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return reed_errorf(err, "%s: cannot create: %s", tmp, strerror(errno));
    const char *what = NULL;
    if (write_all(fd, data, len) != 0)
        what = "write";
    else if (fsync(fd) != 0)
        what = "fsync";
    int saved = errno;
    if (close(fd) != 0 && !what) {
        what = "close";
        saved = errno;
    }
    if (what) {
        unlink(tmp);
        return reed_errorf(err, "%s: %s failed: %s", tmp, what,
                           strerror(saved));
    }
    if (rename(tmp, path) != 0) {
        saved = errno;
        unlink(tmp);
        return reed_errorf(err, "%s: cannot rename %s over it: %s", path, tmp,
                           strerror(saved));
    }
    return fsync_parent_dir(path, err);
}

/* Reads exactly len bytes from fd; returns the count actually read (less
 * only at end of file) or -1 on error. */
static ssize_t read_upto(int fd, uint8_t *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

int read_file_all(const char *path, uint8_t **data, size_t *len,
                  reed_error *err) {
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return reed_errorf(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return reed_errorf(err, "%s: not a regular file", path);
    }
    if ((uintmax_t)st.st_size >= (uintmax_t)SSIZE_MAX) {
        close(fd);
        return reed_errorf(err, "%s: file too large (%jd bytes)", path,
                           (intmax_t)st.st_size);
    }
    size_t size = (size_t)st.st_size;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return reed_errorf(err, "%s: out of memory for %zu bytes", path, size);
    }
    ssize_t got = read_upto(fd, buf, size);
    int saved = errno;
    close(fd);
    if (got < 0 || (size_t)got != size) {
        free(buf);
        if (got < 0)
            return reed_errorf(err, "%s: read failed: %s", path,
                               strerror(saved));
        return reed_errorf(err, "%s: file shrank while reading", path);
    }
    *data = buf;
    *len = size;
    return 0;
}

float reed_f16_to_f32(uint16_t h) {
    int sign = (h >> 15) & 1;
    int exp = (h >> 10) & 0x1f;
    int mant = h & 0x3ff;
    float v;
    if (exp == 0)
        v = ldexpf((float)mant, -24); /* zero or subnormal */
    else if (exp == 31)
        v = mant ? NAN : INFINITY;
    else
        v = ldexpf((float)(mant | 0x400), exp - 25);
    return sign ? -v : v;
}

float reed_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* Whether p names a regular file. */
static int regular_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

void reed_asset_path(const char *rel, char *out, size_t cap) {
    const char *src = getenv("REED_SRC");
    if (src && *src) {
        snprintf(out, cap, "%s/%s", src, rel);
        return;
    }
    snprintf(out, cap, "%s", rel);
    if (regular_file(out)) return;
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return;
    exe[n] = 0;
    const char *dir = dirname(exe);
    static const char *const ups[] = {"..", "../.."};
    for (int i = 0; i < 2; i++) {
        char cand[8192];
        snprintf(cand, sizeof cand, "%s/%s/%s", dir, ups[i], rel);
        if (regular_file(cand)) {
            snprintf(out, cap, "%s", cand);
            return;
        }
    }
}
