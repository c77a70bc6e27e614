/* Hand-built snapshots for the watch, export and history tests: allocated
 * the way the probe allocates them, so hr_snapshot_free() releases them. */
#ifndef HR_FAKE_SNAPSHOT_H
#define HR_FAKE_SNAPSHOT_H

#include <headroom/headroom.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GiB (1024ULL * 1024 * 1024)
#define MiB (1024ULL * 1024)

/* A snapshot at time t: a 64 GiB host with `host_used` in use, a cgroup
 * with a 32 GiB limit, `n_gpus` 24 GiB GPUs and `n_procs` processes with
 * pids 1000, 1001, ... and RSS (i + 1) * 100 MiB. NULL when out of memory. */
static inline hr_snapshot_t *fake_snapshot(double t, uint64_t host_used, size_t n_gpus,
                                           size_t n_procs) {
  hr_snapshot_t *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->time = t;
  s->host_state = HR_PROBE_OK;
  s->host.total_bytes = 64 * GiB;
  s->host.available_bytes = 64 * GiB - host_used;
  s->cgroup.state = HR_PROBE_OK;
  s->cgroup.version = 2;
  snprintf(s->cgroup.path, sizeof s->cgroup.path, "/test.slice");
  s->cgroup.limit_bytes = 32 * GiB;
  s->cgroup.usage_bytes = 4 * GiB;
  s->cgroup.oom_kill_events = 0;
  s->gpu_state = n_gpus ? HR_PROBE_OK : HR_PROBE_ABSENT;
  s->n_gpus = n_gpus;
  s->gpus = calloc(n_gpus ? n_gpus : 1, sizeof *s->gpus);
  s->n_procs = n_procs;
  s->procs = calloc(n_procs ? n_procs : 1, sizeof *s->procs);
  s->gpu_procs = calloc(1, sizeof *s->gpu_procs);
  if (!s->gpus || !s->procs || !s->gpu_procs) {
    hr_snapshot_free(s);
    return NULL;
  }
  for (size_t i = 0; i < n_gpus; i++) {
    hr_gpu_t *g = &s->gpus[i];
    g->index = (unsigned)i;
    snprintf(g->name, sizeof g->name, "Test GPU %zu", i);
    snprintf(g->uuid, sizeof g->uuid, "GPU-0000-%04zu", i);
    g->total_bytes = 24 * GiB;
    g->used_bytes = 2 * GiB;
    g->free_bytes = 22 * GiB;
    g->util_gpu = 50, g->util_mem = 10, g->temperature_c = 40, g->power_mw = 100000;
  }
  for (size_t i = 0; i < n_procs; i++) {
    hr_proc_t *p = &s->procs[i];
    p->pid = 1000 + (int)i, p->ppid = 1, p->nspid = p->pid;
    p->start_ticks = 100 + i;
    p->state = 'S';
    snprintf(p->name, sizeof p->name, "proc%zu", i);
    snprintf(p->cmdline, sizeof p->cmdline, "/usr/bin/proc%zu --serve", i);
    p->rss_bytes = p->rss_anon_bytes = (i + 1) * 100 * MiB;
    p->pss_bytes = HR_UNKNOWN;
  }
  return s;
}

/* Gives process `i` `bytes` on GPU `gpu` (one gpu_procs entry). */
static inline int fake_gpu_proc(hr_snapshot_t *s, size_t i, unsigned gpu, uint64_t bytes) {
  hr_gpu_proc_t *gp = realloc(s->gpu_procs, (s->n_gpu_procs + 1) * sizeof *gp);
  if (!gp) return -1;
  s->gpu_procs = gp;
  gp[s->n_gpu_procs].gpu = gpu;
  gp[s->n_gpu_procs].pid = gp[s->n_gpu_procs].local_pid = s->procs[i].pid;
  gp[s->n_gpu_procs].used_bytes = bytes;
  gp[s->n_gpu_procs].proc = &s->procs[i];
  s->n_gpu_procs++;
  s->procs[i].gpu_bytes += bytes;
  return 0;
}

#endif /* HR_FAKE_SNAPSHOT_H */
