/* The watch engine driven with hand-built snapshots and a clock the test
 * moves (fake_clock.h): level events with hysteresis, idle hogs, cgroup OOM
 * kills, exits of watched processes, a leak event with pid and slope,
 * actions by mode (a real hook command that gets HEADROOM_EVENT, its
 * timeout, the cooldown, conservative mode running nothing), history written
 * while monitoring, flushed by the clock, and a history failure that does
 * not stop monitoring. Also the loop with a sampler: its count, its schedule
 * and stop. Every time the engine keeps is the test's clock's, so the
 * assertions count samples and clock seconds, never wall seconds. */
#include "hr_test.h"

#include "fake_clock.h"
#include "fake_snapshot.h"
#include "store/store.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <unistd.h>

typedef struct rec {
  int n[HR_EVENT_KINDS_];
  char last[HR_EVENT_KINDS_][2048];
  char actions[2048]; /* "action result;" of every action event, in order */
  int bad_json;
} rec_t;

/* The clock of the watch make() made last. */
static fake_clock_t clk;

static void on_event(const hr_watch_event_t *e, void *arg) {
  rec_t *r = arg;
  r->n[e->kind]++;
  /* The JSON line, from the one event writer, must be strict JSON. */
  char *text = NULL;
  if (hr_event_json(e, &text) != 0) {
    r->bad_json++;
    return;
  }
  snprintf(r->last[e->kind], sizeof r->last[0], "%s", text);
  if (e->kind == HR_EVENT_ACTION) {
    size_t at = strlen(r->actions);
    bool timeout = strcmp(e->action.result, "timeout") == 0;
    snprintf(r->actions + at, sizeof r->actions - at, "%s %s%s%s%s;", e->action.action,
             e->action.result, timeout ? " (" : "", timeout ? e->action.detail : "",
             timeout ? ")" : "");
  }
  cJSON *j = cJSON_ParseWithOpts(text, NULL, true);
  free(text);
  if (!j || !cJSON_IsString(cJSON_GetObjectItem(j, "event")) ||
      strcmp(cJSON_GetObjectItem(j, "event")->valuestring, hr_event_kind_name(e->kind)) != 0 ||
      !cJSON_IsNumber(cJSON_GetObjectItem(j, "time")))
    r->bad_json++;
  cJSON_Delete(j);
}

static hr_watch_t *make(rec_t *r, const char *const *kv) {
  hr_options_t *o;
  if (hr_options_create(&o) != 0) return NULL;
  char err[256];
  for (; kv && kv[0]; kv += 2)
    if (hr_options_set(o, kv[0], kv[1], HR_SRC_CLI, err, sizeof err) != 0) {
      fprintf(stderr, "%s\n", err);
      hr_options_destroy(o);
      return NULL;
    }
  hr_watch_t *w = NULL;
  if (hr_watch_create(o, &w, err, sizeof err) != 0) fprintf(stderr, "%s\n", err);
  hr_options_destroy(o);
  memset(r, 0, sizeof *r);
  if (w) {
    hr_watch_on_event(w, on_event, r);
    hr_watch_clock_t c = fake_clock(&clk);
    hr_watch_set_clock(w, &c);
  }
  return w;
}

static void test_level_events(void) {
  rec_t r;
  hr_watch_t *w = make(&r, NULL);
  CHECK(w);
  /* Host use 50%, 81%, 79% (in the band), 76%, 95%. */
  static const double use[] = {50, 81, 79, 76, 95};
  static const int levels[] = {0, 1, 1, 0, 2};
  for (int i = 0; i < 5; i++) {
    hr_snapshot_t *s = fake_snapshot(100 + i, (uint64_t)(use[i] / 100 * 64 * GiB), 0, 3);
    CHECK_OK(hr_watch_feed(w, s));
    hr_watch_view_t v;
    hr_watch_get_view(w, &v);
    CHECK_EQ_INT(v.host, levels[i]);
  }
  CHECK_EQ_INT(r.n[HR_EVENT_LEVEL], 3);
  CHECK_EQ_INT(r.n[HR_EVENT_SAMPLE], 5);
  CHECK_CONTAINS(r.last[HR_EVENT_LEVEL], "\"scope\":\"host\",\"level\":\"critical\"");
  CHECK_CONTAINS(r.last[HR_EVENT_LEVEL], "\"previous\":\"ok\"");
  CHECK_EQ_INT(r.bad_json, 0);
  hr_watch_destroy(w);
}

static void test_gpu_level_and_idle_hog(void) {
  rec_t r;
  static const char *const kv[] = {"idle_samples", "3", "idle_share", "20", NULL};
  hr_watch_t *w = make(&r, kv);
  CHECK(w);
  for (int i = 0; i < 6; i++) {
    hr_snapshot_t *s = fake_snapshot(100 + i, 8 * GiB, 1, 3);
    CHECK_OK(fake_gpu_proc(s, 2, 0, 20 * GiB)); /* 83% of the GPU */
    s->gpus[0].used_bytes = 21 * GiB;           /* 87.5%: warning */
    s->gpus[0].util_gpu = i < 4 ? 3 : 60;       /* idle, then busy */
    CHECK_OK(hr_watch_feed(w, s));
  }
  CHECK_EQ_INT(r.n[HR_EVENT_IDLE_HOG], 1); /* once, not every sample */
  CHECK_CONTAINS(r.last[HR_EVENT_IDLE_HOG], "\"pid\":1002,\"name\":\"proc2\",\"gpu\":0");
  CHECK_CONTAINS(r.last[HR_EVENT_IDLE_HOG], "\"samples\":3");
  CHECK_EQ_INT(r.n[HR_EVENT_LEVEL], 1);
  CHECK_CONTAINS(r.last[HR_EVENT_LEVEL], "\"scope\":\"gpu0\",\"level\":\"warning\"");
  hr_watch_destroy(w);
}

static void test_oom_kill_and_exit(void) {
  rec_t r;
  hr_watch_t *w = make(&r, (const char *const[]){"filter", "proc2,proc3", NULL});
  CHECK(w);
  hr_snapshot_t *s = fake_snapshot(100, 8 * GiB, 0, 4);
  s->cgroup.oom_kill_events = 3;
  CHECK_OK(hr_watch_feed(w, s));
  CHECK_EQ_INT(r.n[HR_EVENT_OOM_KILL], 0); /* the count before watch started is history */
  s = fake_snapshot(101, 8 * GiB, 0, 3);   /* proc3 (watched) is gone */
  s->cgroup.oom_kill_events = 5;
  CHECK_OK(hr_watch_feed(w, s));
  CHECK_EQ_INT(r.n[HR_EVENT_OOM_KILL], 1);
  CHECK_CONTAINS(r.last[HR_EVENT_OOM_KILL], "\"kills\":2,\"total\":5");
  CHECK_EQ_INT(r.n[HR_EVENT_EXIT], 1);
  CHECK_CONTAINS(r.last[HR_EVENT_EXIT], "\"pid\":1003,\"name\":\"proc3\"");
  /* A reused pid is another process: the old one exited. */
  s = fake_snapshot(102, 8 * GiB, 0, 3);
  s->procs[2].start_ticks = 999;
  s->cgroup.oom_kill_events = 5;
  CHECK_OK(hr_watch_feed(w, s));
  CHECK_EQ_INT(r.n[HR_EVENT_EXIT], 2);
  CHECK_CONTAINS(r.last[HR_EVENT_EXIT], "\"pid\":1002");
  CHECK_EQ_INT(r.n[HR_EVENT_OOM_KILL], 1);
  CHECK_EQ_INT(r.bad_json, 0);
  hr_watch_destroy(w);

  /* Without a filter, processes on a GPU are watched; others are not. */
  w = make(&r, NULL);
  CHECK(w);
  s = fake_snapshot(100, 8 * GiB, 1, 4);
  CHECK_OK(fake_gpu_proc(s, 0, 0, GiB));
  CHECK_OK(hr_watch_feed(w, s));
  s = fake_snapshot(101, 8 * GiB, 1, 4);
  memmove(&s->procs[0], &s->procs[2], 2 * sizeof *s->procs); /* proc0 and proc1 gone */
  s->n_procs = 2;
  CHECK_OK(hr_watch_feed(w, s));
  CHECK_EQ_INT(r.n[HR_EVENT_EXIT], 1);
  CHECK_CONTAINS(r.last[HR_EVENT_EXIT], "\"pid\":1000,\"name\":\"proc0\"");
  hr_watch_destroy(w);
}

static void test_filter_skips_self(void) {
  /* Our own command line holds the filter's word, as `headroom watch
   * --filter W` does: we are not watched, so our "exit" is no event. */
  rec_t r;
  hr_watch_t *w = make(&r, (const char *const[]){"filter", "proc", NULL});
  CHECK(w);
  hr_snapshot_t *s = fake_snapshot(100, 8 * GiB, 0, 2);
  s->procs[1].pid = (int)getpid();
  snprintf(s->procs[1].name, sizeof s->procs[1].name, "headroom");
  snprintf(s->procs[1].cmdline, sizeof s->procs[1].cmdline, "headroom watch --filter proc");
  CHECK_OK(hr_watch_feed(w, s));
  CHECK_OK(hr_watch_feed(w, fake_snapshot(101, 8 * GiB, 0, 1)));
  CHECK_EQ_INT(r.n[HR_EVENT_EXIT], 0);
  hr_watch_destroy(w);
}

static void test_leak_event(void) {
  rec_t r;
  static const char *const kv[] = {"leak_window", "60s", "leak_min_samples", "20", "interval",
                                   "1s",          NULL};
  hr_watch_t *w = make(&r, kv);
  CHECK(w);
  for (int i = 0; i < 40; i++) {
    hr_snapshot_t *s = fake_snapshot(100 + i, 8 * GiB, 0, 4);
    s->procs[1].rss_anon_bytes += (uint64_t)i * 2 * MiB; /* 120 MiB/min */
    CHECK_OK(hr_watch_feed(w, s));
  }
  CHECK_EQ_INT(r.n[HR_EVENT_LEAK], 1);
  CHECK_CONTAINS(r.last[HR_EVENT_LEAK], "\"pid\":1001,\"name\":\"proc1\",\"series\":\"rss_anon\"");
  cJSON *j = cJSON_Parse(r.last[HR_EVENT_LEAK]);
  CHECK(j);
  double slope = cJSON_GetObjectItem(j, "slope_bytes_per_min")->valuedouble;
  CHECK_NEAR(slope, 120.0 * MiB, 1.0 * MiB);
  CHECK(cJSON_GetObjectItem(j, "confidence")->valuedouble > 0.999);
  cJSON_Delete(j);
  char *m = NULL;
  CHECK_OK(hr_watch_metrics(w, &m));
  CHECK_CONTAINS(m, "headroom_process_leak_suspected{pid=\"1001\",comm=\"proc1\",container_id=\"\","
                    "pod_uid=\"\"} 1");
  CHECK_CONTAINS(m, "headroom_events_total{kind=\"leak\"} 1");
  free(m);
  hr_watch_destroy(w);
}

static char tmp[128];

/* Real processes take real time: these wait on a condition, with a
 * deadline long enough for a loaded machine, and never judge the time. */
static bool wait_file(const char *path) {
  double deadline = hr_test_now() + 60;
  while (access(path, F_OK) != 0) {
    if (hr_test_now() > deadline) return false;
    usleep(20000);
  }
  return true;
}

/* Feeds the same snapshot until `kind` has been seen `n` times. */
static bool feed_until(hr_watch_t *w, rec_t *r, double t, uint64_t used, hr_event_kind_t kind,
                       int n) {
  double deadline = hr_test_now() + 60;
  while (r->n[kind] < n) {
    if (hr_test_now() > deadline || hr_watch_feed(w, fake_snapshot(t, used, 0, 2)) != 0)
      return false;
    if (r->n[kind] < n) usleep(20000);
  }
  return true;
}

static void test_actions_balanced(void) {
  char out[200], cmd[1024];
  snprintf(out, sizeof out, "%s/hook.json", tmp);
  snprintf(cmd, sizeof cmd, "printf '%%s' \"$HEADROOM_EVENT\" > %s.part && mv %s.part %s", out, out,
           out);
  rec_t r;
  const char *const kv[] = {"mode", "balanced", "on_critical", cmd, "cooldown", "1h", NULL};
  hr_watch_t *w = make(&r, kv);
  CHECK(w);
  hr_snapshot_t *s = fake_snapshot(100, 62 * GiB, 0, 2); /* 97%: critical */
  CHECK_OK(hr_watch_feed(w, s));
  CHECK_EQ_INT(r.n[HR_EVENT_ACTION], 1);
  CHECK_CONTAINS(r.last[HR_EVENT_ACTION], "\"action\":\"on_critical\",\"result\":\"started\"");
  CHECK(wait_file(out));
  FILE *f = fopen(out, "r");
  CHECK(f);
  char buf[1024] = "";
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  CHECK_CONTAINS(buf, "\"event\":\"level\"");
  CHECK_CONTAINS(buf, "\"scope\":\"host\",\"level\":\"critical\"");
  /* The hook is reaped at the first sample after it ended (the clock
   * stands still, far inside its action_timeout, however long the real
   * process takes to end). */
  CHECK(feed_until(w, &r, 101, 62 * GiB, HR_EVENT_ACTION, 2));
  CHECK_STR(r.actions, "on_critical started;on_critical done;");
  /* Within the cooldown nothing runs again; past it, it does. */
  fake_clock_advance(&clk, 3599);
  CHECK_OK(hr_watch_feed(w, fake_snapshot(102, 62 * GiB, 0, 2)));
  CHECK_STR(r.actions, "on_critical started;on_critical done;");
  fake_clock_advance(&clk, 1);
  CHECK_OK(hr_watch_feed(w, fake_snapshot(103, 62 * GiB, 0, 2)));
  CHECK_STR(r.actions, "on_critical started;on_critical done;on_critical started;");
  hr_watch_destroy(w);
}

static void test_action_timeout_and_conservative(void) {
  rec_t r;
  const char *const kv[] = {"mode", "balanced", "on_warning", "sleep 300", "action_timeout",
                            "0.2s", "cooldown", "0",          NULL};
  hr_watch_t *w = make(&r, kv);
  CHECK(w);
  hr_snapshot_t *s = fake_snapshot(100, 54 * GiB, 0, 2); /* 84%: warning */
  CHECK_OK(hr_watch_feed(w, s));
  /* Within its timeout the hook is left running. */
  fake_clock_advance(&clk, 0.1);
  CHECK_OK(hr_watch_feed(w, fake_snapshot(101, 54 * GiB, 0, 2)));
  CHECK_STR(r.actions, "on_warning started;on_warning started;"); /* cooldown 0: again */
  /* Past it, the first hook (sleep 300) is killed: its result is a timeout
   * after the clock's 0.4 s, not an exit; the second's 0.3 s are over too. */
  fake_clock_advance(&clk, 0.3);
  CHECK_OK(hr_watch_feed(w, fake_snapshot(102, 54 * GiB, 0, 2)));
  CHECK_STR(r.actions, "on_warning started;on_warning started;"
                       "on_warning timeout (killed after 0.4 s (action_timeout));"
                       "on_warning timeout (killed after 0.3 s (action_timeout));"
                       "on_warning started;");
  CHECK_EQ_INT(r.n[HR_EVENT_ACTION], 5);
  hr_watch_destroy(w);

  const char *const kv2[] = {"mode", "conservative", "on_warning", "true", NULL};
  w = make(&r, kv2);
  CHECK(w);
  CHECK_OK(hr_watch_feed(w, fake_snapshot(100, 54 * GiB, 0, 2)));
  CHECK_EQ_INT(r.n[HR_EVENT_LEVEL], 1);
  CHECK_EQ_INT(r.n[HR_EVENT_ACTION], 0);
  hr_watch_destroy(w);

  /* Aggressive without --allow-drop-caches: the hook runs, drop_caches
   * is not touched. */
  const char *const kv3[] = {"mode", "aggressive", NULL};
  w = make(&r, kv3);
  CHECK(w);
  CHECK_OK(hr_watch_feed(w, fake_snapshot(100, 63 * GiB, 0, 2)));
  CHECK_EQ_INT(r.n[HR_EVENT_ACTION], 0);
  hr_watch_destroy(w);
}

static void test_bad_thresholds(void) {
  hr_options_t *o;
  CHECK_OK(hr_options_create(&o));
  char err[256];
  CHECK_OK(hr_options_set(o, "ram_warn", "95", HR_SRC_CLI, err, sizeof err));
  hr_watch_t *w = NULL;
  CHECK_RC(hr_watch_create(o, &w, err, sizeof err), HR_EINVAL);
  CHECK_CONTAINS(err, "ram_warn 95");
  CHECK_RC(hr_options_set(o, "vram_warn", "150", HR_SRC_CLI, err, sizeof err), HR_ERANGE);
  CHECK_CONTAINS(err, "vram_warn");
  hr_options_destroy(o);
}

/* A watch made from kv with a history at tmp/name attached; NULL (and
 * *h NULL) when either cannot be made. */
static hr_watch_t *make_with_history(rec_t *r, const char *const *kv, const char *name,
                                     hr_history_t **h) {
  char path[256], err[256];
  snprintf(path, sizeof path, "%s/%s", tmp, name);
  *h = NULL;
  if (hr_history_open(path, h, err, sizeof err) != 0) return NULL;
  hr_watch_t *w = make(r, kv);
  if (w) hr_watch_attach_history(w, *h);
  return w;
}

static void test_history_while_watching(void) {
  char err[256];
  hr_history_t *h;
  rec_t r;
  const char *const kv[] = {"history_flush", "0", "top", "2", NULL};
  hr_watch_t *w = make_with_history(&r, kv, "w.db", &h);
  CHECK(w);
  CHECK_OK(hr_watch_feed(w, fake_snapshot(100, 60 * GiB, 1, 3)));
  CHECK_OK(hr_watch_feed(w, fake_snapshot(101, 60 * GiB, 1, 3)));
  hr_history_row_t *rows;
  hr_history_event_t *ev;
  size_t nr, ne;
  CHECK_OK(hr_history_query(h, 0, 0, &rows, &nr, &ev, &ne, err, sizeof err));
  CHECK_EQ_U64(nr, 2 * (3 + 2)); /* host, cgroup, gpu0, 2 processes */
  CHECK_EQ_U64(ne, 1);           /* the host level; samples are not events in history */
  CHECK_STR(ev[0].kind, "level");
  hr_history_free_rows(rows, ev, ne);
  /* Fill the "disk": an error event, and monitoring goes on. */
  CHECK_OK(hr__history_exec(h, "PRAGMA max_page_count = 1", err, sizeof err));
  for (int i = 0; i < 100; i++) CHECK_OK(hr_watch_feed(w, fake_snapshot(102 + i, 60 * GiB, 1, 3)));
  CHECK_EQ_INT(r.n[HR_EVENT_SAMPLE], 102);
  CHECK_EQ_INT(r.n[HR_EVENT_ERROR], 1); /* rate-limited, not one per sample */
  CHECK_CONTAINS(r.last[HR_EVENT_ERROR], "monitoring goes on");
  /* One a minute: 59 s on, still one; a minute on, the next. */
  fake_clock_advance(&clk, 59);
  CHECK_OK(hr_watch_feed(w, fake_snapshot(202, 60 * GiB, 1, 3)));
  CHECK_EQ_INT(r.n[HR_EVENT_ERROR], 1);
  fake_clock_advance(&clk, 1);
  CHECK_OK(hr_watch_feed(w, fake_snapshot(203, 60 * GiB, 1, 3)));
  CHECK_EQ_INT(r.n[HR_EVENT_ERROR], 2);
  hr_watch_destroy(w);
  hr_history_close(h);
}

/* The watch shows the selection the snapshot carries and picks none of its
 * own: a snapshot whose probe picked only its smallest process shows that
 * one in the view, the sample event, /api/snapshot, /metrics and history;
 * a snapshot without a selection is selected once, with the watch's
 * options. */
static void test_shows_the_snapshots_selection(void) {
  hr_snapshot_t *s = fake_snapshot(100, 8 * GiB, 0, 4);
  CHECK(s && (s->selected = malloc(sizeof *s->selected)) != NULL);
  s->selected[0] = 0, s->n_selected = 1; /* pid 1000, the smallest */
  rec_t r;
  hr_watch_t *w = make(&r, (const char *const[]){"top", "3", "metrics_top", "3", NULL});
  char path[256], err[256];
  snprintf(path, sizeof path, "%s/sel.db", tmp);
  hr_history_t *h;
  CHECK_OK(hr_history_open(path, &h, err, sizeof err));
  CHECK(w);
  hr_watch_attach_history(w, h);
  CHECK_OK(hr_watch_feed(w, s));
  hr_watch_view_t v;
  hr_watch_get_view(w, &v);
  CHECK_EQ_U64(v.n_top, 1);
  CHECK_EQ_INT(v.top[0].proc->pid, 1000);
  CHECK_CONTAINS(r.last[HR_EVENT_SAMPLE], "\"top\":[{\"pid\":1000,");
  CHECK(!strstr(r.last[HR_EVENT_SAMPLE], "\"pid\":1003,"));
  char *text = NULL;
  CHECK_OK(hr_watch_status_json(w, &text));
  CHECK_CONTAINS(text, "\"processes\":[{\"pid\":1000,");
  CHECK(!strstr(text, "\"pid\":1003,"));
  free(text);
  CHECK_OK(hr_watch_metrics(w, &text));
  CHECK_CONTAINS(text, "comm=\"proc0\"");
  CHECK(!strstr(text, "comm=\"proc3\""));
  free(text);
  CHECK_OK(hr_history_flush(h, err, sizeof err));
  hr_history_row_t *rows;
  hr_history_event_t *ev;
  size_t nr, ne;
  CHECK_OK(hr_history_query(h, 0, 0, &rows, &nr, &ev, &ne, err, sizeof err));
  int procs = 0;
  for (size_t i = 0; i < nr; i++) {
    if (strcmp(rows[i].scope, "proc") != 0) continue;
    procs++;
    CHECK_EQ_INT(rows[i].pid, 1000);
  }
  CHECK_EQ_INT(procs, 1);
  hr_history_free_rows(rows, ev, ne);
  CHECK_OK(hr_watch_feed(w, fake_snapshot(101, 8 * GiB, 0, 4)));
  hr_watch_get_view(w, &v);
  CHECK_EQ_U64(v.n_top, 3);
  CHECK_EQ_INT(v.top[0].proc->pid, 1003); /* the largest first */
  hr_watch_destroy(w);
  hr_history_close(h);
}

/* A sampler that takes `cost` seconds of the clock: `slow` on its
 * `slow_at`-th call, else `cost`; it notes the clock at each call. */
typedef struct seq {
  int i, slow_at;
  double cost, slow, at[16];
} seq_t;

static int sampler(void *arg, hr_snapshot_t **out) {
  seq_t *q = arg;
  if (q->i < 16) q->at[q->i] = clk.mono;
  fake_clock_advance(&clk, q->i == q->slow_at ? q->slow : q->cost);
  *out = fake_snapshot(200 + q->i++, 10 * GiB, 0, 2);
  return *out ? 0 : HR_ENOMEM;
}

static void test_loop_count_and_stop(void) {
  rec_t r;
  const char *const kv[] = {"interval", "20ms", NULL};
  hr_watch_t *w = make(&r, kv);
  CHECK(w);
  seq_t q = {.slow_at = -1};
  hr_watch_set_sampler(w, sampler, &q);
  CHECK_OK(hr_watch_run(w, NULL, 5));
  CHECK_EQ_INT(r.n[HR_EVENT_SAMPLE], 5);
  /* Four waits of one interval between five samples, none after the last. */
  CHECK_EQ_INT(clk.sleeps, 4);
  CHECK_NEAR(clk.slept, 0.08, 1e-9);
  for (int i = 0; i < 5; i++) CHECK_NEAR(q.at[i], 0.02 * i, 1e-9);
  volatile sig_atomic_t stop = 1;
  CHECK_OK(hr_watch_run(w, &stop, 0));
  CHECK_EQ_INT(r.n[HR_EVENT_SAMPLE], 5);
  hr_watch_destroy(w);
}

/* A sample that takes longer than the interval is followed by the next at
 * once, and then the interval again: the loop does not make up for it with
 * a burst. The sample's duration (from the sampler's start) is on /metrics. */
static void test_loop_after_a_slow_sample(void) {
  rec_t r;
  const char *const kv[] = {"interval", "20ms", NULL};
  hr_watch_t *w = make(&r, kv);
  CHECK(w);
  seq_t q = {.slow_at = 1, .cost = 0.005, .slow = 0.1};
  hr_watch_set_sampler(w, sampler, &q);
  CHECK_OK(hr_watch_run(w, NULL, 5));
  static const double want[] = {0, 0.02, 0.12, 0.14, 0.16};
  for (int i = 0; i < 5; i++)
    CHECK_MSG(fabs(q.at[i] - want[i]) < 1e-9, "sample %d at %.3f s", i, q.at[i]);
  char *m = NULL;
  CHECK_OK(hr_watch_metrics(w, &m));
  CHECK_CONTAINS(m, "headroom_sample_duration_seconds 0.005000\n");
  free(m);
  q.slow_at = q.i;
  CHECK_OK(hr_watch_run(w, NULL, 1));
  CHECK_OK(hr_watch_metrics(w, &m));
  CHECK_CONTAINS(m, "headroom_sample_duration_seconds 0.100000\n");
  free(m);
  hr_watch_destroy(w);
}

/* History is committed every history_flush seconds of the clock, and when
 * the loop ends. */
static void test_history_flush_by_the_clock(void) {
  hr_history_t *h;
  rec_t r;
  const char *const kv[] = {"history_flush", "10s", "top", "1", NULL};
  hr_watch_t *w = make_with_history(&r, kv, "flush.db", &h);
  CHECK(w);
  for (int i = 0; i < 9; i++) {
    CHECK_OK(hr_watch_feed(w, fake_snapshot(100 + i, 8 * GiB, 0, 2)));
    fake_clock_advance(&clk, 1);
  }
  CHECK(hr_history_pending(h) > 0);
  fake_clock_advance(&clk, 1); /* 10 s after the first sample */
  CHECK_OK(hr_watch_feed(w, fake_snapshot(110, 8 * GiB, 0, 2)));
  CHECK_EQ_U64(hr_history_pending(h), 0);
  CHECK_OK(hr_watch_feed(w, fake_snapshot(111, 8 * GiB, 0, 2)));
  CHECK(hr_history_pending(h) > 0);
  seq_t q = {.slow_at = -1};
  hr_watch_set_sampler(w, sampler, &q);
  CHECK_OK(hr_watch_run(w, NULL, 1));
  CHECK_EQ_U64(hr_history_pending(h), 0);
  CHECK_EQ_INT(r.n[HR_EVENT_ERROR], 0);
  hr_watch_destroy(w);
  hr_history_close(h);
}

int main(void) {
  snprintf(tmp, sizeof tmp, "/tmp/hr-test-watch-XXXXXX");
  if (!mkdtemp(tmp)) return 1;
  HR_RUN(test_level_events);
  HR_RUN(test_gpu_level_and_idle_hog);
  HR_RUN(test_oom_kill_and_exit);
  HR_RUN(test_filter_skips_self);
  HR_RUN(test_leak_event);
  HR_RUN(test_actions_balanced);
  HR_RUN(test_action_timeout_and_conservative);
  HR_RUN(test_bad_thresholds);
  HR_RUN(test_history_while_watching);
  HR_RUN(test_shows_the_snapshots_selection);
  HR_RUN(test_loop_count_and_stop);
  HR_RUN(test_loop_after_a_slow_sample);
  HR_RUN(test_history_flush_by_the_clock);
  int rc = hr_test_finish("test_watch");
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
  return rc;
}
