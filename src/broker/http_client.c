/* The adapters' HTTP/1.1 client: one request and one reply over a
 * non-blocking TCP socket that the broker's poll loop watches, so an
 * endpoint that accepts and never answers costs the loop nothing (the
 * adapter's job deadline ends it). The reply is parsed as it arrives, each
 * byte looked at a bounded number of times whatever the split (a body in
 * 1-byte chunks costs what it costs whole): headers up to 16 KiB, a body
 * up to 1 MiB, by Content-Length, chunked transfer coding, or the end of
 * the connection. Only http:// is spoken. */
#include "broker/broker_int.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The chunked decoder's states. */
enum {
  CS_SIZE,
  CS_EXT,
  CS_SIZE_LF,
  CS_DATA,
  CS_DATA_CR,
  CS_DATA_LF,
  CS_TRAILER_START,
  CS_TRAILER,
  CS_END_LF
};

int hr__bhttp_start(hr__bhttp_t *h, const struct sockaddr *sa, socklen_t len, const char *host,
                    int port, const hr__breq_http_t *r, char *err, size_t n) {
  *h = (hr__bhttp_t){.fd = -1, .content_length = -1};
  hr__buf_printf(&h->out,
                 "%s %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: headroom-broker\r\n"
                 "Accept: application/json\r\nConnection: close\r\n",
                 r->method, r->target, host, port);
  if (*r->body)
    hr__buf_printf(&h->out, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                   strlen(r->body), r->body);
  else
    hr__buf_puts(&h->out, "Content-Length: 0\r\n\r\n");
  if (h->out.failed) return hr__err(err, n, HR_ENOMEM, "out of memory");
  h->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (h->fd < 0) return hr__err(err, n, HR_EIO, "socket: %s", strerror(errno));
  if (connect(h->fd, sa, len) == 0)
    h->state = HR__HTTP_SEND;
  else if (errno == EINPROGRESS)
    h->state = HR__HTTP_CONNECT;
  else {
    int e = errno;
    hr__bhttp_close(h);
    return hr__err(err, n, HR_EIO, "connect to %s:%d: %s", host, port, strerror(e));
  }
  return 0;
}

short hr__bhttp_events(const hr__bhttp_t *h) {
  switch (h->state) {
  case HR__HTTP_CONNECT:
  case HR__HTTP_SEND:
    return POLLOUT;
  case HR__HTTP_RECV:
    return POLLIN;
  default:
    return 0;
  }
}

void hr__bhttp_close(hr__bhttp_t *h) {
  if (h->fd >= 0) close(h->fd);
  h->fd = -1;
  h->state = HR__HTTP_IDLE;
  hr__buf_free(&h->out);
  hr__buf_free(&h->hdr);
  hr__buf_free(&h->body);
}

/* The value of header `name` (case-insensitive) in the header block, or
 * NULL; the block is NUL-terminated. */
static const char *header(const char *hdr, const char *name) {
  size_t nl = strlen(name);
  for (const char *l = strchr(hdr, '\n'); l; l = strchr(l, '\n')) {
    l++;
    if (strncasecmp(l, name, nl) == 0 && l[nl] == ':') {
      const char *v = l + nl + 1;
      while (*v == ' ' || *v == '\t') v++;
      return v;
    }
  }
  return NULL;
}

/* The status line and the headers that shape the body. */
static int parse_headers(hr__bhttp_t *h, char *err, size_t n) {
  const char *s = h->hdr.s;
  if (strncmp(s, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)s[7]) || s[8] != ' ' ||
      sscanf(s + 9, "%3d", &h->status) != 1 || h->status < 100)
    return hr__err(err, n, HR_EIO, "not an HTTP answer");
  const char *te = header(s, "transfer-encoding"), *cl = header(s, "content-length");
  h->chunked = te && strncasecmp(te, "chunked", 7) == 0;
  if (!h->chunked && cl) {
    char *end;
    long long v = strtoll(cl, &end, 10);
    if (end == cl || v < 0) return hr__err(err, n, HR_EIO, "a bad Content-Length");
    if (v > (long long)HR_BROKER_REPLY_MAX)
      return hr__err(err, n, HR_EIO, "a reply of %lld bytes (over 1 MiB)", v);
    h->content_length = v;
  }
  h->headers_done = true;
  return 0;
}

static int body_put(hr__bhttp_t *h, const char *d, size_t k, char *err, size_t n) {
  if (h->body.len + k > HR_BROKER_REPLY_MAX)
    return hr__err(err, n, HR_EIO, "a reply body over 1 MiB");
  hr__buf_put(&h->body, d, k);
  h->examined += k;
  return h->body.failed ? hr__err(err, n, HR_ENOMEM, "out of memory") : 0;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = (char)tolower((unsigned char)c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* One byte of chunk framing (not data); returns 1 at the end, 0 to go on,
 * a negative code when the framing is wrong. */
static int chunk_byte(hr__bhttp_t *h, char c, char *err, size_t n) {
  h->examined++;
  switch (h->chunk_state) {
  case CS_SIZE:
    if (hexval(c) >= 0) {
      h->chunk_left = h->chunk_left * 16 + (uint64_t)hexval(c);
      if (h->chunk_left > HR_BROKER_REPLY_MAX) return hr__err(err, n, HR_EIO, "a chunk over 1 MiB");
      return 0;
    }
    h->chunk_state = c == ';' ? CS_EXT : c == '\r' ? CS_SIZE_LF : -1;
    break;
  case CS_EXT:
    h->chunk_state = c == '\r' ? CS_SIZE_LF : CS_EXT;
    break;
  case CS_SIZE_LF:
    h->chunk_state = c != '\n' ? -1 : h->chunk_left ? CS_DATA : CS_TRAILER_START;
    break;
  case CS_DATA_CR:
    h->chunk_state = c == '\r' ? CS_DATA_LF : -1;
    break;
  case CS_DATA_LF:
    h->chunk_state = c == '\n' ? CS_SIZE : -1;
    break;
  case CS_TRAILER_START:
    h->chunk_state = c == '\r' ? CS_END_LF : CS_TRAILER;
    break;
  case CS_TRAILER:
    h->chunk_state = c == '\n' ? CS_TRAILER_START : CS_TRAILER;
    break;
  case CS_END_LF:
    return c == '\n' ? 1 : hr__err(err, n, HR_EIO, "a bad end of chunks");
  }
  return h->chunk_state < 0 ? hr__err(err, n, HR_EIO, "a bad chunk framing") : 0;
}

static int feed_chunked(hr__bhttp_t *h, const char *d, size_t len, char *err, size_t n) {
  size_t i = 0;
  while (i < len) {
    if (h->chunk_state == CS_DATA) {
      size_t k = HR_MIN((uint64_t)(len - i), h->chunk_left);
      int rc = body_put(h, d + i, k, err, n);
      if (rc) return rc;
      i += k;
      if ((h->chunk_left -= k) == 0) h->chunk_state = CS_DATA_CR;
      continue;
    }
    int rc = chunk_byte(h, d[i++], err, n);
    if (rc) return rc;
  }
  return 0;
}

int hr__bhttp_feed(hr__bhttp_t *h, const char *d, size_t len, char *err, size_t n) {
  size_t i = 0;
  /* Headers: byte by byte until the blank line, so the search never looks
   * at a byte twice. */
  while (!h->headers_done && i < len) {
    if (h->hdr.len >= HR_BROKER_HEADER_MAX)
      return hr__err(err, n, HR_EIO, "reply headers over %d bytes", HR_BROKER_HEADER_MAX);
    hr__buf_put(&h->hdr, d + i++, 1);
    h->examined++;
    if (h->hdr.failed) return hr__err(err, n, HR_ENOMEM, "out of memory");
    if (h->hdr.len >= 4 && memcmp(h->hdr.s + h->hdr.len - 4, "\r\n\r\n", 4) == 0) {
      int rc = parse_headers(h, err, n);
      if (rc) return rc;
    }
  }
  if (!h->headers_done) return 0;
  int rc = 0;
  if (h->chunked) return feed_chunked(h, d + i, len - i, err, n);
  size_t k = len - i;
  if (h->content_length >= 0) k = HR_MIN(k, (size_t)h->content_length - h->body.len);
  if (k && (rc = body_put(h, d + i, k, err, n)) != 0) return rc;
  return h->content_length >= 0 && h->body.len == (size_t)h->content_length;
}

int hr__bhttp_eof(hr__bhttp_t *h, char *err, size_t n) {
  if (h->headers_done && !h->chunked && h->content_length < 0) return 1;
  return hr__err(err, n, HR_EIO, "%s",
                 h->headers_done ? "the reply was cut short"
                 : h->hdr.len    ? "not an HTTP answer"
                                 : "the connection closed without an answer");
}

static int do_send(hr__bhttp_t *h, char *err, size_t n) {
  while (h->out_off < h->out.len) {
    ssize_t w = send(h->fd, h->out.s + h->out_off, h->out.len - h->out_off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) return 0;
    if (w <= 0) return hr__err(err, n, HR_EIO, "could not send the request: %s", strerror(errno));
    h->out_off += (size_t)w;
  }
  h->state = HR__HTTP_RECV;
  return 0;
}

static int do_recv(hr__bhttp_t *h, char *err, size_t n) {
  char chunk[4096];
  for (;;) {
    ssize_t r = recv(h->fd, chunk, sizeof chunk, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) return 0;
    if (r < 0) return hr__err(err, n, HR_EIO, "receive: %s", strerror(errno));
    int rc = r == 0 ? hr__bhttp_eof(h, err, n) : hr__bhttp_feed(h, chunk, (size_t)r, err, n);
    if (rc) {
      if (rc == 1) h->state = HR__HTTP_DONE;
      return rc;
    }
  }
}

int hr__bhttp_step(hr__bhttp_t *h, short revents, char *err, size_t n) {
  if (h->state == HR__HTTP_CONNECT && revents) {
    int e = 0;
    socklen_t el = sizeof e;
    if (getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0) e = errno;
    if (e) return hr__err(err, n, HR_EIO, "connect: %s", strerror(e));
    h->state = HR__HTTP_SEND;
  }
  if (h->state == HR__HTTP_SEND) {
    int rc = do_send(h, err, n);
    if (rc) return rc;
  }
  if (h->state == HR__HTTP_RECV && (revents & (POLLIN | POLLHUP | POLLERR)))
    return do_recv(h, err, n);
  return 0;
}
