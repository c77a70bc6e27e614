/* watch: the monitoring loop and what it decides and records.
 *
 * Levels (ok / warning / critical with hysteresis) for each GPU, the host and
 * the cgroup; a per-process leak detector (Mann-Kendall trend test with a
 * Theil-Sen slope over a window); idle-hog detection; actions by mode with a
 * cooldown; a SQLite history; a Prometheus exporter over HTTP.
 *
 * hr_watch_feed() is the whole decision engine and takes snapshots from any
 * source, so tests drive it with hand-built hr_snapshot_t values;
 * hr_watch_run() is the loop that feeds it from hr_snapshot_take().
 * Levels and the leak trend test it uses are in headroom/detect.h (part of
 * libheadroom). Included by headroom/daemon.h; do not include it alone. */
#ifndef HEADROOM_WATCH_H
#define HEADROOM_WATCH_H

#include <signal.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- events ------------------------------------------------------------- */

#include "headroom/event.h"

/* ---- history (SQLite) --------------------------------------------------- */

typedef struct hr_history hr_history_t;

/* The schema version this library writes; older files are migrated. */
#define HR_HISTORY_SCHEMA 5

/* Opens or creates the database at `path` (WAL mode), creating its folder,
 * and migrates an older schema. A path that cannot be written is HR_EPERM or
 * HR_EIO with the path and SQLite's reason in err; one that is there and is
 * not a regular file (a FIFO, a directory, a device) is HR_EIO. A newer
 * schema than this library knows is HR_EVERSION. */
HR_API int hr_history_open(const char *path, hr_history_t **out, char *err, size_t errlen);
/* Opens the existing database at `path` to read it only: no file is
 * created, migrated or written (the write functions answer HR_EPERM), so it
 * needs read access alone, and a watch that writes the file meanwhile is
 * read up to its last commit. A file at an older schema (3 or later) is read
 * as it is, what it did not keep reading as not known. A missing file is
 * HR_ENOENT, one that is not a regular file HR_EIO, a schema older than 3
 * (it needs a migration) or newer than this library's HR_EVERSION, each
 * with the path and the reason in err. */
HR_API int hr_history_open_readonly(const char *path, hr_history_t **out, char *err, size_t errlen);
/* Commits what is pending and closes. */
HR_API void hr_history_close(hr_history_t *h);

/* The default path: $XDG_STATE_HOME/headroom/history.db, else
 * ~/.local/state/headroom/history.db. */
HR_API int hr_history_default_path(char *buf, size_t n);

/* The level thresholds in force (percent of a total or limit; NaN: not
 * known), kept with each scope sample from schema 5 on, so that what is
 * drawn later is what watch ran with. */
typedef struct hr_history_thresholds {
  double ram_warn, ram_critical;   /* the host's and the cgroup's */
  double vram_warn, vram_critical; /* each GPU's */
} hr_history_thresholds_t;

/* Sets the thresholds written with the samples queued from now on (none
 * until set: the watch sets its own when history is attached). Returns 0 or
 * HR_EINVAL. */
HR_API int hr_history_set_thresholds(hr_history_t *h, const hr_history_thresholds_t *t);

/* Queues a sample: host, cgroup, each GPU, and the snapshot's selected
 * processes (s->selected: GPU holders, then the largest by RSS; none when
 * it has no selection), so history keeps what status and watch show.
 * Writes go into an open transaction that hr_history_flush() commits. */
HR_API int hr_history_add_snapshot(hr_history_t *h, const hr_snapshot_t *s, char *err,
                                   size_t errlen);
/* Queues an event: its kind, time, process and typed payload, one column
 * per field of the kind's field list (headroom/event.h; a sample's
 * pointers are not kept: samples have their own tables). */
HR_API int hr_history_add_event(hr_history_t *h, const hr_watch_event_t *e, char *err,
                                size_t errlen);
/* Commits the open batch. A full disk is HR_ENOSPC, other failures HR_EIO;
 * the batch is dropped and the next one starts afresh. */
HR_API int hr_history_flush(hr_history_t *h, char *err, size_t errlen);
/* Deletes samples and events older than `before` (seconds since the epoch). */
HR_API int hr_history_prune(hr_history_t *h, double before, char *err, size_t errlen);
/* Rows queued since the last successful flush. */
HR_API size_t hr_history_pending(const hr_history_t *h);

/* One row of a query. For scope samples, pid is 0 and name the scope
 * ("host", "cgroup", "gpu0"); for processes, scope is "proc". */
typedef struct hr_history_row {
  double time;
  char scope[16];
  int pid;
  char name[64];
  uint64_t used_bytes, total_bytes; /* proc: used = rss, total = gpu bytes */
  /* A scope's warning and critical thresholds in force when it was recorded
   * (percent; NaN: a process, or not recorded: schema 4 and older). */
  double warn_pct, critical_pct;
} hr_history_row_t;

/* An event read back: the typed event, and its time, kind (as a name),
 * pid and process name again for callers that only list events. */
typedef struct hr_history_event {
  double time;
  char kind[16];
  int pid;
  char name[64];
  hr_watch_event_t event;
} hr_history_event_t;

/* Reads samples (pid 0: every scope and process; pid > 0: only that process;
 * pid < 0: none, and every process's events) and events from `since` on.
 * Arrays are malloc'd; free them with hr_history_free_rows(). */
HR_API int hr_history_query(hr_history_t *h, double since, int pid, hr_history_row_t **rows,
                            size_t *n_rows, hr_history_event_t **events, size_t *n_events,
                            char *err, size_t errlen);
HR_API void hr_history_free_rows(hr_history_row_t *rows, hr_history_event_t *events,
                                 size_t n_events);

/* ---- exporter (HTTP) ---------------------------------------------------- */

typedef struct hr_exporter hr_exporter_t;

/* Serves GET /metrics and GET /api/snapshot on `listen` ("HOST:PORT"; port 0
 * picks a free one) from a thread of its own. A port in use is HR_EBUSY, a
 * bad address HR_EINVAL, each with a message in err. */
HR_API int hr_exporter_start(const char *listen, hr_exporter_t **out, char *err, size_t errlen);
HR_API void hr_exporter_stop(hr_exporter_t *e);
/* The port it listens on. */
HR_API int hr_exporter_port(const hr_exporter_t *e);
/* Replaces the documents it serves (copied). Thread-safe. */
HR_API int hr_exporter_publish(hr_exporter_t *e, const char *metrics, const char *snapshot_json);

/* ---- watch -------------------------------------------------------------- */

/* Events (include/headroom/event.h) go to the callback as typed values,
 * valid during the call; hr_event_json() and hr_event_text() write them. */
typedef void (*hr_watch_event_fn)(const hr_watch_event_t *ev, void *arg);

typedef struct hr_watch hr_watch_t;

/* Takes a snapshot for the loop; hr_snapshot_take() by default. Tests and
 * benchmarks set another. */
typedef int (*hr_watch_sampler_fn)(void *arg, hr_snapshot_t **out);

/* Creates the engine from options (interval, mode, thresholds, leak_*, idle_*,
 * cooldown, on_warning, on_critical, action_timeout, allow_drop_caches,
 * filter, top). Does not open history or the exporter: see
 * hr_watch_attach_history() and hr_watch_attach_exporter(). */
HR_API int hr_watch_create(const hr_options_t *opts, hr_watch_t **out, char *err, size_t errlen);
HR_API void hr_watch_destroy(hr_watch_t *w);

HR_API void hr_watch_on_event(hr_watch_t *w, hr_watch_event_fn fn, void *arg);
HR_API void hr_watch_set_sampler(hr_watch_t *w, hr_watch_sampler_fn fn, void *arg);

/* Where the engine reads the time and how its loop waits. `mono` (seconds
 * that never go back) times cooldowns, hook deadlines, history flushes and
 * prunes, the rate limit of error events, the process-reading budget and the
 * loop's schedule; `wall` (seconds since the epoch) stamps events that have
 * no snapshot; `sleep_until` waits until mono() reaches `until` or *stop
 * (which may be NULL) becomes non-zero. A test sets a clock of its own whose
 * sleep_until only moves its time on, and so drives the engine and the loop
 * sample by sample, with no real waiting. Snapshot times are the sampler's. */
typedef struct hr_watch_clock {
  double (*mono)(void *arg);
  double (*wall)(void *arg);
  void (*sleep_until)(void *arg, double until, volatile sig_atomic_t *stop);
  void *arg;
} hr_watch_clock_t;

/* Sets the clock (copied). NULL, or a NULL member, is the system's:
 * CLOCK_MONOTONIC, CLOCK_REALTIME and nanosleep() in 50 ms slices (so a stop
 * is seen within 50 ms). Set it before the first feed: times already kept
 * are not converted. */
HR_API void hr_watch_set_clock(hr_watch_t *w, const hr_watch_clock_t *clock);
/* The watch does not own these; they must outlive it or be detached (NULL).
 * Attaching history sets its thresholds to the watch's. */
HR_API void hr_watch_attach_history(hr_watch_t *w, hr_history_t *h);
HR_API void hr_watch_attach_exporter(hr_watch_t *w, hr_exporter_t *e);

/* Hands the watch an event from another thread (the broker's): it waits in
 * a queue and, at the next sample, is counted, recorded in history and
 * given to the callback on the watch's thread like the watch's own events
 * (and once more when the loop ends). Any thread. At most
 * HR_WATCH_POSTED_MAX wait; more are dropped, and an error event says how
 * many. Returns 0, HR_EINVAL or HR_ENOMEM. */
#define HR_WATCH_POSTED_MAX 4096
HR_API int hr_watch_post_event(hr_watch_t *w, const hr_watch_event_t *e);

struct hr_broker_counters;
/* Fills the broker's counters (headroom/broker.h) for the exporter. */
typedef void (*hr_watch_broker_counters_fn)(void *arg, struct hr_broker_counters *out);
/* Where /metrics gets the broker's counters from, on the watch's thread at
 * each sample; NULL: no broker, no broker metrics. */
HR_API void hr_watch_set_broker_counters(hr_watch_t *w, hr_watch_broker_counters_fn fn, void *arg);

/* Processes one snapshot: levels, leaks, idle hogs, OOM kills, exits,
 * actions, history, exporter documents; events go to the callback, the sample
 * event last. Takes ownership of `s` (freed on the next feed or at destroy). */
HR_API int hr_watch_feed(hr_watch_t *w, hr_snapshot_t *s);

/* Samples every interval until *stop becomes non-zero or `count` samples are
 * taken (0: no limit). A sampler failure is an error event and the loop goes
 * on; returns 0, or the sampler's code when the first sample fails. */
HR_API int hr_watch_run(hr_watch_t *w, volatile sig_atomic_t *stop, uint64_t count);

/* What the live view needs, valid until the next feed. */

typedef struct hr_watch_view {
  const hr_snapshot_t *snap; /* NULL before the first feed */
  hr_level_t host, cgroup;
  const hr_level_t *gpus; /* one per snapshot GPU */
  size_t n_top;
  const hr_watch_proc_view_t *top; /* the snapshot's selection: GPU holders, then RSS */
  uint64_t events_total[HR_EVENT_KINDS_];
  double cpu_s_last; /* CPU time the last feed took, seconds */
} hr_watch_view_t;

HR_API void hr_watch_get_view(const hr_watch_t *w, hr_watch_view_t *out);

/* The Prometheus text (format 0.0.4) and status JSON of the last feed, as
 * malloc'd strings the caller frees. */
HR_API int hr_watch_metrics(const hr_watch_t *w, char **out);
HR_API int hr_watch_status_json(const hr_watch_t *w, char **out);

#ifdef __cplusplus
}
#endif

#endif /* HEADROOM_WATCH_H */
