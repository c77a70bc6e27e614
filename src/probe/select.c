/* Which processes matter: the one selection, made once per snapshot, that
 * status, watch, history, the exporter and the Python layer show.
 *
 * Every process that holds GPU memory comes first (most GPU memory first),
 * then the `top` largest by resident memory among the others. Kernel threads
 * and processes that hold nothing (no known RSS, no GPU memory) are left
 * out, and so is everything the filter does not match. Like pgrep, a filter
 * never matches the calling process: `headroom watch --filter python` holds
 * "python" in its own command line. One order (GPU bytes, then RSS, then
 * pid) keeps the result stable from one sample to the next. The snapshot
 * keeps the selection; nothing downstream picks again. */
#include "probe/probe_int.h"

#include <stdlib.h>
#include <unistd.h>

static uint64_t rss_of(const hr_proc_t *p) {
  return p->rss_bytes == HR_UNKNOWN || p->rss_bytes == HR_UNLIMITED ? 0 : p->rss_bytes;
}

static int cmp_idx(const void *a, const void *b, void *arg) {
  const hr_proc_t *procs = arg;
  const hr_proc_t *x = &procs[*(const size_t *)a], *y = &procs[*(const size_t *)b];
  if (x->gpu_bytes != y->gpu_bytes) return x->gpu_bytes < y->gpu_bytes ? 1 : -1;
  uint64_t rx = rss_of(x), ry = rss_of(y);
  if (rx != ry) return rx < ry ? 1 : -1;
  return (x->pid > y->pid) - (x->pid < y->pid);
}

int hr_snapshot_select(hr_snapshot_t *s, size_t top, const char *filter) {
  if (!s || (s->n_procs && !s->procs)) return HR_EINVAL;
  free(s->selected);
  s->n_selected = s->n_selected_gpu = 0;
  s->selected = malloc((s->n_procs ? s->n_procs : 1) * sizeof *s->selected);
  if (!s->selected) return HR_ENOMEM;
  if (!filter) filter = "";
  int self = *filter ? (int)getpid() : 0;
  size_t n = 0, gpu = 0;
  for (size_t i = 0; i < s->n_procs; i++) {
    const hr_proc_t *p = &s->procs[i];
    if (p->kernel_thread || (rss_of(p) == 0 && p->gpu_bytes == 0)) continue;
    if (p->pid == self || !hr_proc_matches(p, filter)) continue;
    s->selected[n++] = i;
    gpu += p->gpu_bytes > 0;
  }
  if (n > 1) qsort_r(s->selected, n, sizeof *s->selected, cmp_idx, s->procs);
  /* Sorted, the GPU holders are the first `gpu` entries. */
  s->n_selected = n - gpu > top ? gpu + top : n;
  s->n_selected_gpu = gpu;
  return 0;
}

const hr_proc_t *hr_snapshot_proc(const hr_snapshot_t *s, int pid) {
  size_t lo = 0, hi = s ? s->n_procs : 0;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->procs[mid].pid == pid) return &s->procs[mid];
    if (s->procs[mid].pid < pid)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}
