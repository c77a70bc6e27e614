/* Error codes: the HR_ERRORS X-macro in headroom.h gives the enum; this file
 * gives its text and names from the same list, as one table of rows. */
#include "util/util.h"

#include <string.h>

/* Every code with its name and text, from the one list; HR_OK first. */
static const struct err_row {
  int code;
  const char *name, *text;
} rows[] = {{HR_OK, "HR_OK", "success"},
#define HR_ERR_ROW_(name, value, text) {name, #name, text},
            HR_ERRORS(HR_ERR_ROW_)
#undef HR_ERR_ROW_
};

/* The row of `code`, or NULL for a code not in the list. */
static const struct err_row *err_row(int code) {
  for (size_t i = 0; i < HR_ARRAY_LEN(rows); i++)
    if (rows[i].code == code) return &rows[i];
  return NULL;
}

const char *hr_strerror(int code) {
  const struct err_row *r = err_row(code);
  return r ? r->text : "unknown error";
}

const char *hr_err_name(int code) {
  const struct err_row *r = err_row(code);
  return r ? r->name : "HR_E?";
}

const char *hr_version(void) {
  return HR_VERSION_STRING;
}

int hr__err(char *err, size_t errlen, int code, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}

char *hr__strlcpy(char *dst, const char *src, size_t n) {
  if (n == 0) return dst;
  size_t len = strnlen(src, n - 1);
  memcpy(dst, src, len);
  dst[len] = '\0';
  return dst;
}
