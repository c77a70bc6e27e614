/* The growable buffer and the JSON string writer (buf.h). The buffer doubles
 * its capacity, so appends are amortised O(1); the JSON writer copies runs of
 * plain ASCII in one go, so long names cost one memcpy. */
#include "util/buf.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Makes room for `more` bytes plus the terminator. */
static bool reserve(hr__buf_t *b, size_t more) {
  if (b->failed) return false;
  if (more < b->cap - b->len) return true;
  if (more > SIZE_MAX / 2 - b->len) return b->failed = true, false;
  size_t nc = b->cap ? b->cap : 256;
  while (nc <= b->len + more) nc *= 2;
  char *p = realloc(b->s, nc);
  if (!p) return b->failed = true, false;
  b->s = p, b->cap = nc;
  return true;
}

void hr__buf_put(hr__buf_t *b, const char *s, size_t n) {
  if (!reserve(b, n)) return;
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

void hr__buf_puts(hr__buf_t *b, const char *s) {
  hr__buf_put(b, s, strlen(s));
}

void hr__buf_printf(hr__buf_t *b, const char *fmt, ...) {
  if (b->failed) return;
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
  va_end(ap);
  if (w < 0) {
    b->failed = true;
    return;
  }
  if (b->s && (size_t)w < b->cap - b->len) {
    b->len += (size_t)w;
    return;
  }
  if (!reserve(b, (size_t)w)) return;
  va_start(ap, fmt);
  vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  b->len += (size_t)w;
}

size_t hr__utf8_len(const unsigned char *s) {
  size_t n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
  if (s[0] >= 0xf5) return 0;
  for (size_t i = 1; i < n; i++)
    if ((s[i] & 0xc0) != 0x80) return 0;
  if (n == 3 && s[0] == 0xe0 && s[1] < 0xa0) return 0;  /* overlong */
  if (n == 3 && s[0] == 0xed && s[1] >= 0xa0) return 0; /* surrogate */
  if (n == 4 && s[0] == 0xf0 && s[1] < 0x90) return 0;  /* overlong */
  if (n == 4 && s[0] == 0xf4 && s[1] >= 0x90) return 0; /* above U+10FFFF */
  return n;
}

void hr__buf_json_str(hr__buf_t *b, const char *s) {
  if (!s) {
    hr__buf_put(b, "null", 4);
    return;
  }
  hr__buf_put(b, "\"", 1);
  const unsigned char *c = (const unsigned char *)s;
  while (*c) {
    size_t run = 0;
    while (c[run] >= 0x20 && c[run] < 0x7f && c[run] != '"' && c[run] != '\\') run++;
    if (run) {
      hr__buf_put(b, (const char *)c, run);
      c += run;
      continue;
    }
    if (*c == '"' || *c == '\\') {
      char esc[2] = {'\\', (char)*c};
      hr__buf_put(b, esc, 2);
    } else if (*c == '\n') {
      hr__buf_put(b, "\\n", 2);
    } else if (*c == '\t') {
      hr__buf_put(b, "\\t", 2);
    } else if (*c == '\r') {
      hr__buf_put(b, "\\r", 2);
    } else if (*c < 0x80) {
      hr__buf_printf(b, "\\u%04x", *c);
    } else {
      size_t n = hr__utf8_len(c);
      if (n == 0)
        hr__buf_put(b, "\\ufffd", 6);
      else
        hr__buf_put(b, (const char *)c, n);
      c += n ? n : 1;
      continue;
    }
    c++;
  }
  hr__buf_put(b, "\"", 1);
}

int hr__buf_finish(hr__buf_t *b, char **out) {
  *out = NULL;
  if (!b->failed && !b->s) hr__buf_put(b, "", 0);
  if (b->failed) {
    hr__buf_free(b);
    return HR_ENOMEM;
  }
  *out = b->s;
  *b = (hr__buf_t){0};
  return 0;
}

void hr__buf_free(hr__buf_t *b) {
  free(b->s);
  *b = (hr__buf_t){0};
}

int hr_json_string(const char *s, char **out) {
  if (!out) return HR_EINVAL;
  hr__buf_t b = {0};
  hr__buf_json_str(&b, s);
  return hr__buf_finish(&b, out);
}
