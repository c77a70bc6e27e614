/* The one growable buffer and the one JSON string writer. Every part that
 * writes text (JSON, Prometheus, SVG, messages) appends to an hr__buf_t;
 * every JSON string, whatever writes it, goes through hr__buf_json_str, so
 * headroom never emits invalid JSON whatever bytes a process name holds. */
#ifndef HR_UTIL_BUF_H
#define HR_UTIL_BUF_H

#include "util/util.h"

/* A growable, always terminated string. A failed append (out of memory, or
 * a format error) sets `failed` and every later append does nothing, so a
 * writer appends without checking and looks once at the end. Zero-initialise
 * to start; hr__buf_finish or hr__buf_free to end. */
typedef struct hr__buf {
  char *s;
  size_t len, cap;
  bool failed;
} hr__buf_t;

/* Appends n bytes as they are. */
HR_INTERNAL void hr__buf_put(hr__buf_t *b, const char *s, size_t n);
/* Appends a terminated string as it is. */
HR_INTERNAL void hr__buf_puts(hr__buf_t *b, const char *s);
HR_INTERNAL void hr__buf_printf(hr__buf_t *b, const char *fmt, ...) HR_PRINTF(2, 3);

/* Appends s as a JSON string literal, quotes included: '"' and '\\' escaped,
 * control characters (and DEL) as \n, \t, \r or \u00XX, valid UTF-8 as it
 * is, and every byte that does not start a valid UTF-8 sequence (a stray
 * continuation byte, an overlong, truncated or surrogate sequence, anything
 * above U+10FFFF) as \ufffd. NULL is written as null. */
HR_INTERNAL void hr__buf_json_str(hr__buf_t *b, const char *s);

/* Length of the valid UTF-8 sequence at s (2 to 4), or 0 when it is not one
 * (a stray continuation byte, an overlong, truncated or surrogate sequence,
 * a code point above U+10FFFF). s[0] is at least 0x80. Shared by the JSON
 * and the SVG writers. */
HR_INTERNAL size_t hr__utf8_len(const unsigned char *s);

/* Hands the text to *out (malloc'd, the caller frees) and empties b; returns
 * 0, or HR_ENOMEM when an append failed (b is freed, *out is NULL). */
HR_INTERNAL int hr__buf_finish(hr__buf_t *b, char **out);
HR_INTERNAL void hr__buf_free(hr__buf_t *b);

#endif /* HR_UTIL_BUF_H */
