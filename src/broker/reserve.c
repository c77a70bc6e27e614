/* Resources, budgets and the release plan (lease.c works the reservations).
 *
 * What is free on a resource is the smaller of what the kernel or the driver
 * says is free and what the budget leaves once the registered clients'
 * memory and the leases are counted. A reservation that fits is granted at
 * once. Otherwise the broker asks clients to release, cheapest first:
 * caches, then models by priority (lowest first) and idleness (least
 * recently used first), never a client of higher priority than the asker nor
 * another user's (unless the asker is root), and never more than needed plus
 * the one item that crosses the line. Then it waits, with bounded patience,
 * until the freed bytes are visible, asks the next ones when they are not,
 * and answers granted or refused with who holds what. One reservation is
 * worked on at a time; the others queue. */
#include "broker/broker_int.h"
#include "probe/probe_int.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int hr__broker_res_find(hr_broker_t *b, const char *name) {
  for (size_t i = 0; i < b->n_res; i++)
    if (strcmp(b->res[i].name, name) == 0) return (int)i;
  return -1;
}

/* The host, every GPU NVML shows, and the budget of each: "host=16G,gpu0=20G". */
int hr__broker_parse_budget(hr_broker_t *b, const char *spec, char *err, size_t n) {
  b->res[0] = (hr__bres_t){.name = "host", .gpu = -1, .budget = HR_UNLIMITED};
  b->n_res = 1;
  hr_snapshot_t *s = NULL;
  hr_probe_options_t po = {
      .root = b->root, .what = HR_PROBE_GPUS, .nvml_path = *b->nvml ? b->nvml : NULL};
  if (hr_snapshot_take(&po, &s) == 0) {
    for (size_t i = 0; i < s->n_gpus && b->n_res < HR_BROKER_MAX_RES; i++) {
      hr__bres_t *r = &b->res[b->n_res++];
      *r = (hr__bres_t){.gpu = (int)s->gpus[i].index, .budget = HR_UNLIMITED};
      snprintf(r->name, sizeof r->name, "gpu%u", s->gpus[i].index);
    }
    hr_snapshot_free(s);
  }
  char copy[512];
  if (hr__strlcpy(copy, spec, sizeof copy) && strlen(spec) >= sizeof copy)
    return hr__err(err, n, HR_EINVAL, "budget: longer than %zu bytes", sizeof copy - 1);
  char *save = NULL;
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(tok, '=');
    uint64_t v;
    if (!eq)
      return hr__err(err, n, HR_EINVAL, "budget: '%s' is not RESOURCE=SIZE (host=16G,gpu0=20G)",
                     tok);
    *eq = '\0';
    int i = hr__broker_res_find(b, tok);
    if (i < 0)
      return hr__err(err, n, HR_EINVAL, "budget: no resource '%s' here (host%s)", tok,
                     b->n_res > 1 ? " and gpuN" : "; no GPU is visible");
    if (hr_parse_size(eq + 1, &v) != 0 || v == 0)
      return hr__err(err, n, HR_EINVAL, "budget: %s: '%s' is not a size (16G, 512M)", tok, eq + 1);
    b->res[i].budget = v;
  }
  return 0;
}

static uint64_t sub(uint64_t a, uint64_t b) {
  return a > b ? a - b : 0;
}

uint64_t hr__broker_free(const hr__bres_t *r) {
  uint64_t cap = r->budget != HR_UNLIMITED ? r->budget : r->capacity;
  uint64_t left = sub(sub(cap, r->clients_used), r->leased);
  return HR_MIN(left, r->phys_free);
}

uint64_t hr__broker_releasable(const hr__bconn_t *c, const char *device) {
  uint64_t sum = 0;
  for (size_t i = 0; i < c->n_items; i++)
    if (strcmp(c->items[i].device, device) == 0) sum += c->items[i].bytes;
  return sum;
}

/* Resident bytes of pid (statm: one small read). */
static uint64_t rss_of(const hr_broker_t *b, int pid) {
  char path[320], text[256];
  unsigned long long size, res;
  snprintf(path, sizeof path, "%s/proc/%d/statm", b->root, pid);
  if (hr__read_file(path, text, sizeof text) < 0 || sscanf(text, "%llu %llu", &size, &res) != 2)
    return 0;
  return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void read_host(hr_broker_t *b) {
  hr__bres_t *r = &b->res[0];
  hr_host_mem_t m;
  hr_cgroup_mem_t cg;
  if (hr__meminfo_read(b->root, &m, NULL, 0) != 0) return;
  r->capacity = m.total_bytes;
  r->phys_free = m.available_bytes != HR_UNKNOWN ? m.available_bytes : m.free_bytes;
  /* A cgroup without a limit adds nothing, and reading it costs several
   * files: it is looked at again once a second, in case a limit is set. */
  double now = hr__now_mono();
  if (!b->cg_limited && now - b->cg_read_at < 1) return;
  b->cg_read_at = now;
  hr__cgroup_read_at(b->root, b->cgroup, b->cgroup_pid, &cg);
  b->cg_limited = cg.state == HR_PROBE_OK && cg.limit_bytes != HR_UNLIMITED &&
                  cg.limit_bytes != HR_UNKNOWN && cg.limit_bytes < r->capacity;
  if (b->cg_limited) {
    r->capacity = cg.limit_bytes;
    r->phys_free = HR_MIN(r->phys_free, sub(cg.limit_bytes, cg.usage_bytes));
  }
}

static void read_gpus(hr_broker_t *b) {
  hr_snapshot_t *s = NULL;
  hr_probe_options_t po = {
      .root = b->root, .what = HR_PROBE_GPUS, .nvml_path = *b->nvml ? b->nvml : NULL};
  if (b->n_res < 2 || hr_snapshot_take(&po, &s) != 0) return;
  for (size_t k = 1; k < b->n_res; k++) {
    hr__bres_t *r = &b->res[k];
    for (size_t g = 0; g < s->n_gpus; g++) {
      if ((int)s->gpus[g].index != r->gpu || s->gpus[g].state != HR_PROBE_OK) continue;
      r->capacity = s->gpus[g].total_bytes;
      r->phys_free = s->gpus[g].free_bytes;
    }
    /* NVML names host pids; local_pid is only mapped when processes are read,
     * which this small snapshot skips, so the host pid is matched too. */
    for (size_t i = 0; i < b->n_conns; i++) {
      hr__bconn_t *c = b->conns[i];
      c->held[k] = 0;
      for (size_t p = 0; p < s->n_gpu_procs; p++) {
        const hr_gpu_proc_t *gp = &s->gpu_procs[p];
        if ((int)s->gpus[gp->gpu].index == r->gpu &&
            (gp->local_pid == c->peer_pid || gp->pid == c->peer_pid) &&
            gp->used_bytes != HR_UNKNOWN)
          c->held[k] += gp->used_bytes;
      }
    }
  }
  hr_snapshot_free(s);
}

void hr__broker_read(hr_broker_t *b) {
  double now = hr__now_mono();
  if (now - b->last_read < 0.01) return;
  b->last_read = now;
  read_host(b);
  read_gpus(b);
  for (size_t k = 0; k < b->n_res; k++) b->res[k].clients_used = b->res[k].leased = 0;
  for (size_t i = 0; i < b->n_conns; i++) {
    hr__bconn_t *c = b->conns[i];
    if (!c->registered || c->closing) continue;
    c->held[0] = rss_of(b, c->peer_pid);
    /* One process may hold several connections: count it once. */
    bool seen = false;
    for (size_t j = 0; j < i && !seen; j++)
      seen =
          b->conns[j]->registered && !b->conns[j]->closing && b->conns[j]->peer_pid == c->peer_pid;
    if (seen) continue;
    for (size_t k = 0; k < b->n_res; k++) b->res[k].clients_used += c->held[k];
  }
  for (size_t i = 0; i < b->n_leases; i++) b->res[b->leases[i].res].leased += b->leases[i].bytes;
  for (size_t i = 0; i < b->n_adapters; i++) {
    int k = hr__broker_res_find(b, b->adapters[i].device);
    if (k >= 0) b->res[k].clients_used += b->adapters[i].used;
  }
}

/* A candidate for release: one item of a client, or an adapter. */
typedef struct cand {
  hr__bconn_t *c;
  int adapter; /* -1 for a client */
  bool cache, unknown;
  int priority;
  double idle_s;
  uint64_t bytes;
} cand_t;

static int cand_cmp(const void *x, const void *y) {
  const cand_t *a = x, *b = y;
  if (a->unknown != b->unknown) return a->unknown ? 1 : -1; /* unknown sizes last */
  if (a->cache != b->cache) return a->cache ? -1 : 1;
  if (a->priority != b->priority) return a->priority < b->priority ? -1 : 1;
  if (a->idle_s != b->idle_s) return a->idle_s > b->idle_s ? -1 : 1;
  return a->bytes > b->bytes ? -1 : a->bytes < b->bytes;
}

static bool was_asked(const hr__breq_t *q, uint64_t id) {
  for (size_t i = 0; q && i < q->n_asked; i++)
    if (q->asked_conns[i] == id) return true;
  return false;
}

/* Why client c may not be asked for q (or pressure, when q is NULL), or NULL. */
static const char *why_not(const hr__breq_t *q, const hr__bconn_t *c) {
  if (!q) return NULL;
  if (c->priority > q->priority) return "higher priority";
  if (q->uid != 0 && c->uid != q->uid) return "another user";
  return NULL;
}

static void ask_conn(hr_broker_t *b, hr__bconn_t *c, const hr__bres_t *r, uint64_t bytes) {
  c->ask_id = ++b->next_id;
  c->ask_bytes = bytes;
  c->ask_at = hr__now_mono();
  c->ask_deadline = c->ask_at + b->request_timeout;
  hr__strlcpy(c->ask_device, r->name, sizeof c->ask_device);
  char line[200];
  snprintf(line, sizeof line,
           "{\"v\":1,\"op\":\"release\",\"id\":%llu,\"device\":\"%s\",\"bytes\":%llu}",
           (unsigned long long)c->ask_id, r->name, (unsigned long long)bytes);
  hr__broker_send(b, c, line);
  hr_watch_event_t e = {.broker.what = HR_BROKER_EV_ASK,
                        .pid = c->pid,
                        .broker.uid = c->uid,
                        .broker.priority = c->priority,
                        .broker.bytes = bytes};
  hr__broker_emit(b, &e, c->name, r->name);
  hr__broker_count(b, &b->counters.asks, 1);
}

size_t hr__broker_plan(hr_broker_t *b, hr__breq_t *q, int ri, uint64_t need, bool caches_only) {
  const hr__bres_t *r = &b->res[ri];
  cand_t *cs = malloc((b->n_conns * HR_BROKER_MAX_ITEMS + HR_BROKER_MAX_ADAPTER) * sizeof *cs);
  size_t n = 0, asked = 0;
  if (!cs) return 0;
  for (size_t i = 0; i < b->n_conns; i++) {
    hr__bconn_t *c = b->conns[i];
    if (!c->registered || c->closing || c->ask_id || was_asked(q, c->id) || why_not(q, c)) continue;
    for (size_t k = 0; k < c->n_items; k++) {
      const hr__bitem_t *x = &c->items[k];
      if (x->bytes == 0 || strcmp(x->device, r->name) != 0 || (caches_only && !x->cache)) continue;
      cs[n++] = (cand_t){c, -1, x->cache, false, c->priority, x->idle_s, x->bytes};
    }
  }
  for (size_t a = 0; a < b->n_adapters && !caches_only; a++) {
    hr__badapter_t *ad = &b->adapters[a];
    if (strcmp(ad->device, r->name) != 0 || (q && q->asked_adapter[a]) ||
        (q && b->adapter_priority > q->priority))
      continue;
    /* Pressure never puts a server to sleep: nothing would wake it. */
    if (!q && strcmp(ad->kind, "vllm") == 0) continue;
    bool unknown = false;
    uint64_t bytes = hr__adapter_releasable(b, ad, &unknown);
    if (bytes || unknown)
      cs[n++] = (cand_t){NULL, (int)a, false, unknown, b->adapter_priority, 0, bytes};
  }
  qsort(cs, n, sizeof *cs, cand_cmp);
  /* A reservation that everything allowed could not make room for disturbs
   * nobody; pressure takes what relief there is. */
  uint64_t all = 0;
  bool unknown = false;
  for (size_t i = 0; i < n; i++) all += cs[i].bytes, unknown |= cs[i].unknown;
  if (q && !unknown && all < need) n = 0;
  uint64_t sum = 0;
  size_t chosen = 0;
  while (chosen < n && sum < need) sum += cs[chosen++].bytes;
  /* Each client is asked once, for its share of what is still needed in
   * the order above: it gives back at most that plus the rest of the one
   * model that crosses the line. */
  uint64_t left = need;
  for (size_t i = 0; i < chosen; i++) {
    uint64_t take = HR_MIN(cs[i].bytes, left);
    left -= take;
    cs[i].bytes = take;
  }
  for (size_t i = 0; i < chosen; i++) {
    if (cs[i].adapter >= 0) {
      hr__badapter_t *ad = &b->adapters[cs[i].adapter];
      uint64_t got = hr__adapter_release(b, ad, cs[i].bytes);
      if (q) {
        q->asked_adapter[cs[i].adapter] = true;
        q->released += got;
        if (strcmp(ad->kind, "vllm") == 0 && ad->asleep) q->slept[cs[i].adapter] = 1;
      }
      asked++;
      continue;
    }
    if (!cs[i].c) continue;
    uint64_t bytes = 0;
    hr__bconn_t *c = cs[i].c;
    for (size_t k = i; k < chosen; k++)
      if (cs[k].c == c) bytes += cs[k].bytes, cs[k].c = NULL;
    ask_conn(b, c, r, bytes);
    if (q && q->n_asked < HR_ARRAY_LEN(q->asked_conns)) q->asked_conns[q->n_asked++] = c->id;
    asked++;
  }
  free(cs);
  return asked;
}
