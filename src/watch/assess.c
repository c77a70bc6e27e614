/* Assessing a sample: what one snapshot means, as typed events.
 *
 * Levels of the host, the cgroup and each GPU (hr_level_update, with
 * hysteresis; an event on change); leaks per process (every non-kernel
 * process after the filter goes to the leak detector, whose cheap gate keeps
 * flat processes nearly free; an event when an alarm starts); idle hogs (a
 * process holding a large share of an idle GPU for N samples; one event per
 * episode); cgroup OOM kills (the oom_kill counter against the last
 * sample's); exits of watched processes.
 *
 * Watched processes (an exit event when they go): those matching --filter
 * when one is given; otherwise those on a GPU and those with a leak
 * suspected (the top N by size churn too much on a busy host). */
#include "watch/watch_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double hr__pct_of(uint64_t used, uint64_t total) {
  if (used == HR_UNKNOWN || total == HR_UNKNOWN || total == HR_UNLIMITED || total == 0) return NAN;
  return 100.0 * (double)used / (double)total;
}

/* ---- levels ------------------------------------------------------------- */

static void update_level(hr_watch_t *w, hr_level_t *lv, const char *scope, uint64_t used,
                         uint64_t total, double warn, double crit) {
  double p = hr__pct_of(used, total);
  hr_level_t n = hr_level_update(*lv, p, warn, crit, w->hyst);
  if (n != *lv) {
    hr_watch_event_t e = {.kind = HR_EVENT_LEVEL, .time = w->snap->time};
    hr__strlcpy(e.level.scope, scope, sizeof e.level.scope);
    e.level.level = n, e.level.previous = *lv;
    e.level.used_pct = p, e.level.used_bytes = used, e.level.total_bytes = total;
    hr__watch_emit(w, &e);
  }
  *lv = n;
}

int hr__watch_levels(hr_watch_t *w) {
  const hr_snapshot_t *s = w->snap;
  if (s->host_state == HR_PROBE_OK && s->host.available_bytes <= s->host.total_bytes)
    update_level(w, &w->host, "host", s->host.total_bytes - s->host.available_bytes,
                 s->host.total_bytes, w->ram_warn, w->ram_crit);
  if (s->cgroup.state == HR_PROBE_OK)
    update_level(w, &w->cgroup, "cgroup", s->cgroup.usage_bytes, s->cgroup.limit_bytes, w->ram_warn,
                 w->ram_crit);
  if (s->n_gpus > w->n_gpu_levels) {
    hr_level_t *g = realloc(w->gpus, s->n_gpus * sizeof *g);
    if (!g) return HR_ENOMEM;
    for (size_t i = w->n_gpu_levels; i < s->n_gpus; i++) g[i] = HR_LEVEL_OK;
    w->gpus = g, w->n_gpu_levels = s->n_gpus;
  }
  for (size_t i = 0; i < s->n_gpus; i++) {
    char scope[16];
    snprintf(scope, sizeof scope, "gpu%u", s->gpus[i].index);
    if (s->gpus[i].state == HR_PROBE_OK)
      update_level(w, &w->gpus[i], scope, s->gpus[i].used_bytes, s->gpus[i].total_bytes,
                   w->vram_warn, w->vram_crit);
  }
  return 0;
}

/* ---- processes ---------------------------------------------------------- */

static void leak_event(hr_watch_t *w, const hr_proc_t *p, const char *series,
                       const hr_leak_result_t *r) {
  hr_watch_event_t e = {.kind = HR_EVENT_LEAK, .time = w->snap->time, .pid = p->pid};
  hr__strlcpy(e.name, p->name, sizeof e.name);
  hr__strlcpy(e.leak.series, series, sizeof e.leak.series);
  e.leak.slope_bytes_per_min = r->slope_per_min;
  e.leak.window_s = w->leak_cfg.window_s;
  e.leak.span_s = r->span_s;
  e.leak.points = r->n;
  e.leak.confidence = r->confidence;
  hr__watch_emit(w, &e);
}

int hr__watch_leaks(hr_watch_t *w) {
  const hr_snapshot_t *s = w->snap;
  for (size_t i = 0; i < s->n_procs; i++) {
    const hr_proc_t *p = &s->procs[i];
    w->leak_flag[i] = false;
    if (!w->keep[i] || p->kernel_thread || p->state == 'Z') continue;
    hr_leak_result_t r;
    int rc = hr_leak_add(w->leak, p->pid, p->start_ticks, HR__SERIES_RSS_ANON, s->time,
                         p->rss_anon_bytes, &r);
    if (rc) return rc;
    if (r.raised) leak_event(w, p, "rss_anon", &r);
    w->leak_flag[i] = r.suspected;
    if (p->gpu_bytes > 0) {
      if ((rc = hr_leak_add(w->leak, p->pid, p->start_ticks, HR__SERIES_GPU, s->time, p->gpu_bytes,
                            &r)) != 0)
        return rc;
      if (r.raised) leak_event(w, p, "gpu", &r);
      w->leak_flag[i] |= r.suspected;
    }
  }
  /* Series of processes gone for two process reads are dropped. */
  hr_leak_prune(w->leak, s->time - 2 * HR_MAX(w->interval, w->proc_gap) - 1);
  return 0;
}

/* The idle entry of (pid, gpu), added when new; NULL when out of memory. */
static hr__idle_entry_t *idle_entry(hr_watch_t *w, int pid, unsigned gpu) {
  for (size_t k = 0; k < w->n_idle; k++)
    if (w->idle[k].pid == pid && w->idle[k].gpu == gpu) return &w->idle[k];
  if (hr__grow(&w->idle, &w->cap_idle, w->n_idle, sizeof *w->idle, 16)) return NULL;
  hr__idle_entry_t *e = &w->idle[w->n_idle++];
  memset(e, 0, sizeof *e);
  e->pid = pid, e->gpu = gpu;
  return e;
}

int hr__watch_idle(hr_watch_t *w) {
  const hr_snapshot_t *s = w->snap;
  for (size_t i = 0; i < w->n_idle; i++) w->idle[i].seen = false;
  for (size_t i = 0; i < s->n_gpu_procs; i++) {
    const hr_gpu_proc_t *gp = &s->gpu_procs[i];
    const hr_gpu_t *g = NULL;
    for (size_t k = 0; k < s->n_gpus; k++)
      if (s->gpus[k].index == gp->gpu) g = &s->gpus[k];
    if (!g || gp->used_bytes == HR_UNKNOWN || g->total_bytes == 0 || g->total_bytes == HR_UNKNOWN)
      continue;
    hr__idle_entry_t *e = idle_entry(w, gp->pid, gp->gpu);
    if (!e) return HR_ENOMEM;
    e->seen = true;
    double share = 100.0 * (double)gp->used_bytes / (double)g->total_bytes;
    bool idle = g->util_gpu >= 0 && g->util_gpu < w->idle_util && share >= w->idle_share;
    if (!idle) {
      e->count = 0, e->reported = false;
      continue;
    }
    if (++e->count < w->idle_samples || e->reported) continue;
    e->reported = true;
    int local = gp->local_pid ? gp->local_pid : gp->pid;
    const hr_proc_t *p = hr_snapshot_proc(s, local);
    hr_watch_event_t ev = {.kind = HR_EVENT_IDLE_HOG, .time = s->time, .pid = local};
    hr__strlcpy(ev.name, p ? p->name : "", sizeof ev.name);
    ev.idle_hog = (hr_event_idle_hog_t){.gpu = gp->gpu,
                                        .gpu_bytes = gp->used_bytes,
                                        .share_pct = share,
                                        .util_pct = g->util_gpu,
                                        .samples = e->count};
    hr__watch_emit(w, &ev);
  }
  for (size_t i = 0; i < w->n_idle;)
    if (!w->idle[i].seen)
      w->idle[i] = w->idle[--w->n_idle];
    else
      i++;
  return 0;
}

void hr__watch_oom(hr_watch_t *w) {
  const hr_cgroup_mem_t *cg = &w->snap->cgroup;
  bool ok = cg->state == HR_PROBE_OK && cg->oom_kill_events != HR_UNKNOWN;
  if (ok && w->prev_cgroup_ok && cg->oom_kill_events > w->prev_oom_kills) {
    hr_watch_event_t e = {.kind = HR_EVENT_OOM_KILL, .time = w->snap->time};
    hr__strlcpy(e.oom_kill.scope, "cgroup", sizeof e.oom_kill.scope);
    hr__strlcpy(e.oom_kill.path, cg->path, sizeof e.oom_kill.path);
    e.oom_kill.kills = cg->oom_kill_events - w->prev_oom_kills;
    e.oom_kill.total = cg->oom_kill_events;
    hr__watch_emit(w, &e);
  }
  w->prev_cgroup_ok = ok;
  if (ok) w->prev_oom_kills = cg->oom_kill_events;
}

/* Exit events for processes watched last sample and gone now; then the
 * watched set becomes this sample's. */
int hr__watch_exits(hr_watch_t *w) {
  const hr_snapshot_t *s = w->snap;
  for (size_t i = 0; i < w->n_watched; i++) {
    const hr_proc_t *p = hr_snapshot_proc(s, w->watched[i].pid);
    if (p && p->start_ticks == w->watched[i].start && p->state != 'Z') continue;
    hr_watch_event_t e = {.kind = HR_EVENT_EXIT, .time = s->time, .pid = w->watched[i].pid};
    hr__strlcpy(e.name, w->watched[i].name, sizeof e.name);
    hr__watch_emit(w, &e);
  }
  w->n_watched = 0;
  bool filtered = *w->filter != '\0';
  for (size_t i = 0; i < s->n_procs; i++) {
    const hr_proc_t *p = &s->procs[i];
    bool watch = filtered ? w->keep[i] && !p->kernel_thread : p->gpu_bytes > 0 || w->leak_flag[i];
    if (!watch || p->state == 'Z') continue;
    if (hr__grow(&w->watched, &w->cap_watched, w->n_watched, sizeof *w->watched, 64))
      return HR_ENOMEM;
    hr__watched_t *x = &w->watched[w->n_watched++];
    x->pid = p->pid, x->start = p->start_ticks;
    hr__strlcpy(x->name, p->name, sizeof x->name);
  }
  return 0;
}
