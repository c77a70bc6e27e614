/* hr_snapshot_json: the snapshot as one JSON object, written by hand rather
 * than through a JSON library because sizes are uint64_t and must come out
 * exact (a double holds integers only up to 2^53). The keys are stable and
 * documented in docs/status-schema.json: sizes end in _bytes, an unknown
 * size is null, a limit that is not set is the string "max". */
#include "probe/probe_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct jbuf {
  char *p;
  size_t len, cap;
  bool oom;
} jbuf_t;

static void put(jbuf_t *b, const char *fmt, ...) HR_PRINTF(2, 3);
static void put(jbuf_t *b, const char *fmt, ...) {
  if (b->oom) return;
  va_list ap, again;
  va_start(ap, fmt);
  va_copy(again, ap);
  int w = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
  if (w >= 0 && (size_t)w >= b->cap - b->len) {
    size_t nc = (b->cap + (size_t)w + 1) * 2;
    char *np = realloc(b->p, nc);
    if (np) {
      b->p = np, b->cap = nc;
      w = vsnprintf(b->p + b->len, b->cap - b->len, fmt, again);
    } else {
      w = -1;
    }
  }
  va_end(again);
  va_end(ap);
  if (w < 0)
    b->oom = true;
  else
    b->len += (size_t)w;
}

/* Length of the valid UTF-8 sequence at s (1 to 4), or 0 when it is not
 * one (a stray continuation byte, an overlong or truncated sequence). */
static size_t utf8_len(const unsigned char *s) {
  size_t n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
  if (s[0] >= 0xf5) return 0;
  for (size_t i = 1; i < n; i++)
    if ((s[i] & 0xc0) != 0x80) return 0;
  if (n == 3 && s[0] == 0xe0 && s[1] < 0xa0) return 0;  /* overlong */
  if (n == 3 && s[0] == 0xed && s[1] >= 0xa0) return 0; /* surrogate */
  if (n == 4 && s[0] == 0xf0 && s[1] < 0x90) return 0;  /* overlong */
  if (n == 4 && s[0] == 0xf4 && s[1] >= 0x90) return 0; /* above U+10FFFF */
  return n;
}

/* A JSON string. Command lines and names are bytes, not always UTF-8: a byte
 * that does not start a valid sequence becomes U+FFFD, so the output is
 * always valid JSON text. */
/* Appends n bytes as they are. */
static void put_raw(jbuf_t *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->cap - b->len <= n) {
    size_t nc = (b->cap + n + 1) * 2;
    char *np = realloc(b->p, nc);
    if (!np) {
      b->oom = true;
      return;
    }
    b->p = np, b->cap = nc;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void put_str(jbuf_t *b, const char *s) {
  put_raw(b, "\"", 1);
  const unsigned char *c = (const unsigned char *)s;
  while (*c) {
    /* A run of bytes that need no escaping goes in one copy. */
    size_t run = 0;
    while (c[run] >= 0x20 && c[run] < 0x7f && c[run] != '"' && c[run] != '\\') run++;
    if (run) {
      put_raw(b, (const char *)c, run);
      c += run;
      continue;
    }
    if (*c == '"' || *c == '\\')
      put(b, "\\%c", *c);
    else if (*c == '\n')
      put_raw(b, "\\n", 2);
    else if (*c == '\t')
      put_raw(b, "\\t", 2);
    else if (*c < 0x80)
      put(b, "\\u%04x", *c);
    else {
      size_t n = utf8_len(c);
      if (n == 0)
        put_raw(b, "\\ufffd", 6);
      else
        put_raw(b, (const char *)c, n);
      c += n ? n : 1;
      continue;
    }
    c++;
  }
  put_raw(b, "\"", 1);
}

/* "key": "value", */
static void kv_str(jbuf_t *b, const char *k, const char *v) {
  put(b, "\"%s\":", k);
  put_str(b, v);
  put(b, ",");
}

static void kv_size(jbuf_t *b, const char *k, uint64_t v) {
  if (v == HR_UNKNOWN)
    put(b, "\"%s\":null,", k);
  else if (v == HR_UNLIMITED)
    put(b, "\"%s\":\"max\",", k);
  else
    put(b, "\"%s\":%" PRIu64 ",", k, v);
}

/* A count that may be unknown (HR_UNKNOWN becomes null). */
static void kv_count(jbuf_t *b, const char *k, uint64_t v) {
  if (v == HR_UNKNOWN)
    put(b, "\"%s\":null,", k);
  else
    put(b, "\"%s\":%" PRIu64 ",", k, v);
}

/* An int where -1 means unknown. */
static void kv_int(jbuf_t *b, const char *k, int v) {
  if (v < 0)
    put(b, "\"%s\":null,", k);
  else
    put(b, "\"%s\":%d,", k, v);
}

/* Drops the comma after the last member and closes the object or array. */
static void close_with(jbuf_t *b, char c) {
  if (!b->oom && b->len > 0 && b->p[b->len - 1] == ',') b->len--;
  put(b, "%c", c);
}

static void put_pressure(jbuf_t *b, const char *k, const hr_pressure_t *p) {
  put(b, "\"%s\":{\"avg10\":%.2f,\"avg60\":%.2f,\"avg300\":%.2f,\"total_us\":%" PRIu64 "},", k,
      p->avg10, p->avg60, p->avg300, p->total_us);
}

static void put_host(jbuf_t *b, const hr_snapshot_t *s) {
  const hr_host_mem_t *h = &s->host;
  put(b, "\"host\":{");
  kv_str(b, "state", hr_probe_state_name(s->host_state));
  kv_str(b, "message", s->host_message);
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
  close_with(b, '}');
  put(b, ",");
}

static void put_cgroup(jbuf_t *b, const hr_cgroup_mem_t *c) {
  put(b, "\"cgroup\":{");
  kv_str(b, "state", hr_probe_state_name(c->state));
  kv_str(b, "message", c->message);
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
    close_with(b, '}');
    put(b, ",");
  } else {
    put(b, "\"pressure\":null,");
  }
  close_with(b, '}');
  put(b, ",");
}

static void put_gpus(jbuf_t *b, const hr_snapshot_t *s) {
  put(b, "\"gpu\":{");
  kv_str(b, "state", hr_probe_state_name(s->gpu_state));
  kv_str(b, "message", s->gpu_message);
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
    close_with(b, '}');
    put(b, ",");
  }
  close_with(b, ']');
  put(b, ",\"processes\":[");
  for (size_t i = 0; i < s->n_gpu_procs; i++) {
    const hr_gpu_proc_t *g = &s->gpu_procs[i];
    put(b, "{\"gpu\":%u,\"pid\":%d,\"local_pid\":%d,", g->gpu, g->pid, g->local_pid);
    kv_size(b, "used_bytes", g->used_bytes);
    close_with(b, '}');
    put(b, ",");
  }
  close_with(b, ']');
  put(b, "},");
}

static void put_proc(jbuf_t *b, const hr_proc_t *p) {
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
  close_with(b, '}');
  put(b, ",");
}

int hr_snapshot_json(const hr_snapshot_t *s, char **out) {
  if (!s || !out) return HR_EINVAL;
  *out = NULL;
  /* About 600 bytes per process; start with room for a typical machine. */
  jbuf_t b = {.cap = 4096 + 640 * (s->n_procs + s->n_gpus)};
  b.p = malloc(b.cap);
  if (!b.p) return HR_ENOMEM;
  put(&b, "{\"schema_version\":1,\"time\":%.3f,", s->time);
  put_host(&b, s);
  put_cgroup(&b, &s->cgroup);
  put_gpus(&b, s);
  put(&b, "\"processes\":[");
  for (size_t i = 0; i < s->n_procs; i++) put_proc(&b, &s->procs[i]);
  close_with(&b, ']');
  put(&b, ",\"processes_unreadable\":%zu}", s->n_procs_unreadable);
  if (b.oom) {
    free(b.p);
    return HR_ENOMEM;
  }
  *out = b.p;
  return 0;
}
