/* The writers of an event: the JSON line and the terminal line.
 *
 * Both read the typed payload of hr_watch_event_t; they are the only places
 * that turn an event into text, so `watch --json`, the hook's
 * HEADROOM_EVENT, `history --json` and the live view cannot disagree. JSON
 * strings go through hr__buf_json_str (invalid UTF-8 becomes U+FFFD), and a
 * number that is not finite is written as null, never as "nan". */
#include "event/event.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <time.h>

static const char *const kind_names[HR_EVENT_KINDS_] = {
    "sample", "level", "leak", "idle_hog", "oom_kill", "exit", "action", "error", "broker"};

const char *hr_event_kind_name(hr_event_kind_t k) {
  return (unsigned)k < HR_EVENT_KINDS_ ? kind_names[k] : "unknown";
}

hr_event_kind_t hr_event_kind_from_name(const char *name) {
  for (int k = 0; name && k < HR_EVENT_KINDS_; k++)
    if (strcmp(name, kind_names[k]) == 0) return (hr_event_kind_t)k;
  return HR_EVENT_KINDS_;
}

/* ---- JSON --------------------------------------------------------------- */

/* ,"key":value with printf formatting, or null when v is not finite. */
static void num(hr__buf_t *b, const char *key, const char *fmt, double v) {
  hr__buf_printf(b, ",\"%s\":", key);
  if (!isfinite(v)) {
    hr__buf_puts(b, "null");
    return;
  }
  char t[64];
  snprintf(t, sizeof t, fmt, v);
  hr__buf_puts(b, t);
}

static void u64(hr__buf_t *b, const char *key, uint64_t v) {
  hr__buf_printf(b, ",\"%s\":%" PRIu64, key, v);
}

static void str(hr__buf_t *b, const char *key, const char *v) {
  hr__buf_printf(b, ",\"%s\":", key);
  hr__buf_json_str(b, v);
}

static void proc(hr__buf_t *b, const hr_watch_event_t *e) {
  hr__buf_printf(b, ",\"pid\":%d", e->pid);
  str(b, "name", e->name);
}

static void sample_json(hr__buf_t *b, const hr_event_sample_t *x) {
  const hr_snapshot_t *s = x->snap;
  if (!s) return;
  if (s->host_state == HR_PROBE_OK) {
    hr__buf_printf(b, ",\"host\":{\"total_bytes\":%" PRIu64 ",\"available_bytes\":%" PRIu64,
                   s->host.total_bytes, s->host.available_bytes);
    hr__buf_printf(b, ",\"level\":\"%s\"}", hr_level_name(x->host));
  }
  if (s->cgroup.state == HR_PROBE_OK) {
    hr__buf_printf(
        b, ",\"cgroup\":{\"usage_bytes\":%" PRIu64 ",\"limit_bytes\":", s->cgroup.usage_bytes);
    if (s->cgroup.limit_bytes == HR_UNLIMITED)
      hr__buf_puts(b, "\"max\"");
    else
      hr__buf_printf(b, "%" PRIu64, s->cgroup.limit_bytes);
    hr__buf_printf(b, ",\"level\":\"%s\"}", hr_level_name(x->cgroup));
  }
  hr__buf_puts(b, ",\"gpus\":[");
  for (size_t i = 0; i < s->n_gpus; i++) {
    const hr_gpu_t *g = &s->gpus[i];
    hr__buf_printf(b,
                   "%s{\"index\":%u,\"used_bytes\":%" PRIu64 ",\"total_bytes\":%" PRIu64
                   ",\"util_pct\":%d,\"level\":\"%s\"}",
                   i ? "," : "", g->index, g->used_bytes, g->total_bytes, g->util_gpu,
                   hr_level_name(x->gpus ? x->gpus[i] : HR_LEVEL_OK));
  }
  hr__buf_puts(b, "],\"top\":[");
  for (size_t i = 0; i < x->n_top; i++) {
    const hr_watch_proc_view_t *v = &x->top[i];
    const hr_proc_t *p = v->proc;
    hr__buf_printf(b, "%s{\"pid\":%d", i ? "," : "", p->pid);
    str(b, "name", p->name);
    u64(b, "rss_bytes", p->rss_bytes);
    u64(b, "rss_anon_bytes", p->rss_anon_bytes);
    u64(b, "gpu_bytes", p->gpu_bytes);
    num(b, "rss_anon_per_min_bytes", "%.0f", v->rss_per_min);
    hr__buf_printf(b, ",\"leak\":%s}", v->leak ? "true" : "false");
  }
  hr__buf_printf(b, "],\"processes\":%zu,\"processes_read\":%s", s->n_procs,
                 x->processes_read ? "true" : "false");
  num(b, "cpu_ms", "%.3f", x->cpu_s * 1000);
}

/* The broker's fields, in the order its lines always had. */
static void broker_json(hr__buf_t *b, const hr_watch_event_t *e) {
  const hr_event_broker_t *x = &e->broker;
  proc(b, e);
  hr__buf_printf(b, ",\"uid\":%u", x->uid);
  str(b, "device", x->device);
  hr__buf_printf(b, ",\"priority\":%d", x->priority);
  u64(b, "bytes", x->bytes);
  u64(b, "released_bytes", x->released_bytes);
  num(b, "latency_s", "%.6f", x->latency_s);
  hr__buf_printf(b, ",\"status\":%d", x->status);
  u64(b, "lease", x->lease);
  str(b, "message", x->message);
}

void hr__event_json(hr__buf_t *b, const hr_watch_event_t *e) {
  if (e->kind == HR_EVENT_BROKER) {
    /* "broker_ask", "broker_granted": what the broker's lines are called. */
    char kind[32];
    snprintf(kind, sizeof kind, "broker_%s", e->broker.what);
    hr__buf_puts(b, "{\"event\":");
    hr__buf_json_str(b, kind);
  } else
    hr__buf_printf(b, "{\"event\":\"%s\"", hr_event_kind_name(e->kind));
  num(b, "time", "%.3f", e->time);
  switch (e->kind) {
  case HR_EVENT_SAMPLE:
    sample_json(b, &e->sample);
    break;
  case HR_EVENT_LEVEL:
    str(b, "scope", e->level.scope);
    str(b, "level", hr_level_name(e->level.level));
    str(b, "previous", hr_level_name(e->level.previous));
    num(b, "used_pct", "%.1f", e->level.used_pct);
    u64(b, "used_bytes", e->level.used_bytes);
    u64(b, "total_bytes", e->level.total_bytes);
    if (e->level.mode[0]) str(b, "mode", e->level.mode);
    break;
  case HR_EVENT_LEAK:
    proc(b, e);
    str(b, "series", e->leak.series);
    num(b, "slope_bytes_per_min", "%.0f", e->leak.slope_bytes_per_min);
    num(b, "window_s", "%g", e->leak.window_s);
    num(b, "span_s", "%.1f", e->leak.span_s);
    u64(b, "points", e->leak.points);
    num(b, "confidence", "%.6f", e->leak.confidence);
    break;
  case HR_EVENT_IDLE_HOG:
    proc(b, e);
    hr__buf_printf(b, ",\"gpu\":%u", e->idle_hog.gpu);
    u64(b, "gpu_bytes", e->idle_hog.gpu_bytes);
    num(b, "share_pct", "%.1f", e->idle_hog.share_pct);
    hr__buf_printf(b, ",\"util_pct\":%d", e->idle_hog.util_pct);
    u64(b, "samples", e->idle_hog.samples);
    break;
  case HR_EVENT_OOM_KILL:
    str(b, "scope", e->oom_kill.scope);
    str(b, "path", e->oom_kill.path);
    u64(b, "kills", e->oom_kill.kills);
    u64(b, "total", e->oom_kill.total);
    break;
  case HR_EVENT_EXIT:
    proc(b, e);
    break;
  case HR_EVENT_ACTION:
    str(b, "action", e->action.action);
    str(b, "result", e->action.result);
    if (e->action.detail[0]) str(b, "detail", e->action.detail);
    break;
  case HR_EVENT_ERROR:
    str(b, "message", e->error.message);
    break;
  case HR_EVENT_BROKER:
    broker_json(b, e);
    break;
  default:
    if (e->pid) proc(b, e);
  }
  hr__buf_puts(b, "}");
}

int hr_event_json(const hr_watch_event_t *e, char **out) {
  if (!e || !out) return HR_EINVAL;
  hr__buf_t b = {0};
  hr__event_json(&b, e);
  return hr__buf_finish(&b, out);
}

/* ---- the terminal line -------------------------------------------------- */

/* "ask pid 42 comfyui host 1 GiB released 512 MiB in 0.120 s: why". */
static void broker_text(char *buf, size_t n, const char *t, const hr_watch_event_t *e) {
  const hr_event_broker_t *x = &e->broker;
  char a[32], r[48] = "", l[32] = "";
  if (x->released_bytes || !strcmp(x->what, "answer") || !strcmp(x->what, "granted")) {
    char s[32];
    snprintf(r, sizeof r, " released %s", hr__size_text(s, sizeof s, x->released_bytes));
  }
  if (x->latency_s > 0 && isfinite(x->latency_s)) snprintf(l, sizeof l, " in %.3f s", x->latency_s);
  snprintf(buf, n, "%s  broker    %s pid %d %s %s %s%s%s%s%s", t, x->what, e->pid, e->name,
           x->device, hr__size_text(a, sizeof a, x->bytes), r, l, x->message[0] ? ": " : "",
           x->message);
}

const char *hr_event_text(const hr_watch_event_t *e, char *buf, size_t n) {
  if (!buf || n == 0) return buf;
  buf[0] = '\0';
  if (!e) return buf;
  char t[16], a[32];
  time_t secs = (time_t)e->time;
  struct tm tm;
  localtime_r(&secs, &tm);
  strftime(t, sizeof t, "%H:%M:%S", &tm);
  switch (e->kind) {
  case HR_EVENT_SAMPLE:
    snprintf(buf, n, "%s  sample    %zu processes, decisions %.1f ms", t,
             e->sample.snap ? e->sample.snap->n_procs : 0, e->sample.cpu_s * 1000);
    break;
  case HR_EVENT_LEVEL:
    snprintf(buf, n, "%s  level     %s %s -> %s (%.1f%%)", t, e->level.scope,
             hr_level_name(e->level.previous), hr_level_name(e->level.level), e->level.used_pct);
    break;
  case HR_EVENT_LEAK:
    snprintf(buf, n, "%s  leak      pid %d %s %s +%s/min (confidence %.4f)", t, e->pid, e->name,
             e->leak.series,
             hr__size_text(a, sizeof a, (uint64_t)fmax(0, e->leak.slope_bytes_per_min)),
             e->leak.confidence);
    break;
  case HR_EVENT_IDLE_HOG:
    snprintf(buf, n, "%s  idle hog  pid %d %s holds %s of idle gpu %u", t, e->pid, e->name,
             hr__size_text(a, sizeof a, e->idle_hog.gpu_bytes), e->idle_hog.gpu);
    break;
  case HR_EVENT_OOM_KILL:
    snprintf(buf, n, "%s  oom kill  %" PRIu64 " in cgroup %s", t, e->oom_kill.kills,
             e->oom_kill.path);
    break;
  case HR_EVENT_EXIT:
    snprintf(buf, n, "%s  exit      pid %d %s", t, e->pid, e->name);
    break;
  case HR_EVENT_ACTION:
    snprintf(buf, n, "%s  action    %s %s %s", t, e->action.action, e->action.result,
             e->action.detail);
    break;
  case HR_EVENT_ERROR:
    snprintf(buf, n, "%s  error     %s", t, e->error.message);
    break;
  case HR_EVENT_BROKER:
    broker_text(buf, n, t, e);
    break;
  default:
    snprintf(buf, n, "%s  %s", t, hr_event_kind_name(e->kind));
  }
  return buf;
}
