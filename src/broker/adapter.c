/* Adapters: programs that load no agent, asked to give memory back through
 * their own HTTP API, each at the endpoint the config names (never
 * guessed). What each program is asked lives in its own file behind an
 * operations table (hr__adapter_ops_t: adapter_comfyui.c, adapter_ollama.c,
 * adapter_vllm.c); this file runs their jobs.
 *
 * An adapter does one job at a time: a refresh (what it holds, whether it
 * is at work or asleep; every HR_BROKER_REFRESH_S), a release, or a wake.
 * A job is a sequence of HTTP requests over the non-blocking client of
 * http_client.c, all of it within one deadline, broker_timeout, however
 * many models it goes through; the broker's poll loop moves it on and
 * never waits for it. A release drops a refresh under way. A failed call is
 * an adapter_failed event with the HTTP status it got (0 when none came);
 * a failed refresh says so once, when it starts failing. */
#include "broker/broker_int.h"

#include <netdb.h>
#include <stdlib.h>
#include <string.h>

static const hr__adapter_ops_t *const kinds[] = {&hr__adapter_comfyui, &hr__adapter_ollama,
                                                 &hr__adapter_vllm};

static int resolve(hr__badapter_t *a, char *err, size_t n) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
  char ps[16];
  snprintf(ps, sizeof ps, "%d", a->port);
  if (getaddrinfo(a->host, ps, &hints, &ai) != 0 || !ai || ai->ai_addrlen > sizeof a->addr) {
    if (ai) freeaddrinfo(ai);
    return hr__err(err, n, HR_EINVAL, "broker_adapters: %s: cannot resolve %s", a->ops->kind,
                   a->host);
  }
  memcpy(&a->addr, ai->ai_addr, ai->ai_addrlen);
  a->addrlen = ai->ai_addrlen;
  freeaddrinfo(ai);
  return 0;
}

/* One KIND[@DEVICE]=http://HOST:PORT of the list. */
static int parse_one(hr_broker_t *b, char *tok, char *err, size_t n) {
  char *eq = strchr(tok, '='), *at;
  if (!eq) return hr__err(err, n, HR_EINVAL, "broker_adapters: '%s' is not KIND[@DEVICE]=URL", tok);
  *eq = '\0';
  const char *url = eq + 1;
  if (b->n_adapters == HR_BROKER_MAX_ADAPTER)
    return hr__err(err, n, HR_EINVAL, "broker_adapters: at most %d", HR_BROKER_MAX_ADAPTER);
  hr__badapter_t *a = &b->adapters[b->n_adapters];
  *a = (hr__badapter_t){.http.fd = -1};
  hr__strlcpy(a->device, b->n_res > 1 ? "gpu0" : "host", sizeof a->device);
  if ((at = strchr(tok, '@'))) {
    *at = '\0';
    if (hr__broker_res_find(b, at + 1) < 0)
      return hr__err(err, n, HR_EINVAL, "broker_adapters: %s: no resource '%s'", tok, at + 1);
    hr__strlcpy(a->device, at + 1, sizeof a->device);
  }
  for (size_t k = 0; k < HR_ARRAY_LEN(kinds) && !a->ops; k++)
    if (strcmp(kinds[k]->kind, tok) == 0) a->ops = kinds[k];
  if (!a->ops)
    return hr__err(err, n, HR_EINVAL,
                   "broker_adapters: unknown kind '%s' (comfyui, ollama or vllm)", tok);
  int port, end = 0;
  if (sscanf(url, "http://%63[^:/]:%d%n", a->host, &port, &end) != 2 || port < 1 || port > 65535 ||
      (url[end] && strcmp(url + end, "/") != 0))
    return hr__err(err, n, HR_EINVAL,
                   "broker_adapters: %s: '%s' is not http://HOST:PORT (https is not spoken)", tok,
                   url);
  a->port = port;
  char name[sizeof a->name];
  snprintf(name, sizeof name, "%s@%s:%d", tok, a->host, port);
  hr__strlcpy(a->name, name, sizeof a->name);
  int rc = resolve(a, err, n);
  if (rc == 0) b->n_adapters++;
  return rc;
}

int hr__broker_parse_adapters(hr_broker_t *b, const char *spec, char *err, size_t n) {
  char copy[1024], *save = NULL;
  if (strlen(spec) >= sizeof copy)
    return hr__err(err, n, HR_EINVAL, "broker_adapters: longer than %zu bytes", sizeof copy - 1);
  hr__strlcpy(copy, spec, sizeof copy);
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    while (*tok == ' ') tok++;
    int rc = parse_one(b, tok, err, n);
    if (rc) return rc;
  }
  return 0;
}

/* ---- jobs ---------------------------------------------------------------------- */

static void job_next(hr_broker_t *b, hr__badapter_t *a);

static void job_clear(hr__badapter_t *a) {
  hr__bhttp_close(&a->http);
  a->job.kind = HR__JOB_NONE;
}

static void job_fail(hr_broker_t *b, hr__badapter_t *a, int status, const char *why) {
  hr__bjob_t j = a->job;
  bool first = !*a->last_error;
  job_clear(a);
  snprintf(a->last_error, sizeof a->last_error, "%s", why);
  a->strike_at = hr__broker_now(b);
  if (j.kind != HR__JOB_REFRESH || first) {
    hr_watch_event_t e = {.broker.what = HR_BROKER_EV_ADAPTER_FAILED,
                          .broker.status = status,
                          .broker.priority = b->adapter_priority,
                          .broker.bytes = j.bytes};
    hr__strlcpy(e.broker.message, why, sizeof e.broker.message);
    hr__broker_emit(b, &e, a->name, a->device);
    hr__broker_count(b, &b->counters.adapter_failures, 1);
  }
  if (j.kind == HR__JOB_RELEASE) hr__broker_adapter_done(b, a, &j, false);
}

static void job_done(hr_broker_t *b, hr__badapter_t *a) {
  hr__bjob_t j = a->job;
  job_clear(a);
  *a->last_error = '\0';
  b->last_read = 0; /* what it holds counts from the next reading */
  if (j.kind != HR__JOB_RELEASE) return;
  double now = hr__broker_now(b);
  hr_watch_event_t e = {.broker.what = HR_BROKER_EV_ANSWER,
                        .broker.bytes = j.bytes,
                        .broker.released_bytes = j.got,
                        .broker.status = j.status,
                        .broker.priority = b->adapter_priority,
                        .broker.latency_s = now - j.started};
  hr__strlcpy(e.broker.message, j.msg, sizeof e.broker.message);
  hr__broker_emit(b, &e, a->name, a->device);
  pthread_mutex_lock(&b->lock);
  b->counters.answers++;
  hr__broker_count_released_locked(b, a->name, j.got);
  pthread_mutex_unlock(&b->lock);
  a->used = j.got < a->used ? a->used - j.got : 0;
  hr__broker_adapter_done(b, a, &j, true);
}

static void job_start(hr_broker_t *b, hr__badapter_t *a, hr__bjob_kind_t kind, uint64_t bytes,
                      uint64_t ask_id, uint64_t req) {
  double now = hr__broker_now(b);
  job_clear(a);
  a->job = (hr__bjob_t){.kind = kind,
                        .ask_id = ask_id,
                        .req = req,
                        .bytes = bytes,
                        .started = now,
                        .deadline = now + b->request_timeout};
  if (kind == HR__JOB_REFRESH) a->refreshed_at = now;
  if (kind == HR__JOB_WAKE) a->want_wake = false;
  if (kind == HR__JOB_RELEASE) {
    hr_watch_event_t e = {.broker.what = HR_BROKER_EV_ASK,
                          .broker.bytes = bytes,
                          .broker.priority = b->adapter_priority};
    hr__broker_emit(b, &e, a->name, a->device);
    hr__broker_count(b, &b->counters.asks, 1);
  }
  job_next(b, a);
}

/* Makes the job's next request, or ends the job when it has none. */
static void job_next(hr_broker_t *b, hr__badapter_t *a) {
  hr__breq_http_t r = {.method = "GET"};
  if (!a->ops->next(a, &a->job, &r)) {
    job_done(b, a);
    return;
  }
  a->job.step++;
  snprintf(a->job.what, sizeof a->job.what, "%s %s", r.method, r.target);
  char err[200], why[512];
  if (hr__bhttp_start(&a->http, (const struct sockaddr *)&a->addr, a->addrlen, a->host, a->port, &r,
                      err, sizeof err) == 0)
    return;
  snprintf(why, sizeof why, "%s: %s", a->job.what, err);
  job_fail(b, a, 0, why);
}

void hr__adapter_io(hr_broker_t *b, hr__badapter_t *a, short revents) {
  char err[200], why[512];
  int rc = hr__bhttp_step(&a->http, revents, err, sizeof err);
  if (rc == 0) return;
  int status = rc == 1 ? a->http.status : 0;
  if (rc == 1 && status >= 200 && status < 300) {
    a->job.status = status;
    if (a->ops->reply(a, &a->job, a->http.body.s ? a->http.body.s : "", a->http.body.len)) {
      hr__bhttp_close(&a->http);
      job_next(b, a);
      return;
    }
    snprintf(err, sizeof err, "%s", a->job.msg);
  } else if (rc == 1)
    snprintf(err, sizeof err, "HTTP %d", status);
  snprintf(why, sizeof why, "%s: %s", a->job.what, err);
  job_fail(b, a, status, why);
}

void hr__adapter_tick(hr_broker_t *b) {
  double now = hr__broker_now(b);
  for (size_t i = 0; i < b->n_adapters; i++) {
    hr__badapter_t *a = &b->adapters[i];
    if (a->job.kind && now >= a->job.deadline) {
      char why[512];
      snprintf(why, sizeof why, "%s: no answer within %gs (broker_timeout)", a->job.what,
               b->request_timeout);
      job_fail(b, a, 0, why);
    }
    if (!a->job.kind && a->want_wake)
      job_start(b, a, HR__JOB_WAKE, 0, 0, 0);
    else if (!a->job.kind && now - a->refreshed_at >= HR_BROKER_REFRESH_S)
      job_start(b, a, HR__JOB_REFRESH, 0, 0, 0);
  }
}

bool hr__adapter_in_flight(const hr__badapter_t *a) {
  return a->job.kind == HR__JOB_RELEASE || a->job.kind == HR__JOB_WAKE;
}

bool hr__adapter_release(hr_broker_t *b, hr__badapter_t *a, uint64_t bytes, uint64_t ask_id,
                         uint64_t req) {
  if (hr__adapter_in_flight(a)) return false;
  job_start(b, a, HR__JOB_RELEASE, bytes, ask_id, req);
  return true;
}

void hr__adapter_wake(hr_broker_t *b, hr__badapter_t *a) {
  if (!a->ops->sleeps) return;
  a->want_wake = true;
  if (!hr__adapter_in_flight(a)) job_start(b, a, HR__JOB_WAKE, 0, 0, 0);
}

short hr__adapter_events(const hr__badapter_t *a) {
  return a->job.kind ? hr__bhttp_events(&a->http) : 0;
}

void hr__adapter_close(hr__badapter_t *a) {
  job_clear(a);
}
