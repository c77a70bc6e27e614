/* Small helpers over arrays: growing one as elements are appended, and the
 * name of an enum value from a table of names indexed by value.
 *
 * Growing doubles the room (from a first size) when the array is full, and
 * leaves the array as it was when memory runs out, so a caller's error path
 * still frees what it holds. A name table is written with designated
 * initializers ([HR_LEVEL_OK] = "ok"), so its order cannot drift from the
 * enum's. */
#include "util/util.h"

#include <stdlib.h>
#include <string.h>

int hr__resize(void *arr, size_t n, size_t size) {
  void *p;
  memcpy(&p, arr, sizeof p);
  if (n > SIZE_MAX / size) return HR_ENOMEM;
  p = realloc(p, (n ? n : 1) * size);
  if (!p) return HR_ENOMEM;
  memcpy(arr, &p, sizeof p);
  return 0;
}

int hr__grow(void *arr, size_t *cap, size_t n, size_t size, size_t first) {
  if (n < *cap) return 0;
  size_t nc = *cap ? *cap * 2 : first;
  if (nc <= n) nc = n + 1;
  int rc = hr__resize(arr, nc, size);
  if (rc == 0) *cap = nc;
  return rc;
}

const char *hr__enum_name(const char *const *names, size_t n, int v, const char *unknown) {
  return v >= 0 && (size_t)v < n && names[v] ? names[v] : unknown;
}
