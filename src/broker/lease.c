/* Reservations and leases, worked on the broker's thread.
 *
 * A reservation goes PLAN (grant if it fits; else ask the cheapest clients
 * and adapters) -> ASKED (until every asked client answered or the request
 * deadline, broker_timeout, passed: a client that never answers costs that
 * long and no more) -> VISIBLE (until the freed bytes show as free, for at
 * most `patience`) -> granted, or PLAN again with those not yet asked, or
 * refused when nobody is left or its own timeout passed. A lease ends when
 * released, when its time is up, or when its holder's connection closes
 * (the holder exited). Pressure: at a warning or critical use of a
 * resource, and at most once per cooldown, the broker asks the same way
 * (caches alone at a warning) without waiting. */
#include "broker/broker_int.h"

#include <stdlib.h>
#include <string.h>

static void end_lease(hr_broker_t *b, size_t i, const char *why) {
  hr__blease_t l = b->leases[i];
  b->leases[i] = b->leases[--b->n_leases];
  for (size_t a = 0; a < b->n_adapters; a++)
    if (l.woke[a]) hr__adapter_wake(b, &b->adapters[a]);
  hr_watch_event_t e = {.broker.what = HR_BROKER_EV_LEASE_END,
                        .pid = l.pid,
                        .broker.uid = l.uid,
                        .broker.bytes = l.bytes,
                        .broker.lease = l.id};
  hr__strlcpy(e.broker.message, why, sizeof e.broker.message);
  hr__broker_emit(b, &e, l.name, b->res[l.res].name);
  hr__broker_count(b, &b->counters.leases, 0);
  b->last_read = 0; /* the next reading counts the lease no more */
}

static void pop(hr_broker_t *b) {
  hr__breq_t *q = b->queue;
  b->queue = q->next;
  free(q);
}

/* The event of reservation q that came to `what`: its asker, its size and
 * what was released for it so far, on `device`. */
static void emit_request(hr_broker_t *b, const hr__breq_t *q, hr_broker_event_kind_t what,
                         const char *device, double latency_s, uint64_t lease, const char *msg) {
  hr_watch_event_t e = {.pid = q->pid,
                        .broker = {.what = what,
                                   .uid = q->uid,
                                   .priority = q->priority,
                                   .bytes = q->bytes,
                                   .released_bytes = q->released,
                                   .latency_s = latency_s,
                                   .lease = lease}};
  if (msg) hr__strlcpy(e.broker.message, msg, sizeof e.broker.message);
  hr__broker_emit(b, &e, q->name, device);
}

static void grant(hr_broker_t *b, hr__breq_t *q) {
  hr__bconn_t *c = hr__broker_conn(b, q->conn_id);
  double now = hr__now_mono();
  if (b->n_leases == b->cap_leases) {
    size_t cap = b->cap_leases ? b->cap_leases * 2 : 8;
    hr__blease_t *nl = realloc(b->leases, cap * sizeof *nl);
    if (!nl) return; /* tried again at the next tick */
    b->leases = nl, b->cap_leases = cap;
  }
  hr__blease_t *l = &b->leases[b->n_leases++];
  *l = (hr__blease_t){.id = ++b->next_id,
                      .conn_id = q->conn_id,
                      .pid = q->pid,
                      .uid = q->uid,
                      .res = q->res,
                      .bytes = q->bytes,
                      .expires = q->lease_s > 0 ? now + q->lease_s : 0};
  hr__strlcpy(l->name, q->name, sizeof l->name);
  memcpy(l->woke, q->slept, sizeof l->woke);
  b->res[q->res].leased += q->bytes;
  char line[300];
  snprintf(
      line, sizeof line,
      "{\"v\":1,\"op\":\"granted\",\"id\":%llu,\"lease\":%llu,\"device\":\"%s\",\"bytes\":%llu,"
      "\"released_bytes\":%llu,\"waited_s\":%.6f}",
      (unsigned long long)q->req_id, (unsigned long long)l->id, b->res[q->res].name,
      (unsigned long long)q->bytes, (unsigned long long)q->released, now - q->started);
  emit_request(b, q, HR_BROKER_EV_GRANTED, b->res[q->res].name, now - q->started, l->id, NULL);
  pthread_mutex_lock(&b->lock);
  hr__broker_count_grant_locked(b, now - q->started);
  b->counters.leases = b->n_leases;
  pthread_mutex_unlock(&b->lock);
  /* Recorded before answered: whoever hears the answer sees the counts. */
  if (c) hr__broker_send(b, c, line);
  pop(b);
}

static bool was_asked(const hr__breq_t *q, uint64_t id) {
  for (size_t i = 0; i < q->n_asked; i++)
    if (q->asked_conns[i] == id) return true;
  return false;
}

/* What the broker did with holder h for q, in words. */
static const char *why_not_text(const hr__breq_t *q, const hr__bconn_t *h, const char *dev) {
  if (was_asked(q, h->id)) return "asked to release";
  if (h->priority > q->priority) return "higher priority: not asked";
  if (q->uid != 0 && h->uid != q->uid) return "another user: not asked";
  if (hr__broker_releasable(h, dev) == 0) return "offers nothing here";
  return "not needed";
}

/* Refuses the head reservation, naming who holds what on its resource. */
static void refuse(hr_broker_t *b, hr__breq_t *q, const char *reason) {
  hr__bconn_t *c = hr__broker_conn(b, q->conn_id);
  const hr__bres_t *r = &b->res[q->res];
  char a[32], f[32], msg[256];
  uint64_t free_now = hr__broker_free(r);
  hr__buf_t o = {0}, words = {0};
  hr__buf_printf(&o,
                 "{\"v\":1,\"op\":\"refused\",\"id\":%llu,\"device\":\"%s\",\"bytes\":%llu,"
                 "\"free_bytes\":%llu,\"fits_bytes\":%llu,\"released_bytes\":%llu,\"reason\":",
                 (unsigned long long)q->req_id, r->name, (unsigned long long)q->bytes,
                 (unsigned long long)free_now, (unsigned long long)free_now,
                 (unsigned long long)q->released);
  hr__buf_json_str(&o, reason);
  hr__buf_puts(&o, ",\"holders\":[");
  bool first = true;
  for (size_t i = 0; i < b->n_conns; i++) {
    const hr__bconn_t *h = b->conns[i];
    if (!h->registered || h->closing) continue;
    const char *why = why_not_text(q, h, r->name);
    hr__buf_printf(&o, "%s{\"pid\":%d,\"name\":", first ? "" : ",", h->pid);
    hr__buf_json_str(&o, h->name);
    hr__buf_printf(
        &o, ",\"priority\":%d,\"held_bytes\":%llu,\"releasable_bytes\":%llu,\"why\":", h->priority,
        (unsigned long long)h->held[q->res], (unsigned long long)hr__broker_releasable(h, r->name));
    hr__buf_json_str(&o, why);
    hr__buf_puts(&o, "}");
    hr__buf_printf(&words, "%s%s (pid %d, priority %d, %s, %s)", first ? "" : ", ", h->name, h->pid,
                   h->priority, hr__size_text(a, sizeof a, h->held[q->res]), why);
    first = false;
  }
  hr__buf_puts(&o, "],\"leases\":[");
  for (size_t i = 0; i < b->n_leases; i++) {
    const hr__blease_t *l = &b->leases[i];
    if (l->res != q->res) continue;
    hr__buf_printf(&o, "%s{\"lease\":%llu,\"pid\":%d,\"name\":", o.s[o.len - 1] == '[' ? "" : ",",
                   (unsigned long long)l->id, l->pid);
    hr__buf_json_str(&o, l->name);
    hr__buf_printf(&o, ",\"bytes\":%llu}", (unsigned long long)l->bytes);
    hr__buf_printf(&words, "%slease %llu of %s (pid %d, %s)", first ? "" : ", ",
                   (unsigned long long)l->id, l->name, l->pid,
                   hr__size_text(a, sizeof a, l->bytes));
    first = false;
  }
  hr__buf_puts(&o, "]}");
  snprintf(msg, sizeof msg, "%s: %s asked, %s fits; held by %s", reason,
           hr__size_text(a, sizeof a, q->bytes), hr__size_text(f, sizeof f, free_now),
           words.s && !words.failed ? words.s : "nobody registered");
  emit_request(b, q, HR_BROKER_EV_REFUSED, r->name, hr__now_mono() - q->started, 0, msg);
  hr__broker_count(b, &b->counters.refused, 1);
  /* A server put to sleep for room that was not granted after all wakes,
   * before the asker hears the refusal: whoever hears it sees it awake. */
  for (size_t k = 0; k < b->n_adapters; k++)
    if (q->slept[k]) hr__adapter_wake(b, &b->adapters[k]);
  if (c && !o.failed) hr__broker_send(b, c, o.s);
  hr__buf_free(&o);
  hr__buf_free(&words);
  pop(b);
}

void hr__broker_reserve(hr_broker_t *b, hr__bconn_t *c, uint64_t req_id, const char *device,
                        uint64_t bytes, double timeout, double lease_s, int priority) {
  hr__breq_t *q = calloc(1, sizeof *q);
  if (!q) {
    hr__broker_send(b, c, "{\"v\":1,\"op\":\"error\",\"error\":\"out of memory\"}");
    return;
  }
  double now = hr__now_mono();
  *q = (hr__breq_t){.conn_id = c->id,
                    .req_id = req_id,
                    .res = hr__broker_res_find(b, device),
                    .priority = priority,
                    .pid = c->registered ? c->pid : c->peer_pid,
                    .uid = c->uid,
                    .bytes = bytes,
                    .lease_s = lease_s,
                    .started = now,
                    .deadline = now + timeout,
                    .state = HR__RES_PLAN};
  hr__strlcpy(q->name, c->registered ? c->name : "", sizeof q->name);
  if (!*q->name) snprintf(q->name, sizeof q->name, "pid %d", c->peer_pid);
  hr__breq_t **tail = &b->queue;
  while (*tail) tail = &(*tail)->next;
  *tail = q;
  emit_request(b, q, HR_BROKER_EV_RESERVE, device, 0, 0, NULL);
  hr__broker_count(b, &b->counters.reservations, 1);
}

/* True when no client asked for q still owes an answer. */
static bool all_answered(hr_broker_t *b, const hr__breq_t *q) {
  for (size_t i = 0; i < q->n_asked; i++) {
    hr__bconn_t *c = hr__broker_conn(b, q->asked_conns[i]);
    if (c && c->ask_id) return false;
  }
  return true;
}

/* Moves the head reservation on; returns true when it ended (granted or
 * refused), so the next one may start at once. */
static bool step(hr_broker_t *b, hr__breq_t *q) {
  double now = hr__now_mono();
  hr__bres_t *r = &b->res[q->res];
  if (!hr__broker_conn(b, q->conn_id)) return pop(b), true; /* the asker left */
  if (q->state == HR__RES_PLAN && b->n_adapters) hr__adapter_refresh(b);
  if (q->state != HR__RES_ASKED) {
    hr__broker_read(b);
    if (hr__broker_free(r) >= q->bytes) return grant(b, q), true;
  }
  if (now >= q->deadline) return refuse(b, q, "timed out waiting for room"), true;
  if (q->state == HR__RES_PLAN) {
    uint64_t need = q->bytes - hr__broker_free(r);
    if (hr__broker_plan(b, q, q->res, need, false) == 0)
      return refuse(b, q,
                    q->n_asked || q->released ? "still short after every release asked"
                                              : "releasing all it may ask for would not make room"),
             true;
    q->state = HR__RES_ASKED;
    q->phase_deadline = now + b->request_timeout;
  }
  if (q->state == HR__RES_ASKED && (all_answered(b, q) || now >= q->phase_deadline)) {
    q->state = HR__RES_VISIBLE;
    q->phase_deadline = now + b->patience;
  }
  if (q->state == HR__RES_VISIBLE && now >= q->phase_deadline) q->state = HR__RES_PLAN;
  return false;
}

void hr__broker_answer(hr_broker_t *b, hr__bconn_t *c, uint64_t id, uint64_t bytes) {
  if (!c->ask_id || c->ask_id != id) return; /* late, after its deadline: already counted */
  hr_watch_event_t e = {.broker.what = HR_BROKER_EV_ANSWER,
                        .pid = c->pid,
                        .broker.uid = c->uid,
                        .broker.priority = c->priority,
                        .broker.bytes = c->ask_bytes,
                        .broker.released_bytes = bytes,
                        .broker.latency_s = hr__now_mono() - c->ask_at};
  c->ask_id = 0;
  hr__broker_emit(b, &e, c->name, c->ask_device);
  pthread_mutex_lock(&b->lock);
  b->counters.answers++;
  hr__broker_count_released_locked(b, c->name, bytes);
  pthread_mutex_unlock(&b->lock);
  if (b->queue && was_asked(b->queue, c->id)) b->queue->released += bytes;
  b->last_read = 0; /* read again: what was released may show now */
}

int hr__broker_unreserve(hr_broker_t *b, hr__bconn_t *c, uint64_t lease, char *err, size_t n) {
  char line[200];
  for (size_t i = 0; i < b->n_leases; i++) {
    hr__blease_t *l = &b->leases[i];
    if (l->id != lease) continue;
    if (l->conn_id != c->id && c->uid != 0 && c->uid != l->uid)
      return hr__err(err, n, HR_EPERM, "unreserve: lease %llu belongs to uid %u",
                     (unsigned long long)lease, l->uid);
    end_lease(b, i, "released");
    snprintf(line, sizeof line, "{\"v\":1,\"op\":\"unreserved\",\"lease\":%llu}",
             (unsigned long long)lease);
    hr__broker_send(b, c, line);
    return 0;
  }
  snprintf(line, sizeof line,
           "{\"v\":1,\"op\":\"error\",\"lease\":%llu,\"error\":\"no such lease\"}",
           (unsigned long long)lease);
  hr__broker_send(b, c, line);
  return 0;
}

void hr__broker_conn_gone(hr_broker_t *b, hr__bconn_t *c) {
  for (size_t i = b->n_leases; i-- > 0;)
    if (b->leases[i].conn_id == c->id) end_lease(b, i, "its holder closed the connection");
  for (hr__breq_t **p = &b->queue; *p;) {
    if ((*p)->conn_id == c->id && *p != b->queue) {
      hr__breq_t *q = *p;
      *p = q->next;
      free(q);
    } else
      p = &(*p)->next;
  }
  if (c->registered) {
    hr_watch_event_t e = {.broker.what = HR_BROKER_EV_GONE,
                          .pid = c->pid,
                          .broker.uid = c->uid,
                          .broker.priority = c->priority};
    hr__broker_emit(b, &e, c->name, NULL);
    c->registered = false;
  }
  b->last_read = 0;
  hr__broker_count(b, &b->counters.clients, 0);
}

/* At a warning or critical use, asks for what brings the resource back
 * under the warning line; once per cooldown per resource. */
static void pressure(hr_broker_t *b) {
  double now = hr__now_mono();
  if (now - b->last_pressure < 1) return;
  b->last_pressure = now;
  if (b->n_adapters) hr__adapter_refresh(b);
  hr__broker_read(b);
  for (size_t i = 0; i < b->n_res; i++) {
    hr__bres_t *r = &b->res[i];
    uint64_t cap = r->budget != HR_UNLIMITED ? r->budget : r->capacity;
    if (cap == 0 || cap == HR_UNKNOWN || (r->pressure_at && now - r->pressure_at < b->cooldown))
      continue;
    double used = 1 - (double)hr__broker_free(r) / (double)cap;
    double warn = b->warn[i > 0], crit = b->critical[i > 0];
    if (used < warn) continue;
    uint64_t need = (uint64_t)((used - warn) * (double)cap) + 1;
    size_t asked = hr__broker_plan(b, NULL, (int)i, need, used < crit);
    /* Nothing to ask is no event and starts no cooldown: a client that
     * registers next is asked at the next look. */
    if (asked == 0) continue;
    r->pressure_at = now;
    hr_watch_event_t e = {.broker.what = HR_BROKER_EV_PRESSURE, .broker.bytes = need};
    snprintf(e.broker.message, sizeof e.broker.message,
             "%s use %.1f%% (%s): %zu asked to release%s", r->name, used * 100,
             used >= crit ? "critical" : "warning", asked, used < crit ? " their caches" : "");
    hr__broker_emit(b, &e, NULL, r->name);
    hr__broker_count(b, &b->counters.pressure_asks, asked);
  }
}

void hr__broker_tick(hr_broker_t *b) {
  double now = hr__now_mono();
  for (size_t i = 0; i < b->n_conns; i++) {
    hr__bconn_t *c = b->conns[i];
    if (!c->ask_id || now < c->ask_deadline) continue;
    hr_watch_event_t e = {.broker.what = HR_BROKER_EV_NO_ANSWER,
                          .pid = c->pid,
                          .broker.uid = c->uid,
                          .broker.priority = c->priority,
                          .broker.bytes = c->ask_bytes,
                          .broker.latency_s = now - c->ask_at};
    snprintf(e.broker.message, sizeof e.broker.message, "no answer within %gs (broker_timeout)",
             b->request_timeout);
    c->ask_id = 0;
    hr__broker_emit(b, &e, c->name, c->ask_device);
    hr__broker_count(b, &b->counters.no_answers, 1);
  }
  for (size_t i = b->n_leases; i-- > 0;)
    if (b->leases[i].expires > 0 && now >= b->leases[i].expires) end_lease(b, i, "its time is up");
  while (b->queue && step(b, b->queue)) {
  }
  if (!b->queue) pressure(b);
}

double hr__broker_next_deadline(hr_broker_t *b) {
  double now = hr__now_mono(), t = b->last_pressure + 1;
  const hr__breq_t *q = b->queue;
  if (q)
    t = HR_MIN(t,
               q->state == HR__RES_VISIBLE ? now + 0.01 : HR_MIN(q->deadline, q->phase_deadline));
  if (q && q->state == HR__RES_PLAN) t = now;
  for (size_t i = 0; i < b->n_conns; i++)
    if (b->conns[i]->ask_id) t = HR_MIN(t, b->conns[i]->ask_deadline);
  for (size_t i = 0; i < b->n_leases; i++)
    if (b->leases[i].expires > 0) t = HR_MIN(t, b->leases[i].expires);
  return t;
}
