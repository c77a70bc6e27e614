/* What the broker reports: its events, handed to the caller as the watch's
 * typed events (who records them in history and writes them with the one
 * JSON and text writer), the counters the exporter reads, and the status
 * object that `headroom broker` shows, written here, once, through the one
 * JSON string writer. */
#include "broker/broker_int.h"

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

static void put_u64(hr__buf_t *o, const char *key, uint64_t v) {
  if (v == HR_UNLIMITED || v == HR_UNKNOWN)
    hr__buf_printf(o, ",\"%s\":null", key);
  else
    hr__buf_printf(o, ",\"%s\":%llu", key, (unsigned long long)v);
}

/* ,"key":"value" through the one JSON string writer. */
static void put_str(hr__buf_t *o, const char *key, const char *v) {
  hr__buf_printf(o, ",\"%s\":", key);
  hr__buf_json_str(o, v);
}

static void status_resources(hr_broker_t *b, hr__buf_t *o) {
  hr__buf_puts(o, ",\"resources\":[");
  for (size_t i = 0; i < b->n_res; i++) {
    const hr__bres_t *r = &b->res[i];
    hr__buf_printf(o, "%s{\"device\":", i ? "," : "");
    hr__buf_json_str(o, r->name);
    put_u64(o, "budget_bytes", r->budget);
    put_u64(o, "capacity_bytes", r->capacity);
    put_u64(o, "physical_free_bytes", r->phys_free);
    hr__buf_printf(o, ",\"clients_bytes\":%llu,\"leased_bytes\":%llu,\"free_bytes\":%llu}",
                   (unsigned long long)r->clients_used, (unsigned long long)r->leased,
                   (unsigned long long)hr__broker_free(r));
  }
  hr__buf_puts(o, "]");
}

/* One client: who, its items, what it could release on each resource. */
static void status_client(hr_broker_t *b, const hr__bconn_t *c, hr__buf_t *o) {
  hr__buf_printf(o, "{\"client\":%llu,\"pid\":%d,\"uid\":%u", (unsigned long long)c->id, c->pid,
                 c->uid);
  put_str(o, "name", c->name);
  hr__buf_printf(o, ",\"priority\":%d,\"items\":[", c->priority);
  for (size_t k = 0; k < c->n_items; k++) {
    const hr__bitem_t *x = &c->items[k];
    hr__buf_puts(o, k ? ",{\"name\":" : "{\"name\":");
    hr__buf_json_str(o, x->name);
    put_str(o, "device", x->device);
    hr__buf_printf(o, ",\"kind\":\"%s\",\"bytes\":%llu,\"reload_bytes\":%llu,\"idle_s\":%.1f}",
                   x->cache ? "cache" : "model", (unsigned long long)x->bytes,
                   (unsigned long long)x->reload_bytes, x->idle_s);
  }
  hr__buf_puts(o, "],\"releasable_bytes\":{");
  for (size_t r = 0; r < b->n_res; r++) {
    hr__buf_printf(o, "%s", r ? "," : "");
    hr__buf_json_str(o, b->res[r].name);
    hr__buf_printf(o, ":%llu", (unsigned long long)hr__broker_releasable(c, b->res[r].name));
  }
  hr__buf_puts(o, "}}");
}

static void status_adapters(hr_broker_t *b, hr__buf_t *o) {
  hr__buf_puts(o, ",\"adapters\":[");
  for (size_t i = 0; i < b->n_adapters; i++) {
    const hr__badapter_t *a = &b->adapters[i];
    hr__buf_puts(o, i ? ",{\"name\":" : "{\"name\":");
    hr__buf_json_str(o, a->name);
    put_str(o, "kind", a->kind);
    put_str(o, "device", a->device);
    hr__buf_printf(o, ",\"priority\":%d,\"asleep\":%s,\"known_bytes\":%llu}", b->adapter_priority,
                   a->asleep ? "true" : "false", (unsigned long long)a->used);
  }
  hr__buf_puts(o, "]");
}

static void status_leases(hr_broker_t *b, hr__buf_t *o) {
  hr__buf_puts(o, ",\"leases\":[");
  double now = hr__now_mono();
  for (size_t i = 0; i < b->n_leases; i++) {
    const hr__blease_t *l = &b->leases[i];
    hr__buf_printf(o, "%s{\"lease\":%llu,\"pid\":%d,\"uid\":%u", i ? "," : "",
                   (unsigned long long)l->id, l->pid, l->uid);
    put_str(o, "name", l->name);
    put_str(o, "device", b->res[l->res].name);
    hr__buf_printf(o, ",\"bytes\":%llu", (unsigned long long)l->bytes);
    if (l->expires > 0)
      hr__buf_printf(o, ",\"expires_in_s\":%.1f}", l->expires - now);
    else
      hr__buf_puts(o, ",\"expires_in_s\":null}");
  }
  hr__buf_puts(o, "]");
}

/* The counters, named as in hr_broker_counters_t. */
static void status_counters(hr_broker_t *b, hr__buf_t *o) {
  hr_broker_counters_t k;
  hr_broker_get_counters(b, &k);
  const struct {
    const char *name;
    uint64_t v;
  } c[] = {{"connections", k.connections},
           {"refused_peers", k.refused_peers},
           {"protocol_errors", k.protocol_errors},
           {"registrations", k.registrations},
           {"reservations", k.reservations},
           {"granted", k.granted},
           {"refused", k.refused},
           {"asks", k.asks},
           {"answers", k.answers},
           {"no_answers", k.no_answers},
           {"adapter_failures", k.adapter_failures},
           {"released_bytes", k.released_bytes},
           {"pressure_asks", k.pressure_asks}};
  hr__buf_puts(o, ",\"counters\":{");
  for (size_t i = 0; i < HR_ARRAY_LEN(c); i++)
    hr__buf_printf(o, "%s\"%s\":%llu", i ? "," : "", c[i].name, (unsigned long long)c[i].v);
  hr__buf_printf(o, ",\"grant_latency_s_total\":%.6f}", k.grant_latency_s_total);
}

/* {"v":1,"op":"status","resources":[...],"clients":[...],"leases":[...],...}:
 * what `headroom broker` shows. Reads the resources afresh. */
void hr__broker_status_json(hr_broker_t *b, hr__buf_t *o) {
  hr__broker_read(b);
  hr__buf_puts(o, "{\"v\":1,\"op\":\"status\"");
  put_str(o, "socket", b->path);
  status_resources(b, o);
  hr__buf_puts(o, ",\"clients\":[");
  bool first = true;
  for (size_t i = 0; i < b->n_conns; i++) {
    if (!b->conns[i]->registered || b->conns[i]->closing) continue;
    if (!first) hr__buf_puts(o, ",");
    first = false;
    status_client(b, b->conns[i], o);
  }
  hr__buf_puts(o, "]");
  status_adapters(b, o);
  status_leases(b, o);
  hr__buf_printf(o, ",\"pending\":%zu", b->queue ? (size_t)1 : (size_t)0);
  status_counters(b, o);
  hr__buf_puts(o, "}");
}
