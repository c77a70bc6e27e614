/* Prometheus text exposition (format 0.0.4) of the last sample.
 *
 * Each metric family gets its HELP and TYPE lines once, then its samples.
 * Names follow Prometheus conventions: base units (bytes, seconds, ratios),
 * `_total` for counters. docs/metrics.md lists every name and label.
 *
 * Labels of the same things are named as dcgm-exporter names them, so one
 * dashboard joins both: a GPU is `gpu` (its index), `UUID`, `device`
 * ("nvidia0"), `modelName`, `pci_bus_id` and `Hostname`. A per-GPU level
 * is headroom_level{scope="gpu",gpu="0"}.
 *
 * Series are bounded and churn little, because every new label set is a
 * new series that Prometheus keeps for hours:
 *   - a `pid` label only where the set of pids is small and long-lived: the
 *     processes holding GPU memory (one series per process and GPU, never a
 *     zero-valued one) and those with a leak suspected;
 *   - the other processes shown (the top N by RSS, metrics_top) are keyed
 *     by command name, container and pod, their RSS summed: a batch of
 *     short-lived workers named alike is one series, not one per pid.
 * Label values are escaped as the format requires (backslash, double quote,
 * newline) and kept valid UTF-8. */
#include "export/export.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Appends a label value, escaped for the text format, which must be UTF-8:
 * a byte that does not start a valid sequence (a process name is any bytes)
 * becomes U+FFFD, as in the JSON. */
static void label(hr__buf_t *b, const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '\\')
      hr__buf_puts(b, "\\\\");
    else if (*p == '"')
      hr__buf_puts(b, "\\\"");
    else if (*p == '\n')
      hr__buf_puts(b, "\\n");
    else if (*p < 0x80)
      hr__buf_put(b, (const char *)p, 1);
    else {
      size_t n = hr__utf8_len(p);
      hr__buf_put(b, n ? (const char *)p : "\xef\xbf\xbd", n ? n : 3);
      p += n ? n - 1 : 0;
    }
  }
}

/* Appends `,name="value"` (no comma when first). */
static void kv(hr__buf_t *b, bool first, const char *name, const char *value) {
  hr__buf_printf(b, "%s%s=\"", first ? "" : ",", name);
  label(b, value);
  hr__buf_puts(b, "\"");
}

static void family(hr__buf_t *b, const char *name, const char *type, const char *help) {
  hr__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Closes the labels and appends a value: an integer, +Inf for an unset
 * limit. A series without labels is written `name value`, not `name{}`. */
static void value_u64(hr__buf_t *b, uint64_t v) {
  if (b->s && b->len && b->s[b->len - 1] == '{')
    b->s[--b->len] = '\0';
  else
    hr__buf_puts(b, "}");
  if (v == HR_UNLIMITED)
    hr__buf_puts(b, " +Inf\n");
  else
    hr__buf_printf(b, " %" PRIu64 "\n", v);
}

/* The labels of one GPU, without the braces. */
static void gpu_labels(hr__buf_t *b, const hr__prom_input_t *in, const hr_gpu_t *g) {
  char idx[16], dev[24];
  snprintf(idx, sizeof idx, "%u", g->index);
  snprintf(dev, sizeof dev, "nvidia%u", g->index);
  kv(b, true, "gpu", idx);
  kv(b, false, "UUID", g->uuid);
  kv(b, false, "device", dev);
  kv(b, false, "modelName", g->name);
  kv(b, false, "pci_bus_id", g->pci_bus_id);
  kv(b, false, "Hostname", in->hostname ? in->hostname : "");
}

/* The labels of one process: pid (when given), comm, container_id, pod_uid. */
static void proc_labels(hr__buf_t *b, const hr_proc_t *p, bool pid) {
  if (pid) hr__buf_printf(b, "pid=\"%d\",", p->pid);
  kv(b, true, "comm", p->name);
  kv(b, false, "container_id", p->container_id);
  kv(b, false, "pod_uid", p->pod_uid);
}

/* ---- per GPU ------------------------------------------------------------ */

typedef enum { G_USED, G_TOTAL, G_FREE, G_UTIL, G_MEMUTIL, G_TEMP, G_POWER } gpu_metric_t;

/* Writes the value of metric m for g into v; false when unknown. */
static bool gpu_value(const hr_gpu_t *g, gpu_metric_t m, char *v, size_t n) {
  switch (m) {
  case G_USED:
    return g->used_bytes != HR_UNKNOWN && snprintf(v, n, "%" PRIu64, g->used_bytes);
  case G_TOTAL:
    return g->total_bytes != HR_UNKNOWN && snprintf(v, n, "%" PRIu64, g->total_bytes);
  case G_FREE:
    return g->free_bytes != HR_UNKNOWN && snprintf(v, n, "%" PRIu64, g->free_bytes);
  case G_UTIL:
    return g->util_gpu >= 0 && snprintf(v, n, "%g", g->util_gpu / 100.0);
  case G_MEMUTIL:
    return g->util_mem >= 0 && snprintf(v, n, "%g", g->util_mem / 100.0);
  case G_TEMP:
    return g->temperature_c >= 0 && snprintf(v, n, "%d", g->temperature_c);
  case G_POWER:
    return g->power_mw >= 0 && snprintf(v, n, "%g", g->power_mw / 1000.0);
  }
  return false;
}

static void gpus(hr__buf_t *b, const hr__prom_input_t *in) {
  static const struct {
    const char *name, *help;
  } fam[] = {
      [G_USED] = {"headroom_gpu_memory_used_bytes", "GPU memory in use"},
      [G_TOTAL] = {"headroom_gpu_memory_total_bytes", "GPU memory in all"},
      [G_FREE] = {"headroom_gpu_memory_free_bytes", "GPU memory free"},
      [G_UTIL] = {"headroom_gpu_utilization_ratio", "share of the last period a kernel ran"},
      [G_MEMUTIL] = {"headroom_gpu_memory_utilization_ratio",
                     "share of the last period device memory was read or written"},
      [G_TEMP] = {"headroom_gpu_temperature_celsius", "GPU core temperature"},
      [G_POWER] = {"headroom_gpu_power_watts", "GPU power draw"},
  };
  const hr_snapshot_t *s = in->snap;
  char v[48];
  for (int m = 0; m < (int)HR_ARRAY_LEN(fam); m++) {
    family(b, fam[m].name, "gauge", fam[m].help);
    for (size_t i = 0; i < s->n_gpus; i++) {
      if (!gpu_value(&s->gpus[i], (gpu_metric_t)m, v, sizeof v)) continue;
      hr__buf_printf(b, "%s{", fam[m].name);
      gpu_labels(b, in, &s->gpus[i]);
      hr__buf_printf(b, "} %s\n", v);
    }
  }
  family(b, "headroom_gpu_state", "gauge",
         "1 for the state NVML reports for a GPU (ok, absent, denied, error), 0 for the others");
  for (size_t i = 0; i < s->n_gpus; i++)
    for (int st = HR_PROBE_OK; st <= HR_PROBE_ERROR; st++) {
      hr__buf_puts(b, "headroom_gpu_state{");
      gpu_labels(b, in, &s->gpus[i]);
      hr__buf_printf(b, ",state=\"%s\"} %d\n", in->state_names[st],
                     s->gpus[i].state == (hr_probe_state_t)st);
    }
}

/* ---- host and cgroup ---------------------------------------------------- */

static void pressure(hr__buf_t *b, const char *scope, const hr_pressure_t *some,
                     const hr_pressure_t *full, bool ratio) {
  const hr_pressure_t *p[2] = {some, full};
  for (int k = 0; k < 2; k++) {
    const char *kind = k ? "full" : "some";
    if (ratio)
      hr__buf_printf(b, "headroom_memory_pressure_avg10_ratio{scope=\"%s\",kind=\"%s\"} %g\n",
                     scope, kind, p[k]->avg10 / 100);
    else
      hr__buf_printf(
          b, "headroom_memory_pressure_stall_seconds_total{scope=\"%s\",kind=\"%s\"} %.6f\n", scope,
          kind, (double)p[k]->total_us / 1e6);
  }
}

static void host_and_cgroup(hr__buf_t *b, const hr__prom_input_t *in) {
  const hr_snapshot_t *s = in->snap;
  bool host = s->host_state == HR_PROBE_OK, cg = s->cgroup.state == HR_PROBE_OK;
  if (host) {
    family(b, "headroom_host_memory_available_bytes", "gauge",
           "host memory available for new work (MemAvailable)");
    hr__buf_puts(b, "headroom_host_memory_available_bytes{");
    value_u64(b, s->host.available_bytes);
    family(b, "headroom_host_memory_total_bytes", "gauge", "host memory in all (MemTotal)");
    hr__buf_puts(b, "headroom_host_memory_total_bytes{");
    value_u64(b, s->host.total_bytes);
  }
  if (cg) {
    family(b, "headroom_cgroup_memory_limit_bytes", "gauge",
           "effective memory limit of the cgroup watched; +Inf when unlimited");
    hr__buf_puts(b, "headroom_cgroup_memory_limit_bytes{");
    value_u64(b, s->cgroup.limit_bytes);
    family(b, "headroom_cgroup_memory_usage_bytes", "gauge",
           "memory use of the cgroup watched, without inactive file cache");
    hr__buf_puts(b, "headroom_cgroup_memory_usage_bytes{");
    value_u64(b, s->cgroup.usage_bytes);
    if (s->cgroup.oom_kill_events != HR_UNKNOWN) {
      family(b, "headroom_cgroup_oom_kills_total", "counter",
             "processes the kernel's OOM killer ended in the cgroup watched");
      hr__buf_puts(b, "headroom_cgroup_oom_kills_total{");
      value_u64(b, s->cgroup.oom_kill_events);
    }
  }
  bool hp = host && s->host.has_pressure, cp = cg && s->cgroup.has_pressure;
  for (int ratio = 1; ratio >= 0; ratio--) {
    if (ratio)
      family(b, "headroom_memory_pressure_avg10_ratio", "gauge",
             "share of the last 10 s some or all tasks stalled on memory (PSI)");
    else
      family(b, "headroom_memory_pressure_stall_seconds_total", "counter",
             "time some or all tasks stalled on memory (PSI total)");
    if (hp) pressure(b, "host", &s->host.pressure_some, &s->host.pressure_full, ratio);
    if (cp) pressure(b, "cgroup", &s->cgroup.pressure_some, &s->cgroup.pressure_full, ratio);
  }
  family(b, "headroom_level", "gauge", "0 ok, 1 warning, 2 critical");
  if (host) hr__buf_printf(b, "headroom_level{scope=\"host\"} %d\n", in->host);
  if (cg) hr__buf_printf(b, "headroom_level{scope=\"cgroup\"} %d\n", in->cgroup);
  for (size_t i = 0; i < s->n_gpus && in->gpus; i++) {
    hr__buf_puts(b, "headroom_level{scope=\"gpu\",");
    gpu_labels(b, in, &s->gpus[i]);
    hr__buf_printf(b, "} %d\n", in->gpus[i]);
  }
}

/* ---- processes ---------------------------------------------------------- */

/* GPU memory per process and GPU: only what a process holds (NVML lists
 * the holders), so no process gets a zero-valued series. */
static void proc_gpu(hr__buf_t *b, const hr__prom_input_t *in) {
  const hr_snapshot_t *s = in->snap;
  family(b, "headroom_process_gpu_memory_bytes", "gauge",
         "GPU memory a process holds on a GPU (processes holding some only)");
  for (size_t i = 0; i < s->n_gpu_procs; i++) {
    const hr_gpu_proc_t *gp = &s->gpu_procs[i];
    if (gp->used_bytes == 0 || gp->used_bytes == HR_UNKNOWN || gp->gpu >= s->n_gpus) continue;
    const hr_proc_t *p = gp->proc;
    hr_proc_t unseen = {.pid = gp->pid}; /* another PID namespace: the host pid alone */
    hr__buf_puts(b, "headroom_process_gpu_memory_bytes{");
    gpu_labels(b, in, &s->gpus[gp->gpu]);
    hr__buf_puts(b, ",");
    proc_labels(b, p ? p : &unseen, true);
    value_u64(b, gp->used_bytes);
  }
}

static uint64_t rss_of(const hr_proc_t *p) {
  return p->rss_bytes == HR_UNKNOWN ? 0 : p->rss_bytes;
}

static bool same_group(const hr_proc_t *a, const hr_proc_t *b) {
  return strcmp(a->name, b->name) == 0 && strcmp(a->container_id, b->container_id) == 0 &&
         strcmp(a->pod_uid, b->pod_uid) == 0;
}

/* RSS of the processes shown: by pid for GPU holders, by group otherwise. */
static void proc_rss(hr__buf_t *b, const hr__prom_input_t *in) {
  const hr_snapshot_t *s = in->snap;
  family(b, "headroom_process_rss_bytes", "gauge",
         "resident memory of a process that holds GPU memory");
  for (size_t i = 0; i < in->n_shown; i++) {
    const hr_proc_t *p = &s->procs[in->shown[i]];
    if (p->gpu_bytes == 0 || p->rss_bytes == HR_UNKNOWN) continue;
    hr__buf_puts(b, "headroom_process_rss_bytes{");
    proc_labels(b, p, true);
    value_u64(b, p->rss_bytes);
  }
  family(b, "headroom_process_group_rss_bytes", "gauge",
         "resident memory of the largest processes without GPU memory, summed by command "
         "name, container and pod");
  family(b, "headroom_process_group_processes", "gauge",
         "processes summed in headroom_process_group_rss_bytes");
  /* Quadratic in the processes shown, which are few (metrics_top). */
  for (size_t i = 0; i < in->n_shown; i++) {
    const hr_proc_t *p = &s->procs[in->shown[i]];
    if (p->gpu_bytes) continue;
    bool seen = false;
    for (size_t j = 0; j < i && !seen; j++) {
      const hr_proc_t *q = &s->procs[in->shown[j]];
      seen = !q->gpu_bytes && same_group(p, q);
    }
    if (seen) continue;
    uint64_t sum = 0, n = 0;
    for (size_t j = i; j < in->n_shown; j++) {
      const hr_proc_t *q = &s->procs[in->shown[j]];
      if (!q->gpu_bytes && same_group(p, q)) sum += rss_of(q), n++;
    }
    hr__buf_puts(b, "headroom_process_group_rss_bytes{");
    proc_labels(b, p, false);
    value_u64(b, sum);
    hr__buf_puts(b, "headroom_process_group_processes{");
    proc_labels(b, p, false);
    value_u64(b, n);
  }
  family(b, "headroom_process_leak_suspected", "gauge",
         "1 while headroom's trend test suspects a leak in a process (absent otherwise)");
  for (size_t i = 0; i < in->n_leaks; i++) {
    hr__buf_puts(b, "headroom_process_leak_suspected{");
    proc_labels(b, &s->procs[in->leaks[i]], true);
    hr__buf_puts(b, "} 1\n");
  }
}

/* ---- health ------------------------------------------------------------- */

static void health(hr__buf_t *b, const hr__prom_input_t *in) {
  const hr_snapshot_t *s = in->snap;
  family(b, "headroom_build_info", "gauge", "headroom version; always 1");
  hr__buf_printf(b, "headroom_build_info{version=\"%s\"} 1\n", hr_version());
  family(b, "headroom_probe_state", "gauge",
         "1 for the state of each part read (host, cgroup, nvml), 0 for the other states");
  const struct {
    const char *part;
    hr_probe_state_t st;
  } parts[] = {{"host", s->host_state}, {"cgroup", s->cgroup.state}, {"nvml", s->gpu_state}};
  for (size_t i = 0; i < HR_ARRAY_LEN(parts); i++)
    for (int st = HR_PROBE_OK; st <= HR_PROBE_ERROR; st++)
      hr__buf_printf(b, "headroom_probe_state{part=\"%s\",state=\"%s\"} %d\n", parts[i].part,
                     in->state_names[st], parts[i].st == (hr_probe_state_t)st);
  family(b, "headroom_gpus", "gauge", "GPUs NVML lists");
  hr__buf_printf(b, "headroom_gpus %zu\n", s->n_gpus);
  family(b, "headroom_last_sample_timestamp_seconds", "gauge",
         "when the last sample was taken, seconds since the epoch");
  hr__buf_printf(b, "headroom_last_sample_timestamp_seconds %.3f\n", s->time);
  family(b, "headroom_sample_duration_seconds", "gauge",
         "wall time the last sample took: reading the machine and deciding");
  hr__buf_printf(b, "headroom_sample_duration_seconds %.6f\n", in->sample_seconds);
  family(b, "headroom_sample_errors_total", "counter", "samples that failed");
  hr__buf_printf(b, "headroom_sample_errors_total %" PRIu64 "\n", in->sample_errors);
  family(b, "headroom_processes", "gauge", "processes read in the last sample");
  hr__buf_printf(b, "headroom_processes %zu\n", s->n_procs);
  family(b, "headroom_events_total", "counter", "events since watch started, by kind");
  for (size_t k = 0; k < in->n_counters; k++) {
    hr__buf_puts(b, "headroom_events_total{kind=\"");
    label(b, in->counter_names[k]);
    hr__buf_printf(b, "\"} %" PRIu64 "\n", in->counters[k]);
  }
}

static void broker_families(hr__buf_t *b, const hr_broker_counters_t *k);

int hr__prom_render(const hr__prom_input_t *in, char **out) {
  if (!in || !in->snap || !in->state_names || !out) return HR_EINVAL;
  hr__buf_t b = {0};
  health(&b, in);
  gpus(&b, in);
  host_and_cgroup(&b, in);
  proc_gpu(&b, in);
  proc_rss(&b, in);
  if (in->self) hr__prom_self(&b);
  if (in->broker) broker_families(&b, in->broker);
  if (b.failed) {
    free(b.s);
    return HR_ENOMEM;
  }
  *out = b.s;
  return 0;
}

/* ---- the broker --------------------------------------------------------- */

static void counter(hr__buf_t *b, const char *name, const char *help, uint64_t v) {
  family(b, name, "counter", help);
  hr__buf_printf(b, "%s %" PRIu64 "\n", name, v);
}

/* The broker's counters (docs/broker.md): plain values the watch was given.
 * Bytes released are labelled by client name, a set the broker bounds
 * (HR_BROKER_NAMES_COUNTED, the rest as "other"). */
static void broker_families(hr__buf_t *b, const hr_broker_counters_t *k) {
  static const double bounds[HR_BROKER_LATENCY_BUCKETS] = HR_BROKER_LATENCY_BOUNDS;
  family(b, "headroom_broker_reservations_total", "counter",
         "reservations answered by the broker, by result");
  hr__buf_printf(b, "headroom_broker_reservations_total{result=\"granted\"} %" PRIu64 "\n",
                 k->granted);
  hr__buf_printf(b, "headroom_broker_reservations_total{result=\"refused\"} %" PRIu64 "\n",
                 k->refused);
  counter(b, "headroom_broker_asks_total", "release requests sent to clients and adapters",
          k->asks);
  counter(b, "headroom_broker_answers_total", "release requests answered", k->answers);
  counter(b, "headroom_broker_no_answers_total", "release requests not answered in time",
          k->no_answers);
  counter(b, "headroom_broker_adapter_failures_total", "adapter HTTP calls that failed",
          k->adapter_failures);
  counter(b, "headroom_broker_pressure_asks_total", "release requests made for pressure",
          k->pressure_asks);
  counter(b, "headroom_broker_released_bytes_total", "bytes released, as answered",
          k->released_bytes);
  family(b, "headroom_broker_client_released_bytes_total", "counter",
         "bytes released by a client or adapter, as answered");
  for (size_t i = 0; i < k->n_released_by && i < HR_BROKER_NAMES_COUNTED; i++) {
    hr__buf_puts(b, "headroom_broker_client_released_bytes_total{client=\"");
    label(b, k->released_by[i].name);
    hr__buf_printf(b, "\"} %" PRIu64 "\n", k->released_by[i].bytes);
  }
  family(b, "headroom_broker_grant_latency_seconds", "histogram", "time from reserve to granted");
  for (size_t i = 0; i < HR_BROKER_LATENCY_BUCKETS; i++)
    hr__buf_printf(b, "headroom_broker_grant_latency_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                   bounds[i], k->grant_latency_le[i]);
  hr__buf_printf(b,
                 "headroom_broker_grant_latency_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
                 "headroom_broker_grant_latency_seconds_sum %.6f\n"
                 "headroom_broker_grant_latency_seconds_count %" PRIu64 "\n",
                 k->granted, k->grant_latency_s_total, k->granted);
  family(b, "headroom_broker_clients", "gauge", "clients registered now");
  hr__buf_printf(b, "headroom_broker_clients %" PRIu64 "\n", k->clients);
  family(b, "headroom_broker_leases", "gauge", "leases held now");
  hr__buf_printf(b, "headroom_broker_leases %" PRIu64 "\n", k->leases);
}

/* ---- the exporter's own connections ------------------------------------- */

void hr__prom_http(hr__buf_t *b, const hr__http_counters_t *k) {
  counter(b, "headroom_exporter_connections_accepted_total", "connections the exporter accepted",
          k->accepted);
  family(b, "headroom_exporter_connections_dropped_total", "counter",
         "connections the exporter closed itself, by reason: header_deadline (no complete "
         "request in time), capacity (the oldest idle or incomplete one, for a new one), "
         "response_deadline (a response not taken in time)");
  hr__buf_printf(b,
                 "headroom_exporter_connections_dropped_total{reason=\"header_deadline\"} %" PRIu64
                 "\n"
                 "headroom_exporter_connections_dropped_total{reason=\"capacity\"} %" PRIu64 "\n"
                 "headroom_exporter_connections_dropped_total{reason=\"response_deadline\"} "
                 "%" PRIu64 "\n",
                 k->dropped_deadline, k->dropped_capacity, k->dropped_slow);
  counter(b, "headroom_exporter_requests_shed_total",
          "requests answered 503 because too many responses were in flight", k->shed);
  family(b, "headroom_exporter_connections", "gauge", "connections open now");
  hr__buf_printf(b, "headroom_exporter_connections %" PRIu64 "\n", k->open);
  family(b, "headroom_exporter_connection_limit", "gauge",
         "connections the exporter holds at most");
  hr__buf_printf(b, "headroom_exporter_connection_limit %" PRIu64 "\n", k->capacity);
}
