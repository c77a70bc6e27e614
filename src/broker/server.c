/* The broker's socket and loop: one thread polls the listening socket, a
 * wake pipe and every connection (never a thread per client), reads JSON
 * lines, checks who is speaking through SO_PEERCRED, and hands requests to
 * reserve.c. A client that sends garbage, lies about its pid or belongs to
 * another user gets one error line and is closed; the others are not
 * affected. Each user may hold broker_max_conns connections. */
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
  while (c->woff < c->wbuf.len) {
    ssize_t w = send(c->fd, c->wbuf.s + c->woff, c->wbuf.len - c->woff, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    c->woff += (size_t)w;
  }
  if (c->woff == c->wbuf.len) c->wbuf.len = c->woff = 0;
  /* A client that reads nothing while lines pile up is dropped. */
  if (c->wbuf.failed || c->wbuf.len - c->woff > HR_BROKER_WBUF_MAX) c->closing = true;
}

void hr__broker_send(hr_broker_t *b, hr__bconn_t *c, const char *line) {
  (void)b;
  if (c->closing) return;
  hr__buf_puts(&c->wbuf, line);
  hr__buf_put(&c->wbuf, "\n", 1);
  flush(c);
}

/* Sends {"v":1,"op":"error","error":msg} and closes the connection. */
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
  hr__buf_t o = {0};
  hr__buf_puts(&o, "{\"v\":1,\"op\":\"error\",\"error\":");
  hr__buf_json_str(&o, msg);
  hr__buf_puts(&o, "}");
  if (!o.failed) hr__broker_send(b, c, o.s);
  hr__buf_free(&o);
  c->closing = true;
}

hr__bconn_t *hr__broker_conn(hr_broker_t *b, uint64_t id) {
  for (size_t i = 0; i < b->n_conns; i++)
    if (b->conns[i]->id == id && !b->conns[i]->closing) return b->conns[i];
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

static const char *jstr(const cJSON *j, const char *k, const char *dflt) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
  return cJSON_IsString(v) ? v->valuestring : dflt;
}

/* A number member that must be a non-negative integer below 2^63; -1 when
 * missing, -2 when malformed. */
static double jnum(const cJSON *j, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
  if (!v) return -1;
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 ||
      v->valuedouble > 9.2e18)
    return -2;
  return v->valuedouble;
}

static int do_hello(hr_broker_t *b, hr__bconn_t *c, const cJSON *j, char *err, size_t n) {
  double pid = jnum(j, "pid");
  const cJSON *prio = cJSON_GetObjectItemCaseSensitive(j, "priority");
  if (c->registered) return hr__err(err, n, HR_ESTATE, "hello: already registered");
  if (pid < 1 || pid > 4194304 || pid != floor(pid))
    return hr__err(err, n, HR_EINVAL, "hello: \"pid\" must be a process id");
  if (prio && (!cJSON_IsNumber(prio) || fabs(prio->valuedouble) > 1e6))
    return hr__err(err, n, HR_EINVAL, "hello: \"priority\" must be a number in [-1e6, 1e6]");
  if (!pid_is_peer(b, c->peer_pid, (int)pid))
    return hr__err(err, n, HR_EPERM,
                   "hello: pid %d is not the connecting process (pid %d) nor its pid in its "
                   "namespace: a client registers only itself",
                   (int)pid, c->peer_pid);
  c->registered = true;
  c->pid = (int)pid;
  c->priority = prio ? (int)prio->valuedouble : 0;
  hr__strlcpy(c->name, jstr(j, "name", "?"), sizeof c->name);
  b->last_read = 0; /* its memory counts from the next reading on */
  hr__broker_count(b, &b->counters.registrations, 1);
  hr_watch_event_t e = {.broker.what = HR_BROKER_EV_REGISTER,
                        .pid = c->pid,
                        .broker.uid = c->uid,
                        .broker.priority = c->priority};
  hr__broker_emit(b, &e, c->name, NULL);
  hr__buf_t o = {0};
  hr__buf_printf(&o, "{\"v\":1,\"op\":\"welcome\",\"client\":%llu,\"pid\":%d}",
                 (unsigned long long)c->id, c->pid);
  if (!o.failed) hr__broker_send(b, c, o.s);
  hr__buf_free(&o);
  return 0;
}

static int do_offer(hr_broker_t *b, hr__bconn_t *c, const cJSON *j, char *err, size_t n) {
  const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items"), *it;
  if (!c->registered) return hr__err(err, n, HR_ESTATE, "offer: send hello first");
  if (!cJSON_IsArray(items)) return hr__err(err, n, HR_EINVAL, "offer: \"items\" must be a list");
  if (cJSON_GetArraySize(items) > HR_BROKER_MAX_ITEMS)
    return hr__err(err, n, HR_ERANGE, "offer: at most %d items", HR_BROKER_MAX_ITEMS);
  size_t k = 0;
  cJSON_ArrayForEach(it, items) {
    hr__bitem_t *x = &c->items[k];
    double bytes = jnum(it, "bytes"), reload = jnum(it, "reload_bytes"), idle = jnum(it, "idle_s");
    const char *kind = jstr(it, "kind", "");
    if (!cJSON_IsObject(it) || bytes < 0 || reload == -2 || idle == -2 ||
        (strcmp(kind, "cache") && strcmp(kind, "model")))
      return hr__err(err, n, HR_EINVAL,
                     "offer: each item needs \"kind\" (cache or model) and \"bytes\" >= 0");
    const char *dev = jstr(it, "device", "host");
    if (hr__broker_res_find(b, dev) < 0)
      return hr__err(err, n, HR_EINVAL, "offer: unknown device '%.16s'", dev);
    hr__strlcpy(x->device, dev, sizeof x->device);
    hr__strlcpy(x->name, jstr(it, "name", kind), sizeof x->name);
    x->cache = strcmp(kind, "cache") == 0;
    x->bytes = (uint64_t)bytes;
    x->reload_bytes = reload > 0 ? (uint64_t)reload : (x->cache ? 0 : x->bytes);
    x->idle_s = idle > 0 ? idle : 0;
    k++;
  }
  c->n_items = k;
  return 0;
}

static int do_reserve(hr_broker_t *b, hr__bconn_t *c, const cJSON *j, char *err, size_t n) {
  double id = jnum(j, "id"), bytes = jnum(j, "bytes"), timeout = jnum(j, "timeout");
  double lease = jnum(j, "lease");
  const cJSON *prio = cJSON_GetObjectItemCaseSensitive(j, "priority");
  const char *dev = jstr(j, "device", "host");
  if (bytes < 1) return hr__err(err, n, HR_EINVAL, "reserve: \"bytes\" must be a positive number");
  if (id == -2 || timeout == -2 || lease == -2)
    return hr__err(err, n, HR_EINVAL, "reserve: \"id\", \"timeout\", \"lease\" must be >= 0");
  if (prio && (!cJSON_IsNumber(prio) || fabs(prio->valuedouble) > 1e6))
    return hr__err(err, n, HR_EINVAL, "reserve: \"priority\" must be a number in [-1e6, 1e6]");
  if (hr__broker_res_find(b, dev) < 0)
    return hr__err(err, n, HR_EINVAL, "reserve: unknown device '%.16s'", dev);
  int p = prio ? (int)prio->valuedouble : c->registered ? c->priority : 0;
  hr__broker_reserve(b, c, id > 0 ? (uint64_t)id : 0, dev, (uint64_t)bytes,
                     timeout >= 0 ? timeout : 30, lease > 0 ? lease : 0, p);
  return 0;
}

static int do_line(hr_broker_t *b, hr__bconn_t *c, const char *line, char *err, size_t n) {
  int rc = 0;
  cJSON *j = cJSON_Parse(line);
  if (!cJSON_IsObject(j)) {
    rc = hr__err(err, n, HR_EPARSE, "not a JSON object: one object per line is expected");
    goto out;
  }
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "v");
  if (!cJSON_IsNumber(v) || v->valuedouble != HR_BROKER_PROTOCOL) {
    rc = hr__err(err, n, HR_EVERSION, "protocol version %s: this broker speaks \"v\": %d",
                 cJSON_IsNumber(v) ? "not supported" : "missing", HR_BROKER_PROTOCOL);
    goto out;
  }
  const char *op = jstr(j, "op", "");
  if (strcmp(op, "hello") == 0)
    rc = do_hello(b, c, j, err, n);
  else if (strcmp(op, "offer") == 0)
    rc = do_offer(b, c, j, err, n);
  else if (strcmp(op, "reserve") == 0)
    rc = do_reserve(b, c, j, err, n);
  else if (strcmp(op, "released") == 0) {
    double id = jnum(j, "id"), bytes = jnum(j, "bytes");
    if (id < 0 || bytes < 0)
      rc = hr__err(err, n, HR_EINVAL, "released: \"id\" and \"bytes\" must be numbers >= 0");
    else
      hr__broker_answer(b, c, (uint64_t)id, (uint64_t)bytes);
  } else if (strcmp(op, "unreserve") == 0) {
    double lease = jnum(j, "lease");
    if (lease < 1)
      rc = hr__err(err, n, HR_EINVAL, "unreserve: \"lease\" must be a lease id");
    else
      rc = hr__broker_unreserve(b, c, (uint64_t)lease, err, n);
  } else if (strcmp(op, "status") == 0) {
    hr__buf_t o = {0};
    hr__broker_status_json(b, &o);
    if (!o.failed) hr__broker_send(b, c, o.s);
    hr__buf_free(&o);
  } else
    rc = hr__err(err, n, HR_EINVAL,
                 "unknown op '%.32s' (hello, offer, released, reserve, "
                 "unreserve, status)",
                 op);
out:
  cJSON_Delete(j);
  return rc;
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
    char err[300];
    if (memchr(c->rbuf + start, '\0', i - start))
      fail_conn(b, c, HR_BROKER_EV_PROTOCOL_ERROR, "a NUL byte inside a line");
    else if (i > start && do_line(b, c, c->rbuf + start, err, sizeof err) != 0)
      fail_conn(b, c,
                strstr(err, "is not the connecting") ? HR_BROKER_EV_REFUSED_PEER
                                                     : HR_BROKER_EV_PROTOCOL_ERROR,
                err);
    start = i + 1;
  }
  if (c->closing) return;
  memmove(c->rbuf, c->rbuf + start, c->rlen - start);
  c->rlen -= start;
  if (c->rlen == HR_BROKER_LINE_MAX)
    fail_conn(b, c, HR_BROKER_EV_PROTOCOL_ERROR, "line longer than 65536 bytes");
}

static void accept_conn(hr_broker_t *b) {
  int fd = accept4(b->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) return;
  struct ucred cr;
  socklen_t len = sizeof cr;
  hr__bconn_t *c = calloc(1, sizeof *c);
  if (!c || !(c->rbuf = malloc(HR_BROKER_LINE_MAX)) ||
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) {
    if (c) free(c->rbuf);
    free(c);
    close(fd);
    return;
  }
  c->fd = fd;
  c->peer_pid = cr.pid;
  c->uid = cr.uid;
  c->gid = cr.gid;
  c->id = ++b->next_id;
  size_t mine = 0;
  for (size_t i = 0; i < b->n_conns; i++) mine += b->conns[i]->uid == cr.uid;
  if (b->n_conns == b->cap_conns) {
    size_t cap = b->cap_conns ? b->cap_conns * 2 : 16;
    hr__bconn_t **nc = realloc(b->conns, cap * sizeof *nc);
    if (!nc) {
      free(c->rbuf), free(c), close(fd);
      return;
    }
    b->conns = nc, b->cap_conns = cap;
  }
  b->conns[b->n_conns++] = c;
  hr__broker_count(b, &b->counters.connections, 1);
  char msg[200];
  if (cr.uid != geteuid() && cr.uid != 0 && !b->group_set) {
    snprintf(msg, sizeof msg,
             "permission denied: uid %u is not the broker's user (uid %u) and no "
             "broker_group is configured",
             cr.uid, geteuid());
    fail_conn(b, c, HR_BROKER_EV_REFUSED_PEER, msg);
  } else if (mine >= b->max_conns) {
    snprintf(msg, sizeof msg, "too many connections: uid %u holds %zu (broker_max_conns)", cr.uid,
             mine);
    fail_conn(b, c, HR_BROKER_EV_REFUSED_PEER, msg);
  }
}

/* Frees closed connections, ending what they held. Every connection is
 * still in place while what they held ends (the counters walk the list),
 * then the closed ones are freed and the list compacted. */
static void reap(hr_broker_t *b) {
  for (size_t i = 0; i < b->n_conns; i++)
    if (b->conns[i]->closing) hr__broker_conn_gone(b, b->conns[i]);
  size_t k = 0;
  for (size_t i = 0; i < b->n_conns; i++) {
    hr__bconn_t *c = b->conns[i];
    if (!c->closing) {
      b->conns[k++] = c;
      continue;
    }
    close(c->fd);
    free(c->rbuf);
    hr__buf_free(&c->wbuf);
    free(c);
  }
  b->n_conns = k;
}

void *hr__broker_loop(void *arg) {
  hr_broker_t *b = arg;
  struct pollfd *pf = NULL;
  size_t cap = 0;
  for (;;) {
    if (cap < b->n_conns + 2) {
      cap = (b->n_conns + 2) * 2;
      struct pollfd *np = realloc(pf, cap * sizeof *np);
      if (!np) break;
      pf = np;
    }
    pf[0] = (struct pollfd){.fd = b->wake[0], .events = POLLIN};
    pf[1] = (struct pollfd){.fd = b->listen_fd, .events = POLLIN};
    size_t n = b->n_conns;
    for (size_t i = 0; i < n; i++)
      pf[i + 2] = (struct pollfd){
          .fd = b->conns[i]->fd,
          .events = (short)(POLLIN | (b->conns[i]->wbuf.len > b->conns[i]->woff ? POLLOUT : 0))};
    double wait = hr__broker_next_deadline(b) - hr__now_mono();
    int ms = wait <= 0 ? 0 : wait > 1 ? 1000 : (int)ceil(wait * 1000);
    int r = poll(pf, n + 2, ms);
    if (r < 0 && errno != EINTR) break;
    if (pf[0].revents) break;
    if (r > 0) {
      for (size_t i = 0; i < n; i++) {
        hr__bconn_t *c = b->conns[i];
        if (pf[i + 2].revents & POLLOUT) flush(c);
        if (pf[i + 2].revents & (POLLIN | POLLHUP | POLLERR)) read_conn(b, c);
      }
      if (pf[1].revents & POLLIN) accept_conn(b);
    }
    hr__broker_tick(b);
    reap(b);
  }
  free(pf);
  for (size_t i = 0; i < b->n_conns; i++) b->conns[i]->closing = true;
  reap(b);
  return NULL;
}
