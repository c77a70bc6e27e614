/* Prometheus text exposition (format 0.0.4) of the last sample.
 *
 * Each metric family gets its HELP and TYPE lines once, then its samples.
 * Names follow Prometheus conventions: base units (bytes, ratios), `_total`
 * for counters. Per-process series are limited to the top N processes and
 * those with a leak suspected, so the number of series stays bounded however
 * many processes the host runs. Label values are escaped as the format
 * requires (backslash, double quote, newline) and kept valid UTF-8. */
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

static void family(hr__buf_t *b, const char *name, const char *type, const char *help) {
  hr__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void gpu_sample(hr__buf_t *b, const char *name, const hr_gpu_t *g, const char *value) {
  hr__buf_printf(b, "%s{gpu=\"%u\",uuid=\"", name, g->index);
  label(b, g->uuid);
  hr__buf_printf(b, "\",name=\"");
  label(b, g->name);
  hr__buf_printf(b, "\"} %s\n", value);
}

static void proc_sample(hr__buf_t *b, const char *name, const hr_proc_t *p, uint64_t v) {
  hr__buf_printf(b, "%s{pid=\"%d\",name=\"", name, p->pid);
  label(b, p->name);
  hr__buf_printf(b, "\"} %" PRIu64 "\n", v);
}

static const char *u64s(char *buf, size_t n, uint64_t v) {
  if (v == HR_UNLIMITED)
    snprintf(buf, n, "+Inf");
  else
    snprintf(buf, n, "%" PRIu64, v);
  return buf;
}

static void broker_families(hr__buf_t *b, const hr_broker_counters_t *k);

int hr__prom_render(const hr__prom_input_t *in, char **out) {
  if (!in || !in->snap || !out) return HR_EINVAL;
  const hr_snapshot_t *s = in->snap;
  hr__buf_t b = {0};
  char v[32];

  family(&b, "headroom_build_info", "gauge", "headroom version; always 1");
  hr__buf_printf(&b, "headroom_build_info{version=\"%s\"} 1\n", hr_version());

  family(&b, "headroom_gpu_memory_used_bytes", "gauge", "GPU memory in use");
  for (size_t i = 0; i < s->n_gpus; i++)
    if (s->gpus[i].used_bytes != HR_UNKNOWN)
      gpu_sample(&b, "headroom_gpu_memory_used_bytes", &s->gpus[i],
                 u64s(v, sizeof v, s->gpus[i].used_bytes));
  family(&b, "headroom_gpu_memory_total_bytes", "gauge", "GPU memory in all");
  for (size_t i = 0; i < s->n_gpus; i++)
    if (s->gpus[i].total_bytes != HR_UNKNOWN)
      gpu_sample(&b, "headroom_gpu_memory_total_bytes", &s->gpus[i],
                 u64s(v, sizeof v, s->gpus[i].total_bytes));
  family(&b, "headroom_gpu_utilization_ratio", "gauge", "GPU busy share over the last period");
  for (size_t i = 0; i < s->n_gpus; i++)
    if (s->gpus[i].util_gpu >= 0) {
      snprintf(v, sizeof v, "%g", s->gpus[i].util_gpu / 100.0);
      gpu_sample(&b, "headroom_gpu_utilization_ratio", &s->gpus[i], v);
    }

  if (s->host_state == HR_PROBE_OK) {
    family(&b, "headroom_host_memory_available_bytes", "gauge",
           "host memory available for new work (MemAvailable)");
    hr__buf_printf(&b, "headroom_host_memory_available_bytes %s\n",
                   u64s(v, sizeof v, s->host.available_bytes));
    family(&b, "headroom_host_memory_total_bytes", "gauge", "host memory in all (MemTotal)");
    hr__buf_printf(&b, "headroom_host_memory_total_bytes %s\n",
                   u64s(v, sizeof v, s->host.total_bytes));
  }
  if (s->cgroup.state == HR_PROBE_OK) {
    family(&b, "headroom_cgroup_memory_limit_bytes", "gauge",
           "effective memory limit of headroom's cgroup; +Inf when unlimited");
    hr__buf_printf(&b, "headroom_cgroup_memory_limit_bytes %s\n",
                   u64s(v, sizeof v, s->cgroup.limit_bytes));
    family(&b, "headroom_cgroup_memory_usage_bytes", "gauge",
           "memory use of headroom's cgroup, without inactive file cache");
    hr__buf_printf(&b, "headroom_cgroup_memory_usage_bytes %s\n",
                   u64s(v, sizeof v, s->cgroup.usage_bytes));
  }

  family(&b, "headroom_process_gpu_memory_bytes", "gauge",
         "GPU memory held by a process (top processes only)");
  for (size_t i = 0; i < in->n_top; i++) {
    const hr_proc_t *p = &s->procs[in->top[i]];
    proc_sample(&b, "headroom_process_gpu_memory_bytes", p, p->gpu_bytes);
  }
  family(&b, "headroom_process_rss_bytes", "gauge", "resident memory of a process (top only)");
  for (size_t i = 0; i < in->n_top; i++) {
    const hr_proc_t *p = &s->procs[in->top[i]];
    if (p->rss_bytes != HR_UNKNOWN) proc_sample(&b, "headroom_process_rss_bytes", p, p->rss_bytes);
  }

  family(&b, "headroom_level", "gauge", "0 ok, 1 warning, 2 critical");
  if (s->host_state == HR_PROBE_OK)
    hr__buf_printf(&b, "headroom_level{scope=\"host\"} %d\n", in->host);
  if (s->cgroup.state == HR_PROBE_OK)
    hr__buf_printf(&b, "headroom_level{scope=\"cgroup\"} %d\n", in->cgroup);
  for (size_t i = 0; i < s->n_gpus && in->gpus; i++)
    hr__buf_printf(&b, "headroom_level{scope=\"gpu%u\"} %d\n", s->gpus[i].index, in->gpus[i]);

  family(&b, "headroom_leak_suspected", "gauge", "1 while a leak is suspected in a process");
  for (size_t i = 0; i < in->n_leaks; i++)
    proc_sample(&b, "headroom_leak_suspected", &s->procs[in->leaks[i]], 1);

  family(&b, "headroom_events_total", "counter", "events since watch started, by kind");
  for (size_t k = 0; k < in->n_counters; k++) {
    hr__buf_puts(&b, "headroom_events_total{kind=\"");
    label(&b, in->counter_names[k]);
    hr__buf_printf(&b, "\"} %" PRIu64 "\n", in->counters[k]);
  }
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
