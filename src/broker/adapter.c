/* Adapters: programs that load no agent, asked to give memory back through
 * their own HTTP API, each at the endpoint the config names (never guessed):
 *   comfyui  POST /free {"unload_models":true,"free_memory":true}
 *   ollama   GET /api/ps (loaded models, size and size_vram); unload one with
 *            POST /api/generate {"model":NAME,"keep_alive":0}
 *   vllm     (started with --enable-sleep-mode) GET /is_sleeping,
 *            POST /sleep?level=1, and POST /wake_up when the lease it made
 *            room for ends.
 * A plain HTTP/1.1 client over TCP with one deadline per call; a failed call
 * is an event with the status it got (0 when none came). */
#include "broker/broker_int.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int hr__broker_parse_adapters(hr_broker_t *b, const char *spec, char *err, size_t n) {
  char copy[1024], *save = NULL;
  if (strlen(spec) >= sizeof copy)
    return hr__err(err, n, HR_EINVAL, "broker_adapters: longer than %zu bytes", sizeof copy - 1);
  hr__strlcpy(copy, spec, sizeof copy);
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    while (*tok == ' ') tok++;
    char *eq = strchr(tok, '='), *at;
    if (!eq) goto bad;
    *eq = '\0';
    const char *url = eq + 1;
    if (b->n_adapters == HR_BROKER_MAX_ADAPTER)
      return hr__err(err, n, HR_EINVAL, "broker_adapters: at most %d", HR_BROKER_MAX_ADAPTER);
    hr__badapter_t *a = &b->adapters[b->n_adapters];
    *a = (hr__badapter_t){.port = 0};
    hr__strlcpy(a->device, b->n_res > 1 ? "gpu0" : "host", sizeof a->device);
    if ((at = strchr(tok, '@'))) {
      *at = '\0';
      if (hr__broker_res_find(b, at + 1) < 0)
        return hr__err(err, n, HR_EINVAL, "broker_adapters: %s: no resource '%s'", tok, at + 1);
      hr__strlcpy(a->device, at + 1, sizeof a->device);
    }
    if (strcmp(tok, "comfyui") && strcmp(tok, "ollama") && strcmp(tok, "vllm"))
      return hr__err(err, n, HR_EINVAL,
                     "broker_adapters: unknown kind '%s' (comfyui, ollama or vllm)", tok);
    hr__strlcpy(a->kind, tok, sizeof a->kind);
    char host[64];
    int port, end = 0;
    if (sscanf(url, "http://%63[^:/]:%d%n", host, &port, &end) != 2 || port < 1 || port > 65535 ||
        (url[end] && strcmp(url + end, "/") != 0))
      return hr__err(err, n, HR_EINVAL,
                     "broker_adapters: %s: '%s' is not http://HOST:PORT (https is not spoken)", tok,
                     url);
    hr__strlcpy(a->host, host, sizeof a->host);
    a->port = port;
    char name[96];
    snprintf(name, sizeof name, "%s@%s:%d", tok, host, port);
    hr__strlcpy(a->name, name, sizeof a->name);
    b->n_adapters++;
  }
  return 0;
bad:
  return hr__err(err, n, HR_EINVAL, "broker_adapters: '%s' is not KIND[@DEVICE]=URL", spec);
}

static int connect_deadline(const char *host, int port, double deadline, char *err, size_t n) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  if (getaddrinfo(host, ps, &hints, &ai) != 0 || !ai)
    return hr__err(err, n, HR_EIO, "cannot resolve %s", host);
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(ai);
    return hr__err(err, n, HR_EIO, "socket: %s", strerror(errno));
  }
  int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
  freeaddrinfo(ai);
  if (rc != 0 && errno == EINPROGRESS) {
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    double left = deadline - hr__now_mono();
    int e = 0;
    socklen_t el = sizeof e;
    if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) != 1 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0 || e != 0) {
      close(fd);
      return hr__err(err, n, e ? HR_EIO : HR_ETIMEDOUT, "connect to %s:%d: %s", host, port,
                     e ? strerror(e) : "timed out");
    }
  } else if (rc != 0) {
    int e = errno;
    close(fd);
    return hr__err(err, n, HR_EIO, "connect to %s:%d: %s", host, port, strerror(e));
  }
  return fd;
}

/* Decodes a chunked body in place; returns its length. */
static size_t dechunk(char *s) {
  char *in = s, *out = s;
  for (;;) {
    char *end;
    unsigned long len = strtoul(in, &end, 16);
    char *crlf = strstr(end, "\r\n");
    if (!crlf || len == 0) break;
    in = crlf + 2;
    if (strlen(in) < len) break;
    memmove(out, in, len);
    out += len, in += len;
    if (in[0] == '\r' && in[1] == '\n') in += 2;
  }
  *out = '\0';
  return (size_t)(out - s);
}

int hr__http(const char *host, int port, const char *method, const char *target, const char *body,
             double timeout, int *status, char **resp, char *err, size_t n) {
  double deadline = hr__now_mono() + timeout;
  *status = 0;
  *resp = NULL;
  int fd = connect_deadline(host, port, deadline, err, n);
  if (fd < 0) return fd;
  hr__buf_t q = {0}, in = {0};
  int rc = 0;
  hr__buf_printf(&q,
                 "%s %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: headroom-broker\r\n"
                 "Accept: application/json\r\nConnection: close\r\n",
                 method, target, host, port);
  if (body)
    hr__buf_printf(&q, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                   strlen(body), body);
  else
    hr__buf_puts(&q, "Content-Length: 0\r\n\r\n");
  for (size_t off = 0; !q.failed && off < q.len;) {
    ssize_t w = send(fd, q.s + off, q.len - off, MSG_NOSIGNAL);
    if (w > 0) {
      off += (size_t)w;
      continue;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    double left = deadline - hr__now_mono();
    if ((w < 0 && errno != EAGAIN) || left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) != 1) {
      rc = hr__err(err, n, HR_ETIMEDOUT, "%s %s: could not send the request", method, target);
      goto out;
    }
  }
  char chunk[4096];
  for (;;) {
    ssize_t r = recv(fd, chunk, sizeof chunk, 0);
    if (r > 0) {
      hr__buf_put(&in, chunk, (size_t)r);
      if (in.len > (1u << 20)) break;
      continue;
    }
    if (r == 0) break;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    double left = deadline - hr__now_mono();
    if (errno != EAGAIN || left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) != 1) {
      if (in.len == 0) {
        rc = hr__err(err, n, HR_ETIMEDOUT, "%s %s: no answer within %gs", method, target, timeout);
        goto out;
      }
      break;
    }
  }
  if (in.failed || !in.s || sscanf(in.s, "HTTP/1.%*d %d", status) != 1) {
    rc = hr__err(err, n, HR_EIO, "%s %s: not an HTTP answer", method, target);
    goto out;
  }
  char *hdr_end = strstr(in.s, "\r\n\r\n");
  if (hdr_end) {
    *hdr_end = '\0';
    bool chunked = strcasestr(in.s, "transfer-encoding: chunked") != NULL;
    char *b = hdr_end + 4;
    size_t len = chunked ? dechunk(b) : strlen(b);
    *resp = malloc(len + 1);
    if (*resp) memcpy(*resp, b, len), (*resp)[len] = '\0';
  }
out:
  close(fd);
  hr__buf_free(&q);
  hr__buf_free(&in);
  return rc;
}

/* One call with its events: a failure (no answer, or a status not 2xx) is
 * an adapter_failed event with the status. Returns the status, 0 on none. */
static int call(hr_broker_t *b, hr__badapter_t *a, const char *method, const char *target,
                const char *body, char **resp) {
  char err[200] = "";
  int status = 0;
  int rc = hr__http(a->host, a->port, method, target, body, b->request_timeout, &status, resp, err,
                    sizeof err);
  if (rc == 0 && status >= 200 && status < 300) return status;
  hr_watch_event_t e = {.broker.what = HR_BROKER_EV_ADAPTER_FAILED,
                        .broker.status = status,
                        .broker.priority = b->adapter_priority};
  if (rc)
    snprintf(e.broker.message, sizeof e.broker.message, "%s", err);
  else
    snprintf(e.broker.message, sizeof e.broker.message, "%s %s: HTTP %d", method, target, status);
  hr__broker_emit(b, &e, a->name, a->device);
  hr__broker_count(b, &b->counters.adapter_failures, 1);
  free(*resp);
  *resp = NULL;
  return 0;
}

/* Ollama's loaded models, least recently used (soonest to expire) first. */
static cJSON *ollama_models(hr_broker_t *b, hr__badapter_t *a) {
  char *resp = NULL;
  if (!call(b, a, "GET", "/api/ps", NULL, &resp)) return NULL;
  cJSON *j = cJSON_Parse(resp);
  free(resp);
  return j;
}

static uint64_t ollama_bytes(const hr__badapter_t *a, const cJSON *m) {
  const cJSON *size = cJSON_GetObjectItemCaseSensitive(m, "size");
  const cJSON *vram = cJSON_GetObjectItemCaseSensitive(m, "size_vram");
  double s = cJSON_IsNumber(size) ? size->valuedouble : 0;
  double v = cJSON_IsNumber(vram) ? vram->valuedouble : 0;
  double x = strcmp(a->device, "host") == 0 ? s - v : v;
  return x > 0 ? (uint64_t)x : 0;
}

uint64_t hr__adapter_releasable(hr_broker_t *b, hr__badapter_t *a, bool *unknown) {
  *unknown = false;
  if (strcmp(a->kind, "ollama") == 0) {
    cJSON *j = ollama_models(b, a), *m;
    uint64_t sum = 0;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(j, "models")) sum += ollama_bytes(a, m);
    cJSON_Delete(j);
    return a->used = sum;
  }
  if (strcmp(a->kind, "vllm") == 0) {
    char *resp = NULL;
    if (!call(b, a, "GET", "/is_sleeping", NULL, &resp)) return 0;
    cJSON *j = cJSON_Parse(resp);
    free(resp);
    bool asleep = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "is_sleeping"));
    cJSON_Delete(j);
    *unknown = !asleep;
    return 0;
  }
  *unknown = true; /* ComfyUI does not say what /free would give back */
  return 0;
}

static void answered(hr_broker_t *b, hr__badapter_t *a, uint64_t asked, uint64_t got, int status,
                     double t0, const char *msg) {
  hr_watch_event_t e = {.broker.what = HR_BROKER_EV_ANSWER,
                        .broker.bytes = asked,
                        .broker.released_bytes = got,
                        .broker.status = status,
                        .broker.priority = b->adapter_priority,
                        .broker.latency_s = hr__now_mono() - t0};
  hr__strlcpy(e.broker.message, msg, sizeof e.broker.message);
  hr__broker_emit(b, &e, a->name, a->device);
  pthread_mutex_lock(&b->lock);
  b->counters.answers++;
  hr__broker_count_released_locked(b, a->name, got);
  pthread_mutex_unlock(&b->lock);
}

uint64_t hr__adapter_release(hr_broker_t *b, hr__badapter_t *a, uint64_t bytes) {
  double t0 = hr__now_mono();
  uint64_t got = 0;
  char *resp = NULL, msg[200] = "";
  int status = 0;
  hr_watch_event_t e = {.broker.what = HR_BROKER_EV_ASK,
                        .broker.bytes = bytes,
                        .broker.priority = b->adapter_priority};
  hr__broker_emit(b, &e, a->name, a->device);
  hr__broker_count(b, &b->counters.asks, 1);
  if (strcmp(a->kind, "comfyui") == 0) {
    status = call(b, a, "POST", "/free", "{\"unload_models\":true,\"free_memory\":true}", &resp);
    snprintf(msg, sizeof msg, "POST /free: models unload between prompts");
  } else if (strcmp(a->kind, "vllm") == 0) {
    status = call(b, a, "POST", "/sleep?level=1", NULL, &resp);
    if (status) a->asleep = true;
    snprintf(msg, sizeof msg, "POST /sleep?level=1: weights offloaded, KV cache dropped");
  } else {
    cJSON *j = ollama_models(b, a), *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(j, "models")) {
      const cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "name");
      uint64_t x = ollama_bytes(a, m);
      if (got >= bytes || !cJSON_IsString(name) || x == 0) continue;
      hr__buf_t q = {0};
      hr__buf_puts(&q, "{\"model\":");
      hr__buf_json_str(&q, name->valuestring);
      hr__buf_puts(&q, ",\"keep_alive\":0}");
      char *r2 = NULL;
      int st = q.failed ? 0 : call(b, a, "POST", "/api/generate", q.s, &r2);
      hr__buf_free(&q);
      free(r2);
      if (st) {
        status = st, got += x;
        size_t l = strlen(msg);
        snprintf(msg + l, sizeof msg - l, "%sunloaded %s", l ? ", " : "", name->valuestring);
      }
    }
    cJSON_Delete(j);
  }
  free(resp);
  a->used = got < a->used ? a->used - got : 0;
  if (status) answered(b, a, bytes, got, status, t0, msg);
  return got;
}

void hr__adapter_refresh(hr_broker_t *b) {
  bool unknown;
  for (size_t i = 0; i < b->n_adapters; i++)
    if (strcmp(b->adapters[i].kind, "ollama") == 0)
      hr__adapter_releasable(b, &b->adapters[i], &unknown);
  b->last_read = 0;
}

void hr__adapter_wake(hr_broker_t *b, hr__badapter_t *a) {
  char *resp = NULL;
  if (strcmp(a->kind, "vllm") != 0 || !a->asleep) return;
  if (call(b, a, "POST", "/wake_up", NULL, &resp)) a->asleep = false;
  free(resp);
}
