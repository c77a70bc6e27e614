/* Internal: what the Prometheus renderer needs from the watch loop. */
#ifndef HR_EXPORT_H
#define HR_EXPORT_H

#include "util/buf.h"

typedef struct hr__prom_input {
  const hr_snapshot_t *snap;
  hr_level_t host, cgroup;
  const hr_level_t *gpus;          /* snap->n_gpus entries */
  const hr_watch_proc_view_t *top; /* the top N processes */
  size_t n_top;
  const hr_watch_proc_view_t *leaks; /* every process with a leak suspected */
  size_t n_leaks;
  const uint64_t *events_total; /* HR_EVENT_KINDS_ entries */
} hr__prom_input_t;

/* Renders Prometheus text format 0.0.4 into a malloc'd string. */
HR_INTERNAL int hr__prom_render(const hr__prom_input_t *in, char **out);

#endif /* HR_EXPORT_H */
