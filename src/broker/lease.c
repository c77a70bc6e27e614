/* Leases: memory handed out to a connection until it is released, its time
 * is up, or the connection closes (its holder exited). A lease records what
 * its holder's process held when it was granted, so that what that process
 * grows by afterwards, if it is a registered client, uses the lease up
 * rather than counting twice (resources.c). `running` names the command a
 * lease was granted for (headroom reserve's child), as a `run` event that
 * history keeps: what `headroom reserve auto` learns sizes from. */
#include "broker/broker_int.h"

#include <stdlib.h>
#include <string.h>

hr__blease_t *hr__broker_lease_add(hr_broker_t *b, const hr__breq_t *q) {
  if (b->n_leases == b->cap_leases) {
    size_t cap = b->cap_leases ? b->cap_leases * 2 : 8;
    hr__blease_t *nl = realloc(b->leases, cap * sizeof *nl);
    if (!nl) return NULL;
    b->leases = nl, b->cap_leases = cap;
  }
  double now = hr__broker_now(b);
  hr__blease_t *l = &b->leases[b->n_leases++];
  *l = (hr__blease_t){.id = ++b->next_id,
                      .conn_id = q->conn_id,
                      .pid = q->pid,
                      .peer_pid = q->peer_pid,
                      .uid = q->uid,
                      .res = q->res,
                      .bytes = q->bytes,
                      .base_held = hr__broker_held_by(b, q->peer_pid, q->res),
                      .expires = q->lease_s > 0 ? now + q->lease_s : 0};
  hr__strlcpy(l->name, q->name, sizeof l->name);
  memcpy(l->woke, q->slept, sizeof l->woke);
  b->res[q->res].leased += q->bytes;
  hr__bconn_t *c = hr__broker_conn(b, q->conn_id);
  if (c) c->n_leases++;
  return l;
}

void hr__broker_lease_end(hr_broker_t *b, size_t i, const char *why) {
  hr__blease_t l = b->leases[i];
  b->leases[i] = b->leases[--b->n_leases];
  for (size_t a = 0; a < b->n_adapters; a++)
    if (l.woke[a]) hr__adapter_wake(b, &b->adapters[a]);
  for (size_t k = 0; k < b->n_conns; k++)
    if (b->conns[k]->id == l.conn_id && b->conns[k]->n_leases) b->conns[k]->n_leases--;
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

int hr__broker_unreserve(hr_broker_t *b, hr__bconn_t *c, uint64_t lease, char *err, size_t n) {
  (void)err, (void)n;
  for (size_t i = 0; i < b->n_leases; i++) {
    hr__blease_t *l = &b->leases[i];
    if (l->id != lease) continue;
    if (l->conn_id != c->id && c->uid != 0 && c->uid != l->uid) {
      hr__bm_error_t m = {.lease = lease};
      snprintf(m.error, sizeof m.error, "unreserve: lease %llu belongs to uid %u",
               (unsigned long long)lease, l->uid);
      hr__broker_send(b, c, HR__BOP_ERROR, &m);
      return 0;
    }
    hr__broker_lease_end(b, i, "released");
    hr__bm_unreserved_t m = {.lease = lease};
    hr__broker_send(b, c, HR__BOP_UNRESERVED, &m);
    return 0;
  }
  hr__bm_error_t m = {.error = "no such lease", .lease = lease};
  hr__broker_send(b, c, HR__BOP_ERROR, &m);
  return 0;
}

/* The parent pid and the name of pid, from /proc (under the broker's root). */
static int parent_of(const hr_broker_t *b, int pid, char *comm, size_t n) {
  char path[320], text[1024];
  snprintf(path, sizeof path, "%s/proc/%d/stat", b->root, pid);
  if (hr__read_file(path, text, sizeof text) < 0) return -1;
  const char *open = strchr(text, '('), *close = strrchr(text, ')');
  int ppid;
  if (!open || !close || close < open || sscanf(close + 1, " %*c %d", &ppid) != 1) return -1;
  size_t len = HR_MIN((size_t)(close - open - 1), n - 1);
  memcpy(comm, open + 1, len);
  comm[len] = '\0';
  return ppid;
}

int hr__broker_running(hr_broker_t *b, hr__bconn_t *c, const hr__bm_running_t *m, char *err,
                       size_t n) {
  const hr__blease_t *l = NULL;
  for (size_t i = 0; i < b->n_leases && !l; i++)
    if (b->leases[i].id == m->lease && b->leases[i].conn_id == c->id) l = &b->leases[i];
  if (!l)
    return hr__err(err, n, HR_EINVAL, "running: lease %llu is not held on this connection",
                   (unsigned long long)m->lease);
  char comm[HR_BROKER_NAME_MAX];
  if (parent_of(b, (int)m->pid, comm, sizeof comm) != c->peer_pid)
    return hr__err(err, n, HR_EPERM,
                   "running: pid %lld is not a child of the connecting process (pid %d)",
                   (long long)m->pid, c->peer_pid);
  hr_watch_event_t e = {.broker.what = HR_BROKER_EV_RUN,
                        .pid = (int)m->pid,
                        .broker.uid = c->uid,
                        .broker.bytes = l->bytes,
                        .broker.lease = l->id};
  hr__strlcpy(e.broker.message, m->command, sizeof e.broker.message);
  hr__broker_emit(b, &e, comm, b->res[l->res].name);
  return 0;
}
