/* Recording and serving: the sample into history, the exporter's two
 * documents (Prometheus text and the status JSON), from the engine's state
 * after a feed.
 *
 * Each shows the front of the selection the probe made for this sample (the
 * GPU holders, then the top N after the filter: fewer for /metrics, where
 * every series costs), so history, /metrics, /api/snapshot and the status
 * command agree and nothing picks again. The exporter is handed plain
 * values: the snapshot with its selection, levels, state names and
 * counters with their names. */
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

void hr__watch_record(hr_watch_t *w) {
  if (!w->history) return;
  char err[512];
  double now = hr__watch_mono(w);
  /* The processes shown; a carried-over process table is not a new
   * measurement. */
  hr_snapshot_t view = *w->snap;
  view.n_selected = w->sample_fresh ? w->n_top : 0;
  if (hr_history_add_snapshot(w->history, &view, err, sizeof err) != 0) history_error(w, err);
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
  const char *states[HR_PROBE_ERROR + 1];
  for (int st = HR_PROBE_OK; st <= HR_PROBE_ERROR; st++)
    states[st] = hr_probe_state_name((hr_probe_state_t)st);
  char host[256] = "";
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  hr__prom_input_t in = {.snap = w->snap,
                         .hostname = host,
                         .host = w->host,
                         .cgroup = w->cgroup,
                         .gpus = w->gpus,
                         /* Fewer processes than the live view: every series costs. */
                         .shown = w->snap->selected,
                         .n_shown = hr__selected_top(w->snap, w->metrics_top),
                         .state_names = states,
                         .leaks = w->leak_idx,
                         .n_leaks = w->n_leaks,
                         .counter_names = names,
                         .counters = w->events_total,
                         .n_counters = HR_EVENT_KINDS_,
                         .sample_seconds = w->sample_wall_s,
                         .sample_errors = w->sample_errors,
                         .self = true};
  return broker_metrics(w, &in, out);
}

int hr_watch_status_json(const hr_watch_t *w, char **out) {
  if (!w || !w->snap || !out) return HR_ESTATE;
  hr_snapshot_t view = *w->snap;
  view.n_selected = w->n_top;
  return hr_snapshot_json_selected(&view, out);
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
