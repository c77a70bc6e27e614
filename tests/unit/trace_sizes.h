/* Allocation sizes of the real traces, for randomised tests and benchmarks.
 * The sizes come from the project's own importer (`python3 -m headroom.trace
 * sizes`), which refuses every global in a pickle, so no second reader of
 * PyTorch snapshots lives in C. Returns the number of sizes in a malloc'd
 * array (*out, the caller frees it), at most `max` of them and none above
 * `limit`; 0 when the traces or Python are absent. */
#ifndef HR_TRACE_SIZES_H
#define HR_TRACE_SIZES_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static size_t hr_trace_sizes_load(const char *source_dir, const char *traces_dir, size_t max,
                                  uint64_t limit, uint64_t **out) {
  char cmd[4096];
  uint64_t *v = NULL;
  size_t n = 0, cap = 0;
  *out = NULL;
  snprintf(cmd, sizeof cmd,
           "PYTHONPATH='%s/python' python3 -m headroom.trace sizes '%s'/*.pickle 2>/dev/null",
           source_dir, traces_dir);
  FILE *f = popen(cmd, "r");
  if (!f) return 0;
  unsigned long long s;
  while (n < max && fscanf(f, "%llu", &s) == 1) {
    if (s == 0 || s > limit) continue;
    if (n == cap) {
      uint64_t *nv = realloc(v, (cap = cap ? cap * 2 : 4096) * sizeof *v);
      if (!nv) break;
      v = nv;
    }
    v[n++] = s;
  }
  pclose(f);
  *out = v;
  return n;
}

#endif /* HR_TRACE_SIZES_H */
