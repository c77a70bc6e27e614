/* Internal: what the Prometheus renderer is given. Plain values only (the
 * snapshot, levels, the processes the probe selected, counters and state
 * names, the last sample's timings), so the exporter knows the types and
 * calls nothing in the watch that feeds it or the probe that read them. */
#ifndef HR_EXPORT_H
#define HR_EXPORT_H

#include "util/buf.h"

typedef struct hr__prom_input {
  const hr_snapshot_t *snap;
  const char *hostname; /* the Hostname label of per-GPU series, as dcgm-exporter's */
  hr_level_t host, cgroup;
  const hr_level_t *gpus; /* snap->n_gpus entries */
  /* Indexes into snap->procs: the front of the probe's selection
   * (snap->selected: GPU holders, then the top N by RSS of the others). */
  const size_t *shown;
  size_t n_shown;
  const size_t *leaks; /* indexes into snap->procs: leak suspected */
  size_t n_leaks;
  /* The names of the probe's states, indexed by hr_probe_state_t from
   * HR_PROBE_OK to HR_PROBE_ERROR ("ok", "absent", ...). */
  const char *const *state_names;
  const char *const *counter_names; /* headroom_events_total{kind=NAME} */
  const uint64_t *counters;
  size_t n_counters;
  double sample_seconds;              /* wall time the last sample took (probe and decisions) */
  uint64_t sample_errors;             /* samples that failed since watch started */
  bool self;                          /* add the exporter's own process_* metrics */
  const hr_broker_counters_t *broker; /* NULL: no broker runs */
} hr__prom_input_t;

/* Renders Prometheus text format 0.0.4 into a malloc'd string. */
HR_INTERNAL int hr__prom_render(const hr__prom_input_t *in, char **out);

/* Appends the calling process's own metrics as the Prometheus client
 * libraries name them (process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds,
 * process_start_time_seconds), read from the real /proc/self whatever root
 * the probe reads. A file that cannot be read leaves its metric out. */
HR_INTERNAL void hr__prom_self(hr__buf_t *b);

/* The exporter's own connection counters (src/export/conns.c), appended to
 * /metrics each time it is served (docs/metrics.md). */
typedef struct hr__http_counters {
  uint64_t accepted;         /* connections accepted */
  uint64_t dropped_deadline; /* closed: headers not complete within the header deadline */
  uint64_t dropped_capacity; /* closed at capacity: the oldest idle or incomplete, for a new one */
  uint64_t dropped_slow;     /* closed: a response not taken within the response deadline */
  uint64_t shed;             /* requests answered 503 because too many responses were in flight */
  uint64_t open, capacity;   /* connections open now; the most held at once */
} hr__http_counters_t;

/* Appends the headroom_exporter_* families of those counters. */
HR_INTERNAL void hr__prom_http(hr__buf_t *b, const hr__http_counters_t *k);

#endif /* HR_EXPORT_H */
