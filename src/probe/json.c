/* hr_snapshot_json: the snapshot as one JSON object, written by hand rather
 * than through a JSON library because sizes are uint64_t and must come out
 * exact (a double holds integers only up to 2^53). The keys are stable and
 * documented in docs/status-schema.json: sizes end in _bytes, an unknown
 * size is null, a limit that is not set is the string "max". */
#include "probe/probe_int.h"
#include "util/buf.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Appends with printf formatting; the short name keeps the writers below
 * readable. */
#define put hr__buf_printf

/* "key": "value", */
static void kv_str(hr__buf_t *b, const char *k, const char *v) {
  put(b, "\"%s\":", k);
  hr__buf_json_str(b, v);
  put(b, ",");
}

static void kv_size(hr__buf_t *b, const char *k, uint64_t v) {
  if (v == HR_UNKNOWN)
    put(b, "\"%s\":null,", k);
  else if (v == HR_UNLIMITED)
    put(b, "\"%s\":\"max\",", k);
  else
    put(b, "\"%s\":%" PRIu64 ",", k, v);
}

/* A count that may be unknown (HR_UNKNOWN becomes null). */
static void kv_count(hr__buf_t *b, const char *k, uint64_t v) {
  if (v == HR_UNKNOWN)
    put(b, "\"%s\":null,", k);
  else
    put(b, "\"%s\":%" PRIu64 ",", k, v);
}

/* An int where -1 means unknown. */
static void kv_int(hr__buf_t *b, const char *k, int v) {
  if (v < 0)
    put(b, "\"%s\":null,", k);
  else
    put(b, "\"%s\":%d,", k, v);
}

/* Drops the comma after the last member and closes the object or array. */
static void close_with(hr__buf_t *b, char c) {
  if (!b->failed && b->len > 0 && b->s[b->len - 1] == ',') b->len--;
  put(b, "%c", c);
}

/* Closes a member object or array with c, and the comma after it. */
static void close_member(hr__buf_t *b, char c) {
  close_with(b, c);
  put(b, ",");
}

/* Opens a part of the snapshot: "key":{"state":..,"message":.., */
static void open_part(hr__buf_t *b, const char *key, hr_probe_state_t state, const char *message) {
  put(b, "\"%s\":{", key);
  kv_str(b, "state", hr_probe_state_name(state));
  kv_str(b, "message", message);
}

static void put_pressure(hr__buf_t *b, const char *k, const hr_pressure_t *p) {
  put(b, "\"%s\":{\"avg10\":%.2f,\"avg60\":%.2f,\"avg300\":%.2f,\"total_us\":%" PRIu64 "},", k,
      p->avg10, p->avg60, p->avg300, p->total_us);
}

static void put_host(hr__buf_t *b, const hr_snapshot_t *s) {
  const hr_host_mem_t *h = &s->host;
  open_part(b, "host", s->host_state, s->host_message);
  kv_size(b, "total_bytes", h->total_bytes);
  kv_size(b, "available_bytes", h->available_bytes);
  kv_size(b, "used_bytes",
          h->total_bytes != HR_UNKNOWN && h->available_bytes != HR_UNKNOWN &&
                  h->available_bytes <= h->total_bytes
              ? h->total_bytes - h->available_bytes
              : HR_UNKNOWN);
  kv_size(b, "free_bytes", h->free_bytes);
  kv_size(b, "buffers_bytes", h->buffers_bytes);
  kv_size(b, "cached_bytes", h->cached_bytes);
  kv_size(b, "shmem_bytes", h->shmem_bytes);
  kv_size(b, "swap_total_bytes", h->swap_total_bytes);
  kv_size(b, "swap_free_bytes", h->swap_free_bytes);
  close_member(b, '}');
}

static void put_cgroup(hr__buf_t *b, const hr_cgroup_mem_t *c) {
  open_part(b, "cgroup", c->state, c->message);
  put(b, "\"version\":%d,", c->version);
  kv_str(b, "path", c->path);
  kv_size(b, "limit_bytes", c->limit_bytes);
  kv_size(b, "own_limit_bytes", c->own_limit_bytes);
  kv_size(b, "high_bytes", c->high_bytes);
  kv_size(b, "current_bytes", c->current_bytes);
  kv_size(b, "usage_bytes", c->usage_bytes);
  kv_size(b, "anon_bytes", c->anon_bytes);
  kv_size(b, "file_bytes", c->file_bytes);
  kv_size(b, "inactive_file_bytes", c->inactive_file_bytes);
  kv_size(b, "shmem_bytes", c->shmem_bytes);
  kv_count(b, "oom_events", c->oom_events);
  kv_count(b, "oom_kill_events", c->oom_kill_events);
  if (c->has_pressure) {
    put(b, "\"pressure\":{");
    put_pressure(b, "some", &c->pressure_some);
    put_pressure(b, "full", &c->pressure_full);
    close_member(b, '}');
  } else {
    put(b, "\"pressure\":null,");
  }
  close_member(b, '}');
}

static void put_gpus(hr__buf_t *b, const hr_snapshot_t *s) {
  open_part(b, "gpu", s->gpu_state, s->gpu_message);
  kv_str(b, "driver_version", s->driver_version);
  put(b, "\"devices\":[");
  for (size_t i = 0; i < s->n_gpus; i++) {
    const hr_gpu_t *g = &s->gpus[i];
    put(b, "{\"index\":%u,", g->index);
    kv_str(b, "state", hr_probe_state_name(g->state));
    kv_str(b, "message", g->message);
    kv_str(b, "name", g->name);
    kv_str(b, "uuid", g->uuid);
    kv_str(b, "pci_bus_id", g->pci_bus_id);
    kv_size(b, "total_bytes", g->total_bytes);
    kv_size(b, "reserved_bytes", g->reserved_bytes);
    kv_size(b, "free_bytes", g->free_bytes);
    kv_size(b, "used_bytes", g->used_bytes);
    kv_int(b, "util_gpu_percent", g->util_gpu);
    kv_int(b, "util_mem_percent", g->util_mem);
    kv_int(b, "temperature_c", g->temperature_c);
    kv_int(b, "power_mw", g->power_mw);
    close_member(b, '}');
  }
  close_with(b, ']');
  put(b, ",\"processes\":[");
  for (size_t i = 0; i < s->n_gpu_procs; i++) {
    const hr_gpu_proc_t *g = &s->gpu_procs[i];
    put(b, "{\"gpu\":%u,\"pid\":%d,\"local_pid\":%d,", g->gpu, g->pid, g->local_pid);
    kv_size(b, "used_bytes", g->used_bytes);
    close_member(b, '}');
  }
  close_with(b, ']');
  put(b, "},");
}

static void put_proc(hr__buf_t *b, const hr_proc_t *p) {
  put(b, "{\"pid\":%d,\"ppid\":%d,\"nspid\":%d,\"uid\":%" PRIu32 ",\"start_ticks\":%" PRIu64 ",",
      p->pid, p->ppid, p->nspid, p->uid, p->start_ticks);
  char st[2] = {p->state ? p->state : '?', '\0'};
  kv_str(b, "state", st);
  put(b, "\"kernel_thread\":%s,", p->kernel_thread ? "true" : "false");
  kv_str(b, "name", p->name);
  kv_str(b, "cmdline", p->cmdline);
  kv_str(b, "container_id", p->container_id);
  kv_size(b, "rss_bytes", p->rss_bytes);
  kv_size(b, "rss_anon_bytes", p->rss_anon_bytes);
  kv_size(b, "rss_file_bytes", p->rss_file_bytes);
  kv_size(b, "rss_shmem_bytes", p->rss_shmem_bytes);
  kv_size(b, "swap_bytes", p->swap_bytes);
  kv_size(b, "pss_bytes", p->pss_bytes);
  kv_size(b, "gpu_bytes", p->gpu_bytes);
  close_member(b, '}');
}

/* The snapshot with the processes idx names (every process when idx is
 * NULL), in that order. */
static int snapshot_json(const hr_snapshot_t *s, const size_t *idx, size_t n, char **out) {
  hr__buf_t b = {0};
  put(&b, "{\"schema_version\":1,\"time\":%.3f,", s->time);
  put_host(&b, s);
  put_cgroup(&b, &s->cgroup);
  put_gpus(&b, s);
  put(&b, "\"processes\":[");
  for (size_t i = 0; i < n; i++) {
    const hr_proc_t *p = &s->procs[idx ? idx[i] : i];
    if (!p->brief) put_proc(&b, p); /* a brief process lacks most fields */
  }
  close_with(&b, ']');
  put(&b, ",\"processes_unreadable\":%zu}", s->n_procs_unreadable);
  return hr__buf_finish(&b, out);
}

int hr_snapshot_json(const hr_snapshot_t *s, char **out) {
  if (!s || !out) return HR_EINVAL;
  *out = NULL;
  return snapshot_json(s, NULL, s->n_procs, out);
}

int hr_snapshot_json_selected(const hr_snapshot_t *s, char **out) {
  if (!s || !out || !s->selected) return HR_EINVAL;
  *out = NULL;
  return snapshot_json(s, s->selected, s->n_selected, out);
}
