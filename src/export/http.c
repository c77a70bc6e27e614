/* What the exporter serves: two read-only documents that the watch loop
 * replaces after each sample, over libmicrohttpd, and the start and stop of
 * the server. Whom it serves, and for how long, is conns.c.
 *
 * We bind the listening socket ourselves, so a port in use is a clear
 * "address already in use" rather than a NULL daemon, and port 0 gives a
 * free port that tests can read back; conns.c accepts on it and hands each
 * connection to libmicrohttpd, which runs without a thread or a listening
 * socket of its own. Only GET (and HEAD) /, /metrics and /api/snapshot
 * answer 200 (/ is a small page linking the other two, for a person who
 * opens the address in a browser); other paths are 404, other methods on
 * those paths 405. Every 503 (no sample yet, or shed because too many
 * responses are in flight) carries Retry-After. /metrics is the published
 * text with the exporter's own counters appended as it is served. The
 * per-connection memory limit caps a request's headers; no endpoint reads
 * a body. */
#include "export/http.h"

#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MEMORY_LIMIT   (16 * 1024)
#define LISTEN_BACKLOG 1024 /* the kernel caps it at net.core.somaxconn */
#define RETRY_AFTER    "1"

static enum MHD_Result queue(struct MHD_Connection *c, unsigned status, const char *type,
                             struct MHD_Response *r) {
  if (!r) return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, "Allow", "GET, HEAD");
  if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
    MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, RETRY_AFTER);
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             const char *body, size_t len) {
  return queue(c, status, type,
               MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY));
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text) {
  return reply(c, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* 503 to a request shed for load; the connection closes after it, so the
 * client comes back on a fresh one when the Retry-After has passed. */
static enum MHD_Result reply_shed(struct MHD_Connection *c) {
  static const char text[] = "busy: too many requests in flight; retry\n";
  struct MHD_Response *r =
      MHD_create_response_from_buffer(sizeof text - 1, (void *)text, MHD_RESPMEM_PERSISTENT);
  if (r) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
  return queue(c, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", r);
}

static const char index_page[] =
    "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>headroom exporter</title></head>\n"
    "<body><h1>headroom exporter</h1>\n<ul>\n"
    "<li><a href=\"/metrics\">/metrics</a>: Prometheus text format</li>\n"
    "<li><a href=\"/api/snapshot\">/api/snapshot</a>: the last sample as JSON</li>\n"
    "</ul></body></html>\n";

/* The published metrics with the exporter's own counters after them, as a
 * response (malloc'd text, freed by libmicrohttpd). Needs e->lock. */
static struct MHD_Response *metrics_response_locked(hr_exporter_t *e) {
  hr__buf_t b = {0};
  hr__http_counters_t k;
  hr__buf_puts(&b, e->metrics);
  hr__exporter_counters(e, &k);
  hr__prom_http(&b, &k);
  if (b.failed) {
    hr__buf_free(&b);
    return NULL;
  }
  struct MHD_Response *r = MHD_create_response_from_buffer(b.len, b.s, MHD_RESPMEM_MUST_FREE);
  if (!r) hr__buf_free(&b);
  return r;
}

static enum MHD_Result serve_doc(hr_exporter_t *e, struct MHD_Connection *c, bool metrics) {
  pthread_mutex_lock(&e->lock);
  const char *doc = metrics ? e->metrics : e->snapshot;
  enum MHD_Result ret;
  if (!doc)
    ret = reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "no sample yet\n");
  else if (metrics) {
    struct MHD_Response *r = metrics_response_locked(e);
    ret = r ? queue(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", r)
            : reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
  } else
    ret = reply(c, MHD_HTTP_OK, "application/json", doc, strlen(doc));
  pthread_mutex_unlock(&e->lock);
  return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls) {
  hr_exporter_t *e = cls;
  (void)version, (void)upload;
  /* The first call only sees the headers; answering then means a body, if
   * any, is never read (and libmicrohttpd closes the connection after the
   * response). */
  *con_cls = e;
  *upload_size = 0;
  if (hr__conn_answering(e, c)) return reply_shed(c);
  bool metrics = strcmp(url, "/metrics") == 0, snap = strcmp(url, "/api/snapshot") == 0;
  bool root = strcmp(url, "/") == 0;
  if (!metrics && !snap && !root) return reply_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
    return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
  if (root)
    return reply(c, MHD_HTTP_OK, "text/html; charset=utf-8", index_page, sizeof index_page - 1);
  return serve_doc(e, c, metrics);
}

/* Splits "HOST:PORT" or "[V6]:PORT" into host and port. */
static int split_addr(const char *listen, char *host, size_t hn, char *port, size_t pn) {
  const char *colon;
  if (listen[0] == '[') {
    const char *end = strchr(listen, ']');
    if (!end || end[1] != ':') return HR_EINVAL;
    if ((size_t)(end - listen - 1) >= hn) return HR_EINVAL;
    memcpy(host, listen + 1, (size_t)(end - listen - 1));
    host[end - listen - 1] = '\0';
    colon = end + 1;
  } else {
    colon = strrchr(listen, ':');
    if (!colon || (size_t)(colon - listen) >= hn) return HR_EINVAL;
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
  }
  /* The host is required: an empty one would bind every interface, which
   * must be asked for by name (0.0.0.0 or [::]). The port is 0..65535 in at
   * most five digits, so no overflow can wrap it onto another port. */
  const char *p = colon + 1;
  size_t n = strlen(p);
  if (!*host || n == 0 || n > 5 || n >= pn || strspn(p, "0123456789") != n) return HR_EINVAL;
  if (strtol(p, NULL, 10) > 65535) return HR_EINVAL;
  hr__strlcpy(port, p, pn);
  return 0;
}

/* Binds and listens on `listen`; returns the socket or a negative code. */
static int open_listener(const char *addr, int *port_out, char *err, size_t errlen) {
  char host[256], port[16];
  if (split_addr(addr, host, sizeof host, port, sizeof port) != 0)
    return hr__err(err, errlen, HR_EINVAL,
                   "listen: '%s' is not HOST:PORT with a port of 0 to 65535 (e.g. "
                   "127.0.0.1:10460; 0.0.0.0:10460 for every interface), or none",
                   addr);
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                  *res = NULL;
  int g = getaddrinfo(*host ? host : NULL, port, &hints, &res);
  if (g != 0) return hr__err(err, errlen, HR_EINVAL, "listen: %s: %s", addr, gai_strerror(g));
  int fd = -1, e = 0;
  for (struct addrinfo *a = res; a; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) {
      e = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, LISTEN_BACKLOG) == 0) break;
    e = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    if (e == EADDRINUSE)
      return hr__err(err, errlen, HR_EBUSY,
                     "listen: %s: address already in use (is another headroom watch running? "
                     "choose another with --listen HOST:PORT, or --listen none)",
                     addr);
    return hr__err(err, errlen, e == EACCES ? HR_EPERM : HR_EIO, "listen: %s: %s", addr,
                   strerror(e));
  }
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &sl);
  *port_out = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return fd;
}

/* libmicrohttpd without a thread or a listening socket of its own: conns.c
 * accepts and runs it. Its connection limit is a backstop above ours (cut
 * connections linger until its next run); its timeout, a backstop behind
 * our deadlines. */
static struct MHD_Daemon *daemon_start(hr_exporter_t *e) {
  unsigned limit = (unsigned)(2 * e->lim.capacity + 64);
  unsigned timeout = (unsigned)(e->lim.header_deadline + e->lim.response_deadline) + 5;
  return MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_NO_LISTEN_SOCKET, 0, NULL, NULL, handle, e,
                          MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MEMORY_LIMIT,
                          MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_CONNECTION_TIMEOUT,
                          timeout, MHD_OPTION_NOTIFY_CONNECTION, hr__conn_notify, e,
                          MHD_OPTION_NOTIFY_COMPLETED, hr__conn_completed, e, MHD_OPTION_END);
}

int hr__exporter_start_with(const char *listen, const hr__http_limits_t *lim, hr_exporter_t **out,
                            char *err, size_t errlen) {
  if (!listen || !lim || !out || lim->capacity == 0) return HR_EINVAL;
  *out = NULL;
  hr_exporter_t *e = calloc(1, sizeof *e);
  if (!e) return HR_ENOMEM;
  e->lim = *lim;
  e->ep = e->wake = -1;
  pthread_mutex_init(&e->lock, NULL);
  int rc = e->fd = open_listener(listen, &e->port, err, errlen);
  if (rc < 0) goto fail;
  if ((rc = hr__conns_init(e)) != 0) {
    hr__err(err, errlen, rc, "listen: %s: %s", listen, strerror(errno));
    goto fail;
  }
  if (!(e->daemon = daemon_start(e))) {
    rc = hr__err(err, errlen, HR_EIO, "listen: %s: libmicrohttpd could not start", listen);
    goto fail;
  }
  if ((rc = hr__conns_start(e)) != 0) {
    hr__err(err, errlen, rc, "listen: %s: the exporter's thread could not start", listen);
    goto fail;
  }
  *out = e;
  return 0;
fail:
  hr_exporter_stop(e);
  return rc;
}

int hr_exporter_start(const char *listen, hr_exporter_t **out, char *err, size_t errlen) {
  hr__http_limits_t lim = hr__http_limits_default();
  return hr__exporter_start_with(listen, &lim, out, err, errlen);
}

void hr_exporter_stop(hr_exporter_t *e) {
  if (!e) return;
  hr__conns_stop(e);
  if (e->daemon) MHD_stop_daemon(e->daemon); /* closes every connection */
  hr__conns_close(e);
  if (e->fd >= 0) close(e->fd);
  pthread_mutex_destroy(&e->lock);
  free(e->metrics);
  free(e->snapshot);
  free(e);
}

int hr_exporter_port(const hr_exporter_t *e) {
  return e ? e->port : -1;
}

int hr_exporter_publish(hr_exporter_t *e, const char *metrics, const char *snapshot_json) {
  if (!e) return HR_EINVAL;
  char *m = metrics ? strdup(metrics) : NULL, *s = snapshot_json ? strdup(snapshot_json) : NULL;
  if ((metrics && !m) || (snapshot_json && !s)) {
    free(m), free(s);
    return HR_ENOMEM;
  }
  pthread_mutex_lock(&e->lock);
  if (metrics) free(e->metrics), e->metrics = m;
  if (snapshot_json) free(e->snapshot), e->snapshot = s;
  pthread_mutex_unlock(&e->lock);
  return 0;
}
