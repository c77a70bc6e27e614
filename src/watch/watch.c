/* watch: the engine's life, event delivery, and the sampling loop.
 *
 * hr_watch_feed() takes one snapshot and, in order: updates the levels of
 * the host, the cgroup and each GPU; feeds the leak detector; counts idle
 * GPU holders; compares the cgroup's oom_kill counter; takes the processes
 * shown from the snapshot's selection and notices watched processes that exited
 * (assess.c); runs actions by mode (actions.c); writes history; emits the
 * sample event; and last hands the exporter its documents (record.c). Each
 * event goes, as a typed value, to its counter, to history and to the
 * callback; nothing here writes JSON.
 *
 * The loop (hr_watch_run) only times samples; all state lives in the
 * engine, so tests drive it with hand-built snapshots, and every time it
 * keeps comes from its clock (clock.c), so tests count in samples. */
#include "watch/watch_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* How many statm files the sampler's context keeps open: half of what
 * RLIMIT_NOFILE allows, the other half left to history, the exporter, the
 * broker and hooks, and at most 65536. */
static size_t held_files(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  rlim_t half = rl.rlim_cur == RLIM_INFINITY ? 65536 : rl.rlim_cur / 2;
  return half > 65536 ? 65536 : (size_t)half;
}

/* The numbers and switches of the options. */
static void read_settings(hr_watch_t *w, const hr_options_t *o) {
  w->interval = hr_options_get_double(o, HR_OPTION_interval);
  w->cooldown = hr_options_get_double(o, HR_OPTION_cooldown);
  w->action_timeout = hr_options_get_double(o, HR_OPTION_action_timeout);
  w->history_flush = hr_options_get_double(o, HR_OPTION_history_flush);
  w->retain = hr_options_get_double(o, HR_OPTION_retain);
  w->cleanup = hr_cleanup_mode(hr_options_get_str(o, HR_OPTION_mode));
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
  w->metrics_top = (size_t)hr_options_get_int(o, HR_OPTION_metrics_top);
  w->leak_cfg.window_s = hr_options_get_double(o, HR_OPTION_leak_window);
  w->leak_cfg.min_samples = (size_t)hr_options_get_int(o, HR_OPTION_leak_min_samples);
  w->leak_cfg.min_rate = (double)hr_options_get_size(o, HR_OPTION_leak_min_rate);
  w->cgroup_pid = (int)hr_options_get_int(o, HR_OPTION_cgroup_pid);
}

/* The strings of the options, copied. */
static int read_strings(hr_watch_t *w, const hr_options_t *o) {
  struct {
    char **to;
    hr_option_id_t id;
  } const strings[] = {
      {&w->filter, HR_OPTION_filter},           {&w->on_warning, HR_OPTION_on_warning},
      {&w->on_critical, HR_OPTION_on_critical}, {&w->root, HR_OPTION_root},
      {&w->nvml_path, HR_OPTION_nvml_library},  {&w->cgroup_path, HR_OPTION_cgroup}};
  for (size_t i = 0; i < HR_ARRAY_LEN(strings); i++)
    if (!(*strings[i].to = strdup(hr_options_get_str(o, strings[i].id)))) return HR_ENOMEM;
  return 0;
}

int hr_watch_create(const hr_options_t *o, hr_watch_t **out, char *err, size_t errlen) {
  if (!o || !out) return HR_EINVAL;
  *out = NULL;
  hr_watch_t *w = calloc(1, sizeof *w);
  if (!w) return HR_ENOMEM;
  pthread_mutex_init(&w->post_lock, NULL);
  hr_watch_set_clock(w, NULL);
  read_settings(w, o);
  for (int i = 0; i < 3; i++) w->last_action[i] = -INFINITY;
  w->last_history_error = -INFINITY;
  /* Not yet: any time the clock gives, 0 included, is a real one. */
  w->last_flush = w->last_prune = w->proc_read_mono = w->sample_start_mono = NAN;
  w->last_fresh_time = NAN;
  int rc = 0;
  if (!w->cleanup)
    rc = hr__err(err, errlen, HR_EINVAL, "mode %s: no such cleanup mode",
                 hr_options_get_str(o, HR_OPTION_mode));
  else if (w->ram_warn > w->ram_crit || w->vram_warn > w->vram_crit)
    rc = hr__err(err, errlen, HR_EINVAL,
                 "a warning threshold is above its critical one (ram_warn %g, ram_critical %g, "
                 "vram_warn %g, vram_critical %g)",
                 w->ram_warn, w->ram_crit, w->vram_warn, w->vram_crit);
  if (rc == 0) rc = read_strings(w, o);
  if (rc == 0) rc = hr_leak_create(&w->leak_cfg, &w->leak);
  if (rc == 0) rc = hr_probe_create(&w->probe);
  if (rc == 0) hr_probe_hold_files(w->probe, held_files());
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
  hr__hooks_reap(&w->hooks, hr__watch_mono(w), true, res, HR__MAX_HOOKS);
  hr_snapshot_free(w->snap);
  hr_leak_destroy(w->leak);
  hr_probe_destroy(w->probe);
  free(w->gpus), free(w->idle), free(w->watched), free(w->keep), free(w->leak_flag);
  free(w->leak_idx), free(w->top);
  free(w->filter), free(w->on_warning), free(w->on_critical), free(w->root), free(w->nvml_path);
  free(w->cgroup_path);
  free(w->posted);
  pthread_mutex_destroy(&w->post_lock);
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
  hr_history_thresholds_t t = {w->ram_warn, w->ram_crit, w->vram_warn, w->vram_crit};
  if (h) hr_history_set_thresholds(h, &t);
}
void hr_watch_attach_exporter(hr_watch_t *w, hr_exporter_t *e) {
  w->exporter = e;
}

/* ---- events ------------------------------------------------------------- */

void hr__watch_emit(hr_watch_t *w, const hr_watch_event_t *e) {
  w->events_total[e->kind]++;
  if (w->history && e->kind != HR_EVENT_SAMPLE) {
    char err[256];
    if (hr_history_add_event(w->history, e, err, sizeof err) != 0) hr__log(HR_LOG_WARN, "%s", err);
  }
  if (w->on_event) w->on_event(e, w->on_event_arg);
}

void hr__watch_error(hr_watch_t *w, double t, const char *msg) {
  hr_watch_event_t e = {.kind = HR_EVENT_ERROR, .time = t};
  hr__strlcpy(e.error.message, msg, sizeof e.error.message);
  /* An error about history is not written into history. */
  hr_history_t *h = w->history;
  w->history = NULL;
  hr__watch_emit(w, &e);
  w->history = h;
}

/* ---- the processes shown ------------------------------------------------ */

/* The selection's top: the live view's and /metrics' processes are both its
 * front (hr__selected_top). */
static size_t selection_top(const hr_watch_t *w) {
  return w->top_n > w->metrics_top ? w->top_n : w->metrics_top;
}

/* Grows the per-process arrays to hold n processes. */
static int reserve_procs(hr_watch_t *w, size_t n) {
  if (n <= w->cap_procs) return 0;
  if (hr__resize(&w->keep, n, sizeof *w->keep) ||
      hr__resize(&w->leak_flag, n, sizeof *w->leak_flag) ||
      hr__resize(&w->leak_idx, n, sizeof *w->leak_idx) || hr__resize(&w->top, n, sizeof *w->top))
    return HR_ENOMEM;
  w->cap_procs = n;
  return 0;
}

/* The processes shown (the front of the snapshot's selection: GPU holders,
 * then the top N after the filter) with their trends, and those with a leak
 * suspected. */
static void build_views(hr_watch_t *w) {
  const hr_snapshot_t *s = w->snap;
  w->n_top = hr__selected_top(s, w->top_n);
  for (size_t i = 0; i < w->n_top; i++) {
    size_t j = s->selected[i];
    const hr_proc_t *p = &s->procs[j];
    hr_watch_proc_view_t *v = &w->top[i];
    v->proc = p;
    v->leak = w->leak_flag[j];
    v->rss_per_min = v->gpu_per_min = 0;
    hr_leak_slope(w->leak, p->pid, p->start_ticks, HR__SERIES_RSS_ANON, &v->rss_per_min);
    if (p->gpu_bytes)
      hr_leak_slope(w->leak, p->pid, p->start_ticks, HR__SERIES_GPU, &v->gpu_per_min);
  }
  w->n_leaks = 0;
  for (size_t i = 0; i < s->n_procs; i++)
    if (w->leak_flag[i]) w->leak_idx[w->n_leaks++] = i;
}

/* Leak suspects outside the selection were read briefly (HR_PROBE_BRIEF):
 * the rest of each, such as the container and pod that label its /metrics
 * series, is read now, through the sampler's context. */
static int complete_suspects(hr_watch_t *w) {
  hr_snapshot_t *s = w->snap;
  size_t n = 0;
  for (size_t i = 0; i < s->n_procs; i++)
    if (w->leak_flag[i] && s->procs[i].brief) w->leak_idx[n++] = i;
  hr_probe_options_t po = {.root = w->root};
  return n ? hr_probe_complete(w->probe, &po, s, w->leak_idx, n) : 0;
}

/* ---- the sample --------------------------------------------------------- */

static void sample_event(hr_watch_t *w) {
  hr_watch_event_t e = {.kind = HR_EVENT_SAMPLE, .time = w->snap->time};
  e.sample = (hr_event_sample_t){.snap = w->snap,
                                 .host = w->host,
                                 .cgroup = w->cgroup,
                                 .gpus = w->gpus,
                                 .top = w->top,
                                 .n_top = w->n_top,
                                 .processes_read = w->sample_fresh,
                                 .cpu_s = w->cpu_s_last};
  hr__watch_emit(w, &e);
}

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int hr_watch_feed(hr_watch_t *w, hr_snapshot_t *s) {
  if (!w || !s) return HR_EINVAL;
  double c0 = cpu_now(), m0 = hr__watch_mono(w);
  hr_snapshot_free(w->snap);
  w->snap = s;
  if (reserve_procs(w, s->n_procs ? s->n_procs : 1) != 0) return HR_ENOMEM;
  /* The sampler's probe selected the processes; a snapshot that comes
   * without a selection (another sampler, a test) is selected here, once. */
  if (!s->selected && hr_snapshot_select(s, selection_top(w), w->filter) != 0) return HR_ENOMEM;
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
    if (!isnan(w->last_fresh_time)) w->proc_gap = s->time - w->last_fresh_time;
    w->last_fresh_time = s->time;
  }
  int rc;
  if ((rc = hr__watch_levels(w)) != 0) return rc;
  if (fresh && (rc = hr__watch_leaks(w)) != 0) return rc;
  if (fresh && (rc = complete_suspects(w)) != 0) return rc;
  if ((rc = hr__watch_idle(w)) != 0) return rc;
  hr__watch_oom(w);
  build_views(w);
  if (fresh && (rc = hr__watch_exits(w)) != 0) return rc;
  hr__watch_actions(w);
  hr__watch_deliver_posted(w);
  hr__watch_record(w);
  w->cpu_s_last = cpu_now() - c0;
  /* From the sampler's start when the loop took it, else the feed alone. */
  w->sample_wall_s = hr__watch_mono(w) - (isnan(w->sample_start_mono) ? m0 : w->sample_start_mono);
  w->sample_start_mono = NAN;
  sample_event(w);
  /* Last, so the exporter's counters include this sample's events. */
  hr__watch_publish(w);
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

/* Gives s the last snapshot's process table and its selection, for a
 * sample that did not read processes. */
static int carry_procs(hr_snapshot_t *s, const hr_snapshot_t *last) {
  size_t n = last->n_procs ? last->n_procs : 1;
  free(s->procs), free(s->selected);
  s->procs = malloc(n * sizeof *s->procs);
  s->selected = malloc(n * sizeof *s->selected);
  if (!s->procs || !s->selected) return HR_ENOMEM;
  memcpy(s->procs, last->procs, last->n_procs * sizeof *s->procs);
  if (last->selected) memcpy(s->selected, last->selected, last->n_selected * sizeof *s->selected);
  s->n_procs = last->n_procs;
  s->n_selected = last->n_selected, s->n_selected_gpu = last->n_selected_gpu;
  return 0;
}

/* Takes a snapshot; reads the processes only when the time since the last
 * read covers their cost within the budget (proc_cpu / proc_budget), and
 * otherwise carries the last table over. */
static int default_sampler(void *arg, hr_snapshot_t **out) {
  hr_watch_t *w = arg;
  char err[256] = "";
  double now = hr__watch_mono(w);
  bool procs = !w->snap || isnan(w->proc_read_mono) ||
               now - w->proc_read_mono >= w->proc_cpu / w->proc_budget;
  hr_probe_options_t po = {.root = w->root,
                           .what = HR_PROBE_HOST | HR_PROBE_CGROUP | HR_PROBE_GPUS |
                                   HR_PROBE_BRIEF | (procs ? HR_PROBE_PROCS : 0u),
                           .nvml_path = *w->nvml_path ? w->nvml_path : NULL,
                           .err = err,
                           .errlen = sizeof err,
                           .cgroup = w->cgroup_path,
                           .cgroup_pid = w->cgroup_pid,
                           .filter = w->filter,
                           .top = selection_top(w)};
  double c0 = cpu_now();
  /* The context's first read identifies every process (stat for each): a
   * cost paid once, not the pace of the reads after it. */
  bool first = hr_probe_cached(w->probe) == 0;
  int rc = hr_probe_snapshot(w->probe, &po, out);
  if (rc) {
    if (*err) hr__log(HR_LOG_ERROR, "%s", err);
    return rc;
  }
  if (procs) {
    w->proc_cpu = first ? 0 : cpu_now() - c0;
    w->proc_read_mono = now;
    return 0;
  }
  if (carry_procs(*out, w->snap) != 0) {
    hr_snapshot_free(*out);
    *out = NULL;
    return HR_ENOMEM;
  }
  w->procs_stale = true;
  return 0;
}

int hr_watch_run(hr_watch_t *w, volatile sig_atomic_t *stop, uint64_t count) {
  if (!w) return HR_EINVAL;
  hr_watch_sampler_fn sampler = w->sampler ? w->sampler : default_sampler;
  void *arg = w->sampler ? w->sampler_arg : w;
  double next = hr__watch_mono(w);
  for (uint64_t i = 0; (count == 0 || i < count) && !(stop && *stop); i++) {
    hr_snapshot_t *s = NULL;
    w->sample_start_mono = hr__watch_mono(w);
    int rc = sampler(arg, &s);
    if (rc) {
      w->sample_errors++;
      if (i == 0) return rc;
      char msg[128];
      snprintf(msg, sizeof msg, "sample failed: %s", hr_strerror(rc));
      if (w->snap) hr__watch_error(w, hr__watch_wall(w), msg);
      /* The broker's events still go out: it may be the one that took the
       * descriptors the sample needed, and says so. */
      hr__watch_deliver_posted(w);
    } else if ((rc = hr_watch_feed(w, s)) != 0) {
      return rc;
    }
    if (count && i + 1 == count) break;
    next += w->interval;
    double now = hr__watch_mono(w);
    if (next < now) next = now; /* a slow sample does not cause a burst */
    hr__watch_sleep_until(w, next, stop);
  }
  hr__watch_deliver_posted(w);
  if (w->history) {
    char err[512];
    if (hr_history_flush(w->history, err, sizeof err) != 0 && w->snap)
      hr__watch_error(w, w->snap->time, err);
  }
  return 0;
}
