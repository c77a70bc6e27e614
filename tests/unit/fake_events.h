/* One event of each kind (two of some), for the writer and history tests:
 * the events tests/fixtures/events/ was made from, with the writers and the
 * history store as they were before the field lists (written.txt: each
 * event's JSON line and terminal line at TZ=UTC; history-v4.sql: a schema-4
 * file holding them; history-v4-read.txt: the lines of the events read back
 * from it). Strings that JSON must escape, invalid UTF-8, NaN, an unknown
 * size, an empty optional field and a negative slope are among them. */
#ifndef HR_FAKE_EVENTS_H
#define HR_FAKE_EVENTS_H

#include <headroom/daemon.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_EVENTS_MAX 32

static inline hr_watch_event_t fake_event(hr_event_kind_t k, double t, int pid, const char *name) {
  hr_watch_event_t e;
  memset(&e, 0, sizeof e);
  e.kind = k, e.time = t, e.pid = pid;
  snprintf(e.name, sizeof e.name, "%s", name);
  return e;
}

static inline hr_watch_event_t fake_broker(hr_broker_event_kind_t what, double t, int pid,
                                           const char *name, const char *device) {
  hr_watch_event_t e = fake_event(HR_EVENT_BROKER, t, pid, name);
  e.broker.what = what;
  snprintf(e.broker.device, sizeof e.broker.device, "%s", device);
  return e;
}

static inline size_t fake_events_watch(hr_watch_event_t *es, double t) {
  size_t n = 0;
  hr_watch_event_t e = fake_event(HR_EVENT_LEVEL, t + (double)n, 0, "");
  snprintf(e.level.scope, sizeof e.level.scope, "gpu0");
  e.level.level = HR_LEVEL_WARNING, e.level.previous = HR_LEVEL_OK;
  e.level.used_pct = 87.5, e.level.used_bytes = 21ULL << 30, e.level.total_bytes = 24ULL << 30;
  snprintf(e.level.mode, sizeof e.level.mode, "balanced");
  es[n++] = e;
  e = fake_event(HR_EVENT_LEVEL, t + (double)n, 0, "");
  snprintf(e.level.scope, sizeof e.level.scope, "host");
  e.level.level = HR_LEVEL_CRITICAL, e.level.previous = HR_LEVEL_WARNING;
  e.level.used_pct = NAN, e.level.used_bytes = HR_UNKNOWN, e.level.total_bytes = 64ULL << 30;
  es[n++] = e;
  e = fake_event(HR_EVENT_LEAK, t + (double)n, 4242, "py\"th\xffon");
  snprintf(e.leak.series, sizeof e.leak.series, "rss_anon");
  e.leak.slope_bytes_per_min = 5e6, e.leak.window_s = 600, e.leak.span_s = 59.5;
  e.leak.points = 60, e.leak.confidence = 0.99999;
  es[n++] = e;
  e = fake_event(HR_EVENT_LEAK, t + (double)n, 4243, "trainer");
  snprintf(e.leak.series, sizeof e.leak.series, "gpu");
  e.leak.slope_bytes_per_min = -1234.5, e.leak.window_s = 120.5, e.leak.span_s = 30;
  e.leak.points = 31, e.leak.confidence = 0.95;
  es[n++] = e;
  e = fake_event(HR_EVENT_IDLE_HOG, t + (double)n, 77, "comfy");
  e.idle_hog.gpu = 1, e.idle_hog.gpu_bytes = 11ULL << 30, e.idle_hog.share_pct = 45.8;
  e.idle_hog.util_pct = 3, e.idle_hog.samples = 60;
  es[n++] = e;
  e = fake_event(HR_EVENT_OOM_KILL, t + (double)n, 0, "");
  snprintf(e.oom_kill.scope, sizeof e.oom_kill.scope, "cgroup");
  snprintf(e.oom_kill.path, sizeof e.oom_kill.path, "/kubepods/pod1");
  e.oom_kill.kills = 2, e.oom_kill.total = 5;
  es[n++] = e;
  es[n] = fake_event(HR_EVENT_EXIT, t + (double)n, 99, "worker");
  n++;
  e = fake_event(HR_EVENT_ACTION, t + (double)n, 0, "");
  snprintf(e.action.action, sizeof e.action.action, "on_critical");
  snprintf(e.action.result, sizeof e.action.result, "started");
  es[n++] = e;
  e = fake_event(HR_EVENT_ACTION, t + (double)n, 0, "");
  snprintf(e.action.action, sizeof e.action.action, "drop_caches");
  snprintf(e.action.result, sizeof e.action.result, "failed");
  snprintf(e.action.detail, sizeof e.action.detail, "not root: \"permission\" denied");
  es[n++] = e;
  e = fake_event(HR_EVENT_ERROR, t + (double)n, 0, "");
  snprintf(e.error.message, sizeof e.error.message, "history: disk full (monitoring goes on)");
  es[n++] = e;
  return n;
}

static inline size_t fake_events_broker(hr_watch_event_t *es, double t) {
  size_t n = 0;
  hr_watch_event_t e = fake_broker(HR_BROKER_EV_ANSWER, t + (double)n, 4242, "comfy\"ui", "gpu0");
  e.broker.uid = 1000, e.broker.priority = 3, e.broker.bytes = 300ULL << 20;
  e.broker.released_bytes = 200ULL << 20, e.broker.latency_s = 0.125, e.broker.status = 200;
  e.broker.lease = 7;
  snprintf(e.broker.message, sizeof e.broker.message, "freed 2 models");
  es[n++] = e;
  e = fake_broker(HR_BROKER_EV_ANSWER, t + (double)n, 4244, "ollama@127.0.0.1:11434", "gpu1");
  e.broker.bytes = 1ULL << 30, e.broker.latency_s = 0.5, e.broker.status = 200;
  es[n++] = e;
  e = fake_broker(HR_BROKER_EV_ASK, t + (double)n, 4242, "comfyui", "gpu0");
  e.broker.uid = 1000, e.broker.priority = 3, e.broker.bytes = 300ULL << 20;
  es[n++] = e;
  e = fake_broker(HR_BROKER_EV_GRANTED, t + (double)n, 5000, "loader", "host");
  e.broker.priority = 5, e.broker.bytes = 2ULL << 30, e.broker.latency_s = 0.002;
  e.broker.lease = 12;
  es[n++] = e;
  e = fake_broker(HR_BROKER_EV_REFUSED, t + (double)n, 5001, "big", "gpu0");
  e.broker.bytes = 90ULL << 30, e.broker.released_bytes = 1ULL << 20, e.broker.latency_s = 3.25;
  snprintf(e.broker.message, sizeof e.broker.message, "only 10 GiB can be made free");
  es[n++] = e;
  e = fake_broker(HR_BROKER_EV_PRESSURE, t + (double)n, 0, "", "host");
  e.broker.bytes = 3ULL << 30;
  snprintf(e.broker.message, sizeof e.broker.message,
           "host use 91.0%% (critical): 2 asked to release");
  es[n++] = e;
  return n;
}

/* Every event of the fixtures, in their order, timed as they were. */
static inline size_t fake_events(hr_watch_event_t *es) {
  double t = 1700000000.25;
  size_t n = fake_events_watch(es, t);
  return n + fake_events_broker(es + n, t + (double)n);
}

/* The fixture file's lines into a malloc'd array of malloc'd strings (the
 * caller frees both with fake_lines_free); NULL when it cannot be read. */
static inline char **fake_lines(const char *path, size_t *n) {
  FILE *f = fopen(path, "r");
  if (!f) return NULL;
  char **lines = calloc(256, sizeof *lines), buf[4096];
  *n = 0;
  while (lines && *n < 256 && fgets(buf, sizeof buf, f)) {
    buf[strcspn(buf, "\n")] = '\0';
    lines[(*n)++] = strdup(buf);
  }
  fclose(f);
  return lines;
}

static inline void fake_lines_free(char **lines, size_t n) {
  for (size_t i = 0; lines && i < n; i++) free(lines[i]);
  free(lines);
}

#endif /* HR_FAKE_EVENTS_H */
