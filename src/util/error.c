/* Error codes: the HR_ERRORS X-macro in headroom.h gives the enum; this file
 * gives its text and names from the same list. */
#include "util/util.h"

#include <string.h>

const char *hr_strerror(int code) {
  switch (code) {
  case HR_OK:
    return "success";
#define HR_ERR_TEXT_(name, value, text)                                                            \
  case name:                                                                                       \
    return text;
    HR_ERRORS(HR_ERR_TEXT_)
#undef HR_ERR_TEXT_
  default:
    return "unknown error";
  }
}

const char *hr_err_name(int code) {
  switch (code) {
  case HR_OK:
    return "HR_OK";
#define HR_ERR_NAME_(name, value, text)                                                            \
  case name:                                                                                       \
    return #name;
    HR_ERRORS(HR_ERR_NAME_)
#undef HR_ERR_NAME_
  default:
    return "HR_E?";
  }
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
