/* The streaming reader of headroom's trace format (docs/trace-format.md).
 *
 * The file is read through one fixed buffer; a line is parsed in place where
 * it lies in that buffer, and the unread tail moves to the front before the
 * next read. Memory is the buffer and a few strings, whatever the trace's
 * length. Every check that needs no history is made here (syntax, slots below
 * the section's `slots`, counts against its `device` line, times that never
 * go back, the final `end`); whether a slot is live is the replay's
 * business. */
#include "util/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BUF_SIZE (64 * 1024)

struct hr_trace_reader {
  FILE *f;
  char path[512];
  char source[256];
  char alloc_conf[HR_TRACE_MAX_LINE];
  char *buf;         /* BUF_SIZE + 1 bytes */
  size_t start, end; /* unread bytes are buf[start, end) */
  bool eof;          /* the file has no more bytes to read */
  bool done, failed; /* saw `end`; a previous call failed */
  bool in_device;    /* inside a device section */
  uint64_t line;     /* number of the last line handed out */
  uint64_t done_bytes, total_bytes;
  uint64_t n_initial, n_ops; /* counted in the current section */
  uint64_t n_allocs;         /* L and A lines in the current section */
  bool seen_event;           /* an A/F/R/O line in the section */
  uint64_t version;          /* of the file's format */
  uint64_t time_us;          /* the section's time, from its last T line */
  char *pending;             /* a line read ahead by hr_trace_open, not yet handed out */
  hr_trace_device_t dev;
};

static int fail(hr_trace_reader_t *r, char *err, size_t errlen, int code, const char *fmt, ...)
    HR_PRINTF(5, 6);

/* Formats "PATH:LINE: msg" and marks the reader unusable. */
static int fail(hr_trace_reader_t *r, char *err, size_t errlen, int code, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  r->failed = true;
  return hr__err(err, errlen, code, "%s:%" PRIu64 ": %s", r->path, r->line, msg);
}

/* Moves the unread tail to the front of the buffer and reads more after
 * it; at the end of the file sets eof. Returns 0 or fails. */
static int refill(hr_trace_reader_t *r, char *err, size_t errlen) {
  size_t avail = r->end - r->start;
  if (avail > HR_TRACE_MAX_LINE) {
    r->line++;
    return fail(r, err, errlen, HR_EPARSE, "line longer than %d bytes", HR_TRACE_MAX_LINE);
  }
  memmove(r->buf, r->buf + r->start, avail);
  r->start = 0;
  r->end = avail;
  size_t got = fread(r->buf + r->end, 1, BUF_SIZE - r->end, r->f);
  r->end += got;
  if (got == 0) {
    if (ferror(r->f)) return fail(r, err, errlen, HR_EIO, "read error: %s", strerror(errno));
    r->eof = true;
  }
  return 0;
}

/* Hands out the line at r->start, `len` bytes, ending at `nl` (NULL: the
 * file ended without a newline), terminated in place. */
static char *take_line(hr_trace_reader_t *r, size_t len, const char *nl, int *rc, char *err,
                       size_t errlen) {
  char *p = r->buf + r->start;
  r->line++;
  if (len > HR_TRACE_MAX_LINE) {
    *rc = fail(r, err, errlen, HR_EPARSE, "line longer than %d bytes", HR_TRACE_MAX_LINE);
    return NULL;
  }
  if (!nl) {
    /* Every line of a trace ends with a newline; one that does not was cut. */
    *rc = fail(r, err, errlen, HR_EPARSE, "truncated: the last line has no newline");
    return NULL;
  }
  p[len] = '\0';
  if (len > 0 && p[len - 1] == '\r') p[len - 1] = '\0';
  r->start += len + 1;
  r->done_bytes += len + 1;
  return p;
}

/* Hands out the next line (without its newline, terminated in place) or NULL
 * at the end of the file. A line longer than HR_TRACE_MAX_LINE is an error;
 * *rc says so. */
static char *next_line(hr_trace_reader_t *r, int *rc, char *err, size_t errlen) {
  *rc = 0;
  if (r->pending) {
    char *p = r->pending;
    r->pending = NULL;
    return p;
  }
  for (;;) {
    char *p = r->buf + r->start;
    size_t avail = r->end - r->start;
    char *nl = memchr(p, '\n', avail);
    if (nl || (r->eof && avail > 0))
      return take_line(r, nl ? (size_t)(nl - p) : avail, nl, rc, err, errlen);
    if (r->eof || (*rc = refill(r, err, errlen)) != 0) return NULL;
  }
}

/* Parses an unsigned decimal field ending at a space or the end of the line;
 * moves *s past it and one separating space. */
static bool field_u64(char **s, uint64_t *out) {
  const char *p = *s;
  if (*p < '0' || *p > '9') return false;
  uint64_t v = 0;
  while (*p >= '0' && *p <= '9') {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
    p++;
  }
  if (*p == ' ')
    p++;
  else if (*p != '\0')
    return false;
  *s = (char *)p;
  *out = v;
  return true;
}

/* Sets the device line's `key` to v; `have` gets bit 1, 2 or 4 for slots,
 * initial and ops, which every device line needs. */
static int device_key(hr_trace_reader_t *r, hr_trace_device_t *d, const char *key, uint64_t v,
                      unsigned *have, char *err, size_t errlen) {
  if (strcmp(key, "slots") == 0) {
    if (v > UINT32_MAX) return fail(r, err, errlen, HR_EPARSE, "device: too many slots");
    d->slots = v, *have |= 1;
  } else if (strcmp(key, "initial") == 0)
    d->initial = v, *have |= 2;
  else if (strcmp(key, "ops") == 0)
    d->ops = v, *have |= 4;
  else if (strcmp(key, "pytorch_reserved_start") == 0)
    d->pytorch_reserved_start = v;
  else if (strcmp(key, "pytorch_peak_reserved") == 0)
    d->pytorch_peak_reserved = v, d->has_pytorch = true;
  else if (strcmp(key, "pytorch_peak_live") == 0)
    d->pytorch_peak_live = v;
  else if (strcmp(key, "pytorch_ooms") == 0)
    d->pytorch_ooms = v;
  else if (strcmp(key, "pytorch_expandable") == 0)
    d->pytorch_expandable = v != 0;
  else if (strcmp(key, "duration_us") == 0 && r->version >= 2)
    d->duration_us = v, d->has_times = true;
  /* Other keys belong to later versions of the format; they are skipped. */
  return 0;
}

static int parse_device(hr_trace_reader_t *r, char *s, char *err, size_t errlen) {
  hr_trace_device_t d = {0};
  uint64_t v;
  int rc;
  if (!field_u64(&s, &v) || v > 1024)
    return fail(r, err, errlen, HR_EPARSE, "device: expected a device number (0-1024)");
  d.device = (int)v;
  unsigned have = 0;
  while (*s) {
    char *eq = strchr(s, '=');
    char *sp = strchr(s, ' ');
    if (!eq || (sp && sp < eq))
      return fail(r, err, errlen, HR_EPARSE, "device: expected key=value, found '%.40s'", s);
    *eq = '\0';
    const char *key = s;
    s = eq + 1;
    if (!field_u64(&s, &v))
      return fail(r, err, errlen, HR_EPARSE, "device: '%s' needs an unsigned integer", key);
    if ((rc = device_key(r, &d, key, v, &have, err, errlen))) return rc;
  }
  if (have != 7) return fail(r, err, errlen, HR_EPARSE, "device: needs slots=, initial= and ops=");
  r->dev = d;
  r->in_device = true;
  r->n_initial = r->n_ops = r->n_allocs = 0;
  r->seen_event = false;
  r->time_us = 0;
  return 0;
}

/* Parses a T line's value: `N` (microseconds since the section's start) or
 * `+N` (since the previous T line). Times never go back, and stay within the
 * duration the device line declares. */
static int parse_time(hr_trace_reader_t *r, char *s, char *err, size_t errlen) {
  if (!r->dev.has_times)
    return r->version < 2
               ? fail(r, err, errlen, HR_EPARSE,
                      "T line in a version %" PRIu64 " trace (times need version 2)", r->version)
               : fail(r, err, errlen, HR_EPARSE,
                      "T line in a section whose device line has no duration_us=");
  bool rel = *s == '+';
  uint64_t v;
  s += rel;
  if (!field_u64(&s, &v) || *s)
    return fail(r, err, errlen, HR_EPARSE, "T needs microseconds (N, or +N since the last T)");
  if (rel) {
    if (v > UINT64_MAX - r->time_us) return fail(r, err, errlen, HR_EPARSE, "time overflows");
    v += r->time_us;
  } else if (v < r->time_us) {
    return fail(r, err, errlen, HR_EPARSE, "time goes backwards (T %" PRIu64 " after %" PRIu64 ")",
                v, r->time_us);
  }
  if (v > r->dev.duration_us)
    return fail(r, err, errlen, HR_EPARSE,
                "time %" PRIu64 " beyond the device line's duration_us=%" PRIu64, v,
                r->dev.duration_us);
  r->time_us = v;
  return 0;
}

/* Checks the section that just ended against its device line. */
static int close_device(hr_trace_reader_t *r, char *err, size_t errlen) {
  if (!r->in_device) return 0;
  if (r->n_initial != r->dev.initial)
    return fail(r, err, errlen, HR_EPARSE,
                "device %d declares initial=%" PRIu64 " but has %" PRIu64 " L lines", r->dev.device,
                r->dev.initial, r->n_initial);
  if (r->n_ops != r->dev.ops)
    return fail(r, err, errlen, HR_EPARSE,
                "device %d declares ops=%" PRIu64 " but has %" PRIu64 " A and F lines",
                r->dev.device, r->dev.ops, r->n_ops);
  return 0;
}

static int parse_slot(hr_trace_reader_t *r, char **s, hr_trace_event_t *ev, char *err,
                      size_t errlen) {
  uint64_t v;
  if (!field_u64(s, &v)) return fail(r, err, errlen, HR_EPARSE, "expected a slot number");
  if (v >= r->dev.slots)
    return fail(r, err, errlen, HR_EPARSE,
                "slot %" PRIu64 " out of range (the device line says slots=%" PRIu64 ")", v,
                r->dev.slots);
  ev->slot = (uint32_t)v;
  return 0;
}

/* Slots are numbered densely: the slot an L or A line fills is at most the
 * number of L and A lines before it in its section. Without this rule a
 * 100-byte trace declaring slots=4294967295 could make the replay hold an
 * array of 4 Gi slots; with it, the replay's slot array grows with the
 * lines it reads. */
static int check_dense(hr_trace_reader_t *r, const hr_trace_event_t *ev, char *err, size_t errlen) {
  if (ev->slot > r->n_allocs)
    return fail(r, err, errlen, HR_EPARSE,
                "slot %u before slot %" PRIu64 " was used (slots are numbered densely: at most "
                "the number of L and A lines before)",
                ev->slot, r->n_allocs);
  r->n_allocs++;
  return 0;
}

static int parse_size_stream(hr_trace_reader_t *r, char **s, hr_trace_event_t *ev, char *err,
                             size_t errlen) {
  if (!field_u64(s, &ev->size)) return fail(r, err, errlen, HR_EPARSE, "expected a size");
  if (!field_u64(s, &ev->stream)) return fail(r, err, errlen, HR_EPARSE, "expected a stream");
  if (**s) return fail(r, err, errlen, HR_EPARSE, "unexpected '%.40s' after the stream", *s);
  return 0;
}

/* An L (live at the start) or A (allocation) line: slot, size, stream. */
static int parse_alloc(hr_trace_reader_t *r, char kind, char *s, hr_trace_event_t *ev, char *err,
                       size_t errlen) {
  int rc;
  ev->op = kind == 'A' ? HR_TRACE_ALLOC : HR_TRACE_LIVE;
  if (kind == 'L' && r->seen_event)
    return fail(r, err, errlen, HR_EPARSE, "L line after the section's first event");
  if ((rc = parse_slot(r, &s, ev, err, errlen)) ||
      (rc = parse_size_stream(r, &s, ev, err, errlen)) || (rc = check_dense(r, ev, err, errlen)))
    return rc;
  if (kind == 'A')
    r->n_ops++, r->seen_event = true;
  else
    r->n_initial++;
  return 0;
}

/* An R line: a signed change of PyTorch's reserved bytes. */
static int parse_reserved(hr_trace_reader_t *r, char *s, hr_trace_event_t *ev, char *err,
                          size_t errlen) {
  ev->op = HR_TRACE_RESERVED;
  bool neg = *s == '-';
  if (*s != '+' && *s != '-')
    return fail(r, err, errlen, HR_EPARSE, "R needs a signed change (+N or -N)");
  s++;
  uint64_t v;
  if (!field_u64(&s, &v) || *s || v > INT64_MAX)
    return fail(r, err, errlen, HR_EPARSE, "R needs a signed change (+N or -N)");
  ev->delta = neg ? -(int64_t)v : (int64_t)v;
  r->seen_event = true;
  return 0;
}

/* Parses one event line of a device section (the record letter is s[0]).
 * Returns 1 for a T line, which is no event of its own. */
static int parse_event(hr_trace_reader_t *r, char *s, hr_trace_event_t *ev, char *err,
                       size_t errlen) {
  char kind = s[0];
  const char *line = s;
  int rc;
  if (s[1] != ' ') goto unknown;
  if (!r->in_device)
    return fail(r, err, errlen, HR_EPARSE, "'%c' line before any device line", kind);
  s += 2;
  /* T lines are nearly as many as events in a timed trace: they skip the rest. */
  if (kind == 'T') return (rc = parse_time(r, s, err, errlen)) ? rc : 1;
  memset(ev, 0, sizeof *ev);
  ev->time_us = r->time_us;
  switch (kind) {
  case 'A':
  case 'L':
    return parse_alloc(r, kind, s, ev, err, errlen);
  case 'F':
    ev->op = HR_TRACE_FREE;
    if ((rc = parse_slot(r, &s, ev, err, errlen))) return rc;
    if (*s) return fail(r, err, errlen, HR_EPARSE, "unexpected '%.40s' after the slot", s);
    r->n_ops++, r->seen_event = true;
    return 0;
  case 'R':
    return parse_reserved(r, s, ev, err, errlen);
  case 'O':
    ev->op = HR_TRACE_OOM;
    r->seen_event = true;
    return parse_size_stream(r, &s, ev, err, errlen);
  default:
    break;
  }
unknown:
  return fail(r, err, errlen, HR_EPARSE, "unknown record '%.40s'", line);
}

/* A header line (source, alloc_conf) is noted; false for any other line. */
static bool header_line(hr_trace_reader_t *r, const char *s) {
  if (strncmp(s, "source ", 7) == 0)
    hr__strlcpy(r->source, s + 7, sizeof r->source);
  else if (strncmp(s, "alloc_conf ", 11) == 0)
    hr__strlcpy(r->alloc_conf, strcmp(s + 11, "-") == 0 ? "" : s + 11, sizeof r->alloc_conf);
  else
    return false;
  return true;
}

/* The `end` line: the last section is checked, and nothing but comments may
 * follow (anything else means two traces were joined or the file was
 * damaged; say so rather than ignore it). */
static int parse_end(hr_trace_reader_t *r, hr_trace_event_t *ev, char *err, size_t errlen) {
  int rc = close_device(r, err, errlen);
  if (rc) return rc;
  char *extra;
  while ((extra = next_line(r, &rc, err, errlen)) != NULL)
    if (extra[0] != '\0' && extra[0] != '#')
      return fail(r, err, errlen, HR_EPARSE, "'%.40s' after the 'end' line", extra);
  if (rc) return rc;
  r->done = true;
  memset(ev, 0, sizeof *ev);
  ev->op = HR_TRACE_END;
  return 0;
}

int hr_trace_next(hr_trace_reader_t *r, hr_trace_event_t *ev, char *err, size_t errlen) {
  int rc = 0;
  if (r->failed) return hr__err(err, errlen, HR_ESTATE, "%s: the reader failed before", r->path);
  if (r->done) {
    memset(ev, 0, sizeof *ev);
    ev->op = HR_TRACE_END;
    return 0;
  }
  for (;;) {
    char *s = next_line(r, &rc, err, errlen);
    if (!s) {
      if (rc) return rc;
      return fail(r, err, errlen, HR_EPARSE, "truncated: the file ends without its 'end' line");
    }
    if (s[0] == '\0' || s[0] == '#') continue;
    /* Events first: they are nearly every line. */
    if (s[1] == ' ' && s[0] >= 'A' && s[0] <= 'Z') {
      if ((rc = parse_event(r, s, ev, err, errlen)) == 1) continue;
      return rc;
    }
    if (strncmp(s, "device ", 7) == 0) {
      if ((rc = close_device(r, err, errlen)) || (rc = parse_device(r, s + 7, err, errlen)))
        return rc;
      memset(ev, 0, sizeof *ev);
      ev->op = HR_TRACE_DEVICE;
      return 0;
    }
    if (strcmp(s, "end") == 0) return parse_end(r, ev, err, errlen);
    if (!r->in_device && header_line(r, s)) continue;
    return fail(r, err, errlen, HR_EPARSE, "unknown record '%.40s'", s);
  }
}

/* The first line: "headroom-trace VERSION", a version this reader knows. */
static int parse_magic(hr_trace_reader_t *r, char *err, size_t errlen) {
  int rc;
  char *s = next_line(r, &rc, err, errlen);
  if (rc) return rc;
  if (!s) return fail(r, err, errlen, HR_EPARSE, "empty file: not a headroom trace");
  if (strncmp(s, "headroom-trace ", 15) != 0)
    return fail(r, err, errlen, HR_EPARSE,
                "not a headroom trace (it starts with '%.30s'; import snapshots with "
                "'python3 -m headroom.trace import')",
                s);
  uint64_t version;
  char *v = s + 15;
  if (!field_u64(&v, &version) || *v)
    return fail(r, err, errlen, HR_EPARSE, "bad version '%.30s'", s + 15);
  if (version < 1 || version > HR_TRACE_VERSION)
    return fail(r, err, errlen, HR_EVERSION,
                "format version %" PRIu64 ", this reader knows 1 to %d", version, HR_TRACE_VERSION);
  r->version = version;
  return 0;
}

/* Reads the file's header lines now, so that source and alloc_conf are known
 * before the first event; the first other line waits in `pending` (NULL at
 * the end of the file: hr_trace_next reports the truncation). */
static int parse_header(hr_trace_reader_t *r, char *err, size_t errlen) {
  int rc;
  char *s;
  while ((s = next_line(r, &rc, err, errlen)) != NULL)
    if (s[0] != '\0' && s[0] != '#' && !header_line(r, s)) break;
  r->pending = s;
  return rc;
}

int hr_trace_open(const char *path, hr_trace_reader_t **out, char *err, size_t errlen) {
  int rc = 0;
  *out = NULL;
  hr_trace_reader_t *r = calloc(1, sizeof *r);
  if (!r) return hr__err(err, errlen, HR_ENOMEM, "out of memory");
  hr__strlcpy(r->path, path, sizeof r->path);
  r->buf = malloc(BUF_SIZE);
  if (!r->buf)
    rc = hr__err(err, errlen, HR_ENOMEM, "out of memory");
  else
    rc = hr__fopen_regular(path, &r->f, err, errlen);
  struct stat st;
  if (rc == 0 && fstat(fileno(r->f), &st) == 0) r->total_bytes = (uint64_t)st.st_size;
  if (rc == 0 && (rc = parse_magic(r, err, errlen)) == 0) rc = parse_header(r, err, errlen);
  if (rc) {
    hr_trace_close(r);
    return rc;
  }
  *out = r;
  return 0;
}

void hr_trace_close(hr_trace_reader_t *r) {
  if (!r) return;
  if (r->f) fclose(r->f);
  free(r->buf);
  free(r);
}

const hr_trace_device_t *hr_trace_device(const hr_trace_reader_t *r) {
  return &r->dev;
}
const char *hr_trace_source(const hr_trace_reader_t *r) {
  return r->source;
}
const char *hr_trace_alloc_conf(const hr_trace_reader_t *r) {
  return r->alloc_conf;
}
uint64_t hr_trace_line(const hr_trace_reader_t *r) {
  return r->line;
}

void hr_trace_progress(const hr_trace_reader_t *r, uint64_t *done, uint64_t *total) {
  *done = r->done_bytes;
  *total = r->total_bytes;
}
