/* Opening the files a user names (traces, workflows, config files,
 * libraries, databases) so that nothing but a regular file is ever read, and
 * small-file reading and number parsing for the /proc and /sys readers.
 * Every /proc reader takes a root so tests can point it at a fixture tree. */
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* What a file that is not a regular one is, for the message. */
static const char *file_kind(mode_t m) {
  return S_ISFIFO(m)   ? "a FIFO"
         : S_ISDIR(m)  ? "a directory"
         : S_ISCHR(m)  ? "a character device"
         : S_ISBLK(m)  ? "a block device"
         : S_ISSOCK(m) ? "a socket"
                       : "not a file";
}

/* True when st is /dev/null, whatever device node names it. */
static bool is_dev_null(const struct stat *st) {
  struct stat null_st;
  return S_ISCHR(st->st_mode) && stat("/dev/null", &null_st) == 0 && S_ISCHR(null_st.st_mode) &&
         st->st_rdev == null_st.st_rdev;
}

/* Refuses st unless it is a regular file (or /dev/null when allowed). */
static int check_kind(const char *path, const struct stat *st, unsigned flags, char *err,
                      size_t errlen) {
  if (S_ISREG(st->st_mode) || ((flags & HR__OPEN_DEV_NULL) && is_dev_null(st))) return 0;
  return hr__err(err, errlen, HR_EIO, "%s: not a regular file (%s)", path, file_kind(st->st_mode));
}

static int errno_code(int e) {
  return e == ENOENT || e == ENOTDIR ? HR_ENOENT : e == EACCES || e == EPERM ? HR_EPERM : HR_EIO;
}

int hr__open_regular(const char *path, unsigned flags, int *fd, uint64_t *size, char *err,
                     size_t errlen) {
  struct stat st;
  *fd = -1;
  if (!path || !*path) return hr__err(err, errlen, HR_EINVAL, "no path given");
  if (stat(path, &st) != 0)
    return hr__err(err, errlen, errno_code(errno), "%s: %s", path, strerror(errno));
  int rc = check_kind(path, &st, flags, err, errlen);
  if (rc) return rc;
  int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (f < 0) return hr__err(err, errlen, errno_code(errno), "%s: %s", path, strerror(errno));
  int fl = fcntl(f, F_GETFL);
  if (fstat(f, &st) != 0 || fl < 0 || fcntl(f, F_SETFL, fl & ~O_NONBLOCK) != 0)
    rc = hr__err(err, errlen, HR_EIO, "%s: %s", path, strerror(errno));
  else
    rc = check_kind(path, &st, flags, err, errlen);
  if (rc) {
    close(f);
    return rc;
  }
  if (size) *size = (uint64_t)st.st_size;
  *fd = f;
  return 0;
}

int hr__fopen_regular(const char *path, FILE **f, char *err, size_t errlen) {
  int fd;
  *f = NULL;
  int rc = hr__open_regular(path, 0, &fd, NULL, err, errlen);
  if (rc) return rc;
  if (!(*f = fdopen(fd, "rb"))) {
    rc = hr__err(err, errlen, HR_ENOMEM, "%s: %s", path, strerror(errno));
    close(fd);
  }
  return rc;
}

int hr__check_regular(const char *path, char *err, size_t errlen) {
  int fd;
  int rc = hr__open_regular(path, 0, &fd, NULL, err, errlen);
  if (rc == 0) close(fd);
  return rc;
}

int hr__check_library(const char *path, char *err, size_t errlen) {
  if (!path || !strchr(path, '/')) return 0;
  int rc = hr__check_regular(path, err, errlen);
  return rc == HR_EIO ? rc : 0;
}

ssize_t hr__read_file(const char *path, char *buf, size_t n) {
  if (n == 0) return HR_EINVAL;
  /* O_NONBLOCK: a FIFO in a fixture tree (--root) opens at once and reads as
   * empty or HR_EIO; /proc and /sys files ignore the flag. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    if (errno == EACCES || errno == EPERM) return HR_EPERM;
    if (errno == ENOENT || errno == ENOTDIR || errno == ESRCH) return HR_ENOENT;
    return HR_EIO;
  }
  size_t len = 0;
  while (len < n - 1) {
    ssize_t r = read(fd, buf + len, n - 1 - len);
    if (r < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      close(fd);
      buf[len] = '\0';
      /* A process that exits mid-read gives ESRCH; treat it as gone. */
      return e == ESRCH ? HR_ENOENT : (e == EACCES || e == EPERM) ? HR_EPERM : HR_EIO;
    }
    if (r == 0) break;
    len += (size_t)r;
  }
  close(fd);
  buf[len] = '\0';
  return (ssize_t)len;
}

int hr__path(char *out, size_t n, const char *root, const char *path) {
  if (!root || !*root || (root[0] == '/' && root[1] == '\0')) root = "";
  size_t rl = strlen(root);
  while (rl > 0 && root[rl - 1] == '/') rl--;
  int w = snprintf(out, n, "%.*s%s", (int)rl, root, path);
  return (w < 0 || (size_t)w >= n) ? HR_ERANGE : 0;
}

int hr__parse_u64(const char *s, uint64_t *out, const char **end) {
  while (*s == ' ' || *s == '\t') s++;
  if (*s < '0' || *s > '9') return HR_EPARSE;
  uint64_t v = 0;
  for (; *s >= '0' && *s <= '9'; s++) {
    unsigned d = (unsigned)(*s - '0');
    if (v > (UINT64_MAX - d) / 10) return HR_ERANGE;
    v = v * 10 + d;
  }
  if (*s != '\0' && *s != ' ' && *s != '\n' && *s != '\t') return HR_EPARSE;
  *out = v;
  if (end) *end = s;
  return 0;
}
