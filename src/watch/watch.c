/* watch: the decision engine and the sampling loop.
 *
 * hr_watch_feed() takes one snapshot and, in order: updates the levels of
 * the host, the cgroup and each GPU (events on change); feeds every watched
 * process's RssAnon and GPU memory to the leak detector (an event when an
 * alarm starts); counts idle samples per GPU process (an event when a
 * process has held a large share of an idle GPU for N samples); compares
 * the cgroup's oom_kill counter with the last sample's; notices watched
 * processes that exited; runs actions by mode; writes history; emits the
 * sample event; and last renders the exporter's documents. Each event goes to
 * the callback, to history, and into a per-kind counter.
 *
 * Watched processes (an exit event when they go): those matching --filter
 * when one is given; otherwise those on a GPU and those with a leak
 * suspected (the top N by size churn too much on a busy host). Every
 * non-kernel process (after the filter) goes to the leak detector: its
 * cheap gate keeps flat processes nearly free.
 *
 * The loop (hr_watch_run) only times samples; all state lives here, so tests
 * drive the engine with hand-built snapshots. */
#include "export/export.h"
#include "store/store.h"
#include "watch/watch_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { MODE_CONSERVATIVE, MODE_BALANCED, MODE_AGGRESSIVE };
enum { SERIES_RSS_ANON = 0, SERIES_GPU = 1 };

typedef struct idle_entry {
  int pid;
  unsigned gpu;
  uint64_t count;
  bool reported;
  bool seen; /* in this sample */
} idle_entry_t;

typedef struct watched {
  int pid;
  uint64_t start;
  char name[64];
} watched_t;

struct hr_watch {
  /* configuration */
  double interval, cooldown, action_timeout, history_flush, retain;
  int mode;
  double ram_warn, ram_crit, vram_warn, vram_crit, hyst;
  double idle_share, idle_util;
  double proc_budget; /* fraction of a core */
  uint64_t idle_samples;
  bool allow_drop_caches;
  size_t top_n;
  char *filter, *on_warning, *on_critical, *root, *nvml_path;
  hr_leak_config_t leak_cfg;

  hr_watch_event_fn on_event;
  void *on_event_arg;
  hr_watch_sampler_fn sampler;
  void *sampler_arg;
  hr_history_t *history;
  hr_exporter_t *exporter;

  /* state */
  hr_snapshot_t *snap;
  hr_probe_t *probe; /* the default sampler's: known processes read the short way */
  bool have_prev;
  hr_level_t host, cgroup;
  hr_level_t *gpus;
  size_t n_gpu_levels;
  uint64_t prev_oom_kills;
  bool prev_cgroup_ok;
  hr_leak_t *leak;
  idle_entry_t *idle;
  size_t n_idle, cap_idle;
  watched_t *watched;
  size_t n_watched, cap_watched;
  bool *keep;      /* per snapshot process: matches the filter */
  bool *leak_flag; /* per snapshot process: leak suspected */
  size_t *top_idx;
  hr_watch_proc_view_t *top, *leaks;
  size_t n_top, n_leaks;
  uint64_t events_total[HR_EVENT_KINDS_];
  double last_action[3]; /* on_warning, on_critical, drop_caches */
  hr__hooks_t hooks;
  double last_flush, last_prune, last_history_error;
  double cpu_s_last;
  /* Process reading (the default sampler): through the probe context a known
   * process costs about 8 us of CPU (35 us when first seen); should a large
   * host's table cost more than proc_budget allows, it is read less often
   * than the interval; between reads the last table is carried over and the
   * per-process tests skip the sample. */
  bool procs_stale;       /* the next snapshot's processes were carried over */
  bool sample_fresh;      /* the current snapshot's processes were read */
  double proc_cpu;        /* CPU seconds of the last snapshot with processes */
  double proc_read_mono;  /* when it was taken */
  double proc_gap;        /* seconds between the last two process reads */
  double last_fresh_time; /* snapshot time of the last process read */
  hr__buf_t ev;           /* the event being built */
};

static const char *const kind_names[HR_EVENT_KINDS_] = {"sample",   "level", "leak",   "idle_hog",
                                                        "oom_kill", "exit",  "action", "error"};

const char *hr_event_kind_name(hr_event_kind_t k) {
  return (unsigned)k < HR_EVENT_KINDS_ ? kind_names[k] : "unknown";
}

static char *dup_opt(const hr_options_t *o, hr_option_id_t id) {
  return strdup(hr_options_get_str(o, id));
}

int hr_watch_create(const hr_options_t *o, hr_watch_t **out, char *err, size_t errlen) {
  if (!o || !out) return HR_EINVAL;
  *out = NULL;
  hr_watch_t *w = calloc(1, sizeof *w);
  if (!w) return HR_ENOMEM;
  w->interval = hr_options_get_double(o, HR_OPTION_interval);
  w->cooldown = hr_options_get_double(o, HR_OPTION_cooldown);
  w->action_timeout = hr_options_get_double(o, HR_OPTION_action_timeout);
  w->history_flush = hr_options_get_double(o, HR_OPTION_history_flush);
  w->retain = hr_options_get_double(o, HR_OPTION_retain);
  const char *mode = hr_options_get_str(o, HR_OPTION_mode);
  w->mode = strcmp(mode, "aggressive") == 0 ? MODE_AGGRESSIVE
            : strcmp(mode, "balanced") == 0 ? MODE_BALANCED
                                            : MODE_CONSERVATIVE;
  w->ram_warn = hr_options_get_double(o, HR_OPTION_ram_warn);
  w->ram_crit = hr_options_get_double(o, HR_OPTION_ram_critical);
  w->vram_warn = hr_options_get_double(o, HR_OPTION_vram_warn);
  w->vram_crit = hr_options_get_double(o, HR_OPTION_vram_critical);
  w->hyst = hr_options_get_double(o, HR_OPTION_hysteresis);
  w->idle_share = hr_options_get_double(o, HR_OPTION_idle_share);
  w->proc_budget = hr_options_get_double(o, HR_OPTION_proc_budget) / 100;
  w->idle_util = hr_options_get_double(o, HR_OPTION_idle_util);
  w->idle_samples = (uint64_t)hr_options_get_int(o, HR_OPTION_idle_samples);
  w->allow_drop_caches = hr_options_get_bool(o, HR_OPTION_allow_drop_caches);
  w->top_n = (size_t)hr_options_get_int(o, HR_OPTION_top);
  w->leak_cfg.window_s = hr_options_get_double(o, HR_OPTION_leak_window);
  w->leak_cfg.min_samples = (size_t)hr_options_get_int(o, HR_OPTION_leak_min_samples);
  w->leak_cfg.min_rate = (double)hr_options_get_size(o, HR_OPTION_leak_min_rate);
  for (int i = 0; i < 3; i++) w->last_action[i] = -INFINITY;
  w->last_history_error = -INFINITY;
  int rc = 0;
  if (w->ram_warn > w->ram_crit || w->vram_warn > w->vram_crit) {
    rc = hr__err(err, errlen, HR_EINVAL,
                 "a warning threshold is above its critical one (ram_warn %g, ram_critical %g, "
                 "vram_warn %g, vram_critical %g)",
                 w->ram_warn, w->ram_crit, w->vram_warn, w->vram_crit);
    goto out;
  }
  w->filter = dup_opt(o, HR_OPTION_filter);
  w->on_warning = dup_opt(o, HR_OPTION_on_warning);
  w->on_critical = dup_opt(o, HR_OPTION_on_critical);
  w->root = dup_opt(o, HR_OPTION_root);
  w->nvml_path = dup_opt(o, HR_OPTION_nvml_library);
  w->top_idx = malloc(w->top_n * sizeof *w->top_idx);
  w->top = calloc(w->top_n, sizeof *w->top);
  if (!w->filter || !w->on_warning || !w->on_critical || !w->root || !w->nvml_path || !w->top_idx ||
      !w->top) {
    rc = HR_ENOMEM;
    goto out;
  }
  if ((rc = hr_leak_create(&w->leak_cfg, &w->leak)) != 0) goto out;
  if ((rc = hr_probe_create(&w->probe)) != 0) goto out;
out:
  if (rc) {
    hr_watch_destroy(w);
    return rc;
  }
  *out = w;
  return 0;
}

void hr_watch_destroy(hr_watch_t *w) {
  if (!w) return;
  hr__hook_result_t res[HR__MAX_HOOKS];
  hr__hooks_reap(&w->hooks, hr__now_mono(), true, res, HR__MAX_HOOKS);
  hr_snapshot_free(w->snap);
  hr_leak_destroy(w->leak);
  hr_probe_destroy(w->probe);
  free(w->gpus), free(w->idle), free(w->watched), free(w->keep), free(w->leak_flag);
  free(w->top_idx), free(w->top), free(w->leaks);
  free(w->filter), free(w->on_warning), free(w->on_critical), free(w->root), free(w->nvml_path);
  free(w->ev.s);
  free(w);
}

void hr_watch_on_event(hr_watch_t *w, hr_watch_event_fn fn, void *arg) {
  w->on_event = fn, w->on_event_arg = arg;
}
void hr_watch_set_sampler(hr_watch_t *w, hr_watch_sampler_fn fn, void *arg) {
  w->sampler = fn, w->sampler_arg = arg;
}
void hr_watch_attach_history(hr_watch_t *w, hr_history_t *h) {
  w->history = h;
}
void hr_watch_attach_exporter(hr_watch_t *w, hr_exporter_t *e) {
  w->exporter = e;
}

/* ---- events ------------------------------------------------------------- */

/* Starts an event's JSON in w->ev: {"event":KIND,"time":T */
static void ev_begin(hr_watch_t *w, hr_event_kind_t k, double t) {
  w->ev.len = 0;
  w->ev.failed = false;
  hr__buf_printf(&w->ev, "{\"event\":\"%s\",\"time\":%.3f", kind_names[k], t);
}

static void ev_proc(hr_watch_t *w, int pid, const char *name) {
  hr__buf_printf(&w->ev, ",\"pid\":%d,\"name\":", pid);
  hr__buf_json_str(&w->ev, name);
}

/* Closes the JSON and delivers the event: counter, history, callback. */
static void ev_emit(hr_watch_t *w, hr_watch_event_t *e) {
  hr__buf_printf(&w->ev, "}");
  if (w->ev.failed) return;
  e->json = w->ev.s;
  w->events_total[e->kind]++;
  if (w->history && e->kind != HR_EVENT_SAMPLE) {
    char err[256];
    if (hr_history_add_event(w->history, e->time, kind_names[e->kind], e->pid, e->name, e->json,
                             err, sizeof err) != 0)
      hr__log(HR_LOG_WARN, "%s", err);
  }
  if (w->on_event) w->on_event(e, w->on_event_arg);
}

static void emit_error(hr_watch_t *w, double t, const char *msg) {
  hr_watch_event_t e = {.kind = HR_EVENT_ERROR, .time = t};
  ev_begin(w, HR_EVENT_ERROR, t);
  hr__buf_printf(&w->ev, ",\"message\":");
  hr__buf_json_str(&w->ev, msg);
  /* An error about history is not written into history. */
  hr_history_t *h = w->history;
  w->history = NULL;
  ev_emit(w, &e);
  w->history = h;
}

/* ---- levels ------------------------------------------------------------- */

static double pct_of(uint64_t used, uint64_t total) {
  if (used == HR_UNKNOWN || total == HR_UNKNOWN || total == HR_UNLIMITED || total == 0) return NAN;
  return 100.0 * (double)used / (double)total;
}

static void level_event(hr_watch_t *w, const char *scope, hr_level_t prev, hr_level_t now,
                        double pct, uint64_t used, uint64_t total) {
  hr_watch_event_t e = {
      .kind = HR_EVENT_LEVEL, .time = w->snap->time, .level = now, .prev_level = prev};
  hr__strlcpy(e.scope, scope, sizeof e.scope);
  ev_begin(w, HR_EVENT_LEVEL, e.time);
  hr__buf_printf(&w->ev,
                 ",\"scope\":\"%s\",\"level\":\"%s\",\"previous\":\"%s\",\"used_pct\":%.1f,"
                 "\"used_bytes\":%llu,\"total_bytes\":%llu",
                 scope, hr_level_name(now), hr_level_name(prev), pct, (unsigned long long)used,
                 (unsigned long long)total);
  ev_emit(w, &e);
}

static void update_level(hr_watch_t *w, hr_level_t *lv, const char *scope, uint64_t used,
                         uint64_t total, double warn, double crit) {
  double p = pct_of(used, total);
  hr_level_t n = hr_level_update(*lv, p, warn, crit, w->hyst);
  if (n != *lv) level_event(w, scope, *lv, n, p, used, total);
  *lv = n;
}

static int update_levels(hr_watch_t *w) {
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

static const hr_proc_t *find_proc(const hr_snapshot_t *s, int pid) {
  size_t lo = 0, hi = s->n_procs;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (s->procs[mid].pid == pid) return &s->procs[mid];
    if (s->procs[mid].pid < pid)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

static void leak_event(hr_watch_t *w, const hr_proc_t *p, const char *series,
                       const hr_leak_result_t *r) {
  hr_watch_event_t e = {.kind = HR_EVENT_LEAK, .time = w->snap->time, .pid = p->pid};
  hr__strlcpy(e.name, p->name, sizeof e.name);
  ev_begin(w, HR_EVENT_LEAK, e.time);
  ev_proc(w, p->pid, p->name);
  hr__buf_printf(&w->ev,
                 ",\"series\":\"%s\",\"slope_bytes_per_min\":%.0f,\"window_s\":%g,\"span_s\":%.1f,"
                 "\"points\":%zu,\"confidence\":%.6f",
                 series, r->slope_per_min, w->leak_cfg.window_s, r->span_s, r->n, r->confidence);
  ev_emit(w, &e);
}

static int feed_leaks(hr_watch_t *w) {
  const hr_snapshot_t *s = w->snap;
  for (size_t i = 0; i < s->n_procs; i++) {
    const hr_proc_t *p = &s->procs[i];
    w->leak_flag[i] = false;
    if (!w->keep[i] || p->kernel_thread || p->state == 'Z') continue;
    hr_leak_result_t r;
    int rc = hr_leak_add(w->leak, p->pid, p->start_ticks, SERIES_RSS_ANON, s->time,
                         p->rss_anon_bytes, &r);
    if (rc) return rc;
    if (r.raised) leak_event(w, p, "rss_anon", &r);
    w->leak_flag[i] = r.suspected;
    if (p->gpu_bytes > 0) {
      if ((rc = hr_leak_add(w->leak, p->pid, p->start_ticks, SERIES_GPU, s->time, p->gpu_bytes,
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

static int feed_idle(hr_watch_t *w) {
  const hr_snapshot_t *s = w->snap;
  for (size_t i = 0; i < w->n_idle; i++) w->idle[i].seen = false;
  for (size_t i = 0; i < s->n_gpu_procs; i++) {
    const hr_gpu_proc_t *gp = &s->gpu_procs[i];
    const hr_gpu_t *g = NULL;
    for (size_t k = 0; k < s->n_gpus; k++)
      if (s->gpus[k].index == gp->gpu) g = &s->gpus[k];
    if (!g || gp->used_bytes == HR_UNKNOWN || g->total_bytes == 0 || g->total_bytes == HR_UNKNOWN)
      continue;
    idle_entry_t *e = NULL;
    for (size_t k = 0; k < w->n_idle && !e; k++)
      if (w->idle[k].pid == gp->pid && w->idle[k].gpu == gp->gpu) e = &w->idle[k];
    if (!e) {
      if (w->n_idle == w->cap_idle) {
        size_t nc = w->cap_idle ? w->cap_idle * 2 : 16;
        idle_entry_t *n = realloc(w->idle, nc * sizeof *n);
        if (!n) return HR_ENOMEM;
        w->idle = n, w->cap_idle = nc;
      }
      e = &w->idle[w->n_idle++];
      memset(e, 0, sizeof *e);
      e->pid = gp->pid, e->gpu = gp->gpu;
    }
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
    const hr_proc_t *p = find_proc(s, local);
    hr_watch_event_t ev = {.kind = HR_EVENT_IDLE_HOG, .time = s->time, .pid = local};
    hr__strlcpy(ev.name, p ? p->name : "", sizeof ev.name);
    ev_begin(w, HR_EVENT_IDLE_HOG, ev.time);
    ev_proc(w, local, ev.name);
    hr__buf_printf(&w->ev,
                   ",\"gpu\":%u,\"gpu_bytes\":%llu,\"share_pct\":%.1f,\"util_pct\":%d,"
                   "\"samples\":%llu",
                   gp->gpu, (unsigned long long)gp->used_bytes, share, g->util_gpu,
                   (unsigned long long)e->count);
    ev_emit(w, &ev);
  }
  for (size_t i = 0; i < w->n_idle;)
    if (!w->idle[i].seen)
      w->idle[i] = w->idle[--w->n_idle];
    else
      i++;
  return 0;
}

static void feed_oom(hr_watch_t *w) {
  const hr_cgroup_mem_t *cg = &w->snap->cgroup;
  bool ok = cg->state == HR_PROBE_OK && cg->oom_kill_events != HR_UNKNOWN;
  if (ok && w->prev_cgroup_ok && cg->oom_kill_events > w->prev_oom_kills) {
    hr_watch_event_t e = {.kind = HR_EVENT_OOM_KILL, .time = w->snap->time};
    hr__strlcpy(e.scope, "cgroup", sizeof e.scope);
    ev_begin(w, HR_EVENT_OOM_KILL, e.time);
    hr__buf_printf(&w->ev, ",\"scope\":\"cgroup\",\"path\":");
    hr__buf_json_str(&w->ev, cg->path);
    hr__buf_printf(&w->ev, ",\"kills\":%llu,\"total\":%llu",
                   (unsigned long long)(cg->oom_kill_events - w->prev_oom_kills),
                   (unsigned long long)cg->oom_kill_events);
    ev_emit(w, &e);
  }
  w->prev_cgroup_ok = ok;
  if (ok) w->prev_oom_kills = cg->oom_kill_events;
}

/* Exit events for processes watched last sample and gone now; then the
 * watched set becomes this sample's. */
static int feed_exits(hr_watch_t *w) {
  const hr_snapshot_t *s = w->snap;
  for (size_t i = 0; i < w->n_watched; i++) {
    const hr_proc_t *p = find_proc(s, w->watched[i].pid);
    if (p && p->start_ticks == w->watched[i].start && p->state != 'Z') continue;
    hr_watch_event_t e = {.kind = HR_EVENT_EXIT, .time = s->time, .pid = w->watched[i].pid};
    hr__strlcpy(e.name, w->watched[i].name, sizeof e.name);
    ev_begin(w, HR_EVENT_EXIT, e.time);
    ev_proc(w, e.pid, e.name);
    ev_emit(w, &e);
  }
  w->n_watched = 0;
  bool filtered = *w->filter != '\0';
  for (size_t i = 0; i < s->n_procs; i++) {
    const hr_proc_t *p = &s->procs[i];
    bool watch = filtered ? w->keep[i] && !p->kernel_thread : p->gpu_bytes > 0 || w->leak_flag[i];
    if (!watch || p->state == 'Z') continue;
    if (w->n_watched == w->cap_watched) {
      size_t nc = w->cap_watched ? w->cap_watched * 2 : 64;
      watched_t *n = realloc(w->watched, nc * sizeof *n);
      if (!n) return HR_ENOMEM;
      w->watched = n, w->cap_watched = nc;
    }
    watched_t *x = &w->watched[w->n_watched++];
    x->pid = p->pid, x->start = p->start_ticks;
    hr__strlcpy(x->name, p->name, sizeof x->name);
  }
  return 0;
}

static int build_views(hr_watch_t *w) {
  const hr_snapshot_t *s = w->snap;
  int k = hr__top_procs(s, w->top_n, w->keep, w->top_idx);
  w->n_top = (size_t)k;
  for (size_t i = 0; i < w->n_top; i++) {
    size_t j = w->top_idx[i];
    const hr_proc_t *p = &s->procs[j];
    hr_watch_proc_view_t *v = &w->top[i];
    v->proc = p;
    v->leak = w->leak_flag[j];
    v->rss_per_min = v->gpu_per_min = 0;
    hr_leak_slope(w->leak, p->pid, p->start_ticks, SERIES_RSS_ANON, &v->rss_per_min);
    if (p->gpu_bytes) hr_leak_slope(w->leak, p->pid, p->start_ticks, SERIES_GPU, &v->gpu_per_min);
  }
  size_t n = 0;
  for (size_t i = 0; i < s->n_procs; i++) n += w->leak_flag[i];
  free(w->leaks);
  w->leaks = calloc(n ? n : 1, sizeof *w->leaks);
  if (!w->leaks) return HR_ENOMEM;
  w->n_leaks = 0;
  for (size_t i = 0; i < s->n_procs; i++)
    if (w->leak_flag[i]) {
      hr_watch_proc_view_t *v = &w->leaks[w->n_leaks++];
      v->proc = &s->procs[i];
      v->leak = true;
      hr_leak_slope(w->leak, v->proc->pid, v->proc->start_ticks, SERIES_RSS_ANON, &v->rss_per_min);
    }
  return 0;
}

/* ---- actions ------------------------------------------------------------ */

static void action_event(hr_watch_t *w, const char *action, const char *result,
                         const char *detail) {
  hr_watch_event_t e = {.kind = HR_EVENT_ACTION, .time = w->snap->time};
  ev_begin(w, HR_EVENT_ACTION, e.time);
  hr__buf_printf(&w->ev, ",\"action\":\"%s\",\"result\":\"%s\"", action, result);
  if (detail) {
    hr__buf_printf(&w->ev, ",\"detail\":");
    hr__buf_json_str(&w->ev, detail);
  }
  ev_emit(w, &e);
}

static void reap_hooks(hr_watch_t *w, double now) {
  hr__hook_result_t res[HR__MAX_HOOKS];
  size_t n = hr__hooks_reap(&w->hooks, now, false, res, HR__MAX_HOOKS);
  for (size_t i = 0; i < n; i++) {
    char detail[96];
    if (res[i].timed_out)
      snprintf(detail, sizeof detail, "killed after %.1f s (action_timeout)", res[i].seconds);
    else if (res[i].signal)
      snprintf(detail, sizeof detail, "ended by signal %d", res[i].signal);
    else
      snprintf(detail, sizeof detail, "exit status %d", res[i].exit_code);
    action_event(w, res[i].name,
                 res[i].timed_out        ? "timeout"
                 : res[i].exit_code == 0 ? "done"
                                         : "failed",
                 detail);
  }
}

/* The worst level now, and the scope that has it (host first). */
static hr_level_t worst(const hr_watch_t *w, char *scope, size_t n, double *pct) {
  const hr_snapshot_t *s = w->snap;
  hr_level_t lv = HR_LEVEL_OK;
  *pct = NAN;
  if (s->host_state == HR_PROBE_OK && w->host > lv) {
    lv = w->host;
    hr__strlcpy(scope, "host", n);
    *pct = pct_of(s->host.total_bytes - s->host.available_bytes, s->host.total_bytes);
  }
  if (s->cgroup.state == HR_PROBE_OK && w->cgroup > lv) {
    lv = w->cgroup;
    hr__strlcpy(scope, "cgroup", n);
    *pct = pct_of(s->cgroup.usage_bytes, s->cgroup.limit_bytes);
  }
  for (size_t i = 0; i < s->n_gpus && i < w->n_gpu_levels; i++)
    if (w->gpus[i] > lv) {
      lv = w->gpus[i];
      snprintf(scope, n, "gpu%u", s->gpus[i].index);
      *pct = pct_of(s->gpus[i].used_bytes, s->gpus[i].total_bytes);
    }
  return lv;
}

static void run_actions(hr_watch_t *w) {
  double now = hr__now_mono();
  reap_hooks(w, now);
  if (w->mode == MODE_CONSERVATIVE) return;
  char scope[16] = "";
  double pct;
  hr_level_t lv = worst(w, scope, sizeof scope, &pct);
  if (lv == HR_LEVEL_OK) return;
  int slot = lv == HR_LEVEL_CRITICAL ? 1 : 0;
  const char *cmd = slot ? w->on_critical : w->on_warning;
  const char *name = slot ? "on_critical" : "on_warning";
  if (*cmd && now - w->last_action[slot] >= w->cooldown) {
    w->last_action[slot] = now;
    /* The hook gets the level as an event of its own. */
    hr__buf_t b = {0};
    hr__buf_printf(&b,
                   "{\"event\":\"level\",\"time\":%.3f,\"scope\":\"%s\",\"level\":\"%s\","
                   "\"used_pct\":%.1f,\"mode\":\"%s\"}",
                   w->snap->time, scope, hr_level_name(lv), pct,
                   w->mode == MODE_AGGRESSIVE ? "aggressive" : "balanced");
    int rc =
        b.failed ? HR_ENOMEM : hr__hook_start(&w->hooks, name, cmd, b.s, w->action_timeout, now);
    free(b.s);
    action_event(w, name, rc ? "not started" : "started", rc ? hr_strerror(rc) : cmd);
  }
  /* drop_caches frees clean page cache, which only helps the host or the
   * cgroup, and only at critical. */
  bool ram = strcmp(scope, "host") == 0 || strcmp(scope, "cgroup") == 0;
  if (w->mode == MODE_AGGRESSIVE && lv == HR_LEVEL_CRITICAL && ram && w->allow_drop_caches &&
      now - w->last_action[2] >= w->cooldown) {
    w->last_action[2] = now;
    char err[256];
    int rc = hr__drop_caches(err, sizeof err);
    action_event(w, "drop_caches", rc ? "failed" : "done", rc ? err : NULL);
  }
}

/* ---- history and exporter ----------------------------------------------- */

static void history_error(hr_watch_t *w, const char *msg) {
  /* One message a minute at most: a full disk fails every sample. */
  double now = hr__now_mono();
  if (now - w->last_history_error < 60) return;
  w->last_history_error = now;
  char m[600];
  snprintf(m, sizeof m, "%s (monitoring goes on; samples are not recorded)", msg);
  emit_error(w, w->snap->time, m);
}

static void write_history(hr_watch_t *w) {
  if (!w->history) return;
  char err[512];
  double now = hr__now_mono();
  /* The processes recorded are the ones shown: the top N after the filter. */
  hr_snapshot_t view = *w->snap;
  view.procs = malloc((w->n_top ? w->n_top : 1) * sizeof *view.procs);
  if (!view.procs) {
    history_error(w, "history: out of memory");
    return;
  }
  for (size_t i = 0; i < w->n_top; i++) view.procs[i] = *w->top[i].proc;
  /* A carried-over process table is not a new measurement. */
  view.n_procs = w->sample_fresh ? w->n_top : 0;
  if (hr_history_add_snapshot(w->history, &view, w->top_n, err, sizeof err) != 0)
    history_error(w, err);
  free(view.procs);
  if (w->last_prune == 0 || now - w->last_prune >= 3600) {
    w->last_prune = now;
    if (hr_history_prune(w->history, w->snap->time - w->retain, err, sizeof err) != 0)
      history_error(w, err);
  }
  if (w->last_flush == 0) w->last_flush = now;
  if (now - w->last_flush >= w->history_flush) {
    w->last_flush = now;
    if (hr_history_flush(w->history, err, sizeof err) != 0) history_error(w, err);
  }
}

static int prom_input(const hr_watch_t *w, hr__prom_input_t *in) {
  if (!w->snap) return HR_ESTATE;
  *in = (hr__prom_input_t){.snap = w->snap,
                           .host = w->host,
                           .cgroup = w->cgroup,
                           .gpus = w->gpus,
                           .top = w->top,
                           .n_top = w->n_top,
                           .leaks = w->leaks,
                           .n_leaks = w->n_leaks,
                           .events_total = w->events_total};
  return 0;
}

int hr_watch_metrics(const hr_watch_t *w, char **out) {
  hr__prom_input_t in;
  int rc = prom_input(w, &in);
  return rc ? rc : hr__prom_render(&in, out);
}

int hr_watch_status_json(const hr_watch_t *w, char **out) {
  if (!w || !w->snap) return HR_ESTATE;
  /* The status JSON of the processes shown: the top N. */
  hr_snapshot_t view = *w->snap;
  view.procs = malloc((w->n_top ? w->n_top : 1) * sizeof *view.procs);
  if (!view.procs) return HR_ENOMEM;
  for (size_t i = 0; i < w->n_top; i++) view.procs[i] = *w->top[i].proc;
  view.n_procs = w->n_top;
  int rc = hr_snapshot_json(&view, out);
  free(view.procs);
  return rc;
}

static void publish(hr_watch_t *w) {
  if (!w->exporter) return;
  char *m = NULL, *j = NULL;
  if (hr_watch_metrics(w, &m) == 0 && hr_watch_status_json(w, &j) == 0)
    hr_exporter_publish(w->exporter, m, j);
  free(m), free(j);
}

/* ---- the sample --------------------------------------------------------- */

static void sample_event(hr_watch_t *w) {
  const hr_snapshot_t *s = w->snap;
  hr_watch_event_t e = {.kind = HR_EVENT_SAMPLE, .time = s->time};
  ev_begin(w, HR_EVENT_SAMPLE, e.time);
  if (s->host_state == HR_PROBE_OK)
    hr__buf_printf(&w->ev,
                   ",\"host\":{\"total_bytes\":%llu,\"available_bytes\":%llu,\"level\":\"%s\"}",
                   (unsigned long long)s->host.total_bytes,
                   (unsigned long long)s->host.available_bytes, hr_level_name(w->host));
  if (s->cgroup.state == HR_PROBE_OK) {
    hr__buf_printf(&w->ev, ",\"cgroup\":{\"usage_bytes\":%llu,\"limit_bytes\":",
                   (unsigned long long)s->cgroup.usage_bytes);
    if (s->cgroup.limit_bytes == HR_UNLIMITED)
      hr__buf_printf(&w->ev, "\"max\"");
    else
      hr__buf_printf(&w->ev, "%llu", (unsigned long long)s->cgroup.limit_bytes);
    hr__buf_printf(&w->ev, ",\"level\":\"%s\"}", hr_level_name(w->cgroup));
  }
  hr__buf_printf(&w->ev, ",\"gpus\":[");
  for (size_t i = 0; i < s->n_gpus; i++) {
    const hr_gpu_t *g = &s->gpus[i];
    hr__buf_printf(&w->ev,
                   "%s{\"index\":%u,\"used_bytes\":%llu,\"total_bytes\":%llu,\"util_pct\":%d,"
                   "\"level\":\"%s\"}",
                   i ? "," : "", g->index, (unsigned long long)g->used_bytes,
                   (unsigned long long)g->total_bytes, g->util_gpu,
                   hr_level_name(i < w->n_gpu_levels ? w->gpus[i] : HR_LEVEL_OK));
  }
  hr__buf_printf(&w->ev, "],\"top\":[");
  for (size_t i = 0; i < w->n_top; i++) {
    const hr_watch_proc_view_t *v = &w->top[i];
    hr__buf_printf(&w->ev, "%s{\"pid\":%d,\"name\":", i ? "," : "", v->proc->pid);
    hr__buf_json_str(&w->ev, v->proc->name);
    hr__buf_printf(
        &w->ev,
        ",\"rss_bytes\":%llu,\"rss_anon_bytes\":%llu,\"gpu_bytes\":%llu,"
        "\"rss_anon_per_min_bytes\":%.0f,\"leak\":%s}",
        (unsigned long long)v->proc->rss_bytes, (unsigned long long)v->proc->rss_anon_bytes,
        (unsigned long long)v->proc->gpu_bytes, v->rss_per_min, v->leak ? "true" : "false");
  }
  hr__buf_printf(&w->ev, "],\"processes\":%zu,\"processes_read\":%s,\"cpu_ms\":%.3f", s->n_procs,
                 w->sample_fresh ? "true" : "false", w->cpu_s_last * 1000);
  ev_emit(w, &e);
}

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int hr_watch_feed(hr_watch_t *w, hr_snapshot_t *s) {
  if (!w || !s) return HR_EINVAL;
  double c0 = cpu_now();
  hr_snapshot_free(w->snap);
  w->snap = s;
  size_t n = s->n_procs ? s->n_procs : 1;
  bool *keep = realloc(w->keep, n * sizeof *keep);
  if (keep) w->keep = keep;
  bool *flag = keep ? realloc(w->leak_flag, n * sizeof *flag) : NULL;
  if (flag) w->leak_flag = flag;
  if (!keep || !flag) return HR_ENOMEM;
  /* Like pgrep, a filter never matches watch itself: its own command line
   * holds the filter's words. */
  int self = *w->filter ? (int)getpid() : 0;
  /* A carried-over table is the last one in the same order, so the leak
   * flags stay as they were. */
  bool fresh = w->sample_fresh = !w->procs_stale;
  w->procs_stale = false;
  for (size_t i = 0; i < s->n_procs; i++) {
    w->keep[i] = s->procs[i].pid != self && hr_proc_matches(&s->procs[i], w->filter);
    if (fresh) w->leak_flag[i] = false;
  }
  if (fresh) {
    if (w->last_fresh_time > 0) w->proc_gap = s->time - w->last_fresh_time;
    w->last_fresh_time = s->time;
  }
  int rc;
  if ((rc = update_levels(w)) != 0) return rc;
  if (fresh && (rc = feed_leaks(w)) != 0) return rc;
  if ((rc = feed_idle(w)) != 0) return rc;
  feed_oom(w);
  if ((rc = build_views(w)) != 0) return rc;
  if (fresh && (rc = feed_exits(w)) != 0) return rc;
  run_actions(w);
  write_history(w);
  w->cpu_s_last = cpu_now() - c0;
  sample_event(w);
  /* Last, so the exporter's counters include this sample's events. */
  publish(w);
  return 0;
}

void hr_watch_get_view(const hr_watch_t *w, hr_watch_view_t *out) {
  memset(out, 0, sizeof *out);
  if (!w) return;
  out->snap = w->snap;
  out->host = w->host, out->cgroup = w->cgroup;
  out->gpus = w->gpus;
  out->n_top = w->n_top;
  out->top = w->top;
  memcpy(out->events_total, w->events_total, sizeof out->events_total);
  out->cpu_s_last = w->cpu_s_last;
}

/* ---- the loop ----------------------------------------------------------- */

/* Takes a snapshot; reads the processes only when the time since the last
 * read covers their cost within the budget (proc_cpu / proc_budget), and
 * otherwise carries the last table over. */
static int default_sampler(void *arg, hr_snapshot_t **out) {
  hr_watch_t *w = arg;
  char err[256] = "";
  double now = hr__now_mono();
  bool procs =
      !w->snap || w->proc_read_mono == 0 || now - w->proc_read_mono >= w->proc_cpu / w->proc_budget;
  hr_probe_options_t po = {.root = w->root,
                           .what = HR_PROBE_HOST | HR_PROBE_CGROUP | HR_PROBE_GPUS |
                                   (procs ? HR_PROBE_PROCS : 0u),
                           .nvml_path = *w->nvml_path ? w->nvml_path : NULL,
                           .err = err,
                           .errlen = sizeof err};
  double c0 = cpu_now();
  int rc = hr_probe_snapshot(w->probe, &po, out);
  if (rc) {
    if (*err) hr__log(HR_LOG_ERROR, "%s", err);
    return rc;
  }
  if (procs) {
    w->proc_cpu = cpu_now() - c0;
    w->proc_read_mono = now;
    return 0;
  }
  hr_snapshot_t *s = *out;
  free(s->procs);
  s->procs = malloc((w->snap->n_procs ? w->snap->n_procs : 1) * sizeof *s->procs);
  if (!s->procs) {
    hr_snapshot_free(s);
    *out = NULL;
    return HR_ENOMEM;
  }
  memcpy(s->procs, w->snap->procs, w->snap->n_procs * sizeof *s->procs);
  s->n_procs = w->snap->n_procs;
  w->procs_stale = true;
  return 0;
}

/* Sleeps until the monotonic time `until`, in slices, so a stop request
 * is seen within 50 ms whichever thread the signal went to. */
static void sleep_until(double until, volatile sig_atomic_t *stop) {
  for (;;) {
    double left = until - hr__now_mono();
    if (left <= 0 || (stop && *stop)) return;
    if (left > 0.05) left = 0.05;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(left * 1e9)};
    nanosleep(&ts, NULL);
  }
}

int hr_watch_run(hr_watch_t *w, volatile sig_atomic_t *stop, uint64_t count) {
  if (!w) return HR_EINVAL;
  hr_watch_sampler_fn sampler = w->sampler ? w->sampler : default_sampler;
  void *arg = w->sampler ? w->sampler_arg : w;
  double next = hr__now_mono();
  for (uint64_t i = 0; (count == 0 || i < count) && !(stop && *stop); i++) {
    hr_snapshot_t *s = NULL;
    int rc = sampler(arg, &s);
    if (rc) {
      if (i == 0) return rc;
      char msg[128];
      snprintf(msg, sizeof msg, "sample failed: %s", hr_strerror(rc));
      if (w->snap) emit_error(w, hr__now_wall(), msg);
    } else if ((rc = hr_watch_feed(w, s)) != 0) {
      return rc;
    }
    if (count && i + 1 == count) break;
    next += w->interval;
    double now = hr__now_mono();
    if (next < now) next = now; /* a slow sample does not cause a burst */
    sleep_until(next, stop);
  }
  if (w->history) {
    char err[512];
    if (hr_history_flush(w->history, err, sizeof err) != 0 && w->snap)
      emit_error(w, w->snap->time, err);
  }
  return 0;
}
