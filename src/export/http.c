/* The exporter's HTTP side: libmicrohttpd on one thread of its own serving
 * two read-only documents that the watch loop replaces after each sample.
 *
 * We bind the listening socket ourselves and hand it to libmicrohttpd, so a
 * port in use is a clear "address already in use" rather than a NULL daemon,
 * and port 0 gives a free port that tests can read back. Requests are
 * bounded: libmicrohttpd's per-connection memory limit caps the headers, no
 * endpoint reads a body, and the connection count and timeout are capped.
 * Only GET (and HEAD) /, /metrics and /api/snapshot answer 200 (/ is a
 * small page linking the other two, for a person who opens the address in a
 * browser); other paths are 404, other methods on those paths 405. */
#include "util/util.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MEMORY_LIMIT    (16 * 1024)
#define MAX_CONNECTIONS 32
#define TIMEOUT_S       10

struct hr_exporter {
  struct MHD_Daemon *daemon;
  int fd, port;
  pthread_mutex_t lock;
  char *metrics, *snapshot; /* guarded by lock */
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
  const char *p = colon + 1;
  if (!*p || strlen(p) >= pn || strspn(p, "0123456789") != strlen(p) || atoi(p) > 65535)
    return HR_EINVAL;
  hr__strlcpy(port, p, pn);
  return 0;
}

/* Binds and listens on `listen`; returns the socket or a negative code. */
static int open_listener(const char *addr, int *port_out, char *err, size_t errlen) {
  char host[256], port[16];
  if (split_addr(addr, host, sizeof host, port, sizeof port) != 0)
    return hr__err(err, errlen, HR_EINVAL,
                   "listen: '%s' is not HOST:PORT (e.g. 127.0.0.1:10460), or none", addr);
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
  e->fd = open_listener(listen, &e->port, err, errlen);
  if (e->fd < 0) {
    int rc = e->fd;
    pthread_mutex_destroy(&e->lock);
    free(e);
    return rc;
  }
  e->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL, NULL,
                               handle, e, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)e->fd,
                               MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MEMORY_LIMIT,
                               MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
                               MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)TIMEOUT_S, MHD_OPTION_END);
  if (!e->daemon) {
    close(e->fd);
    pthread_mutex_destroy(&e->lock);
    free(e);
    return hr__err(err, errlen, HR_EIO, "listen: %s: libmicrohttpd could not start", listen);
  }
  *out = e;
  return 0;
}

void hr_exporter_stop(hr_exporter_t *e) {
  if (!e) return;
  MHD_stop_daemon(e->daemon); /* closes the listening socket too */
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
