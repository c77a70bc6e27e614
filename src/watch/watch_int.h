/* Internal parts of watch, shared by its files: the engine's state
 * (struct hr_watch), what a sample means (assess.c), the actions with their
 * cooldown, the hook runner and drop_caches (actions.c), recording and
 * serving (record.c), the broker's events (posted.c), the clock (clock.c),
 * and event delivery (watch.c). */
#ifndef HR_WATCH_INT_H
#define HR_WATCH_INT_H

#include "util/util.h"

#include <pthread.h>

#define HR__MAX_HOOKS 8

typedef struct hr__hook {
  pid_t pid;
  double started, deadline;
  char name[16]; /* "on_warning", "on_critical" */
} hr__hook_t;

typedef struct hr__hooks {
  hr__hook_t h[HR__MAX_HOOKS];
  size_t n;
} hr__hooks_t;

typedef struct hr__hook_result {
  char name[16];
  pid_t pid;
  double seconds;
  bool timed_out;
  int exit_code; /* -1 when it did not exit normally */
  int signal;    /* the signal that ended it, or 0 */
} hr__hook_result_t;

/* Starts `/bin/sh -c cmd` with HEADROOM_EVENT=event_json in its environment,
 * in a process group of its own, without waiting. HR_EBUSY when
 * HR__MAX_HOOKS are still running. */
HR_INTERNAL int hr__hook_start(hr__hooks_t *hk, const char *name, const char *cmd,
                               const char *event_json, double timeout_s, double now);

/* Reaps hooks that ended and kills those past their deadline (all of them
 * when kill_all); writes up to `max` results and returns how many. */
HR_INTERNAL size_t hr__hooks_reap(hr__hooks_t *hk, double now, bool kill_all,
                                  hr__hook_result_t *out, size_t max);

/* sync(), then "1" into /proc/sys/vm/drop_caches. HR_EPERM when not root. */
HR_INTERNAL int hr__drop_caches(char *err, size_t errlen);

/* ---- the engine's state ------------------------------------------------- */

enum { HR__SERIES_RSS_ANON = 0, HR__SERIES_GPU = 1 };

typedef struct hr__idle_entry {
  int pid;
  unsigned gpu;
  uint64_t count;
  bool reported;
  bool seen; /* in this sample */
} hr__idle_entry_t;

typedef struct hr__watched {
  int pid;
  uint64_t start;
  char name[64];
} hr__watched_t;

struct hr_watch {
  /* configuration */
  double interval, cooldown, action_timeout, history_flush, retain;
  const hr_cleanup_mode_t *cleanup; /* the mode's row: which actions run */
  double ram_warn, ram_crit, vram_warn, vram_crit, hyst;
  double idle_share, idle_util;
  double proc_budget; /* fraction of a core */
  uint64_t idle_samples;
  bool allow_drop_caches;
  size_t top_n;
  char *filter, *on_warning, *on_critical, *root, *nvml_path;
  char *cgroup_path; /* the cgroup option: read instead of headroom's own */
  int cgroup_pid;    /* the cgroup_pid option */
  hr_leak_config_t leak_cfg;

  hr_watch_event_fn on_event;
  void *on_event_arg;
  hr_watch_sampler_fn sampler;
  void *sampler_arg;
  hr_watch_clock_t clock; /* every member set: the system's where not given */
  hr_history_t *history;
  hr_exporter_t *exporter;

  /* state */
  hr_snapshot_t *snap;
  hr_probe_t *probe; /* the default sampler's: known processes read the short way */
  hr_level_t host, cgroup;
  hr_level_t *gpus;
  size_t n_gpu_levels;
  uint64_t prev_oom_kills;
  bool prev_cgroup_ok;
  hr_leak_t *leak;
  hr__idle_entry_t *idle;
  size_t n_idle, cap_idle;
  hr__watched_t *watched;
  size_t n_watched, cap_watched;
  /* Per snapshot process, sized for the largest snapshot so far (cap_procs). */
  size_t cap_procs;
  bool *keep;                /* matches the filter, and is not watch itself */
  bool *leak_flag;           /* leak suspected */
  size_t *leak_idx;          /* processes with leak_flag: n_leaks of them */
  hr_watch_proc_view_t *top; /* the first n_top of the snapshot's selection */
  size_t n_top, n_leaks;
  uint64_t events_total[HR_EVENT_KINDS_];
  double last_action[3]; /* on_warning, on_critical, drop_caches */
  hr__hooks_t hooks;
  double last_flush, last_prune; /* NaN: not yet */
  double last_history_error;
  double cpu_s_last;
  double sample_wall_s;     /* wall time of the last sample: the sampler and the feed */
  uint64_t sample_errors;   /* samples the sampler failed to take */
  double sample_start_mono; /* when the loop called the sampler; NaN when fed directly */
  size_t metrics_top;       /* processes without GPU memory in /metrics */
  /* Process reading (the default sampler): through the probe context a known
   * process costs about 8 us of CPU (35 us when first seen); should a large
   * host's table cost more than proc_budget allows, it is read less often
   * than the interval; between reads the last table is carried over and the
   * per-process tests skip the sample. */
  bool procs_stale;       /* the next snapshot's processes were carried over */
  bool sample_fresh;      /* the current snapshot's processes were read */
  double proc_cpu;        /* CPU seconds of the last snapshot with processes */
  double proc_read_mono;  /* when it was taken (NaN: never) */
  double proc_gap;        /* seconds between the last two process reads */
  double last_fresh_time; /* snapshot time of the last process read (NaN: none) */

  /* Events other threads posted (the broker's), delivered at the next
   * sample on the watch's thread (posted.c), and where the exporter reads
   * the broker's counters. */
  pthread_mutex_t post_lock;
  hr_watch_event_t *posted;
  size_t n_posted, cap_posted;
  uint64_t posted_dropped;
  hr_watch_broker_counters_fn broker_counters;
  void *broker_counters_arg;
};

/* Delivers the posted events (posted.c), each like the watch's own, and an
 * error event counting those dropped. Watch's thread only. */
HR_INTERNAL void hr__watch_deliver_posted(hr_watch_t *w);

/* Delivers an event: its counter, history (not samples), the callback. */
HR_INTERNAL void hr__watch_emit(hr_watch_t *w, const hr_watch_event_t *e);
/* An error event, never written into history (it may be about history). */
HR_INTERNAL void hr__watch_error(hr_watch_t *w, double t, const char *msg);

/* How many of the snapshot's selection one shows who shows the `top`
 * largest besides the GPU holders: its front, since the GPU holders lead. */
static inline size_t hr__selected_top(const hr_snapshot_t *s, size_t top) {
  size_t others = s->n_selected - s->n_selected_gpu;
  return s->n_selected_gpu + (others < top ? others : top);
}
/* The engine's clock (hr_watch_set_clock): monotonic and wall seconds. */
HR_INTERNAL double hr__watch_mono(const hr_watch_t *w);
HR_INTERNAL double hr__watch_wall(const hr_watch_t *w);
/* Waits until hr__watch_mono() reaches `until` or *stop is set. */
HR_INTERNAL void hr__watch_sleep_until(const hr_watch_t *w, double until,
                                       volatile sig_atomic_t *stop);

/* Percent of used in total; NaN when either is unknown or total unlimited. */
HR_INTERNAL double hr__pct_of(uint64_t used, uint64_t total);

/* What a sample means (assess.c), in the order hr_watch_feed runs them. Each
 * reads w->snap, updates its state and emits its events; those that grow
 * state return 0 or HR_ENOMEM. */
HR_INTERNAL int hr__watch_levels(hr_watch_t *w);
HR_INTERNAL int hr__watch_leaks(hr_watch_t *w);
HR_INTERNAL int hr__watch_idle(hr_watch_t *w);
HR_INTERNAL void hr__watch_oom(hr_watch_t *w);
HR_INTERNAL int hr__watch_exits(hr_watch_t *w);

/* Reaps hooks that ended, then runs the hook (and drop_caches) the worst
 * level calls for by mode, each at most once per cooldown. */
HR_INTERNAL void hr__watch_actions(hr_watch_t *w);

/* Queues the sample in history, prunes hourly, commits every history_flush;
 * failures are rate-limited error events. */
HR_INTERNAL void hr__watch_record(hr_watch_t *w);
/* Hands the exporter the last sample's metrics and status JSON. */
HR_INTERNAL void hr__watch_publish(hr_watch_t *w);

#endif /* HR_WATCH_INT_H */
