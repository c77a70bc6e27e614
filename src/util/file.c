/* Small-file reading and number parsing for the /proc and /sys readers.
 * Every reader takes a root so tests can point it at a fixture tree. */
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

ssize_t hr__read_file(const char *path, char *buf, size_t n) {
  if (n == 0) return HR_EINVAL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
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
