/* The exporter's HTTP side: libmicrohttpd on one thread of its own serving
 * two read-only documents that the watch loop replaces after each sample.
 *
 * We bind the listening socket ourselves and hand it to libmicrohttpd, so a
 * port in use is a clear "address already in use" rather than a NULL daemon,
 * and port 0 gives a free port that tests can read back. Only GET (and HEAD)
 * /, /metrics and /api/snapshot answer 200 (/ is a small page linking the
 * other two, for a person who opens the address in a browser); other paths
 * are 404, other methods on those paths 405.
 *
 * Hostile clients must not keep a scraper out. The one thread polls with
 * epoll, so idle or slow connections cost a file descriptor each and no
 * time; there may be MAX_CONNECTIONS of them, at most PER_IP_LIMIT from one
 * address, so one host cannot take them all. libmicrohttpd's timeout is an
 * idle timeout that restarts with every byte, so a client sending one byte a
 * second would keep its connection for ever: a reaper thread cuts (shuts
 * down) every connection whose request has not been answered within
 * REQUEST_DEADLINE_S of its start, counted from the accept or from the end of
 * the previous request on that connection. The per-connection memory limit
 * caps a request's headers; no endpoint reads a body. */
#include "util/util.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MEMORY_LIMIT       (16 * 1024)
#define MAX_CONNECTIONS    512
#define PER_IP_LIMIT       64
#define REQUEST_DEADLINE_S 5.0
#define REAP_PERIOD_NS     (100 * 1000 * 1000L)

/* One open connection as the reaper sees it; it lives from libmicrohttpd's
 * "started" notification to its "closed" one, which comes before the socket
 * is closed, so `fd` is never a reused descriptor while it is listed. */
typedef struct conn {
  struct conn *prev, *next;
  int fd;
  double since; /* monotonic: accept, or the end of the last request */
  bool cut;
} conn_t;

struct hr_exporter {
  struct MHD_Daemon *daemon;
  int fd, port;
  pthread_mutex_t lock;
  char *metrics, *snapshot; /* guarded by lock */
  pthread_mutex_t conn_lock;
  conn_t conns; /* list head, guarded by conn_lock */
  pthread_t reaper;
  bool reaper_started;
  atomic_bool stopping;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             const char *body, size_t len) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!r) return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, "Allow", "GET, HEAD");
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text) {
  return reply(c, status, "text/plain; charset=utf-8", text, strlen(text));
}

static const char index_page[] =
    "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>headroom exporter</title></head>\n"
    "<body><h1>headroom exporter</h1>\n<ul>\n"
    "<li><a href=\"/metrics\">/metrics</a>: Prometheus text format</li>\n"
    "<li><a href=\"/api/snapshot\">/api/snapshot</a>: the last sample as JSON</li>\n"
    "</ul></body></html>\n";

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls) {
  hr_exporter_t *e = cls;
  (void)version, (void)upload;
  /* The first call only sees the headers; answering then means a body, if
   * any, is never read. */
  if (*con_cls == NULL) *con_cls = e;
  *upload_size = 0;
  bool metrics = strcmp(url, "/metrics") == 0, snap = strcmp(url, "/api/snapshot") == 0;
  bool root = strcmp(url, "/") == 0;
  if (!metrics && !snap && !root) return reply_text(c, MHD_HTTP_NOT_FOUND, "not found\n");
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
    return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
  if (root)
    return reply(c, MHD_HTTP_OK, "text/html; charset=utf-8", index_page, sizeof index_page - 1);
  pthread_mutex_lock(&e->lock);
  const char *doc = metrics ? e->metrics : e->snapshot;
  enum MHD_Result ret;
  if (!doc)
    ret = reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "no sample yet\n");
  else
    ret = reply(c, MHD_HTTP_OK,
                metrics ? "text/plain; version=0.0.4; charset=utf-8" : "application/json", doc,
                strlen(doc));
  pthread_mutex_unlock(&e->lock);
  return ret;
}

/* Keeps the reaper's list of open connections (libmicrohttpd's thread). */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
  hr_exporter_t *e = cls;
  conn_t *k = *socket_context;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    k = calloc(1, sizeof *k);
    if (!k || !ci) {
      /* Without a record the reaper cannot cut it: refuse it instead. */
      free(k);
      if (ci) shutdown(ci->connect_fd, SHUT_RDWR);
      return;
    }
    k->fd = ci->connect_fd;
    k->since = hr__now_mono();
    pthread_mutex_lock(&e->conn_lock);
    k->next = e->conns.next, k->prev = &e->conns;
    e->conns.next->prev = k, e->conns.next = k;
    pthread_mutex_unlock(&e->conn_lock);
    *socket_context = k;
  } else if (k) {
    pthread_mutex_lock(&e->conn_lock);
    k->prev->next = k->next, k->next->prev = k->prev;
    pthread_mutex_unlock(&e->conn_lock);
    free(k);
    *socket_context = NULL;
  }
}

/* A request answered: the deadline of the next one on this keep-alive
 * connection starts now. */
static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode code) {
  hr_exporter_t *e = cls;
  (void)con_cls, (void)code;
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  conn_t *k = ci ? ci->socket_context : NULL;
  if (!k) return;
  pthread_mutex_lock(&e->conn_lock);
  k->since = hr__now_mono();
  pthread_mutex_unlock(&e->conn_lock);
}

/* Cuts every connection past its deadline. shutdown() rather than close():
 * libmicrohttpd owns the descriptor, sees the end of the stream and closes
 * it itself, on its own thread. */
static void *reap(void *arg) {
  hr_exporter_t *e = arg;
  struct timespec period = {0, REAP_PERIOD_NS};
  while (!atomic_load(&e->stopping)) {
    nanosleep(&period, NULL);
    double now = hr__now_mono();
    pthread_mutex_lock(&e->conn_lock);
    for (conn_t *k = e->conns.next; k != &e->conns; k = k->next)
      if (!k->cut && now - k->since > REQUEST_DEADLINE_S) {
        shutdown(k->fd, SHUT_RDWR);
        k->cut = true;
      }
    pthread_mutex_unlock(&e->conn_lock);
  }
  return NULL;
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
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      e = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 64) == 0) break;
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

int hr_exporter_start(const char *listen, hr_exporter_t **out, char *err, size_t errlen) {
  if (!listen || !out) return HR_EINVAL;
  *out = NULL;
  hr_exporter_t *e = calloc(1, sizeof *e);
  if (!e) return HR_ENOMEM;
  pthread_mutex_init(&e->lock, NULL);
  pthread_mutex_init(&e->conn_lock, NULL);
  e->conns.next = e->conns.prev = &e->conns;
  e->fd = open_listener(listen, &e->port, err, errlen);
  if (e->fd < 0) {
    int rc = e->fd;
    hr_exporter_stop(e);
    return rc;
  }
  e->daemon = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL, handle, e,
      MHD_OPTION_LISTEN_SOCKET, (MHD_socket)e->fd, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      (size_t)MEMORY_LIMIT, MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)PER_IP_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
      (unsigned)REQUEST_DEADLINE_S, MHD_OPTION_NOTIFY_CONNECTION, on_connection, e,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, e, MHD_OPTION_END);
  if (!e->daemon) {
    close(e->fd);
    hr_exporter_stop(e);
    return hr__err(err, errlen, HR_EIO, "listen: %s: libmicrohttpd could not start", listen);
  }
  if (pthread_create(&e->reaper, NULL, reap, e) != 0) {
    hr_exporter_stop(e);
    return hr__err(err, errlen, HR_ENOMEM, "listen: %s: no thread for the request deadline",
                   listen);
  }
  e->reaper_started = true;
  *out = e;
  return 0;
}

void hr_exporter_stop(hr_exporter_t *e) {
  if (!e) return;
  atomic_store(&e->stopping, true);
  if (e->reaper_started) pthread_join(e->reaper, NULL);
  if (e->daemon) MHD_stop_daemon(e->daemon); /* closes the listening socket too */
  pthread_mutex_destroy(&e->conn_lock);
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
