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
  if (fstat(fd, &st) != 0) {
    rc = hr__err(err, errlen, HR_EIO, "%s: %s", path, strerror(errno));
    goto out;
  }
  /* /dev/null is the usual way to say "no config file" (ssh -F /dev/null):
   * an empty file, whatever device node names it. */
  struct stat null_st;
  bool is_null = S_ISCHR(st.st_mode) && stat("/dev/null", &null_st) == 0 &&
                 S_ISCHR(null_st.st_mode) && st.st_rdev == null_st.st_rdev;
  if (!S_ISREG(st.st_mode) && !is_null) {
    /* HR_EIO, as for a file that cannot be read: the system file's chain
     * skips such a file with a warning, an explicit one fails. */
    rc = hr__err(err, errlen, HR_EIO, "%s: not a regular file", path);
    goto out;
  }
  if (st.st_size > HR_CONFIG_MAX_BYTES) goto too_big;
  /* One byte over the cap tells a file that grew since fstat. */
  buf = malloc(HR_CONFIG_MAX_BYTES + 2);
  if (!buf) {
    rc = hr__err(err, errlen, HR_ENOMEM, "%s: out of memory", path);
    goto out;
  }
  while (n <= HR_CONFIG_MAX_BYTES) {
    ssize_t r = read(fd, buf + n, HR_CONFIG_MAX_BYTES + 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      rc = hr__err(err, errlen, HR_EIO, "%s: %s", path, strerror(errno));
      goto out;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  if (n > HR_CONFIG_MAX_BYTES) goto too_big;
  buf[n] = '\0';
  *out = buf, *len = n, buf = NULL;
  goto out;
too_big:
  rc = hr__err(err, errlen, HR_ERANGE, "%s: larger than %d bytes; not a config file", path,
               HR_CONFIG_MAX_BYTES);
out:
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

int hr_options_load_file(hr_options_t *o, const char *path, char *err, size_t errlen) {
  if (!o || !path) return HR_EINVAL;
  char *text = NULL, msg[512];
  size_t len = 0;
  int rc = slurp(path, &text, &len, err, errlen);
  if (rc) return rc;
  int lineno = 0;
  for (char *line = text; line < text + len;) {
    lineno++;
    char *nl = memchr(line, '\n', (size_t)(text + len - line));
    char *stop = nl ? nl : text + len;
    size_t ll = (size_t)(stop - line);
    const char *why = NULL;
    if (memchr(line, '\0', ll)) {
      why = "a NUL byte; not a text file";
      rc = HR_EPARSE;
    } else if (ll > HR_CONFIG_MAX_LINE) {
      rc = hr__err(err, errlen, HR_EPARSE, "%s:%d: line longer than %d bytes", path, lineno,
                   HR_CONFIG_MAX_LINE);
      goto out;
    } else {
      *stop = '\0';
      char *name, *value;
      rc = parse_line(line, &name, &value, &why);
      if (rc == 0 && name) {
        rc = hr_options_set(o, name, value, HR_SRC_FILE, msg, sizeof msg);
        if (rc) {
          hr__err(err, errlen, rc, "%s:%d: %s", path, lineno, msg);
          goto out;
        }
      }
    }
    if (rc) {
      hr__err(err, errlen, rc, "%s:%d: %s", path, lineno, why);
      goto out;
    }
    line = stop + 1;
  }
out:
  free(text);
  return rc;
}
