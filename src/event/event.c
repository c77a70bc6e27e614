/* The writers of an event: the JSON line and the terminal line.
 *
 * Both walk the kind's field list (fields.c) over the typed payload of
 * hr_watch_event_t; they are the only places that turn an event into text,
 * so `watch --json`, the hook's HEADROOM_EVENT, `history --json` and the live
 * view cannot disagree. JSON strings go through hr__buf_json_str (invalid
 * UTF-8 becomes U+FFFD), and a number that is not finite is written as null,
 * never as "nan". The sample, whose payload points into the watch's state,
 * is the one kind written by hand. */
#include "event/event.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <time.h>

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

/* The host, the cgroup and each GPU with their levels. */
static void sample_scopes(hr__buf_t *b, const hr_event_sample_t *x) {
  const hr_snapshot_t *s = x->snap;
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
  hr__buf_puts(b, "]");
}

/* The processes shown, with their trends. */
static void sample_top(hr__buf_t *b, const hr_event_sample_t *x) {
  hr__buf_puts(b, ",\"top\":[");
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
  hr__buf_puts(b, "]");
}

static void sample_json(hr__buf_t *b, const hr_event_sample_t *x) {
  if (!x->snap) return;
  sample_scopes(b, x);
  sample_top(b, x);
  hr__buf_printf(b, ",\"processes\":%zu,\"processes_read\":%s", x->snap->n_procs,
                 x->processes_read ? "true" : "false");
  num(b, "cpu_ms", "%.3f", x->cpu_s * 1000);
}

/* ,"key":value for one field of the list. */
static void field_json(hr__buf_t *b, const hr__event_field_t *f, const hr_watch_event_t *e) {
  const void *v = hr__field_in(f, e);
  switch (f->type) {
  case HR__FIELD_STR:
    if (!(f->flags & HR_EVENT_FIELD_OPTIONAL) || *(const char *)v) str(b, f->name, v);
    break;
  case HR__FIELD_U64:
    u64(b, f->name, *(const uint64_t *)v);
    break;
  case HR__FIELD_INT:
    hr__buf_printf(b, ",\"%s\":%d", f->name, *(const int *)v);
    break;
  case HR__FIELD_UINT:
    hr__buf_printf(b, ",\"%s\":%u", f->name, *(const unsigned *)v);
    break;
  case HR__FIELD_REAL:
    num(b, f->name, f->fmt, *(const double *)v);
    break;
  case HR__FIELD_LEVEL:
    str(b, f->name, hr__field_value_name(f->type, *(const int *)v));
    break;
  case HR__FIELD_WHAT: /* in the event's name */
    break;
  }
}

/* {"event":"kind" or "kind_what" ("broker_granted"). */
static void event_name(hr__buf_t *b, const hr_watch_event_t *e, const hr__event_kind_info_t *k) {
  hr__buf_printf(b, "{\"event\":\"%s", hr_event_kind_name(e->kind));
  for (size_t i = 0; k && i < k->n_fields; i++) {
    const hr__event_field_t *f = &k->fields[i];
    if (f->type == HR__FIELD_WHAT)
      hr__buf_printf(b, "_%s", hr__field_value_name(f->type, *(const int *)hr__field_in(f, e)));
  }
  hr__buf_puts(b, "\"");
}

void hr__event_json(hr__buf_t *b, const hr_watch_event_t *e) {
  const hr__event_kind_info_t *k = hr__event_kind_info(e->kind);
  event_name(b, e, k);
  num(b, "time", "%.3f", e->time);
  if (e->kind == HR_EVENT_SAMPLE)
    sample_json(b, &e->sample);
  else if (k ? k->about_process : e->pid != 0)
    proc(b, e);
  for (size_t i = 0; k && i < k->n_fields; i++) field_json(b, &k->fields[i], e);
  hr__buf_puts(b, "}");
}

int hr_event_json(const hr_watch_event_t *e, char **out) {
  if (!e || !out) return HR_EINVAL;
  hr__buf_t b = {0};
  hr__event_json(&b, e);
  return hr__buf_finish(&b, out);
}

/* ---- the terminal line -------------------------------------------------- */

/* The caller's buffer, filled from the left and always terminated; what does
 * not fit is cut. */
typedef struct line {
  char *s;
  size_t n, len;
} line_t;

static void put(line_t *l, const char *s, size_t n) {
  size_t room = l->n - 1 - l->len;
  if (n > room) n = room;
  memcpy(l->s + l->len, s, n);
  l->len += n;
  l->s[l->len] = '\0';
}

static void puts_(line_t *l, const char *s) {
  put(l, s, strlen(s));
}

/* A number as text: a size in binary units with spec "size", else printf
 * with spec when it is a format, else with `fmt`. */
static void number_text(line_t *l, double v, const char *spec, const char *fmt) {
  char t[64];
  if (strcmp(spec, "size") == 0)
    hr__size_text(t, sizeof t, v >= (double)UINT64_MAX ? UINT64_MAX : (uint64_t)fmax(0, v));
  else
    snprintf(t, sizeof t, spec[0] == '%' ? spec : fmt, v);
  puts_(l, t);
}

/* Writes a field's value; returns whether it is set (non-zero, non-empty,
 * a positive finite number), which decides a [ ... ] segment. */
static bool field_text(line_t *l, const hr__event_field_t *f, const void *v, const char *spec) {
  char t[32];
  switch (f->type) {
  case HR__FIELD_STR:
    puts_(l, v);
    return *(const char *)v != '\0';
  case HR__FIELD_U64: {
    uint64_t u = *(const uint64_t *)v;
    if (strcmp(spec, "size") == 0)
      puts_(l, hr__size_text(t, sizeof t, u));
    else
      snprintf(t, sizeof t, "%" PRIu64, u), puts_(l, t);
    return u != 0 && u != HR_UNKNOWN;
  }
  case HR__FIELD_INT:
    snprintf(t, sizeof t, "%d", *(const int *)v), puts_(l, t);
    return *(const int *)v != 0;
  case HR__FIELD_UINT:
    snprintf(t, sizeof t, "%u", *(const unsigned *)v), puts_(l, t);
    return *(const unsigned *)v != 0;
  case HR__FIELD_REAL:
    number_text(l, *(const double *)v, spec, f->fmt);
    return isfinite(*(const double *)v) && *(const double *)v > 0;
  case HR__FIELD_LEVEL:
  case HR__FIELD_WHAT:
    puts_(l, hr__field_value_name(f->type, *(const int *)v));
    return true;
  }
  return false;
}

/* Writes the placeholder "name" or "name:spec" of the template. */
static bool placeholder(line_t *l, const char *ph, const hr_watch_event_t *e,
                        const hr__event_kind_info_t *k) {
  char name[48];
  size_t n = strcspn(ph, ":}");
  snprintf(name, sizeof name, "%.*s", (int)n, ph);
  char spec[16] = "";
  if (ph[n] == ':') snprintf(spec, sizeof spec, "%.*s", (int)strcspn(ph + n + 1, "}"), ph + n + 1);
  if (strcmp(name, "pid") == 0) {
    char t[16];
    snprintf(t, sizeof t, "%d", e->pid);
    puts_(l, t);
    return e->pid != 0;
  }
  if (strcmp(name, "name") == 0) {
    puts_(l, e->name);
    return e->name[0] != '\0';
  }
  for (size_t i = 0; i < k->n_fields; i++)
    if (strcmp(k->fields[i].name, name) == 0)
      return field_text(l, &k->fields[i], hr__field_in(&k->fields[i], e), spec);
  return false;
}

/* Fills the kind's template (event/event.h says its form). */
static void render(line_t *l, const hr_watch_event_t *e, const hr__event_kind_info_t *k) {
  size_t seg = 0;
  bool in_seg = false, seg_set = true;
  for (const char *p = k->text; *p;) {
    if (*p == '[' || *p == ']') {
      if (*p == ']' && in_seg && !seg_set) l->len = seg, l->s[seg] = '\0';
      in_seg = *p == '[', seg = l->len, seg_set = true;
      p++;
    } else if (*p == '{') {
      bool set = placeholder(l, p + 1, e, k);
      seg_set = seg_set && set;
      p += strcspn(p, "}");
      if (*p) p++;
    } else {
      size_t n = strcspn(p, "[]{");
      put(l, p, n);
      p += n;
    }
  }
}

const char *hr_event_text(const hr_watch_event_t *e, char *buf, size_t n) {
  if (!buf || n == 0) return buf;
  buf[0] = '\0';
  if (!e) return buf;
  char t[16], head[48];
  time_t secs = (time_t)e->time;
  struct tm tm;
  localtime_r(&secs, &tm);
  strftime(t, sizeof t, "%H:%M:%S", &tm);
  const hr__event_kind_info_t *k = hr__event_kind_info(e->kind);
  if (!k) return snprintf(buf, n, "%s  %s", t, hr_event_kind_name(e->kind)), buf;
  char label[16];
  hr__strlcpy(label, k->name, sizeof label);
  for (char *c = label; *c; c++)
    if (*c == '_') *c = ' ';
  snprintf(head, sizeof head, "%s  %-10s", t, label);
  line_t l = {buf, n, 0};
  puts_(&l, head);
  if (e->kind == HR_EVENT_SAMPLE) {
    char s[96];
    snprintf(s, sizeof s, "%zu processes, decisions %.1f ms",
             e->sample.snap ? e->sample.snap->n_procs : 0, e->sample.cpu_s * 1000);
    puts_(&l, s);
  } else {
    render(&l, e, k);
  }
  return buf;
}
