/* The broker's socket and loop, the actor's side that faces clients: one
 * thread polls the listening socket, a wake pipe, every connection and every
 * adapter's exchange (never a thread per client, never a blocking call),
 * reads JSON lines, decodes them through the one protocol codec (proto.c),
 * checks who is speaking through SO_PEERCRED, and hands requests to the
 * engine. A client that sends garbage, lies about its pid or belongs to
 * another user gets one error line and is closed; the others are not
 * affected. Each user may hold broker_max_conns connections. Out of file
 * descriptors, the listening socket rests (10 ms, doubling up to 1 s)
 * instead of waking the loop for a connection it cannot take. */
#include "broker/broker_int.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int hr_broker_socket_path(const hr_options_t *o, char *buf, size_t n) {
  const char *p = o ? hr_options_get_str(o, HR_OPTION_broker_socket) : "";
  int len;
  if (strcmp(p, "none") == 0) return HR_ENOENT;
  if (*p)
    len = snprintf(buf, n, "%s", p);
  else if (getenv("XDG_RUNTIME_DIR") && *getenv("XDG_RUNTIME_DIR"))
    len = snprintf(buf, n, "%s/headroom/broker.sock", getenv("XDG_RUNTIME_DIR"));
  else if (geteuid() == 0)
    len = snprintf(buf, n, "/run/headroom/broker.sock");
  else
    return HR_ENOENT;
  /* sun_path holds 108 bytes with its terminator, and the socket is bound
   * first as PATH.new. */
  if (len < 0 || (size_t)len >= n || len >= 104) return HR_ERANGE;
  return 0;
}

/* Writes what the connection's buffer holds, as far as the socket takes it. */
static void flush(hr__bconn_t *c) {
  while (c->fd >= 0 && c->woff < c->wbuf.len) {
    ssize_t w = send(c->fd, c->wbuf.s + c->woff, c->wbuf.len - c->woff, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    c->woff += (size_t)w;
  }
  if (c->woff == c->wbuf.len) c->wbuf.len = c->woff = 0;
  /* A client that reads nothing while lines pile up is dropped. */
  if (c->wbuf.failed || c->wbuf.len - c->woff > HR_BROKER_WBUF_MAX) c->closing = true;
}

void hr__broker_send(hr_broker_t *b, hr__bconn_t *c, hr__bop_t op, const void *msg) {
  (void)b;
  if (c->closing) return;
  hr__bproto_encode(&c->wbuf, op, msg);
  hr__buf_put(&c->wbuf, "\n", 1);
  flush(c);
}

/* Sends an error line and closes the connection. */
static void fail_conn(hr_broker_t *b, hr__bconn_t *c, hr_broker_event_kind_t kind,
                      const char *msg) {
  hr_watch_event_t e = {
      .broker.what = kind, .pid = c->registered ? c->pid : c->peer_pid, .broker.uid = c->uid};
  hr__strlcpy(e.broker.message, msg, sizeof e.broker.message);
  hr__broker_emit(b, &e, c->name, NULL);
  hr__broker_count(b,
                   kind == HR_BROKER_EV_PROTOCOL_ERROR ? &b->counters.protocol_errors
                                                       : &b->counters.refused_peers,
                   1);
  hr__bm_error_t m = {0};
  hr__strlcpy(m.error, msg, sizeof m.error);
  hr__broker_send(b, c, HR__BOP_ERROR, &m);
  c->closing = true;
}

hr__bconn_t *hr__broker_conn(hr_broker_t *b, uint64_t id) {
  for (size_t i = 0; i < b->n_conns; i++)
    if (b->conns[i]->id == id && !b->conns[i]->closing) return b->conns[i];
  return NULL;
}

hr__bconn_t *hr__broker_client_of(hr_broker_t *b, int peer_pid) {
  for (size_t i = 0; i < b->n_conns; i++) {
    hr__bconn_t *c = b->conns[i];
    if (c->registered && !c->closing && c->peer_pid == peer_pid) return c;
  }
  return NULL;
}

/* True when `pid` names the peer: its own pid, or its pid inside one of the
 * pid namespaces it lives in (NSpid of its status). */
static bool pid_is_peer(hr_broker_t *b, int peer, int pid) {
  if (pid == peer) return true;
  char path[320], text[4096];
  snprintf(path, sizeof path, "%s/proc/%d/status", b->root, peer);
  if (hr__read_file(path, text, sizeof text) < 0) return false;
  const char *l = strstr(text, "\nNSpid:");
  if (!l) return false;
  l += 7;
  while (*l && *l != '\n') {
    char *end;
    long v = strtol(l, &end, 10);
    if (end == l) break;
    if (v == pid) return true;
    l = end;
  }
  return false;
}

static int do_hello(hr_broker_t *b, hr__bconn_t *c, const hr__bm_hello_t *m, char *err, size_t n) {
  if (c->registered) return hr__err(err, n, HR_ESTATE, "hello: already registered");
  if (!pid_is_peer(b, c->peer_pid, (int)m->pid))
    return hr__err(err, n, HR_EPERM,
                   "hello: pid %d is not the connecting process (pid %d) nor its pid in its "
                   "namespace: a client registers only itself",
                   (int)m->pid, c->peer_pid);
  c->registered = true;
  c->pid = (int)m->pid;
  c->priority = (int)m->priority;
  hr__strlcpy(c->name, m->name, sizeof c->name);
  b->last_read = 0; /* its memory counts from the next reading on */
  hr__broker_count(b, &b->counters.registrations, 1);
  hr_watch_event_t e = {.broker.what = HR_BROKER_EV_REGISTER,
                        .pid = c->pid,
                        .broker.uid = c->uid,
                        .broker.priority = c->priority};
  hr__broker_emit(b, &e, c->name, NULL);
  hr__bm_welcome_t w = {.client = c->id, .pid = c->pid};
  hr__broker_send(b, c, HR__BOP_WELCOME, &w);
  return 0;
}

static int do_offer(hr_broker_t *b, hr__bconn_t *c, const hr__bm_offer_t *m, char *err, size_t n) {
  if (!c->registered) return hr__err(err, n, HR_ESTATE, "offer: send hello first");
  for (size_t k = 0; k < m->n_items; k++)
    if (hr__broker_res_find(b, m->items[k].device) < 0)
      return hr__err(err, n, HR_EINVAL, "offer: items[%zu]: unknown device '%s'", k,
                     m->items[k].device);
  memcpy(c->items, m->items, m->n_items * sizeof *c->items);
  for (size_t k = 0; k < m->n_items; k++)
    if (c->items[k].reload_bytes == 0 && strcmp(c->items[k].kind, "model") == 0)
      c->items[k].reload_bytes = c->items[k].bytes;
  c->n_items = m->n_items;
  c->busy = m->busy;
  return 0;
}

/* Does what a decoded message asks; returns 0, or an error that closes c. */
static int dispatch(hr_broker_t *b, hr__bconn_t *c, const hr__bmsg_t *m, char *err, size_t n) {
  switch (m->op) {
  case HR__BOP_HELLO:
    return do_hello(b, c, &m->u.hello, err, n);
  case HR__BOP_OFFER:
    return do_offer(b, c, &m->u.offer, err, n);
  case HR__BOP_RESERVE:
    if (hr__broker_res_find(b, m->u.reserve.device) < 0)
      return hr__err(err, n, HR_EINVAL, "reserve: unknown device '%s'", m->u.reserve.device);
    hr__broker_reserve(b, c, &m->u.reserve,
                       m->present & hr__bproto_bit(HR__BOP_RESERVE, "priority"));
    return 0;
  case HR__BOP_RELEASED:
    hr__broker_answer(b, c, m->u.released.id, m->u.released.bytes, m->u.released.error);
    return 0;
  case HR__BOP_UNRESERVE:
    return hr__broker_unreserve(b, c, m->u.unreserve.lease, err, n);
  case HR__BOP_RUNNING:
    return hr__broker_running(b, c, &m->u.running, err, n);
  case HR__BOP_STATUS_ASK: {
    hr__buf_t o = {0};
    hr__broker_status_json(b, &o);
    if (!o.failed && !c->closing) {
      hr__buf_put(&c->wbuf, o.s, o.len);
      hr__buf_put(&c->wbuf, "\n", 1);
      flush(c);
    }
    hr__buf_free(&o);
    return 0;
  }
  default:
    return hr__err(err, n, HR_EINVAL, "not a client's message");
  }
}

void hr__broker_on_line(hr_broker_t *b, hr__bconn_t *c, const char *line, size_t len) {
  char err[300];
  hr__bmsg_t *m = malloc(sizeof *m);
  if (!m) {
    fail_conn(b, c, HR_BROKER_EV_PROTOCOL_ERROR, "out of memory");
    return;
  }
  int rc = memchr(line, '\0', len) ? hr__err(err, sizeof err, HR_EPARSE, "a NUL byte inside a line")
                                   : hr__bproto_decode(line, len, m, err, sizeof err);
  if (rc == 0) rc = dispatch(b, c, m, err, sizeof err);
  free(m);
  if (rc)
    fail_conn(b, c, rc == HR_EPERM ? HR_BROKER_EV_REFUSED_PEER : HR_BROKER_EV_PROTOCOL_ERROR, err);
}

static void read_conn(hr_broker_t *b, hr__bconn_t *c) {
  ssize_t r = recv(c->fd, c->rbuf + c->rlen, HR_BROKER_LINE_MAX - c->rlen, 0);
  if (r < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (r <= 0) {
    c->closing = true;
    return;
  }
  c->rlen += (size_t)r;
  size_t start = 0;
  for (size_t i = c->rlen - (size_t)r; i < c->rlen && !c->closing; i++) {
    if (c->rbuf[i] != '\n') continue;
    c->rbuf[i] = '\0';
    if (i > start) hr__broker_on_line(b, c, c->rbuf + start, i - start);
    start = i + 1;
  }
  if (c->closing) return;
  memmove(c->rbuf, c->rbuf + start, c->rlen - start);
  c->rlen -= start;
  if (c->rlen == HR_BROKER_LINE_MAX)
    fail_conn(b, c, HR_BROKER_EV_PROTOCOL_ERROR, "line longer than 65536 bytes");
}

hr__bconn_t *hr__broker_add_conn(hr_broker_t *b, int fd, int pid, uint32_t uid, uint32_t gid) {
  hr__bconn_t *c = calloc(1, sizeof *c);
  if (!c || !(c->rbuf = malloc(HR_BROKER_LINE_MAX))) goto fail;
  if (b->n_conns == b->cap_conns) {
    size_t cap = b->cap_conns ? b->cap_conns * 2 : 16;
    hr__bconn_t **nc = realloc(b->conns, cap * sizeof *nc);
    if (!nc) goto fail;
    b->conns = nc, b->cap_conns = cap;
  }
  *c = (hr__bconn_t){.fd = fd, .peer_pid = pid, .uid = uid, .gid = gid, .rbuf = c->rbuf};
  c->id = ++b->next_id;
  size_t mine = 0;
  for (size_t i = 0; i < b->n_conns; i++) mine += b->conns[i]->uid == uid;
  b->conns[b->n_conns++] = c;
  hr__broker_count(b, &b->counters.connections, 1);
  char msg[200];
  if (uid != geteuid() && uid != 0 && !b->group_set) {
    snprintf(msg, sizeof msg,
             "permission denied: uid %u is not the broker's user (uid %u) and no "
             "broker_group is configured",
             uid, geteuid());
    fail_conn(b, c, HR_BROKER_EV_REFUSED_PEER, msg);
  } else if (mine >= b->max_conns) {
    snprintf(msg, sizeof msg, "too many connections: uid %u holds %zu (broker_max_conns)", uid,
             mine);
    fail_conn(b, c, HR_BROKER_EV_REFUSED_PEER, msg);
  }
  return c;
fail:
  if (c) free(c->rbuf);
  free(c);
  return NULL;
}

/* Out of descriptors (or memory) the listening socket stays readable: it
 * rests, 10 ms doubling to 1 s, said once per rest as a refused_peer event. */
static void accept_rest(hr_broker_t *b, int e) {
  b->accept_backoff = HR_MIN(1.0, HR_MAX(0.01, b->accept_backoff * 2));
  b->accept_paused = hr__broker_now(b) + b->accept_backoff;
  hr_watch_event_t ev = {.broker.what = HR_BROKER_EV_REFUSED_PEER};
  snprintf(ev.broker.message, sizeof ev.broker.message,
           "cannot accept a connection: %s; not accepting for %gs", strerror(e), b->accept_backoff);
  hr__broker_emit(b, &ev, NULL, NULL);
  hr__broker_count(b, &b->counters.refused_peers, 1);
}

static void accept_conn(hr_broker_t *b) {
  int fd = accept4(b->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
      accept_rest(b, errno);
    return;
  }
  b->accept_backoff = 0;
  struct ucred cr;
  socklen_t len = sizeof cr;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 ||
      !hr__broker_add_conn(b, fd, cr.pid, cr.uid, cr.gid))
    close(fd);
}

/* Frees closed connections, ending what they held. Every connection is
 * still in place while what they held ends (the counters walk the list),
 * then the closed ones are freed and the list compacted. */
void hr__broker_reap(hr_broker_t *b) {
  bool any = false;
  for (size_t i = 0; i < b->n_conns; i++)
    if (b->conns[i]->closing) hr__broker_conn_gone(b, b->conns[i]), any = true;
  if (!any) return;
  size_t k = 0;
  for (size_t i = 0; i < b->n_conns; i++) {
    hr__bconn_t *c = b->conns[i];
    if (!c->closing) {
      b->conns[k++] = c;
      continue;
    }
    if (c->fd >= 0) close(c->fd);
    free(c->rbuf);
    hr__buf_free(&c->wbuf);
    free(c);
  }
  b->n_conns = k;
}

/* The poll set: the wake pipe, the listening socket (unless it rests),
 * each connection, each adapter's exchange. */
static size_t poll_set(hr_broker_t *b, struct pollfd *pf) {
  pf[0] = (struct pollfd){.fd = b->wake[0], .events = POLLIN};
  pf[1] = (struct pollfd){.fd = hr__broker_now(b) >= b->accept_paused ? b->listen_fd : -1,
                          .events = POLLIN};
  size_t n = 2;
  for (size_t i = 0; i < b->n_conns; i++) {
    const hr__bconn_t *c = b->conns[i];
    pf[n++] = (struct pollfd){.fd = c->fd,
                              .events = (short)(POLLIN | (c->wbuf.len > c->woff ? POLLOUT : 0))};
  }
  for (size_t i = 0; i < b->n_adapters; i++) {
    short ev = hr__adapter_events(&b->adapters[i]);
    pf[n++] = (struct pollfd){.fd = ev ? b->adapters[i].http.fd : -1, .events = ev};
  }
  return n;
}

void *hr__broker_loop(void *arg) {
  hr_broker_t *b = arg;
  struct pollfd *pf = NULL;
  size_t cap = 0;
  for (;;) {
    if (cap < b->n_conns + b->n_adapters + 2) {
      cap = (b->n_conns + b->n_adapters + 2) * 2;
      struct pollfd *np = realloc(pf, cap * sizeof *np);
      if (!np) break;
      pf = np;
    }
    size_t n_conns = b->n_conns, n = poll_set(b, pf);
    double wait = hr__broker_next_deadline(b) - hr__broker_now(b);
    int ms = wait <= 0 ? 0 : wait > 1 ? 1000 : (int)ceil(wait * 1000);
    int r = poll(pf, n, ms);
    if (r < 0 && errno != EINTR) break;
    if (pf[0].revents) break;
    if (r > 0) {
      for (size_t i = 0; i < n_conns; i++) {
        hr__bconn_t *c = b->conns[i];
        if (pf[i + 2].revents & POLLOUT) flush(c);
        if (pf[i + 2].revents & (POLLIN | POLLHUP | POLLERR)) read_conn(b, c);
      }
      for (size_t i = 0; i < b->n_adapters; i++)
        if (pf[2 + n_conns + i].revents)
          hr__adapter_io(b, &b->adapters[i], pf[2 + n_conns + i].revents);
      if (pf[1].revents & POLLIN) accept_conn(b);
    }
    hr__broker_tick(b);
    hr__broker_reap(b);
  }
  free(pf);
  for (size_t i = 0; i < b->n_conns; i++) b->conns[i]->closing = true;
  hr__broker_reap(b);
  return NULL;
}
