/* What the broker reports: its events, handed to the caller as the watch's
 * typed events (who records them in history and writes them with the one
 * JSON and text writer), the counters the exporter reads, and the status
 * message that `headroom broker` shows, gathered here and written by the
 * protocol's one encoder. Its lists are bounded whatever a client makes the
 * broker hold: the first clients, the largest leases, and the totals. */
#include "broker/broker_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void hr__broker_emit(hr_broker_t *b, hr_watch_event_t *e, const char *name, const char *device) {
  e->kind = HR_EVENT_BROKER;
  if (e->time == 0) e->time = hr__now_wall();
  if (name) hr__strlcpy(e->name, name, sizeof e->name);
  if (device) hr__strlcpy(e->broker.device, device, sizeof e->broker.device);
  hr__log(HR_LOG_DEBUG, "broker: %s pid %d %s %s", hr_broker_event_name(e->broker.what), e->pid,
          e->name, e->broker.message);
  if (b->fn) b->fn(e, b->fn_arg);
}

void hr__broker_count(hr_broker_t *b, uint64_t *field, uint64_t n) {
  pthread_mutex_lock(&b->lock);
  *field += n;
  b->counters.clients = 0;
  for (size_t i = 0; i < b->n_conns; i++) b->counters.clients += b->conns[i]->registered;
  b->counters.leases = b->n_leases;
  pthread_mutex_unlock(&b->lock);
}

void hr__broker_count_released_locked(hr_broker_t *b, const char *name, uint64_t bytes) {
  hr_broker_counters_t *k = &b->counters;
  k->released_bytes += bytes;
  if (!bytes) return;
  size_t i = 0;
  while (i < k->n_released_by && strcmp(k->released_by[i].name, name) != 0) i++;
  if (i == k->n_released_by) {
    if (i < HR_BROKER_NAMES_COUNTED - 1) {
      hr__strlcpy(k->released_by[i].name, name, sizeof k->released_by[i].name);
    } else {
      i = HR_BROKER_NAMES_COUNTED - 1;
      hr__strlcpy(k->released_by[i].name, "other", sizeof k->released_by[i].name);
    }
    if (i == k->n_released_by) k->n_released_by++;
  }
  k->released_by[i].bytes += bytes;
}

void hr__broker_count_grant_locked(hr_broker_t *b, double latency_s) {
  static const double bounds[HR_BROKER_LATENCY_BUCKETS] = HR_BROKER_LATENCY_BOUNDS;
  b->counters.granted++;
  b->counters.grant_latency_s_total += latency_s;
  for (size_t i = 0; i < HR_BROKER_LATENCY_BUCKETS; i++)
    if (latency_s <= bounds[i]) b->counters.grant_latency_le[i]++;
}

static void status_client(hr_broker_t *b, const hr__bconn_t *c, hr__bs_client_t *x) {
  *x = (hr__bs_client_t){.client = c->id,
                         .pid = c->pid,
                         .uid = c->uid,
                         .priority = c->priority,
                         .busy = c->busy || (c->strike_at > 0 &&
                                             hr__broker_now(b) - c->strike_at < HR_BROKER_STRIKE_S),
                         .items = c->items,
                         .n_items = c->n_items};
  hr__strlcpy(x->name, c->name, sizeof x->name);
  hr__strlcpy(x->last_error, c->last_error, sizeof x->last_error);
  for (size_t r = 0; r < b->n_res; r++) {
    hr__strlcpy(x->releasable[r].key, b->res[r].name, sizeof x->releasable[r].key);
    x->releasable[r].v = hr__broker_releasable(c, b->res[r].name);
  }
  x->n_releasable = b->n_res;
}

static void status_adapter(hr_broker_t *b, const hr__badapter_t *a, hr__bs_adapter_t *x) {
  *x = (hr__bs_adapter_t){.priority = b->adapter_priority,
                          .asleep = a->asleep,
                          .busy = a->busy || (a->strike_at > 0 && hr__broker_now(b) - a->strike_at <
                                                                      HR_BROKER_STRIKE_S),
                          .known_bytes = a->used};
  hr__strlcpy(x->name, a->name, sizeof x->name);
  hr__strlcpy(x->kind, a->ops->kind, sizeof x->kind);
  hr__strlcpy(x->device, a->device, sizeof x->device);
  hr__strlcpy(x->last_error, a->last_error, sizeof x->last_error);
}

static int lease_cmp(const void *x, const void *y) {
  const hr__bs_lease_t *a = x, *b = y;
  if (a->bytes != b->bytes) return a->bytes > b->bytes ? -1 : 1;
  return a->lease < b->lease ? -1 : a->lease > b->lease;
}

/* Every lease, largest first; the status shows the first ones. */
static hr__bs_lease_t *status_leases(hr_broker_t *b) {
  hr__bs_lease_t *ls = calloc(b->n_leases + 1, sizeof *ls);
  double now = hr__broker_now(b);
  for (size_t i = 0; ls && i < b->n_leases; i++) {
    const hr__blease_t *l = &b->leases[i];
    ls[i] = (hr__bs_lease_t){.lease = l->id,
                             .pid = l->pid,
                             .uid = l->uid,
                             .bytes = l->bytes,
                             .consumed_bytes = l->consumed,
                             .expires_in_s = l->expires > 0 ? l->expires - now : NAN};
    hr__strlcpy(ls[i].name, l->name, sizeof ls[i].name);
    hr__strlcpy(ls[i].device, b->res[l->res].name, sizeof ls[i].device);
  }
  if (ls) qsort(ls, b->n_leases, sizeof *ls, lease_cmp);
  return ls;
}

/* The status message, bounded: the first HR_BROKER_STATUS_CLIENTS clients
 * and the HR_BROKER_STATUS_LEASES largest leases, with the totals. Reads
 * the resources afresh. */
void hr__broker_status_json(hr_broker_t *b, hr__buf_t *o) {
  hr__broker_read(b);
  hr__bm_status_t *m = calloc(1, sizeof *m);
  hr__bs_client_t *cs = calloc(HR_BROKER_STATUS_CLIENTS, sizeof *cs);
  hr__bs_adapter_t as[HR_BROKER_MAX_ADAPTER];
  hr__bs_lease_t *ls = status_leases(b);
  if (!m || !cs || !ls) {
    o->failed = true;
    goto out;
  }
  hr__strlcpy(m->socket, b->path, sizeof m->socket);
  for (size_t i = 0; i < b->n_res; i++) {
    const hr__bres_t *r = &b->res[i];
    m->resources[i] = (hr__bs_res_t){.budget_bytes = r->budget,
                                     .capacity_bytes = r->capacity,
                                     .physical_free_bytes = r->phys_free,
                                     .clients_bytes = r->clients_used,
                                     .leased_bytes = r->leased,
                                     .free_bytes = hr__broker_free(r)};
    hr__strlcpy(m->resources[i].device, r->name, sizeof m->resources[i].device);
  }
  m->n_resources = b->n_res;
  for (size_t i = 0; i < b->n_conns; i++) {
    const hr__bconn_t *c = b->conns[i];
    if (!c->registered || c->closing) continue;
    if (m->n_clients < HR_BROKER_STATUS_CLIENTS) status_client(b, c, &cs[m->n_clients++]);
    m->clients_total++;
  }
  for (size_t i = 0; i < b->n_adapters; i++) status_adapter(b, &b->adapters[i], &as[i]);
  m->clients = cs, m->adapters = as, m->n_adapters = b->n_adapters, m->leases = ls;
  m->n_leases = HR_MIN(b->n_leases, (size_t)HR_BROKER_STATUS_LEASES);
  m->leases_total = b->n_leases;
  m->pending = b->n_queue;
  hr_broker_get_counters(b, &m->counters);
  hr__bproto_encode(o, HR__BOP_STATUS, m);
out:
  free(m);
  free(cs);
  free(ls);
}
