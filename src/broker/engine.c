/* The engine: reservations, asks and answers as state, moved on by what
 * clients say, by adapter results and by the clock (the broker's, which
 * tests replace), never by waiting.
 *
 * A reservation is queued in arrival order. Each pass (hr__broker_tick)
 * grants every one that fits, unless a reservation of higher priority on
 * the same resource waits before it, and refuses those past their own
 * timeout, queued or not. The one waiting reservation of highest priority
 * (the oldest among equals) is worked on: what it still needs, less what
 * its asks in flight and its answers of the last `patience` seconds promise,
 * is handed to the planner, whose asks go out at once. An answer of 0, an
 * error or no answer by broker_timeout makes the next pass ask the next
 * candidate at once. Bytes answered for the reservation worked on are kept
 * for it while they settle, so that no other reservation of its priority
 * takes them. When it ends, granted or refused, every client it asked is
 * told (cancel), so what was set up for it and not yet done is withdrawn.
 * Pressure asks (at a warning or critical use, once per cooldown) look at
 * use without the leases not yet used: a grant alone is no pressure. */
#include "broker/broker_int.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ---- the queue ---------------------------------------------------------------- */

static void unlink_req(hr_broker_t *b, hr__breq_t *q) {
  if (q->prev)
    q->prev->next = q->next;
  else
    b->queue = q->next;
  if (q->next)
    q->next->prev = q->prev;
  else
    b->queue_tail = q->prev;
  b->n_queue--;
  hr__bconn_t *c = hr__broker_conn(b, q->conn_id);
  if (c && c->n_queued) c->n_queued--;
  free(q);
}

static hr__breq_t *find_req(hr_broker_t *b, uint64_t seq) {
  for (hr__breq_t *q = b->queue; q && seq; q = q->next)
    if (q->seq == seq) return q;
  return NULL;
}

/* The event of reservation q that came to `what`. */
static void emit_request(hr_broker_t *b, const hr__breq_t *q, hr_broker_event_kind_t what,
                         double latency_s, uint64_t lease, const char *msg) {
  hr_watch_event_t e = {.pid = q->pid,
                        .broker = {.what = what,
                                   .uid = q->uid,
                                   .priority = q->priority,
                                   .bytes = q->bytes,
                                   .released_bytes = q->released,
                                   .latency_s = latency_s,
                                   .lease = lease}};
  if (msg) hr__strlcpy(e.broker.message, msg, sizeof e.broker.message);
  hr__broker_emit(b, &e, q->name, b->res[q->res].name);
}

/* Tells every client q asked that it is no longer wanted: the ask in flight
 * answers for nobody now, and what was set up for it is withdrawn. */
static void withdraw(hr_broker_t *b, hr__breq_t *q, const char *why) {
  for (size_t i = 0; i < q->n_asked; i++) {
    const hr__basked_t *a = &q->asked[i];
    hr__bconn_t *c = a->adapter ? NULL : hr__broker_conn(b, a->who);
    if (!c) continue; /* an adapter's HTTP call cannot be taken back */
    hr__bm_cancel_t m = {.id = a->ask_id};
    snprintf(m.reason, sizeof m.reason, "the reservation it was for was %s", why);
    const char *reason = m.reason;
    hr__broker_send(b, c, HR__BOP_CANCEL, &m);
    if (c->ask.id == a->ask_id) c->ask.req = 0;
    if (a->done) continue;
    hr_watch_event_t e = {.broker.what = HR_BROKER_EV_CANCEL,
                          .pid = c->pid,
                          .broker.uid = c->uid,
                          .broker.priority = c->priority,
                          .broker.bytes = a->bytes};
    snprintf(e.broker.message, sizeof e.broker.message, "withdrawn: %.200s", reason);
    hr__broker_emit(b, &e, c->name, b->res[q->res].name);
  }
}

static void grant(hr_broker_t *b, hr__breq_t *q) {
  hr__bconn_t *c = hr__broker_conn(b, q->conn_id);
  hr__blease_t *l = hr__broker_lease_add(b, q);
  if (!l) return; /* tried again at the next pass */
  double waited = hr__broker_now(b) - q->started;
  hr__bm_granted_t m = {.id = q->req_id,
                        .lease = l->id,
                        .bytes = q->bytes,
                        .released_bytes = q->released,
                        .waited_s = waited};
  hr__strlcpy(m.device, b->res[q->res].name, sizeof m.device);
  emit_request(b, q, HR_BROKER_EV_GRANTED, waited, l->id, NULL);
  pthread_mutex_lock(&b->lock);
  hr__broker_count_grant_locked(b, waited);
  b->counters.leases = b->n_leases;
  pthread_mutex_unlock(&b->lock);
  withdraw(b, q, "granted");
  /* Recorded before answered: whoever hears the answer sees the counts. */
  if (c) hr__broker_send(b, c, HR__BOP_GRANTED, &m);
  unlink_req(b, q);
}

/* ---- refusals ------------------------------------------------------------------ */

static bool asked_conn(const hr__breq_t *q, uint64_t id) {
  for (size_t i = 0; i < q->n_asked; i++)
    if (!q->asked[i].adapter && q->asked[i].who == id) return true;
  return false;
}

/* What the broker did with holder h for q, in words. */
static const char *why_text(const hr__breq_t *q, const hr__bconn_t *h, const char *dev) {
  if (asked_conn(q, h->id)) return "asked to release";
  if (h->priority > q->priority) return "higher priority: not asked";
  if (q->uid != 0 && h->uid != q->uid) return "another user: not asked";
  if (hr__broker_releasable(h, dev) == 0) return "offers nothing here";
  return "not needed";
}

static int holder_cmp(const void *x, const void *y) {
  const hr__bholder_t *a = x, *b = y;
  return a->held_bytes != b->held_bytes ? (a->held_bytes > b->held_bytes ? -1 : 1) : 0;
}

static int lease_cmp(const void *x, const void *y) {
  const hr__blease_ref_t *a = x, *b = y;
  return a->bytes != b->bytes ? (a->bytes > b->bytes ? -1 : 1) : 0;
}

/* Adds x (of `size` bytes) to the list `arr` of at most `max`, kept in
 * cmp's order: when the list is full, x takes the last place if it comes
 * before it. */
static void keep_first(void *arr, size_t *n, size_t max, size_t size, const void *x,
                       int (*cmp)(const void *, const void *)) {
  char *a = arr;
  if (*n < max)
    memcpy(a + (*n)++ * size, x, size);
  else if (cmp(x, a + (*n - 1) * size) < 0)
    memcpy(a + (*n - 1) * size, x, size);
  qsort(a, *n, size, cmp);
}

/* The holders on q's resource, those holding most first, the first
 * HR_BROKER_REFUSAL_LIST of them (the total counts all); the same for the
 * leases. Written as words too, for the event. */
static void refusal_lists(hr_broker_t *b, const hr__breq_t *q, hr__bm_refused_t *m) {
  const hr__bres_t *r = &b->res[q->res];
  for (size_t i = 0; i < b->n_conns; i++) {
    const hr__bconn_t *h = b->conns[i];
    if (!h->registered || h->closing) continue;
    hr__bholder_t x = {.pid = h->pid,
                       .priority = h->priority,
                       .held_bytes = h->held[q->res],
                       .releasable_bytes = hr__broker_releasable(h, r->name),
                       .busy = h->busy || h->strike_at > 0};
    hr__strlcpy(x.name, h->name, sizeof x.name);
    hr__strlcpy(x.why, why_text(q, h, r->name), sizeof x.why);
    m->holders_total++;
    keep_first(m->holders, &m->n_holders, HR_BROKER_REFUSAL_LIST, sizeof x, &x, holder_cmp);
  }
  for (size_t i = 0; i < b->n_leases; i++) {
    const hr__blease_t *l = &b->leases[i];
    if (l->res != q->res) continue;
    hr__blease_ref_t x = {.lease = l->id, .pid = l->pid, .bytes = l->bytes};
    hr__strlcpy(x.name, l->name, sizeof x.name);
    m->leases_total++;
    keep_first(m->leases, &m->n_leases, HR_BROKER_REFUSAL_LIST, sizeof x, &x, lease_cmp);
  }
}

/* The refusal in words for its event: the reason and who holds what. */
static void refusal_words(const hr__bm_refused_t *m, char *msg, size_t n) {
  char a[32], f[32];
  int len =
      snprintf(msg, n, "%s: %s asked, %s fits; held by ", m->reason,
               hr__size_text(a, sizeof a, m->bytes), hr__size_text(f, sizeof f, m->fits_bytes));
  for (size_t i = 0; i < m->n_holders && len > 0 && (size_t)len < n; i++)
    len += snprintf(msg + len, n - (size_t)len, "%s%s (pid %lld, priority %lld, %s, %s)",
                    i ? ", " : "", m->holders[i].name, (long long)m->holders[i].pid,
                    (long long)m->holders[i].priority,
                    hr__size_text(a, sizeof a, m->holders[i].held_bytes), m->holders[i].why);
  for (size_t i = 0; i < m->n_leases && len > 0 && (size_t)len < n; i++)
    len += snprintf(msg + len, n - (size_t)len, "%slease %llu of %s (pid %lld, %s)",
                    i || m->n_holders ? ", " : "", (unsigned long long)m->leases[i].lease,
                    m->leases[i].name, (long long)m->leases[i].pid,
                    hr__size_text(a, sizeof a, m->leases[i].bytes));
  if (!m->n_holders && !m->n_leases && len > 0 && (size_t)len < n)
    snprintf(msg + len, n - (size_t)len, "nobody registered");
}

static void refuse(hr_broker_t *b, hr__breq_t *q, const char *reason) {
  hr__bconn_t *c = hr__broker_conn(b, q->conn_id);
  const hr__bres_t *r = &b->res[q->res];
  hr__bm_refused_t *m = calloc(1, sizeof *m);
  char msg[HR_BROKER_TEXT_MAX];
  if (!m) return; /* tried again at the next pass */
  uint64_t free_now = hr__broker_free(r);
  *m = (hr__bm_refused_t){.id = q->req_id,
                          .bytes = q->bytes,
                          .free_bytes = free_now,
                          .fits_bytes = free_now,
                          .released_bytes = q->released};
  hr__strlcpy(m->device, r->name, sizeof m->device);
  hr__strlcpy(m->reason, reason, sizeof m->reason);
  refusal_lists(b, q, m);
  refusal_words(m, msg, sizeof msg);
  emit_request(b, q, HR_BROKER_EV_REFUSED, hr__broker_now(b) - q->started, 0, msg);
  hr__broker_count(b, &b->counters.refused, 1);
  /* A server put to sleep for room that was not granted after all is
   * woken: the call starts before the refusal is sent and ends within
   * broker_timeout, beside it. */
  for (size_t k = 0; k < b->n_adapters; k++)
    if (q->slept[k]) hr__adapter_wake(b, &b->adapters[k]);
  withdraw(b, q, "refused");
  if (c) hr__broker_send(b, c, HR__BOP_REFUSED, m);
  free(m);
  unlink_req(b, q);
}

/* ---- reservations in ---------------------------------------------------------- */

/* A reservation refused at once by the per-client bounds. */
static void refuse_bound(hr_broker_t *b, hr__bconn_t *c, const hr__bm_reserve_t *m, int ri,
                         const char *why) {
  hr__bm_refused_t *r = calloc(1, sizeof *r);
  if (!r) return;
  *r = (hr__bm_refused_t){.id = m->id, .bytes = m->bytes};
  hr__strlcpy(r->device, b->res[ri].name, sizeof r->device);
  hr__strlcpy(r->reason, why, sizeof r->reason);
  hr_watch_event_t e = {.pid = c->registered ? c->pid : c->peer_pid,
                        .broker = {.what = HR_BROKER_EV_REFUSED, .uid = c->uid, .bytes = m->bytes}};
  hr__strlcpy(e.broker.message, why, sizeof e.broker.message);
  hr__broker_emit(b, &e, c->name, b->res[ri].name);
  hr__broker_count(b, &b->counters.refused, 1);
  hr__broker_send(b, c, HR__BOP_REFUSED, r);
  free(r);
}

void hr__broker_reserve(hr_broker_t *b, hr__bconn_t *c, const hr__bm_reserve_t *m,
                        bool priority_given) {
  int ri = hr__broker_res_find(b, m->device);
  char why[HR_BROKER_TEXT_MAX];
  hr__broker_count(b, &b->counters.reservations, 1);
  if (c->n_leases >= b->max_leases || c->n_queued >= b->max_queued) {
    bool leases = c->n_leases >= b->max_leases;
    snprintf(why, sizeof why, "this connection already %s %zu %s (%s)", leases ? "holds" : "has",
             leases ? c->n_leases : c->n_queued, leases ? "leases" : "reservations waiting",
             leases ? "broker_max_leases" : "broker_max_queued");
    refuse_bound(b, c, m, ri, why);
    return;
  }
  hr__breq_t *q = calloc(1, sizeof *q);
  if (!q) {
    hr__bm_error_t e = {.error = "out of memory", .id = m->id};
    hr__broker_send(b, c, HR__BOP_ERROR, &e);
    return;
  }
  double now = hr__broker_now(b);
  *q = (hr__breq_t){.seq = ++b->next_id,
                    .conn_id = c->id,
                    .req_id = m->id,
                    .res = ri,
                    .priority = (int)(priority_given  ? m->priority
                                      : c->registered ? c->priority
                                                      : 0),
                    .pid = c->registered ? c->pid : c->peer_pid,
                    .peer_pid = c->peer_pid,
                    .uid = c->uid,
                    .bytes = m->bytes,
                    .lease_s = m->lease,
                    .started = now,
                    .deadline = now + m->timeout,
                    .prev = b->queue_tail};
  hr__strlcpy(q->name, c->registered ? c->name : "", sizeof q->name);
  if (!*q->name) snprintf(q->name, sizeof q->name, "pid %d", c->peer_pid);
  if (b->queue_tail)
    b->queue_tail->next = q;
  else
    b->queue = q;
  b->queue_tail = q;
  b->n_queue++;
  c->n_queued++;
  emit_request(b, q, HR_BROKER_EV_RESERVE, 0, 0, NULL);
}

/* ---- asks ------------------------------------------------------------------- */

static bool striking(const hr_broker_t *b, double strike_at) {
  return strike_at > 0 && hr__broker_now(b) - strike_at < HR_BROKER_STRIKE_S;
}

/* True when q may not ask `who` again: an ask to it is in flight, it
 * answered with nothing, or it does not say what it frees. One that gave
 * what it was asked may be asked for more once its answer settled, if it
 * still offers some. */
static bool asked_before(const hr__breq_t *q, uint64_t who, bool adapter) {
  for (size_t i = 0; q && i < q->n_asked; i++) {
    const hr__basked_t *a = &q->asked[i];
    if (a->who == who && a->adapter == adapter && (!a->done || a->failed || a->unknown))
      return true;
  }
  return false;
}

/* The candidates on resource ri for q (NULL: pressure). */
static size_t candidates(hr_broker_t *b, const hr__breq_t *q, int ri, hr__pcand_t *cs) {
  const char *dev = b->res[ri].name;
  size_t n = 0;
  for (size_t i = 0; i < b->n_conns; i++) {
    const hr__bconn_t *c = b->conns[i];
    if (!c->registered || c->closing) continue;
    bool busy = c->busy || striking(b, c->strike_at), asked = asked_before(q, c->id, false);
    for (size_t k = 0; k < c->n_items; k++) {
      const hr__bitem_t *x = &c->items[k];
      if (strcmp(x->device, dev) != 0) continue;
      cs[n++] = (hr__pcand_t){.who = c->id,
                              .busy = busy,
                              .cache = strcmp(x->kind, "cache") == 0,
                              .asked = asked,
                              .pending = c->ask.id != 0,
                              .priority = c->priority,
                              .uid = c->uid,
                              .idle_s = x->idle_s,
                              .bytes = x->bytes};
    }
  }
  for (size_t i = 0; i < b->n_adapters; i++) {
    const hr__badapter_t *a = &b->adapters[i];
    if (strcmp(a->device, dev) != 0 || a->asleep) continue;
    cs[n++] = (hr__pcand_t){.who = i,
                            .adapter = true,
                            .busy = a->busy || striking(b, a->strike_at),
                            .unknown = !a->ops->sized,
                            .sleeps = a->ops->sleeps,
                            .asked = asked_before(q, i, true),
                            .pending = hr__adapter_in_flight(a),
                            .priority = b->adapter_priority,
                            .uid = q ? q->uid : 0, /* configured by the broker's owner */
                            .bytes = a->ops->sized ? a->used : 0};
  }
  return n;
}

static void ask_conn(hr_broker_t *b, hr__bconn_t *c, int ri, uint64_t bytes, uint64_t req) {
  double now = hr__broker_now(b);
  c->ask = (hr__bask_t){.id = ++b->next_id,
                        .bytes = bytes,
                        .req = req,
                        .at = now,
                        .deadline = now + b->request_timeout,
                        .res = ri};
  hr__bm_release_t m = {.id = c->ask.id, .bytes = bytes};
  hr__strlcpy(m.device, b->res[ri].name, sizeof m.device);
  hr__broker_send(b, c, HR__BOP_RELEASE, &m);
  hr_watch_event_t e = {.broker.what = HR_BROKER_EV_ASK,
                        .pid = c->pid,
                        .broker.uid = c->uid,
                        .broker.priority = c->priority,
                        .broker.bytes = bytes};
  hr__broker_emit(b, &e, c->name, m.device);
  hr__broker_count(b, &b->counters.asks, 1);
}

/* Sends one ask of the plan; records it in q. Returns false when it could
 * not go out (the adapter is at another job). */
static bool send_ask(hr_broker_t *b, hr__breq_t *q, int ri, const hr__pask_t *p) {
  hr__basked_t rec = {
      .who = p->who, .bytes = p->bytes, .adapter = p->adapter, .unknown = p->unknown};
  if (p->adapter) {
    rec.ask_id = ++b->next_id;
    if (!hr__adapter_release(b, &b->adapters[p->who], p->bytes, rec.ask_id, q ? q->seq : 0))
      return false;
  } else {
    hr__bconn_t *c = hr__broker_conn(b, p->who);
    if (!c) return false;
    ask_conn(b, c, ri, p->bytes, q ? q->seq : 0);
    rec.ask_id = c->ask.id;
  }
  if (q && q->n_asked < HR_BROKER_MAX_ASKED) q->asked[q->n_asked++] = rec;
  return true;
}

/* Plans for `need` more bytes on ri for q (NULL: pressure) and sends the
 * asks; returns how many went out. */
static size_t ask_for(hr_broker_t *b, hr__breq_t *q, int ri, uint64_t need, bool caches_only,
                      bool *short_all) {
  hr__pcand_t *cs = malloc((b->n_conns * HR_BROKER_MAX_ITEMS + HR_BROKER_MAX_ADAPTER) * sizeof *cs);
  hr__pask_t asks[HR_BROKER_MAX_ASKED];
  size_t sent = 0;
  *short_all = false;
  if (!cs) return 0;
  size_t n = candidates(b, q, ri, cs);
  hr__pwant_t w = {.need = need,
                   .priority = q ? q->priority : 0,
                   .uid = q ? q->uid : 0,
                   .pressure = !q,
                   .caches_only = caches_only};
  size_t room = q ? HR_BROKER_MAX_ASKED - q->n_asked : HR_BROKER_MAX_ASKED;
  size_t k = hr__plan(cs, n, &w, asks, room, short_all);
  for (size_t i = 0; i < k; i++) sent += send_ask(b, q, ri, &asks[i]);
  free(cs);
  return sent;
}

/* ---- answers ------------------------------------------------------------------ */

/* The record of ask `ask_id` in reservation `req`, or NULL when that
 * reservation ended. */
static hr__basked_t *asked_rec(hr_broker_t *b, uint64_t req, uint64_t ask_id, hr__breq_t **qout) {
  hr__breq_t *q = find_req(b, req);
  for (size_t i = 0; q && i < q->n_asked; i++)
    if (q->asked[i].ask_id == ask_id) {
      *qout = q;
      return &q->asked[i];
    }
  return NULL;
}

/* An ask of a reservation came back: got bytes, or failed. */
static void settle(hr_broker_t *b, hr__breq_t *q, hr__basked_t *a, uint64_t got, bool failed) {
  a->done = true, a->got = got, a->failed = failed;
  q->released += got;
  if (failed)
    q->replan = true; /* the next candidate is asked at once */
  else
    q->settle_until = hr__broker_now(b) + b->patience;
  b->last_read = 0; /* read again: what was released may show now */
}

void hr__broker_answer(hr_broker_t *b, hr__bconn_t *c, uint64_t id, uint64_t bytes,
                       const char *error) {
  if (!c->ask.id || c->ask.id != id) return; /* late, after its deadline: already counted */
  double now = hr__broker_now(b);
  hr_watch_event_t e = {.broker.what = HR_BROKER_EV_ANSWER,
                        .pid = c->pid,
                        .broker.uid = c->uid,
                        .broker.priority = c->priority,
                        .broker.bytes = c->ask.bytes,
                        .broker.released_bytes = bytes,
                        .broker.latency_s = now - c->ask.at};
  if (*error) snprintf(e.broker.message, sizeof e.broker.message, "release failed: %s", error);
  hr__broker_emit(b, &e, c->name, b->res[c->ask.res].name);
  pthread_mutex_lock(&b->lock);
  b->counters.answers++;
  hr__broker_count_released_locked(b, c->name, bytes);
  pthread_mutex_unlock(&b->lock);
  if (*error) hr__strlcpy(c->last_error, error, sizeof c->last_error);
  c->strike_at = bytes == 0 || *error ? now : 0;
  hr__breq_t *q = NULL;
  hr__basked_t *a = asked_rec(b, c->ask.req, id, &q);
  c->ask.id = 0;
  if (a) settle(b, q, a, bytes, bytes == 0);
  b->last_read = 0;
}

void hr__broker_adapter_done(hr_broker_t *b, hr__badapter_t *a, const hr__bjob_t *j, bool ok) {
  hr__breq_t *q = NULL;
  hr__basked_t *rec = asked_rec(b, j->req, j->ask_id, &q);
  bool nothing = !ok || (a->ops->sized && j->got == 0);
  if (nothing) a->strike_at = hr__broker_now(b);
  if (ok && !nothing) a->strike_at = 0;
  if (!rec) {
    /* Its reservation ended while it worked: a server put to sleep for it
     * has nobody to wake it later, so it wakes now. */
    if (ok && a->ops->sleeps && j->req) hr__adapter_wake(b, a);
    return;
  }
  if (ok && a->ops->sleeps) q->slept[a - b->adapters] = 1;
  settle(b, q, rec, j->got, nothing);
  b->last_read = 0;
}

/* Asks past their deadline count as answered with nothing. */
static void time_out_asks(hr_broker_t *b, double now) {
  for (size_t i = 0; i < b->n_conns; i++) {
    hr__bconn_t *c = b->conns[i];
    if (!c->ask.id || now < c->ask.deadline) continue;
    hr_watch_event_t e = {.broker.what = HR_BROKER_EV_NO_ANSWER,
                          .pid = c->pid,
                          .broker.uid = c->uid,
                          .broker.priority = c->priority,
                          .broker.bytes = c->ask.bytes,
                          .broker.latency_s = now - c->ask.at};
    snprintf(e.broker.message, sizeof e.broker.message, "no answer within %gs (broker_timeout)",
             b->request_timeout);
    hr__broker_emit(b, &e, c->name, b->res[c->ask.res].name);
    hr__broker_count(b, &b->counters.no_answers, 1);
    c->strike_at = now;
    hr__breq_t *q = NULL;
    hr__basked_t *a = asked_rec(b, c->ask.req, c->ask.id, &q);
    c->ask.id = 0;
    if (a) settle(b, q, a, 0, true);
  }
}

/* ---- the pass ------------------------------------------------------------------- */

/* What q's asks still promise: those in flight, and while its answers
 * settle, what they said came back (an adapter that does not say: what it
 * was asked). */
static uint64_t promised(const hr__breq_t *q, double now) {
  uint64_t sum = 0;
  for (size_t i = 0; i < q->n_asked; i++) {
    const hr__basked_t *a = &q->asked[i];
    if (!a->done)
      sum += a->bytes;
    else if (!a->failed && now < q->settle_until)
      sum += a->unknown ? a->bytes : a->got;
  }
  return sum;
}

static bool in_flight(const hr__breq_t *q) {
  for (size_t i = 0; i < q->n_asked; i++)
    if (!q->asked[i].done) return true;
  return false;
}

/* Bytes answered for reservations still settling, by resource. */
static void settling(const hr_broker_t *b, double now, uint64_t *held) {
  for (const hr__breq_t *q = b->queue; q; q = q->next)
    if (now < q->settle_until) held[q->res] += q->released;
}

/* What q gets at once: what is free, less what settles for others. */
static uint64_t avail_for(hr_broker_t *b, const hr__breq_t *q, const uint64_t *held, double now) {
  uint64_t others = held[q->res] - (now < q->settle_until ? q->released : 0);
  uint64_t f = hr__broker_free(&b->res[q->res]);
  return f > others ? f - others : 0;
}

/* Asks for what q still misses. While its asks are in flight or their
 * answers settle, it waits for them (a small drift of what is free is no
 * reason to unload more), unless one failed: then the next candidates are
 * asked at once, for what the others do not cover. */
static void work_on(hr_broker_t *b, hr__breq_t *q, uint64_t avail, double now) {
  uint64_t missing = q->bytes > avail ? q->bytes - avail : 0, prom = promised(q, now);
  bool waiting = in_flight(q) || now < q->settle_until;
  if ((waiting && !q->replan) || missing <= prom) return;
  q->replan = false;
  bool short_all = false;
  if (q->n_asked < HR_BROKER_MAX_ASKED && ask_for(b, q, q->res, missing - prom, false, &short_all))
    return;
  if (in_flight(q) || now < q->settle_until) return;
  refuse(b, q,
         q->n_asked  ? "still short after every release asked"
         : short_all ? "releasing all it may ask for would not make room"
                     : "nobody it may ask offers anything here");
}

static void serve(hr_broker_t *b, double now) {
  uint64_t held[HR_BROKER_MAX_RES] = {0};
  int waiting[HR_BROKER_MAX_RES];
  hr__breq_t *work = NULL;
  for (size_t i = 0; i < HR_BROKER_MAX_RES; i++) waiting[i] = INT_MIN;
  hr__broker_read(b);
  settling(b, now, held);
  for (hr__breq_t *q = b->queue, *next; q; q = next) {
    next = q->next;
    if (!hr__broker_conn(b, q->conn_id)) { /* the asker left */
      withdraw(b, q, "given up");
      unlink_req(b, q);
    } else if (q->priority >= waiting[q->res] && avail_for(b, q, held, now) >= q->bytes) {
      if (!q->fit_at) q->fit_at = now;
      if (in_flight(q) && now - q->fit_at < HR_BROKER_GRACE_S) continue;
      held[q->res] -= now < q->settle_until ? q->released : 0;
      grant(b, q);
    } else if (now >= q->deadline)
      refuse(b, q, "timed out waiting for room");
    else {
      waiting[q->res] = HR_MAX(waiting[q->res], q->priority);
      if (!work || q->priority > work->priority) work = q;
    }
  }
  if (work) work_on(b, work, avail_for(b, work, held, now), now);
}

/* At a warning or critical use, asks for what brings the resource back
 * under the warning line; once per cooldown per resource, and not on a
 * resource a reservation is waiting for (it asks for itself). */
static void pressure(hr_broker_t *b, double now) {
  if (now - b->last_pressure < 1) return;
  b->last_pressure = now;
  hr__broker_read(b);
  for (size_t i = 0; i < b->n_res; i++) {
    hr__bres_t *r = &b->res[i];
    uint64_t cap = r->budget != HR_UNLIMITED ? r->budget : r->capacity;
    bool queued = false;
    for (const hr__breq_t *q = b->queue; q && !queued; q = q->next) queued = q->res == (int)i;
    if (queued || cap == 0 || cap == HR_UNKNOWN ||
        (r->pressure_at && now - r->pressure_at < b->cooldown))
      continue;
    double used = hr__broker_pressure_use(r), warn = b->warn[i > 0], crit = b->critical[i > 0];
    if (used < warn) continue;
    uint64_t need = (uint64_t)((used - warn) * (double)cap) + 1;
    bool short_all;
    size_t asked = ask_for(b, NULL, (int)i, need, used < crit, &short_all);
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
  double now = hr__broker_now(b);
  time_out_asks(b, now);
  for (size_t i = b->n_leases; i-- > 0;)
    if (b->leases[i].expires > 0 && now >= b->leases[i].expires)
      hr__broker_lease_end(b, i, "its time is up");
  hr__adapter_tick(b);
  serve(b, now);
  pressure(b, now);
}

double hr__broker_next_deadline(hr_broker_t *b) {
  double now = hr__broker_now(b), t = b->last_pressure + 1;
  /* Released memory shows as free with no message to say so: while a
   * reservation waits, the resources are read every 20 ms. */
  if (b->queue) t = HR_MIN(t, now + 0.02);
  for (const hr__breq_t *q = b->queue; q; q = q->next) t = HR_MIN(t, q->deadline);
  for (size_t i = 0; i < b->n_conns; i++)
    if (b->conns[i]->ask.id) t = HR_MIN(t, b->conns[i]->ask.deadline);
  for (size_t i = 0; i < b->n_leases; i++)
    if (b->leases[i].expires > 0) t = HR_MIN(t, b->leases[i].expires);
  for (size_t i = 0; i < b->n_adapters; i++) {
    const hr__badapter_t *a = &b->adapters[i];
    t = HR_MIN(t, a->job.kind ? a->job.deadline : a->refreshed_at + HR_BROKER_REFRESH_S);
  }
  if (b->accept_paused > now) t = HR_MIN(t, b->accept_paused);
  return t;
}

void hr__broker_conn_gone(hr_broker_t *b, hr__bconn_t *c) {
  for (size_t i = b->n_leases; i-- > 0;)
    if (b->leases[i].conn_id == c->id)
      hr__broker_lease_end(b, i, "its holder closed the connection");
  c->closing = true; /* its reservations go at the next pass, its asks with it */
  if (c->ask.id) {   /* asked and gone: nothing more comes from it */
    hr__breq_t *q = NULL;
    hr__basked_t *a = asked_rec(b, c->ask.req, c->ask.id, &q);
    if (a) settle(b, q, a, 0, true);
    c->ask.id = 0;
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
