/* The config file reader: `name = value` lines, `#` comments, blank lines.
 *
 * A config file can set a hook command, so its reader must never make a
 * setting out of text that is not one. The whole file is read at once (it
 * must be a regular file of at most HR_CONFIG_MAX_BYTES, so /dev/zero or a
 * FIFO cannot keep us reading), then cut at newlines only: a line is never
 * split, and one longer than HR_CONFIG_MAX_LINE is refused rather than cut.
 * A `#` starts a comment only outside double quotes, so a quoted URL keeps
 * its fragment; a NUL byte, an unclosed quote or text after a closing quote
 * is an error. Every error names path:line. */
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Documented in headroom.h and the README. */
#define HR_CONFIG_MAX_BYTES (1024 * 1024)
#define HR_CONFIG_MAX_LINE  16384

/* True when st is /dev/null, the usual way to say "no config file"
 * (ssh -F /dev/null): an empty file, whatever device node names it. */
static bool is_dev_null(const struct stat *st) {
  struct stat null_st;
  return S_ISCHR(st->st_mode) && stat("/dev/null", &null_st) == 0 && S_ISCHR(null_st.st_mode) &&
         st->st_rdev == null_st.st_rdev;
}

/* Reads the open fd to its end into buf (HR_CONFIG_MAX_BYTES + 2 bytes);
 * *n past HR_CONFIG_MAX_BYTES means the file is too big (one byte over the
 * cap tells a file that grew since fstat). */
static int read_capped(int fd, const char *path, char *buf, size_t *n, char *err, size_t errlen) {
  *n = 0;
  while (*n <= HR_CONFIG_MAX_BYTES) {
    ssize_t r = read(fd, buf + *n, HR_CONFIG_MAX_BYTES + 1 - *n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return hr__err(err, errlen, HR_EIO, "%s: %s", path, strerror(errno));
    if (r == 0) break;
    *n += (size_t)r;
  }
  return 0;
}

/* Reads the regular file at `path` whole into a NUL-terminated buffer the
 * caller frees; *len excludes the terminator. */
static int slurp(const char *path, char **out, size_t *len, char *err, size_t errlen) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0)
    return hr__err(err, errlen, errno == ENOENT ? HR_ENOENT : HR_EIO, "%s: %s", path,
                   strerror(errno));
  int rc = 0;
  char *buf = NULL;
  size_t n = 0;
  struct stat st;
  if (fstat(fd, &st) != 0)
    rc = hr__err(err, errlen, HR_EIO, "%s: %s", path, strerror(errno));
  else if (!S_ISREG(st.st_mode) && !is_dev_null(&st))
    /* HR_EIO, as for a file that cannot be read: the system file's chain
     * skips such a file with a warning, an explicit one fails. */
    rc = hr__err(err, errlen, HR_EIO, "%s: not a regular file", path);
  else if (st.st_size <= HR_CONFIG_MAX_BYTES && !(buf = malloc(HR_CONFIG_MAX_BYTES + 2)))
    rc = hr__err(err, errlen, HR_ENOMEM, "%s: out of memory", path);
  else if (buf)
    rc = read_capped(fd, path, buf, &n, err, errlen);
  if (rc == 0 && (!buf || n > HR_CONFIG_MAX_BYTES))
    rc = hr__err(err, errlen, HR_ERANGE, "%s: larger than %d bytes; not a config file", path,
                 HR_CONFIG_MAX_BYTES);
  if (rc == 0) {
    buf[n] = '\0';
    *out = buf, *len = n, buf = NULL;
  }
  free(buf);
  close(fd);
  return rc;
}

static bool blank(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Parses one line in place (no newline, no NUL inside). Sets *name to NULL
 * for a blank or comment line; else *name and *value point into `s`.
 * Returns 0, or HR_EPARSE with the reason in `why`. */
static int parse_line(char *s, char **name, char **value, const char **why) {
  *name = *value = NULL;
  while (blank(*s)) s++;
  if (*s == '\0' || *s == '#') return 0;
  char *eq = strchr(s, '=');
  char *hash = strchr(s, '#');
  if (!eq || (hash && hash < eq)) return *why = "expected 'name = value'", HR_EPARSE;
  char *e = eq;
  while (e > s && blank(e[-1])) e--;
  *e = '\0';
  if (e == s) return *why = "no name before '='", HR_EPARSE;
  char *v = eq + 1;
  while (blank(*v)) v++;
  char *end;
  if (*v == '"') {
    /* A quoted value runs to the next quote, '#' included. */
    char *close = strchr(v + 1, '"');
    if (!close) return *why = "a quote that is not closed", HR_EPARSE;
    *close = '\0';
    end = close + 1;
    while (blank(*end)) end++;
    if (*end != '\0' && *end != '#') return *why = "text after the closing quote", HR_EPARSE;
    *name = s, *value = v + 1;
    return 0;
  }
  /* Unquoted: a '#' inside a quoted part (`curl "http://h/x#frag"`) is text. */
  bool quoted = false;
  for (end = v; *end && (quoted || *end != '#'); end++)
    if (*end == '"') quoted = !quoted;
  if (quoted) return *why = "a quote that is not closed", HR_EPARSE;
  while (end > v && blank(end[-1])) end--;
  *end = '\0';
  *name = s, *value = v;
  return 0;
}

/* Applies one line (NUL-terminated, `ll` bytes before it) of the file. */
static int load_line(hr_options_t *o, const char *path, int lineno, char *line, size_t ll,
                     char *err, size_t errlen) {
  char msg[512], *name, *value;
  const char *why = NULL;
  if (memchr(line, '\0', ll))
    return hr__err(err, errlen, HR_EPARSE, "%s:%d: a NUL byte; not a text file", path, lineno);
  if (ll > HR_CONFIG_MAX_LINE)
    return hr__err(err, errlen, HR_EPARSE, "%s:%d: line longer than %d bytes", path, lineno,
                   HR_CONFIG_MAX_LINE);
  line[ll] = '\0';
  int rc = parse_line(line, &name, &value, &why);
  if (rc) return hr__err(err, errlen, rc, "%s:%d: %s", path, lineno, why);
  if (name && (rc = hr_options_set(o, name, value, HR_SRC_FILE, msg, sizeof msg)) != 0)
    return hr__err(err, errlen, rc, "%s:%d: %s", path, lineno, msg);
  return 0;
}

int hr_options_load_file(hr_options_t *o, const char *path, char *err, size_t errlen) {
  if (!o || !path) return HR_EINVAL;
  char *text = NULL;
  size_t len = 0;
  int rc = slurp(path, &text, &len, err, errlen);
  int lineno = 0;
  for (char *line = text; rc == 0 && line < text + len;) {
    char *nl = memchr(line, '\n', (size_t)(text + len - line));
    char *stop = nl ? nl : text + len;
    rc = load_line(o, path, ++lineno, line, (size_t)(stop - line), err, errlen);
    line = stop + 1;
  }
  free(text);
  return rc;
}
