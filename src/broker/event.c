/* The broker's outputs: typed events handed to the caller (who logs them,
 * records them in history or writes them as JSON lines), the counters the
 * exporter reads, and the status object that `headroom broker` shows. Each
 * JSON text is written here, once, through the one string writer. */
#include "broker/broker_int.h"

#include <stdlib.h>
#include <string.h>

static const char *const names[] = {
#define HR_BROKER_EV_NAME_(name, text) text,
    HR_BROKER_EVENTS(HR_BROKER_EV_NAME_)
#undef HR_BROKER_EV_NAME_
};

const char *hr_broker_event_name(hr_broker_event_kind_t kind) {
  return (unsigned)kind < HR_BROKER_EV_COUNT ? names[kind] : "?";
}

void hr_broker_event_to_watch(const hr_broker_event_t *e, struct hr_watch_event *out) {
  memset(out, 0, sizeof *out);
  out->kind = HR_EVENT_BROKER;
  out->time = e->time;
  out->pid = e->pid;
  hr__strlcpy(out->name, e->name, sizeof out->name);
  hr_event_broker_t *x = &out->broker;
  hr__strlcpy(x->what, hr_broker_event_name(e->kind), sizeof x->what);
  x->uid = e->uid;
  hr__strlcpy(x->device, e->device, sizeof x->device);
  x->priority = e->priority;
  x->bytes = e->bytes;
  x->released_bytes = e->released;
  x->latency_s = e->latency_s;
  x->status = e->status;
  x->lease = e->lease;
  hr__strlcpy(x->message, e->message, sizeof x->message);
}

int hr_broker_event_json(const hr_broker_event_t *e, char **out) {
  if (!e || !out) return HR_EINVAL;
  hr_watch_event_t w;
  hr_broker_event_to_watch(e, &w);
  return hr_event_json(&w, out);
}

void hr__broker_emit(hr_broker_t *b, hr_broker_event_t *e) {
  if (e->time == 0) e->time = hr__now_wall();
  hr__log(HR_LOG_DEBUG, "broker: %s pid %d %s %s", hr_broker_event_name(e->kind), e->pid, e->name,
          e->message);
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
    hr__buf_printf(o, "\"%s\":null", key);
  else
    hr__buf_printf(o, "\"%s\":%llu", key, (unsigned long long)v);
}

/* {"v":1,"op":"status","resources":[...],"clients":[...],"leases":[...],...}:
 * what `headroom broker` shows. Reads the resources afresh. */
void hr__broker_status_json(hr_broker_t *b, hr__buf_t *o) {
  hr__broker_read(b);
  hr__buf_printf(o, "{\"v\":1,\"op\":\"status\",\"socket\":");
  hr__buf_json_str(o, b->path);
  hr__buf_puts(o, ",\"resources\":[");
  for (size_t i = 0; i < b->n_res; i++) {
    const hr__bres_t *r = &b->res[i];
    hr__buf_printf(o, "%s{\"device\":", i ? "," : "");
    hr__buf_json_str(o, r->name);
    hr__buf_puts(o, ",");
    put_u64(o, "budget_bytes", r->budget);
    hr__buf_puts(o, ",");
    put_u64(o, "capacity_bytes", r->capacity);
    hr__buf_puts(o, ",");
    put_u64(o, "physical_free_bytes", r->phys_free);
    hr__buf_printf(o, ",\"clients_bytes\":%llu,\"leased_bytes\":%llu,\"free_bytes\":%llu}",
                   (unsigned long long)r->clients_used, (unsigned long long)r->leased,
                   (unsigned long long)hr__broker_free(r));
  }
  hr__buf_puts(o, "],\"clients\":[");
  bool first = true;
  for (size_t i = 0; i < b->n_conns; i++) {
    const hr__bconn_t *c = b->conns[i];
    if (!c->registered || c->closing) continue;
    hr__buf_printf(o, "%s{\"client\":%llu,\"pid\":%d,\"uid\":%u,\"name\":", first ? "" : ",",
                   (unsigned long long)c->id, c->pid, c->uid);
    first = false;
    hr__buf_json_str(o, c->name);
    hr__buf_printf(o, ",\"priority\":%d,\"items\":[", c->priority);
    for (size_t k = 0; k < c->n_items; k++) {
      const hr__bitem_t *x = &c->items[k];
      hr__buf_printf(o, "%s{\"name\":", k ? "," : "");
      hr__buf_json_str(o, x->name);
      hr__buf_puts(o, ",\"device\":");
      hr__buf_json_str(o, x->device);
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
  hr__buf_puts(o, "],\"adapters\":[");
  for (size_t i = 0; i < b->n_adapters; i++) {
    const hr__badapter_t *a = &b->adapters[i];
    hr__buf_printf(o, "%s{\"name\":", i ? "," : "");
    hr__buf_json_str(o, a->name);
    hr__buf_puts(o, ",\"kind\":");
    hr__buf_json_str(o, a->kind);
    hr__buf_puts(o, ",\"device\":");
    hr__buf_json_str(o, a->device);
    hr__buf_printf(o, ",\"priority\":%d,\"asleep\":%s,\"known_bytes\":%llu}", b->adapter_priority,
                   a->asleep ? "true" : "false", (unsigned long long)a->used);
  }
  hr__buf_puts(o, "],\"leases\":[");
  double now = hr__now_mono();
  for (size_t i = 0; i < b->n_leases; i++) {
    const hr__blease_t *l = &b->leases[i];
    hr__buf_printf(o, "%s{\"lease\":%llu,\"pid\":%d,\"uid\":%u,\"name\":", i ? "," : "",
                   (unsigned long long)l->id, l->pid, l->uid);
    hr__buf_json_str(o, l->name);
    hr__buf_puts(o, ",\"device\":");
    hr__buf_json_str(o, b->res[l->res].name);
    hr__buf_printf(o, ",\"bytes\":%llu", (unsigned long long)l->bytes);
    if (l->expires > 0)
      hr__buf_printf(o, ",\"expires_in_s\":%.1f}", l->expires - now);
    else
      hr__buf_puts(o, ",\"expires_in_s\":null}");
  }
  hr_broker_counters_t k;
  hr_broker_get_counters(b, &k);
  hr__buf_printf(o,
                 "],\"pending\":%zu,\"counters\":{\"connections\":%llu,\"refused_peers\":%llu,"
                 "\"protocol_errors\":%llu,\"registrations\":%llu,\"reservations\":%llu,"
                 "\"granted\":%llu,\"refused\":%llu,\"asks\":%llu,\"answers\":%llu,"
                 "\"no_answers\":%llu,\"adapter_failures\":%llu,\"released_bytes\":%llu,"
                 "\"pressure_asks\":%llu,\"grant_latency_s_total\":%.6f}}",
                 b->queue ? (size_t)1 : (size_t)0, (unsigned long long)k.connections,
                 (unsigned long long)k.refused_peers, (unsigned long long)k.protocol_errors,
                 (unsigned long long)k.registrations, (unsigned long long)k.reservations,
                 (unsigned long long)k.granted, (unsigned long long)k.refused,
                 (unsigned long long)k.asks, (unsigned long long)k.answers,
                 (unsigned long long)k.no_answers, (unsigned long long)k.adapter_failures,
                 (unsigned long long)k.released_bytes, (unsigned long long)k.pressure_asks,
                 k.grant_latency_s_total);
}
