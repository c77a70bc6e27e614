/* Internal: what the Prometheus renderer is given. Plain values only (the
 * snapshot, levels, indexes into the snapshot's processes, counters with
 * their names), so the exporter knows nothing of the watch that feeds it. */
#ifndef HR_EXPORT_H
#define HR_EXPORT_H

#include "util/buf.h"

typedef struct hr__prom_input {
  const hr_snapshot_t *snap;
  hr_level_t host, cgroup;
  const hr_level_t *gpus; /* snap->n_gpus entries */
  const size_t *top;      /* indexes into snap->procs: the processes shown */
  size_t n_top;
  const size_t *leaks; /* indexes into snap->procs: leak suspected */
  size_t n_leaks;
  const char *const *counter_names; /* headroom_events_total{kind=NAME} */
  const uint64_t *counters;
  size_t n_counters;
  const hr_broker_counters_t *broker; /* NULL: no broker runs */
} hr__prom_input_t;

/* Renders Prometheus text format 0.0.4 into a malloc'd string. */
HR_INTERNAL int hr__prom_render(const hr__prom_input_t *in, char **out);

#endif /* HR_EXPORT_H */
