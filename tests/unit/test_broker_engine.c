/* The broker's planner, engine and protocol without a thread or a socket:
 * a broker made by hr__broker_new reads a fixture /proc (a temporary root:
 * meminfo, each client's statm and stat), runs on a clock the test moves,
 * and its connections have no descriptor, so what it sends stays in their
 * buffers, where the test reads it line by line. Every deadline is asserted
 * in steps of that clock, never in wall seconds. Also: the planner on plain
 * arrays, the protocol's decoder and encoder, and the adapters' HTTP parser
 * (linear in its input however it is split). */
#include "hr_test.h"

#include "broker/broker_int.h"

#include <cjson/cJSON.h>
#include <ftw.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#define MiB (1024.0 * 1024)

static double fake_now = 1000;
static double fake_clock(void *arg) {
  (void)arg;
  return fake_now;
}

static int ev_count[HR_BROKER_EV_COUNT];
static char ev_last[HR_BROKER_EV_COUNT][256];
static void on_event(const hr_watch_event_t *e, void *arg) {
  (void)arg;
  ev_count[e->broker.what]++;
  snprintf(ev_last[e->broker.what], sizeof ev_last[0], "%s", e->broker.message);
}

static char root[64];

static void put(const char *rel, const char *fmt, ...) HR_PRINTF(2, 3);
static void put(const char *rel, const char *fmt, ...) {
  char path[256];
  snprintf(path, sizeof path, "%s%s", root, rel);
  for (char *s = strchr(path + strlen(root) + 1, '/'); s; s = strchr(s + 1, '/')) {
    *s = '\0';
    mkdir(path, 0755);
    *s = '/';
  }
  FILE *f = fopen(path, "w");
  va_list ap;
  va_start(ap, fmt);
  if (f) vfprintf(f, fmt, ap), fclose(f);
  va_end(ap);
}

/* A process of the fixture: its resident bytes, parent and name. */
static void proc(int pid, double rss_bytes, int ppid) {
  char rel[64];
  snprintf(rel, sizeof rel, "/proc/%d/statm", pid);
  long pages = (long)(rss_bytes / (double)sysconf(_SC_PAGESIZE));
  put(rel, "%ld %ld 0 0 0 0 0\n", pages + 100, pages);
  snprintf(rel, sizeof rel, "/proc/%d/stat", pid);
  put(rel, "%d (proc%d) S %d 1 1 0 -1 0\n", pid, pid, ppid);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(p);
}

/* A broker over a fixture root with 64 GiB of host memory, 60 free, and
 * `budget`; broker_timeout 1 s, patience 2 s, no pressure unless warn is
 * given. */
static hr_broker_t *engine(const char *budget, const char *warn, const char *extra_opt,
                           const char *extra_val) {
  hr_options_t *o = NULL;
  hr_broker_t *b = NULL;
  char err[300];
  snprintf(root, sizeof root, "/tmp/hr-engine-XXXXXX");
  if (!mkdtemp(root) || hr_options_create(&o) != 0) return NULL;
  put("/proc/meminfo", "MemTotal: %d kB\nMemFree: %d kB\nMemAvailable: %d kB\n", 64 << 20, 60 << 20,
      60 << 20);
  memset(ev_count, 0, sizeof ev_count);
  fake_now = 1000;
  hr_options_set(o, "root", root, HR_SRC_CLI, err, sizeof err);
  hr_options_set(o, "nvml_library", "/nonexistent/libnvidia-ml.so", HR_SRC_CLI, err, sizeof err);
  hr_options_set(o, "budget", budget, HR_SRC_CLI, err, sizeof err);
  hr_options_set(o, "broker_timeout", "1s", HR_SRC_CLI, err, sizeof err);
  hr_options_set(o, "patience", "2s", HR_SRC_CLI, err, sizeof err);
  hr_options_set(o, "cooldown", "60s", HR_SRC_CLI, err, sizeof err);
  hr_options_set(o, "ram_warn", warn ? warn : "100", HR_SRC_CLI, err, sizeof err);
  hr_options_set(o, "ram_critical", "100", HR_SRC_CLI, err, sizeof err);
  if (extra_opt) hr_options_set(o, extra_opt, extra_val, HR_SRC_CLI, err, sizeof err);
  if (hr__broker_new(o, on_event, NULL, &b, err, sizeof err) != 0)
    fprintf(stderr, "  broker: %s\n", err);
  hr_options_destroy(o);
  if (b) b->clock = fake_clock;
  return b;
}

static void done(hr_broker_t *b) {
  if (b) {
    for (size_t i = 0; i < b->n_conns; i++) b->conns[i]->closing = true;
    hr__broker_reap(b);
    hr__broker_free_state(b);
  }
  nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void say(hr_broker_t *b, hr__bconn_t *c, const char *fmt, ...) HR_PRINTF(3, 4);
static void say(hr_broker_t *b, hr__bconn_t *c, const char *fmt, ...) {
  char line[4096];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  hr__broker_on_line(b, c, line, (size_t)n);
}

/* The next line the broker sent c, parsed (the caller deletes), or NULL. */
static cJSON *heard(hr__bconn_t *c) {
  char *nl = c->wbuf.s ? memchr(c->wbuf.s, '\n', c->wbuf.len) : NULL;
  if (!nl) return NULL;
  size_t n = (size_t)(nl - c->wbuf.s);
  cJSON *j = cJSON_ParseWithLength(c->wbuf.s, n);
  memmove(c->wbuf.s, nl + 1, c->wbuf.len - n - 1);
  c->wbuf.len -= n + 1;
  return j;
}

/* The next line of op `op` (others before it are dropped), or NULL. */
static cJSON *heard_op(hr__bconn_t *c, const char *op) {
  for (cJSON *j; (j = heard(c)) != NULL; cJSON_Delete(j))
    if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "op")), op) == 0) return j;
  return NULL;
}

static double num(const cJSON *j, const char *k) {
  const cJSON *v = cJSON_GetObjectItem(j, k);
  return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* A registered client of pid (its RSS `rss`), offering one item. */
static hr__bconn_t *client(hr_broker_t *b, int pid, const char *name, int prio, double rss,
                           const char *kind, double bytes, bool busy) {
  proc(pid, rss, 1);
  hr__bconn_t *c = hr__broker_add_conn(b, -1, pid, (uint32_t)geteuid(), 0);
  say(b, c, "{\"v\":1,\"op\":\"hello\",\"pid\":%d,\"name\":\"%s\",\"priority\":%d}", pid, name,
      prio);
  cJSON_Delete(heard_op(c, "welcome"));
  say(b, c,
      "{\"v\":1,\"op\":\"offer\",\"busy\":%s,\"items\":[{\"kind\":\"%s\",\"bytes\":%.0f,"
      "\"idle_s\":%d}]}",
      busy ? "true" : "false", kind, bytes, pid % 100);
  b->last_read = 0;
  return c;
}

/* The ask c has heard since, or 0. */
static double asked(hr__bconn_t *c) {
  cJSON *j = heard_op(c, "release");
  double id = j ? num(j, "id") : 0;
  cJSON_Delete(j);
  return id;
}

/* ---- the planner, on plain arrays --------------------------------------------- */

static void test_planner_rules(void) {
  hr__pcand_t c[8];
  hr__pask_t out[8];
  bool short_all;
  hr__pwant_t w = {.need = 300, .priority = 5, .uid = 1000};
  /* A busy cache, an idle model of another user, an idle model above the
   * asker, two idle models of the asker's user. */
  c[0] = (hr__pcand_t){
      .who = 1, .busy = true, .cache = true, .priority = 0, .uid = 1000, .bytes = 1000};
  c[1] = (hr__pcand_t){.who = 2, .priority = 0, .uid = 2000, .bytes = 1000};
  c[2] = (hr__pcand_t){.who = 3, .priority = 9, .uid = 1000, .bytes = 1000};
  c[3] = (hr__pcand_t){.who = 4, .priority = 1, .uid = 1000, .idle_s = 5, .bytes = 200};
  c[4] = (hr__pcand_t){.who = 5, .priority = 1, .uid = 1000, .idle_s = 50, .bytes = 200};
  size_t n = hr__plan(c, 5, &w, out, 8, &short_all);
  /* Idle before busy, least recently used first, each for its share. */
  CHECK_EQ_INT(n, 2);
  CHECK_EQ_U64(out[0].who, 5);
  CHECK_EQ_U64(out[0].bytes, 200);
  CHECK_EQ_U64(out[1].who, 4);
  CHECK_EQ_U64(out[1].bytes, 100);
  CHECK(!short_all);
  /* More than the idle ones hold: the busy one too, after them. */
  c[0] = (hr__pcand_t){.who = 1, .busy = true, .cache = true, .uid = 1000, .bytes = 1000};
  c[1] = (hr__pcand_t){.who = 4, .uid = 1000, .bytes = 200};
  w.need = 700;
  n = hr__plan(c, 2, &w, out, 8, &short_all);
  CHECK_EQ_INT(n, 2);
  CHECK_EQ_U64(out[0].who, 4);
  CHECK_EQ_U64(out[1].who, 1);
  CHECK_EQ_U64(out[1].bytes, 500);
  /* All it may ask would not do: nobody is asked. */
  w.need = 5000;
  c[0] = (hr__pcand_t){.who = 1, .uid = 1000, .bytes = 1000};
  CHECK_EQ_INT(hr__plan(c, 1, &w, out, 8, &short_all), 0);
  CHECK(short_all);
  /* ... unless a size is unknown: it is asked last, for what is left. */
  c[0] = (hr__pcand_t){.who = 1, .uid = 1000, .bytes = 1000};
  c[1] = (hr__pcand_t){.who = 0, .adapter = true, .unknown = true, .uid = 1000};
  n = hr__plan(c, 2, &w, out, 8, &short_all);
  CHECK_EQ_INT(n, 2);
  CHECK(out[1].adapter && out[1].unknown);
  CHECK_EQ_U64(out[1].bytes, 4000);
  /* Asked already or with an ask in flight: passed over. Two items of one
   * client: one ask, the sum of its shares. */
  c[0] = (hr__pcand_t){.who = 1, .uid = 1000, .bytes = 1000, .asked = true};
  c[1] = (hr__pcand_t){.who = 2, .uid = 1000, .bytes = 1000, .pending = true};
  c[2] = (hr__pcand_t){.who = 3, .uid = 1000, .cache = true, .bytes = 100};
  c[3] = (hr__pcand_t){.who = 3, .uid = 1000, .bytes = 150};
  w.need = 200;
  n = hr__plan(c, 4, &w, out, 8, &short_all);
  CHECK_EQ_INT(n, 1);
  CHECK_EQ_U64(out[0].who, 3);
  CHECK_EQ_U64(out[0].bytes, 200);
  /* Root asks anyone's; pressure anyone's but never what sleeps, and at a
   * warning caches alone. */
  c[0] = (hr__pcand_t){.who = 1, .uid = 7, .bytes = 1000};
  w = (hr__pwant_t){.need = 10, .priority = 0, .uid = 0};
  CHECK_EQ_INT(hr__plan(c, 1, &w, out, 8, &short_all), 1);
  c[0] = (hr__pcand_t){.who = 0, .adapter = true, .unknown = true, .sleeps = true, .priority = 99};
  c[1] = (hr__pcand_t){.who = 2, .priority = 99, .bytes = 1000};
  c[2] = (hr__pcand_t){.who = 3, .cache = true, .priority = 99, .bytes = 5};
  w = (hr__pwant_t){.need = 10, .pressure = true};
  n = hr__plan(c, 3, &w, out, 8, &short_all);
  CHECK_EQ_INT(n, 2);
  CHECK(!out[0].adapter && !out[1].adapter);
  w.caches_only = true;
  c[0] = (hr__pcand_t){.who = 2, .priority = 99, .bytes = 1000};
  c[1] = (hr__pcand_t){.who = 3, .cache = true, .priority = 99, .bytes = 5};
  n = hr__plan(c, 2, &w, out, 8, &short_all);
  CHECK_EQ_INT(n, 1);
  CHECK_EQ_U64(out[0].who, 3);
}

/* ---- the engine ------------------------------------------------------------------ */

/* One idle and one busy client (ComfyUI mid prompt) each offer 512 MiB: a
 * reservation that needs one of them asks the idle one only, and is granted
 * when its memory comes back, without waiting for the busy one. */
static void test_idle_before_busy(void) {
  hr_broker_t *b = engine("host=1G", NULL, NULL, NULL);
  CHECK(b);
  hr__bconn_t *busy = client(b, 901, "busy", 0, 300 * MiB, "model", 512 * MiB, true);
  hr__bconn_t *idle = client(b, 902, "idle", 0, 300 * MiB, "model", 512 * MiB, false);
  hr__bconn_t *asker = hr__broker_add_conn(b, -1, 903, (uint32_t)geteuid(), 0);
  say(b, asker, "{\"v\":1,\"op\":\"reserve\",\"id\":7,\"bytes\":%.0f,\"timeout\":30}", 700 * MiB);
  hr__broker_tick(b);
  double id = asked(idle);
  CHECK(id > 0);
  CHECK(asked(busy) == 0);
  proc(902, 0, 1); /* its models are gone */
  fake_now += 0.1;
  say(b, idle, "{\"v\":1,\"op\":\"released\",\"id\":%.0f,\"bytes\":%.0f}", id, 512 * MiB);
  hr__broker_tick(b);
  cJSON *g = heard_op(asker, "granted");
  CHECK(g);
  CHECK_EQ_INT(num(g, "released_bytes"), 512 * MiB);
  cJSON_Delete(g);
  CHECK(asked(busy) == 0);
  done(b);
}

/* An answer of 0, an error or no answer by broker_timeout: the next
 * candidate is asked in the same pass. */
static void test_moves_on_at_once(void) {
  hr_broker_t *b = engine("host=1G", NULL, NULL, NULL);
  CHECK(b);
  hr__bconn_t *a = client(b, 911, "first", 0, 200 * MiB, "cache", 300 * MiB, false);
  hr__bconn_t *c = client(b, 912, "second", 0, 200 * MiB, "model", 300 * MiB, false);
  hr__bconn_t *d = client(b, 913, "third", 0, 200 * MiB, "model", 300 * MiB, false);
  hr__bconn_t *asker = hr__broker_add_conn(b, -1, 914, (uint32_t)geteuid(), 0);
  say(b, asker, "{\"v\":1,\"op\":\"reserve\",\"id\":1,\"bytes\":%.0f}", 600 * MiB);
  hr__broker_tick(b);
  double id = asked(a); /* the cache first: it costs nothing */
  CHECK(id > 0);
  CHECK(asked(c) == 0 && asked(d) == 0);
  say(b, a, "{\"v\":1,\"op\":\"released\",\"id\":%.0f,\"bytes\":0,\"error\":\"boom\"}", id);
  hr__broker_tick(b);    /* no clock step: at once */
  double id2 = asked(d); /* then the least recently used model (idle_s 13 > 12) */
  CHECK(id2 > 0);
  CHECK(asked(c) == 0);
  CHECK_CONTAINS(ev_last[HR_BROKER_EV_ANSWER], "boom");
  /* d says nothing: one broker_timeout later, c is asked in that pass. */
  fake_now += 0.99;
  hr__broker_tick(b);
  CHECK(asked(c) == 0);
  fake_now += 0.02;
  hr__broker_tick(b);
  CHECK_EQ_INT(ev_count[HR_BROKER_EV_NO_ANSWER], 1);
  CHECK(asked(c) > 0);
  /* The first client's error is shown for it. */
  hr__buf_t o = {0};
  hr__broker_status_json(b, &o);
  CHECK_CONTAINS(o.s, "\"last_error\":\"boom\"");
  hr__buf_free(&o);
  done(b);
}

/* Both idle: one reservation unloads exactly one, and its grant, although
 * the lease brings use over the warning line, asks nobody for pressure. */
static void test_one_plan_no_pressure_after(void) {
  hr_broker_t *b = engine("host=1000M", "60", NULL, NULL);
  CHECK(b);
  hr__bconn_t *a = client(b, 921, "one", 0, 250 * MiB, "model", 250 * MiB, false);
  hr__bconn_t *c = client(b, 922, "two", 0, 250 * MiB, "model", 250 * MiB, false);
  hr__bconn_t *asker = hr__broker_add_conn(b, -1, 923, (uint32_t)geteuid(), 0);
  say(b, asker, "{\"v\":1,\"op\":\"reserve\",\"id\":1,\"bytes\":%.0f}", 600 * MiB);
  hr__broker_tick(b);
  double ida = asked(a), idc = asked(c);
  CHECK((ida > 0) != (idc > 0)); /* exactly one */
  hr__bconn_t *gave = ida > 0 ? a : c;
  proc(gave == a ? 921 : 922, 0, 1);
  say(b, gave, "{\"v\":1,\"op\":\"released\",\"id\":%.0f,\"bytes\":%.0f}", ida + idc, 250 * MiB);
  hr__broker_tick(b);
  cJSON *g = heard_op(asker, "granted");
  CHECK(g);
  cJSON_Delete(g);
  for (int i = 0; i < 5; i++) {
    fake_now += 1.0;
    hr__broker_tick(b);
  }
  CHECK(asked(a) == 0 && asked(c) == 0);
  CHECK_EQ_INT(ev_count[HR_BROKER_EV_PRESSURE], 0);
  CHECK_EQ_INT(ev_count[HR_BROKER_EV_ASK], 1);
  done(b);
}

/* A registered client reserves 500 MiB and then allocates it: its RSS and
 * its lease are one memory, counted once. */
static void test_counted_once(void) {
  hr_broker_t *b = engine("host=1G", NULL, NULL, NULL);
  CHECK(b);
  hr__bconn_t *a = client(b, 931, "grower", 0, 100 * MiB, "cache", 0, false);
  say(b, a, "{\"v\":1,\"op\":\"reserve\",\"id\":1,\"bytes\":%.0f}", 500 * MiB);
  hr__broker_tick(b);
  cJSON *g = heard_op(a, "granted");
  CHECK(g);
  cJSON_Delete(g);
  proc(931, 600 * MiB, 1); /* it loaded what it reserved */
  b->last_read = 0;
  hr__broker_read(b);
  CHECK_EQ_U64(b->res[0].leased, 0);
  CHECK_EQ_U64(hr__broker_free(&b->res[0]), 1024 * MiB - 600 * MiB);
  hr__bconn_t *other = hr__broker_add_conn(b, -1, 932, (uint32_t)geteuid(), 0);
  say(b, other, "{\"v\":1,\"op\":\"reserve\",\"id\":2,\"bytes\":%.0f}", 350 * MiB);
  hr__broker_tick(b);
  g = heard_op(other, "granted");
  CHECK(g);
  CHECK_EQ_INT(num(g, "released_bytes"), 0);
  cJSON_Delete(g);
  done(b);
}

/* Timeouts hold while queued; one that fits is not held behind one that
 * waits, unless that one has a higher priority; pending counts the queue. */
static void test_queue_deadlines_and_fairness(void) {
  hr_broker_t *b = engine("host=1G", NULL, "broker_timeout", "10s");
  CHECK(b);
  hr__bconn_t *mute = client(b, 941, "mute", 0, 100 * MiB, "model", 2048 * MiB, false);
  (void)mute;
  hr__bconn_t *big = hr__broker_add_conn(b, -1, 942, (uint32_t)geteuid(), 0);
  hr__bconn_t *small = hr__broker_add_conn(b, -1, 943, (uint32_t)geteuid(), 0);
  say(b, big, "{\"v\":1,\"op\":\"reserve\",\"id\":1,\"bytes\":%.0f,\"priority\":5}", 1000 * MiB);
  hr__broker_tick(b);
  /* Of lower priority and fits: waits behind it, until its own timeout. */
  say(b, small, "{\"v\":1,\"op\":\"reserve\",\"id\":2,\"bytes\":1048576,\"timeout\":2}");
  hr__broker_tick(b);
  CHECK(heard_op(small, "granted") == NULL);
  hr__buf_t o = {0};
  hr__broker_status_json(b, &o);
  CHECK_CONTAINS(o.s, "\"pending\":2");
  hr__buf_free(&o);
  fake_now += 2.01;
  hr__broker_tick(b);
  cJSON *r = heard_op(small, "refused");
  CHECK(r);
  CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(r, "reason")), "timed out waiting for room");
  cJSON_Delete(r);
  /* Of the same priority: granted past it at once. */
  say(b, small, "{\"v\":1,\"op\":\"reserve\",\"id\":3,\"bytes\":1048576,\"priority\":5}");
  hr__broker_tick(b);
  r = heard_op(small, "granted");
  CHECK(r);
  cJSON_Delete(r);
  CHECK_EQ_INT(b->n_queue, 1);
  done(b);
}

/* A busy client asked for a reservation that then fails is told: the
 * flags it set for it are withdrawn (cancel). */
static void test_cancel_when_refused(void) {
  hr_broker_t *b = engine("host=1G", NULL, NULL, NULL);
  CHECK(b);
  hr__bconn_t *busy = client(b, 951, "comfy", 0, 500 * MiB, "model", 500 * MiB, true);
  hr__bconn_t *asker = hr__broker_add_conn(b, -1, 952, (uint32_t)geteuid(), 0);
  say(b, asker, "{\"v\":1,\"op\":\"reserve\",\"id\":1,\"bytes\":%.0f}", 800 * MiB);
  hr__broker_tick(b);
  double id = asked(busy);
  CHECK(id > 0);
  say(b, busy, "{\"v\":1,\"op\":\"released\",\"id\":%.0f,\"bytes\":0}", id);
  hr__broker_tick(b);
  cJSON *r = heard_op(asker, "refused");
  CHECK(r);
  CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(r, "reason")),
            "still short after every release asked");
  cJSON_Delete(r);
  cJSON *c = heard_op(busy, "cancel");
  CHECK(c);
  CHECK_EQ_INT(num(c, "id"), id);
  cJSON_Delete(c);
  done(b);
}

/* Per-connection bounds, and bounded replies. */
static void test_bounds(void) {
  hr_broker_t *b = engine("host=1G", NULL, "broker_max_leases", "100");
  CHECK(b);
  b->max_conns = 1000;
  hr__bconn_t *a = hr__broker_add_conn(b, -1, 961, (uint32_t)geteuid(), 0);
  for (int i = 0; i < 101; i++) {
    say(b, a, "{\"v\":1,\"op\":\"reserve\",\"id\":%d,\"bytes\":1}", i + 1);
    hr__broker_tick(b);
  }
  CHECK_EQ_INT(b->n_leases, 100);
  cJSON *r = heard_op(a, "refused");
  CHECK(r);
  CHECK_CONTAINS(cJSON_GetStringValue(cJSON_GetObjectItem(r, "reason")), "broker_max_leases");
  cJSON_Delete(r);
  for (int i = 0; i < 40; i++) client(b, 1000 + i, "many", 0, 1 * MiB, "cache", 1 * MiB, false);
  hr__buf_t o = {0};
  hr__broker_status_json(b, &o);
  cJSON *s = cJSON_Parse(o.s);
  hr__buf_free(&o);
  CHECK(s);
  CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(s, "leases")), HR_BROKER_STATUS_LEASES);
  CHECK_EQ_INT(num(s, "leases_total"), 100);
  CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(s, "clients")), HR_BROKER_STATUS_CLIENTS);
  CHECK_EQ_INT(num(s, "clients_total"), 40);
  cJSON_Delete(s);
  /* A refusal lists the largest holders and leases, and counts them all. */
  hr__bconn_t *x = hr__broker_add_conn(b, -1, 962, (uint32_t)geteuid(), 0);
  say(b, x, "{\"v\":1,\"op\":\"reserve\",\"id\":1,\"bytes\":%.0f}", 4096 * MiB);
  hr__broker_tick(b);
  r = heard_op(x, "refused");
  CHECK(r);
  CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(r, "holders")), HR_BROKER_REFUSAL_LIST);
  CHECK_EQ_INT(num(r, "holders_total"), 40);
  CHECK_EQ_INT(num(r, "leases_total"), 100);
  cJSON_Delete(r);
  /* Queued reservations per connection. */
  b->max_queued = 2;
  hr__bconn_t *q = hr__broker_add_conn(b, -1, 963, (uint32_t)geteuid(), 0);
  hr__bconn_t *m = client(b, 964, "mute", 0, 1 * MiB, "model", 8192 * MiB, false);
  (void)m;
  for (int i = 0; i < 3; i++)
    say(b, q, "{\"v\":1,\"op\":\"reserve\",\"id\":%d,\"bytes\":%.0f}", i + 1, 2048 * MiB);
  r = heard_op(q, "refused");
  CHECK(r);
  CHECK_CONTAINS(cJSON_GetStringValue(cJSON_GetObjectItem(r, "reason")), "broker_max_queued");
  cJSON_Delete(r);
  done(b);
}

/* `running` records the lease's command as a run event, for a child of
 * the asker only. */
static void test_running(void) {
  hr_broker_t *b = engine("host=1G", NULL, NULL, NULL);
  CHECK(b);
  proc(971, 1 * MiB, 1);
  proc(972, 1 * MiB, 971); /* its child */
  proc(973, 1 * MiB, 1);   /* not its child */
  hr__bconn_t *a = hr__broker_add_conn(b, -1, 971, (uint32_t)geteuid(), 0);
  say(b, a, "{\"v\":1,\"op\":\"reserve\",\"id\":1,\"bytes\":1024}");
  hr__broker_tick(b);
  cJSON *g = heard_op(a, "granted");
  CHECK(g);
  double lease = num(g, "lease");
  cJSON_Delete(g);
  say(b, a, "{\"v\":1,\"op\":\"running\",\"lease\":%.0f,\"pid\":972,\"command\":\"python x.py\"}",
      lease);
  CHECK_EQ_INT(ev_count[HR_BROKER_EV_RUN], 1);
  CHECK_STR(ev_last[HR_BROKER_EV_RUN], "python x.py");
  say(b, a, "{\"v\":1,\"op\":\"running\",\"lease\":%.0f,\"pid\":973,\"command\":\"x\"}", lease);
  CHECK(a->closing);
  CHECK_EQ_INT(ev_count[HR_BROKER_EV_REFUSED_PEER], 1);
  done(b);
}

/* ---- the protocol ------------------------------------------------------------------ */

static void test_protocol_decode(void) {
  hr__bmsg_t m;
  char err[300];
  const char *ok = "{\"v\":1,\"op\":\"reserve\",\"bytes\":4096,\"extra\":[1,2]}";
  CHECK_OK(hr__bproto_decode(ok, strlen(ok), &m, err, sizeof err));
  CHECK_EQ_INT(m.op, HR__BOP_RESERVE);
  CHECK_STR(m.u.reserve.device, "host"); /* defaults from the table */
  CHECK_NEAR(m.u.reserve.timeout, 30, 0);
  CHECK(!(m.present & hr__bproto_bit(HR__BOP_RESERVE, "priority")));
  const struct {
    const char *line, *words;
  } bad[] = {
      {"{\"v\":1,\"op\":\"reserve\",\"bytes\":1.5}", "\"bytes\" must be a whole number"},
      {"{\"v\":1,\"op\":\"reserve\",\"bytes\":0}", "\"bytes\" must be a whole number in [1,"},
      {"{\"v\":1,\"op\":\"reserve\",\"bytes\":true}", "\"bytes\" must be"},
      {"{\"v\":1,\"op\":\"reserve\",\"bytes\":1,\"device\":\"gpu0123456789abcdef\"}",
       "at most 15 bytes"},
      {"{\"v\":1,\"op\":\"hello\"}", "hello: \"pid\" is missing"},
      {"{\"v\":1,\"op\":\"offer\",\"items\":[{\"kind\":\"ram\",\"bytes\":1}]}",
       "offer: items[0]: \"kind\" must be one of cache|model"},
      {"{\"v\":1,\"op\":\"offer\",\"items\":[1]}", "items[0]: must be an object"},
      {"{\"v\":2,\"op\":\"status\"}", "protocol version not supported"},
      {"{\"op\":\"status\"}", "protocol version missing"},
      {"[1]", "not a JSON object"},
      {"{\"v\":1,\"op\":\"welcome\",\"client\":1}", "unknown op 'welcome'"},
  };
  for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
    int rc = hr__bproto_decode(bad[i].line, strlen(bad[i].line), &m, err, sizeof err);
    CHECK_MSG(rc != 0, "accepted %s", bad[i].line);
    CHECK_CONTAINS(err, bad[i].words);
  }
  /* 65 items: one too many. */
  hr__buf_t o = {0};
  hr__buf_puts(&o, "{\"v\":1,\"op\":\"offer\",\"items\":[");
  for (int i = 0; i < 65; i++)
    hr__buf_printf(&o, "%s{\"kind\":\"cache\",\"bytes\":1}", i ? "," : "");
  hr__buf_puts(&o, "]}");
  CHECK(hr__bproto_decode(o.s, o.len, &m, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "at most 64");
  hr__buf_free(&o);
  /* A long name is cut to fit, not refused. */
  char line[400];
  snprintf(line, sizeof line, "{\"v\":1,\"op\":\"hello\",\"pid\":5,\"name\":\"%0200d\"}", 7);
  CHECK_OK(hr__bproto_decode(line, strlen(line), &m, err, sizeof err));
  CHECK_EQ_INT(strlen(m.u.hello.name), HR_BROKER_NAME_MAX - 1);
  /* What the encoder writes, the decoder reads back the same. */
  hr__bm_reserve_t r = {
      .id = 9, .bytes = 123456789, .device = "gpu1", .timeout = 2.5, .lease = 7, .priority = -3};
  hr__bproto_encode(&o, HR__BOP_RESERVE, &r);
  CHECK_OK(hr__bproto_decode(o.s, o.len, &m, err, sizeof err));
  CHECK(memcmp(&m.u.reserve, &r, sizeof r) == 0);
  hr__buf_free(&o);
  /* The schema names every message. */
  char *schema = NULL;
  CHECK_OK(hr_broker_protocol_schema(&schema));
  cJSON *sj = cJSON_Parse(schema);
  CHECK(sj);
  const cJSON *defs = cJSON_GetObjectItem(sj, "$defs");
  for (int k = 0; k < HR__BOP_COUNT_; k++) {
    const char *name = hr__bproto_name((hr__bop_t)k);
    bool found = false;
    const cJSON *d;
    cJSON_ArrayForEach(d, defs) {
      const cJSON *op = cJSON_GetObjectItem(cJSON_GetObjectItem(d, "properties"), "op");
      found |= op && strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(op, "const")), name) == 0;
    }
    CHECK_MSG(found, "no definition of %s", name);
  }
  cJSON_Delete(sj);
  free(schema);
}

/* ---- the adapters' HTTP parser --------------------------------------------------- */

static int feed_all(hr__bhttp_t *h, const char *s, size_t len, size_t step, char *err) {
  int rc = 0;
  for (size_t i = 0; i < len && rc == 0; i += step)
    rc = hr__bhttp_feed(h, s + i, HR_MIN(step, len - i), err, 200);
  return rc;
}

static void test_http_parser_linear(void) {
  char err[200];
  hr__bhttp_t h = {.fd = -1, .content_length = -1};
  /* A reply just under 1 MiB in 1-byte chunks, fed a byte at a time. */
  size_t n = (1u << 20) - 1;
  hr__buf_t r = {0};
  hr__buf_puts(&r, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (size_t i = 0; i < n; i++) hr__buf_puts(&r, "1\r\nx\r\n");
  hr__buf_puts(&r, "0\r\n\r\n");
  CHECK(!r.failed);
  CHECK_EQ_INT(feed_all(&h, r.s, r.len, 1, err), 1);
  CHECK_EQ_INT(h.status, 200);
  CHECK_EQ_U64(h.body.len, n);
  CHECK(h.examined <= r.len); /* each byte looked at once */
  hr__bhttp_close(&h);
  /* One more byte of body: over the cap. */
  h = (hr__bhttp_t){.fd = -1, .content_length = -1};
  hr__buf_t big = {0};
  hr__buf_printf(&big, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n",
                 (size_t)(1u << 20) + 1);
  CHECK(feed_all(&h, big.s, big.len, 7, err) < 0);
  CHECK_CONTAINS(err, "over 1 MiB");
  hr__bhttp_close(&h);
  hr__buf_free(&big);
  hr__buf_free(&r);
  /* Content-Length, split anywhere. */
  const char *cl = "HTTP/1.0 503 Busy\r\nContent-Length: 5\r\n\r\nhelloEXTRA";
  for (size_t step = 1; step < strlen(cl); step++) {
    h = (hr__bhttp_t){.fd = -1, .content_length = -1};
    CHECK_EQ_INT(feed_all(&h, cl, strlen(cl), step, err), 1);
    CHECK_EQ_INT(h.status, 503);
    CHECK_EQ_INT(h.body.len, 5);
    hr__bhttp_close(&h);
  }
  /* Garbage and endless headers. */
  h = (hr__bhttp_t){.fd = -1, .content_length = -1};
  CHECK(feed_all(&h, "SSH-2.0\r\n\r\n", 11, 3, err) < 0);
  hr__bhttp_close(&h);
  h = (hr__bhttp_t){.fd = -1, .content_length = -1};
  char hdr[20000];
  memset(hdr, 'a', sizeof hdr);
  CHECK(feed_all(&h, hdr, sizeof hdr, 4096, err) < 0);
  CHECK_CONTAINS(err, "headers over");
  hr__bhttp_close(&h);
  /* No length: the body runs to the end of the connection. */
  h = (hr__bhttp_t){.fd = -1, .content_length = -1};
  CHECK_EQ_INT(feed_all(&h, "HTTP/1.1 200 OK\r\n\r\n{}", 21, 2, err), 0);
  CHECK_EQ_INT(hr__bhttp_eof(&h, err, sizeof err), 1);
  CHECK_EQ_INT(h.body.len, 2);
  hr__bhttp_close(&h);
}

int main(void) {
  HR_RUN(test_planner_rules);
  HR_RUN(test_idle_before_busy);
  HR_RUN(test_moves_on_at_once);
  HR_RUN(test_one_plan_no_pressure_after);
  HR_RUN(test_counted_once);
  HR_RUN(test_queue_deadlines_and_fairness);
  HR_RUN(test_cancel_when_refused);
  HR_RUN(test_bounds);
  HR_RUN(test_running);
  HR_RUN(test_protocol_decode);
  HR_RUN(test_http_parser_linear);
  return hr_test_finish("broker_engine");
}
