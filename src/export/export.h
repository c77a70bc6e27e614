/* Internal: what the Prometheus renderer needs from the watch loop. */
#ifndef HR_EXPORT_H
#define HR_EXPORT_H

#include "util/util.h"

/* A growable string; a failed append sets `failed` and stops appending. */
typedef struct hr__buf {
  char *s;
  size_t len, cap;
  bool failed;
} hr__buf_t;

HR_INTERNAL void hr__buf_printf(hr__buf_t *b, const char *fmt, ...) HR_PRINTF(2, 3);
/* Appends s as a JSON string literal, quotes included. */
HR_INTERNAL void hr__buf_json_str(hr__buf_t *b, const char *s);

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
