/* Recording and serving: the sample into history, the exporter's two
 * documents (Prometheus text and the status JSON), from the engine's state
 * after a feed.
 *
 * Both show the processes hr_snapshot_select picked for this sample (the
 * top N after the filter), so history, /metrics, /api/snapshot and the
 * status command agree. The exporter is handed plain values: indexes into
 * the snapshot, levels and counters with their names. */
#include "export/export.h"
#include "watch/watch_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void history_error(hr_watch_t *w, const char *msg) {
  /* One message a minute at most: a full disk fails every sample. */
  double now = hr__watch_mono(w);
  if (now - w->last_history_error < 60) return;
  w->last_history_error = now;
  char m[600];
  snprintf(m, sizeof m, "%s (monitoring goes on; samples are not recorded)", msg);
  hr__watch_error(w, w->snap->time, m);
}

/* The snapshot with only the processes shown, in their order, in *view
 * (its procs malloc'd; the rest borrowed from w->snap). */
static int shown(const hr_watch_t *w, hr_snapshot_t *view) {
  *view = *w->snap;
  view->procs = malloc((w->n_top ? w->n_top : 1) * sizeof *view->procs);
  if (!view->procs) return HR_ENOMEM;
  for (size_t i = 0; i < w->n_top; i++) view->procs[i] = w->snap->procs[w->top_idx[i]];
  view->n_procs = w->n_top;
  return 0;
}

void hr__watch_record(hr_watch_t *w) {
  if (!w->history) return;
  char err[512];
  double now = hr__watch_mono(w);
  hr_snapshot_t view;
  if (shown(w, &view) != 0) {
    history_error(w, "history: out of memory");
    return;
  }
  /* A carried-over process table is not a new measurement. */
  if (!w->sample_fresh) view.n_procs = 0;
  if (hr_history_add_snapshot(w->history, &view, w->top_n, err, sizeof err) != 0)
    history_error(w, err);
  free(view.procs);
  if (isnan(w->last_prune) || now - w->last_prune >= 3600) {
    w->last_prune = now;
    if (hr_history_prune(w->history, w->snap->time - w->retain, err, sizeof err) != 0)
      history_error(w, err);
  }
  if (isnan(w->last_flush)) w->last_flush = now;
  if (now - w->last_flush >= w->history_flush) {
    w->last_flush = now;
    if (hr_history_flush(w->history, err, sizeof err) != 0) history_error(w, err);
  }
}

static int broker_metrics(const hr_watch_t *w, hr__prom_input_t *in, char **out);

int hr_watch_metrics(const hr_watch_t *w, char **out) {
  if (!w || !w->snap || !out) return HR_ESTATE;
  const char *names[HR_EVENT_KINDS_];
  for (int k = 0; k < HR_EVENT_KINDS_; k++) names[k] = hr_event_kind_name((hr_event_kind_t)k);
  /* Fewer processes than the live view: every series costs Prometheus. */
  size_t *shown = malloc((w->snap->n_procs ? w->snap->n_procs : 1) * sizeof *shown), n_shown = 0;
  if (!shown) return HR_ENOMEM;
  int rc = hr_snapshot_select(w->snap, w->metrics_top, w->filter, shown, &n_shown);
  char host[256] = "";
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  hr__prom_input_t in = {.snap = w->snap,
                         .hostname = host,
                         .host = w->host,
                         .cgroup = w->cgroup,
                         .gpus = w->gpus,
                         .shown = shown,
                         .n_shown = n_shown,
                         .leaks = w->leak_idx,
                         .n_leaks = w->n_leaks,
                         .counter_names = names,
                         .counters = w->events_total,
                         .n_counters = HR_EVENT_KINDS_,
                         .sample_seconds = w->sample_wall_s,
                         .sample_errors = w->sample_errors,
                         .self = true};
  if (rc == 0) rc = broker_metrics(w, &in, out);
  free(shown);
  return rc;
}

int hr_watch_status_json(const hr_watch_t *w, char **out) {
  if (!w || !w->snap || !out) return HR_ESTATE;
  hr_snapshot_t view;
  int rc = shown(w, &view);
  if (rc == 0) rc = hr_snapshot_json(&view, out);
  free(view.procs);
  return rc;
}

void hr__watch_publish(hr_watch_t *w) {
  if (!w->exporter) return;
  char *m = NULL, *j = NULL;
  if (hr_watch_metrics(w, &m) == 0 && hr_watch_status_json(w, &j) == 0)
    hr_exporter_publish(w->exporter, m, j);
  free(m), free(j);
}

/* Renders `in` with the broker's counters, when a broker feeds the watch. */
static int broker_metrics(const hr_watch_t *w, hr__prom_input_t *in, char **out) {
  hr_broker_counters_t k;
  if (w->broker_counters) {
    memset(&k, 0, sizeof k);
    w->broker_counters(w->broker_counters_arg, &k);
    in->broker = &k;
  }
  return hr__prom_render(in, out);
}
