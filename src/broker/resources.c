/* Resources and budgets, and what is free on them.
 *
 * What is free on a resource is the smaller of what the kernel or the driver
 * says is free and what the budget leaves once the registered clients'
 * memory, the adapters' models and the leases are counted. Memory is
 * counted once: a lease whose holder's process is a registered client is
 * used up by what that process grows by after the grant (its own memory
 * already counts), so only the rest of the lease counts as leased. */
#include "broker/broker_int.h"
#include "probe/probe_int.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int hr__broker_res_find(const hr_broker_t *b, const char *name) {
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

double hr__broker_pressure_use(const hr__bres_t *r) {
  uint64_t cap = r->budget != HR_UNLIMITED ? r->budget : r->capacity;
  if (cap == 0 || cap == HR_UNKNOWN) return 0;
  uint64_t free_now = HR_MIN(sub(cap, r->clients_used), r->phys_free);
  return 1 - (double)free_now / (double)cap;
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
  double now = hr__broker_now(b);
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

uint64_t hr__broker_held_by(hr_broker_t *b, int pid, int ri) {
  const hr__bconn_t *c = hr__broker_client_of(b, pid);
  if (c) return c->held[ri];
  return ri == 0 ? rss_of(b, pid) : 0;
}

/* What the clients hold, each process once (one may hold several
 * connections). */
static void read_clients(hr_broker_t *b) {
  for (size_t i = 0; i < b->n_conns; i++) {
    hr__bconn_t *c = b->conns[i];
    if (!c->registered || c->closing) continue;
    c->held[0] = rss_of(b, c->peer_pid);
    if (hr__broker_client_of(b, c->peer_pid) != c) continue;
    for (size_t k = 0; k < b->n_res; k++) b->res[k].clients_used += c->held[k];
  }
}

/* What the leases hold: each less what its holder, a registered client,
 * grew by since the grant (that growth counts as the client's already). */
static void read_leases(hr_broker_t *b) {
  for (size_t i = 0; i < b->n_leases; i++) {
    hr__blease_t *l = &b->leases[i];
    const hr__bconn_t *h = hr__broker_client_of(b, l->peer_pid);
    l->consumed = h ? HR_MIN(l->bytes, sub(h->held[l->res], l->base_held)) : 0;
    b->res[l->res].leased += l->bytes - l->consumed;
  }
}

void hr__broker_read(hr_broker_t *b) {
  double now = hr__broker_now(b);
  if (b->last_read > 0 && now - b->last_read < 0.01) return;
  b->last_read = now;
  read_host(b);
  read_gpus(b);
  for (size_t k = 0; k < b->n_res; k++) b->res[k].clients_used = b->res[k].leased = 0;
  read_clients(b);
  read_leases(b);
  for (size_t i = 0; i < b->n_adapters; i++) {
    int k = hr__broker_res_find(b, b->adapters[i].device);
    if (k >= 0) b->res[k].clients_used += b->adapters[i].used;
  }
}
