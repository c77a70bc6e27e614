/* History store: round trip, a real kill -9 of a writing child process (at
 * most the open batch lost, PRAGMA integrity_check clean), retention,
 * migration from schema version 1, a schema-4 file written before the
 * columns came from the field lists read as it was, then migrated to 5 (the
 * thresholds kept with the samples), a newer schema refused, unwritable
 * paths and a full "disk" as clear errors that leave the store usable, and
 * read-only opening: nothing created or changed, a live writer read up to
 * its last commit, what is not a regular file refused without waiting. */
#include "hr_test.h"

#include "fake_events.h"
#include "store/store.h"

#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[256];

static const char *db_path(char *buf, size_t n, const char *name) {
  snprintf(buf, n, "%s/%s", dir, name);
  return buf;
}

/* A hand-built snapshot: host, one GPU, three processes, selected as the
 * probe selects (GPU holders, then the `top` largest by RSS). */
typedef struct fake {
  hr_snapshot_t s;
  hr_gpu_t gpu;
  hr_proc_t procs[3];
  size_t selected[3];
} fake_t;

static void fake_init(fake_t *f, double t, uint64_t grow, size_t top) {
  memset(f, 0, sizeof *f);
  f->s.time = t;
  f->s.host.total_bytes = 64ULL << 30;
  f->s.host.available_bytes = (40ULL << 30) - grow;
  f->s.cgroup.state = HR_PROBE_ABSENT;
  f->s.gpu_state = HR_PROBE_OK;
  f->gpu.index = 0;
  f->gpu.total_bytes = 24ULL << 30;
  f->gpu.used_bytes = (10ULL << 30) + grow;
  snprintf(f->gpu.name, sizeof f->gpu.name, "Fake GPU");
  f->s.n_gpus = 1, f->s.gpus = &f->gpu;
  for (int i = 0; i < 3; i++) {
    hr_proc_t *p = &f->procs[i];
    p->pid = 100 + i, p->start_ticks = 5;
    snprintf(p->name, sizeof p->name, "proc%d", i);
    p->rss_bytes = p->rss_anon_bytes = (uint64_t)(i + 1) << 28;
    p->gpu_bytes = i == 2 ? 4ULL << 30 : 0;
  }
  f->procs[0].rss_bytes += grow;
  f->s.n_procs = 3, f->s.procs = f->procs;
  /* The selection into the fake's own array, so nothing is left to free. */
  if (hr_snapshot_select(&f->s, top, NULL) == 0)
    memcpy(f->selected, f->s.selected, f->s.n_selected * sizeof *f->selected);
  free(f->s.selected);
  f->s.selected = f->selected;
}

/* A leak event as watch emits it. */
static hr_watch_event_t leak_event(double t, int pid, const char *name) {
  hr_watch_event_t e = {.kind = HR_EVENT_LEAK, .time = t, .pid = pid};
  snprintf(e.name, sizeof e.name, "%s", name);
  snprintf(e.leak.series, sizeof e.leak.series, "rss_anon");
  e.leak.slope_bytes_per_min = 5e6, e.leak.window_s = 600, e.leak.span_s = 59.5;
  e.leak.points = 60, e.leak.confidence = 0.99999;
  return e;
}

static int64_t scalar(const char *path, const char *sql) {
  sqlite3 *db;
  int64_t v = -1;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
      v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return v;
}

static bool integrity_ok(const char *path) {
  sqlite3 *db;
  bool ok = false;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
      ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return ok;
}

static void test_round_trip(void) {
  char path[512], err[512];
  hr_history_t *h;
  CHECK_OK(hr_history_open(db_path(path, sizeof path, "sub/dir/rt.db"), &h, err, sizeof err));
  fake_t f;
  for (int i = 0; i < 10; i++) {
    fake_init(&f, 1000 + i, (uint64_t)i << 20, 1);
    CHECK_OK(hr_history_add_snapshot(h, &f.s, err, sizeof err));
  }
  hr_watch_event_t le = leak_event(1005, 100, "proc0");
  CHECK_OK(hr_history_add_event(h, &le, err, sizeof err));
  CHECK(hr_history_pending(h) > 0);
  CHECK_OK(hr_history_flush(h, err, sizeof err));
  CHECK_EQ_U64(hr_history_pending(h), 0);
  hr_history_row_t *rows;
  hr_history_event_t *ev;
  size_t nr, ne;
  CHECK_OK(hr_history_query(h, 1003, 0, &rows, &nr, &ev, &ne, err, sizeof err));
  /* 7 samples x (host + gpu0 + 2 top processes) */
  CHECK_EQ_U64(nr, 7 * 4);
  CHECK_EQ_U64(ne, 1);
  CHECK_STR(ev[0].kind, "leak");
  CHECK_STR(ev[0].name, "proc0");
  CHECK_EQ_INT(ev[0].pid, 100);
  /* The typed payload comes back as it went in. */
  CHECK_EQ_INT(ev[0].event.kind, HR_EVENT_LEAK);
  CHECK_STR(ev[0].event.leak.series, "rss_anon");
  CHECK_NEAR(ev[0].event.leak.slope_bytes_per_min, 5e6, 1e-6);
  CHECK_NEAR(ev[0].event.leak.confidence, 0.99999, 1e-12);
  CHECK_EQ_U64(ev[0].event.leak.points, 60);
  int gpu_rows = 0, procs = 0;
  for (size_t i = 0; i < nr; i++) {
    if (strcmp(rows[i].scope, "gpu0") == 0) {
      gpu_rows++;
      CHECK_EQ_U64(rows[i].total_bytes, 24ULL << 30);
    }
    /* GPU holders, then the top 1 by RSS: proc2 (4 GiB GPU) and proc1 (512 MiB). */
    if (strcmp(rows[i].scope, "proc") == 0) {
      procs++;
      CHECK(rows[i].pid == 102 || rows[i].pid == 101);
    }
  }
  CHECK_EQ_INT(gpu_rows, 7);
  CHECK_EQ_INT(procs, 14);
  hr_history_free_rows(rows, ev, ne);
  CHECK_OK(hr_history_query(h, 0, 102, &rows, &nr, &ev, &ne, err, sizeof err));
  CHECK_EQ_U64(nr, 10);
  CHECK_EQ_U64(rows[0].total_bytes, 4ULL << 30);
  CHECK_EQ_U64(ne, 0);
  hr_history_free_rows(rows, ev, ne);
  /* WAL mode: the write-ahead log sits beside the file while it is open. */
  char wal[520];
  snprintf(wal, sizeof wal, "%s-wal", path);
  CHECK(access(wal, F_OK) == 0);
  hr_history_close(h);
  CHECK(integrity_ok(path));
  CHECK_EQ_INT(scalar(path, "PRAGMA user_version"), HR_HISTORY_SCHEMA);
}

/* Child: writes batches of `batch` samples as fast as it can, telling the
 * parent through `fd` how many samples are committed after each commit. */
static void writer_child(const char *path, int fd, int batch) {
  char err[512];
  hr_history_t *h;
  if (hr_history_open(path, &h, err, sizeof err) != 0) _exit(3);
  fake_t f;
  for (int64_t n = 0;;) {
    for (int i = 0; i < batch; i++, n++) {
      fake_init(&f, (double)n, (uint64_t)n, 3);
      if (hr_history_add_snapshot(h, &f.s, err, sizeof err) != 0) _exit(4);
    }
    if (hr_history_flush(h, err, sizeof err) != 0) _exit(5);
    if (write(fd, &n, sizeof n) != sizeof n) _exit(6);
  }
}

static void test_kill9_mid_write(void) {
  for (int round = 0; round < 3; round++) {
    char path[512];
    snprintf(path, sizeof path, "%s/kill%d.db", dir, round);
    int fds[2];
    CHECK(pipe(fds) == 0);
    const int batch = 50;
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      writer_child(path, fds[1], batch);
    }
    close(fds[1]);
    /* Wait for a number of commits that differs per round, then kill
     * without warning while the child is deep in its next batch. */
    int64_t committed = 0, v;
    int want = 5 + round * 7;
    for (int got = 0; got < want && read(fds[0], &v, sizeof v) == sizeof v; got++) committed = v;
    usleep(1000 * (unsigned)(round + 1));
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    /* Commits the child made after our last read still count. */
    while (read(fds[0], &v, sizeof v) == sizeof v) committed = v;
    close(fds[0]);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    CHECK_MSG(committed >= 5 * batch, "child committed only %lld samples", (long long)committed);

    char err[512];
    hr_history_t *h;
    CHECK_OK(hr_history_open(path, &h, err, sizeof err));
    hr_history_close(h);
    CHECK(integrity_ok(path));
    int64_t host = scalar(path, "SELECT count(*) FROM samples WHERE scope = 'host'");
    /* Every committed sample is there; at most the open batch is gone. */
    CHECK_MSG(host >= committed && host <= committed + batch,
              "round %d: %lld host samples, %lld committed", round, (long long)host,
              (long long)committed);
    CHECK_EQ_INT(host % batch, 0);
    CHECK_EQ_INT(scalar(path, "SELECT count(*) FROM proc_samples"), host * 3);
  }
}

static void test_retention(void) {
  char path[512], err[512];
  hr_history_t *h;
  CHECK_OK(hr_history_open(db_path(path, sizeof path, "retain.db"), &h, err, sizeof err));
  fake_t f;
  for (int i = 0; i < 100; i++) {
    fake_init(&f, 1000 + i, 0, 3);
    CHECK_OK(hr_history_add_snapshot(h, &f.s, err, sizeof err));
    hr_watch_event_t e = {.kind = HR_EVENT_EXIT, .time = 1000 + i, .pid = 7};
    CHECK_OK(hr_history_add_event(h, &e, err, sizeof err));
  }
  CHECK_OK(hr_history_flush(h, err, sizeof err));
  CHECK_OK(hr_history_prune(h, 1060, err, sizeof err));
  CHECK_OK(hr_history_flush(h, err, sizeof err));
  hr_history_close(h);
  CHECK_EQ_INT(scalar(path, "SELECT count(*) FROM samples"), 40 * 2);
  CHECK_EQ_INT(scalar(path, "SELECT count(*) FROM proc_samples"), 40 * 3);
  CHECK_EQ_INT(scalar(path, "SELECT count(*) FROM events"), 40);
  CHECK_EQ_INT(scalar(path, "SELECT min(time) FROM events"), 1060);
}

static void test_migration_from_v1(void) {
  char path[512], err[512];
  db_path(path, sizeof path, "v1.db");
  sqlite3 *db;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db, hr__history_schema_v1, NULL, NULL, NULL) == SQLITE_OK);
  CHECK(sqlite3_exec(db,
                     "INSERT INTO samples VALUES(10, 'host', 5, 10);"
                     "INSERT INTO samples VALUES(11, 'gpu0', 6, 12);"
                     "INSERT INTO events VALUES(10.5, 'level', 0, '{\"event\":\"level\","
                     "\"time\":10.5,\"scope\":\"gpu0\",\"level\":\"warning\",\"previous\":\"ok\","
                     "\"used_pct\":87.5,\"used_bytes\":21,\"total_bytes\":24}');"
                     "INSERT INTO events VALUES(10.6, 'error', 0, 'not json');",
                     NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  CHECK_EQ_INT(scalar(path, "PRAGMA user_version"), 1);

  hr_history_t *h;
  CHECK_OK(hr_history_open(path, &h, err, sizeof err));
  fake_t f;
  fake_init(&f, 20, 0, 3);
  CHECK_OK(hr_history_add_snapshot(h, &f.s, err, sizeof err));
  hr_watch_event_t ex = {.kind = HR_EVENT_EXIT, .time = 20, .pid = 101, .name = "proc1"};
  CHECK_OK(hr_history_add_event(h, &ex, err, sizeof err));
  CHECK_OK(hr_history_flush(h, err, sizeof err));
  hr_history_row_t *rows;
  hr_history_event_t *ev;
  size_t nr, ne;
  CHECK_OK(hr_history_query(h, 0, 0, &rows, &nr, &ev, &ne, err, sizeof err));
  CHECK_EQ_U64(nr, 2 + 2 + 3);
  CHECK_EQ_U64(ne, 3);
  /* Version 2's JSON text became typed columns (levels as numbers). */
  CHECK_STR(ev[0].kind, "level");
  CHECK_STR(ev[0].event.level.scope, "gpu0");
  CHECK_EQ_INT(ev[0].event.level.level, HR_LEVEL_WARNING);
  CHECK_EQ_INT(ev[0].event.level.previous, HR_LEVEL_OK);
  CHECK_NEAR(ev[0].event.level.used_pct, 87.5, 1e-9);
  CHECK_EQ_U64(ev[0].event.level.total_bytes, 24);
  CHECK_STR(ev[0].name, "");
  /* A row whose text was not JSON keeps its kind and time. */
  CHECK_STR(ev[1].kind, "error");
  CHECK_NEAR(ev[1].time, 10.6, 1e-9);
  CHECK_STR(ev[1].event.error.message, "");
  CHECK_STR(ev[2].name, "proc1");
  CHECK_EQ_U64(rows[0].used_bytes, 5);
  hr_history_free_rows(rows, ev, ne);
  hr_history_close(h);
  CHECK_EQ_INT(scalar(path, "PRAGMA user_version"), HR_HISTORY_SCHEMA);
  CHECK_EQ_INT(scalar(path, "SELECT count(*) FROM pragma_table_info('events') WHERE name = 'json'"),
               0);
  CHECK(integrity_ok(path));
}

static void test_newer_schema_refused(void) {
  char path[512], err[512];
  db_path(path, sizeof path, "v99.db");
  sqlite3 *db;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  hr_history_t *h = NULL;
  CHECK_RC(hr_history_open(path, &h, err, sizeof err), HR_EVERSION);
  CHECK(h == NULL);
  CHECK_CONTAINS(err, "newer");
}

static void test_unwritable_paths(void) {
  char err[512];
  hr_history_t *h = NULL;
  /* procfs takes no new files, even from root. */
  int rc = hr_history_open("/proc/headroom-no-such/history.db", &h, err, sizeof err);
  CHECK(rc == HR_EPERM || rc == HR_EIO);
  CHECK(h == NULL);
  CHECK_CONTAINS(err, "/proc/headroom-no-such");
  /* A file where a folder should be. */
  char path[512];
  snprintf(path, sizeof path, "%s/plain/history.db", dir);
  char plain[512];
  FILE *fp = fopen(db_path(plain, sizeof plain, "plain"), "w");
  CHECK(fp);
  fclose(fp);
  rc = hr_history_open(path, &h, err, sizeof err);
  CHECK(rc < 0);
  CHECK_CONTAINS(err, "plain");
  /* A database file opened read-only by the file system: /proc/self/... is
   * not a database; the error must say so rather than crash. */
  rc = hr_history_open("/proc/self/status", &h, err, sizeof err);
  CHECK(rc < 0);
  CHECK_CONTAINS(err, "/proc/self/status");
}

static void test_full_disk_keeps_going(void) {
  char path[512], err[512];
  hr_history_t *h;
  CHECK_OK(hr_history_open(db_path(path, sizeof path, "full.db"), &h, err, sizeof err));
  char sql[128];
  int64_t pages = scalar(path, "PRAGMA page_count");
  CHECK(pages > 0);
  snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long)pages + 2);
  CHECK_OK(hr__history_exec(h, sql, err, sizeof err));
  fake_t f;
  int rc = 0;
  for (int i = 0; i < 5000 && rc == 0; i++) {
    fake_init(&f, i, 0, 3);
    rc = hr_history_add_snapshot(h, &f.s, err, sizeof err);
    if (rc == 0 && i % 100 == 99) rc = hr_history_flush(h, err, sizeof err);
  }
  CHECK_RC(rc, HR_ENOSPC);
  CHECK_CONTAINS(err, "disk full");
  CHECK_CONTAINS(err, "full.db");
  /* The failed batch is dropped; once there is room again, writing goes on. */
  hr_history_flush(h, err, sizeof err);
  CHECK_OK(hr__history_exec(h, "PRAGMA max_page_count = 1000000", err, sizeof err));
  fake_init(&f, 99999, 0, 3);
  CHECK_OK(hr_history_add_snapshot(h, &f.s, err, sizeof err));
  CHECK_OK(hr_history_flush(h, err, sizeof err));
  hr_history_close(h);
  CHECK(integrity_ok(path));
  CHECK_EQ_INT(scalar(path, "SELECT count(*) FROM samples WHERE time = 99999"), 2);
}

static void test_default_path(void) {
  char buf[512];
  setenv("XDG_STATE_HOME", "/tmp/state-x", 1);
  CHECK_OK(hr_history_default_path(buf, sizeof buf));
  CHECK_STR(buf, "/tmp/state-x/headroom/history.db");
  unsetenv("XDG_STATE_HOME");
  setenv("HOME", "/home/u", 1);
  CHECK_OK(hr_history_default_path(buf, sizeof buf));
  CHECK_STR(buf, "/home/u/.local/state/headroom/history.db");
}

/* A broker event goes in typed and comes back the same, with the same JSON
 * line. A file at schema 3 (before the broker's columns) is migrated and
 * keeps its rows. */
static void test_broker_events(void) {
  char path[512], err[512];
  hr_history_t *h;
  CHECK_OK(hr_history_open(db_path(path, sizeof path, "broker.db"), &h, err, sizeof err));
  hr_watch_event_t we = fake_broker(HR_BROKER_EV_ANSWER, 2000.5, 4242, "comfy\"ui", "gpu0");
  we.broker.uid = 1000, we.broker.priority = 3, we.broker.bytes = 300ULL << 20;
  we.broker.released_bytes = 200ULL << 20, we.broker.latency_s = 0.125;
  we.broker.status = 200, we.broker.lease = 7;
  snprintf(we.broker.message, sizeof we.broker.message, "freed 2 models");
  CHECK_OK(hr_history_add_event(h, &we, err, sizeof err));
  CHECK_OK(hr_history_flush(h, err, sizeof err));
  hr_history_row_t *rows;
  hr_history_event_t *ev;
  size_t nr, ne;
  CHECK_OK(hr_history_query(h, 0, 4242, &rows, &nr, &ev, &ne, err, sizeof err));
  CHECK_EQ_U64(ne, 1);
  CHECK_STR(ev[0].kind, "broker");
  const hr_event_broker_t *x = &ev[0].event.broker;
  CHECK_EQ_INT(x->what, HR_BROKER_EV_ANSWER);
  CHECK_STR(x->device, "gpu0");
  CHECK_EQ_U64(x->released_bytes, 200ULL << 20);
  CHECK_EQ_U64(x->bytes, 300ULL << 20);
  CHECK_NEAR(x->latency_s, 0.125, 1e-12);
  CHECK_EQ_INT(x->status, 200);
  CHECK_EQ_INT(x->priority, 3);
  CHECK_EQ_U64(x->lease, 7);
  CHECK_EQ_INT((int)x->uid, 1000);
  char *a = NULL, *b = NULL, line[300];
  CHECK_OK(hr_event_json(&ev[0].event, &a));
  CHECK_OK(hr_event_json(&we, &b));
  CHECK_STR(a, b);
  CHECK_CONTAINS(a, "\"event\":\"broker_answer\"");
  CHECK_CONTAINS(a, "\"name\":\"comfy\\\"ui\"");
  CHECK_CONTAINS(a, "\"released_bytes\":209715200");
  CHECK_CONTAINS(hr_event_text(&ev[0].event, line, sizeof line), "broker    answer pid 4242");
  CHECK_CONTAINS(line, "released 200");
  free(a), free(b);
  hr_history_free_rows(rows, ev, ne);
  hr_history_close(h);

  /* Back to schema 3: the broker's columns and the samples' thresholds gone,
   * one old row kept. */
  sqlite3 *db;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  static const char *const cols[] = {"broker",         "uid",       "device", "priority", "bytes",
                                     "released_bytes", "latency_s", "status", "lease"};
  CHECK(sqlite3_exec(db, "DELETE FROM events", NULL, NULL, NULL) == SQLITE_OK);
  for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++) {
    char sql[100];
    snprintf(sql, sizeof sql, "ALTER TABLE events DROP COLUMN %s", cols[i]);
    CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
  }
  CHECK(sqlite3_exec(db,
                     "ALTER TABLE samples DROP COLUMN warn_pct;"
                     "ALTER TABLE samples DROP COLUMN critical_pct;"
                     "INSERT INTO events(time,kind,pid,name,message) VALUES(1,'error',0,'','old');"
                     "PRAGMA user_version = 3",
                     NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  CHECK_OK(hr_history_open(path, &h, err, sizeof err));
  CHECK_OK(hr_history_add_event(h, &we, err, sizeof err));
  CHECK_OK(hr_history_flush(h, err, sizeof err));
  CHECK_OK(hr_history_query(h, 0, 0, &rows, &nr, &ev, &ne, err, sizeof err));
  CHECK_EQ_U64(ne, 2);
  CHECK_STR(ev[0].event.error.message, "old");
  CHECK_EQ_U64(ev[1].event.broker.released_bytes, 200ULL << 20);
  hr_history_free_rows(rows, ev, ne);
  hr_history_close(h);
  CHECK_EQ_INT(scalar(path, "PRAGMA user_version"), HR_HISTORY_SCHEMA);
}

/* The events table's columns as "name type,name type,..." in their order. */
static void table_columns(const char *path, char *out, size_t n) {
  sqlite3 *db;
  out[0] = '\0';
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) return;
  sqlite3_stmt *st;
  size_t len = 0;
  if (sqlite3_prepare_v2(db, "SELECT name, type FROM pragma_table_info('events') ORDER BY cid", -1,
                         &st, NULL) == SQLITE_OK)
    while (sqlite3_step(st) == SQLITE_ROW && len < n)
      len += (size_t)snprintf(out + len, n - len, "%s %s,", sqlite3_column_text(st, 0),
                              sqlite3_column_text(st, 1));
  sqlite3_finalize(st);
  sqlite3_close(db);
}

/* Each event's JSON and terminal line against the fixture's, two lines an
 * event; an old terminal line that said " released 0 B" for a broker event
 * that released nothing is expected without it (test_event.c says why). */
static void check_lines(const hr_history_event_t *ev, size_t ne, char **lines, size_t n_lines) {
  CHECK_EQ_U64(n_lines, 2 * ne);
  for (size_t i = 0; i < ne && 2 * i + 1 < n_lines; i++) {
    char *json = NULL, text[1024], want[1024];
    CHECK_OK(hr_event_json(&ev[i].event, &json));
    CHECK_STR(json, lines[2 * i]);
    free(json);
    hr__strlcpy(want, lines[2 * i + 1], sizeof want);
    char *p = ev[i].event.kind == HR_EVENT_BROKER ? strstr(want, " released 0 B") : NULL;
    if (p) memmove(p, p + 13, strlen(p + 13) + 1);
    CHECK_STR(hr_event_text(&ev[i].event, text, sizeof text), want);
  }
}

/* A schema-4 file that headroom wrote before its columns came from the
 * field lists (tests/fixtures/events/history-v4.sql) opens (its events'
 * columns unchanged by the migration to 5) and reads back as it did then (history-v4-read.txt, what
 * `history --json` wrote); the same events written now read back the same,
 * and a new file has the very columns of the old one. */
static void test_v4_file(void) {
  setenv("TZ", "UTC", 1);
  tzset();
  char src[1024], path[512], err[512];
  size_t n_sql = 0, n_lines = 0;
  char **sql =
      fake_lines(hr_test_src(src, sizeof src, "tests/fixtures/events/history-v4.sql"), &n_sql);
  char **lines = fake_lines(
      hr_test_src(src, sizeof src, "tests/fixtures/events/history-v4-read.txt"), &n_lines);
  CHECK(sql != NULL && lines != NULL);
  if (!sql || !lines) return;
  sqlite3 *db;
  CHECK(sqlite3_open(db_path(path, sizeof path, "v4-old.db"), &db) == SQLITE_OK);
  for (size_t i = 0; i < n_sql; i++)
    CHECK_MSG(sqlite3_exec(db, sql[i], NULL, NULL, NULL) == SQLITE_OK, "%s", sql[i]);
  sqlite3_close(db);
  CHECK_EQ_INT(scalar(path, "PRAGMA user_version"), 4);
  hr_history_t *h;
  hr_history_row_t *rows;
  hr_history_event_t *ev;
  size_t nr, ne;
  CHECK_OK(hr_history_open(path, &h, err, sizeof err));
  CHECK_OK(hr_history_query(h, 0, 0, &rows, &nr, &ev, &ne, err, sizeof err));
  CHECK_EQ_U64(nr, 4); /* host, gpu0, and the two processes selected then */
  check_lines(ev, ne, lines, n_lines);
  hr_history_free_rows(rows, ev, ne);
  hr_history_close(h);

  char fresh[512], old_cols[4096], new_cols[4096];
  CHECK_OK(hr_history_open(db_path(fresh, sizeof fresh, "v4-new.db"), &h, err, sizeof err));
  hr_watch_event_t es[FAKE_EVENTS_MAX];
  size_t n = fake_events(es);
  for (size_t i = 0; i < n; i++) CHECK_OK(hr_history_add_event(h, &es[i], err, sizeof err));
  CHECK_OK(hr_history_flush(h, err, sizeof err));
  CHECK_OK(hr_history_query(h, 0, 0, &rows, &nr, &ev, &ne, err, sizeof err));
  check_lines(ev, ne, lines, n_lines);
  hr_history_free_rows(rows, ev, ne);
  hr_history_close(h);
  table_columns(path, old_cols, sizeof old_cols);
  table_columns(fresh, new_cols, sizeof new_cols);
  CHECK_CONTAINS(old_cols, "broker TEXT,uid INTEGER,");
  CHECK_STR(new_cols, old_cols);
  fake_lines_free(sql, n_sql);
  fake_lines_free(lines, n_lines);
}

/* The whole file at `path` into a malloc'd buffer; *n its size. */
static char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  char *buf = f ? malloc(1 << 22) : NULL;
  *n = buf ? fread(buf, 1, 1 << 22, f) : 0;
  if (f) fclose(f);
  return buf;
}

static bool exists(const char *path, const char *suffix) {
  char p[600];
  snprintf(p, sizeof p, "%s%s", path, suffix);
  return access(p, F_OK) == 0;
}

/* Loads the schema-4 fixture into a new file at `path`. */
static bool load_v4(const char *path) {
  char src[1024];
  size_t n = 0;
  char **sql = fake_lines(hr_test_src(src, sizeof src, "tests/fixtures/events/history-v4.sql"), &n);
  sqlite3 *db;
  bool ok = sql && sqlite3_open(path, &db) == SQLITE_OK;
  for (size_t i = 0; ok && i < n; i++) ok = sqlite3_exec(db, sql[i], NULL, NULL, NULL) == 0;
  if (sql) sqlite3_close(db), fake_lines_free(sql, n);
  return ok;
}

/* The thresholds set on a handle go with each scope sample, the GPUs' and
 * the host's apart; processes and samples queued before have none. */
static void test_thresholds_recorded(void) {
  char path[512], err[512];
  hr_history_t *h;
  CHECK_OK(hr_history_open(db_path(path, sizeof path, "thr.db"), &h, err, sizeof err));
  fake_t f;
  fake_init(&f, 10, 0, 1);
  CHECK_OK(hr_history_add_snapshot(h, &f.s, err, sizeof err));
  hr_history_thresholds_t t = {7, 9, 85.5, 95};
  CHECK_OK(hr_history_set_thresholds(h, &t));
  CHECK_RC(hr_history_set_thresholds(h, NULL), HR_EINVAL);
  fake_init(&f, 11, 0, 1);
  CHECK_OK(hr_history_add_snapshot(h, &f.s, err, sizeof err));
  CHECK_OK(hr_history_flush(h, err, sizeof err));
  hr_history_row_t *rows;
  hr_history_event_t *ev;
  size_t nr, ne, seen = 0;
  CHECK_OK(hr_history_query(h, 0, 0, &rows, &nr, &ev, &ne, err, sizeof err));
  for (size_t i = 0; i < nr; i++) {
    const hr_history_row_t *r = &rows[i];
    bool later = r->time > 10.5, gpu = strcmp(r->scope, "gpu0") == 0;
    if (strcmp(r->scope, "proc") == 0 || !later) {
      CHECK_MSG(isnan(r->warn_pct) && isnan(r->critical_pct), "%s at %g has thresholds", r->scope,
                r->time);
      continue;
    }
    CHECK_NEAR(r->warn_pct, gpu ? 85.5 : 7, 1e-12);
    CHECK_NEAR(r->critical_pct, gpu ? 95 : 9, 1e-12);
    seen++;
  }
  CHECK_EQ_U64(seen, 2);
  hr_history_free_rows(rows, ev, ne);
  hr_history_close(h);
}

/* The schema-4 fixture read-only: read at its own schema (no thresholds),
 * nothing written, created or migrated; then opened for writing: migrated
 * to 5 in place, its old samples kept without thresholds, new ones with. */
static void test_v4_readonly_then_migrated(void) {
  setenv("TZ", "UTC", 1);
  tzset();
  char path[512], err[512];
  CHECK(load_v4(db_path(path, sizeof path, "v4-ro.db")));
  size_t n0, n1;
  char *before = slurp(path, &n0);
  hr_history_t *h;
  hr_history_row_t *rows;
  hr_history_event_t *ev;
  size_t nr, ne;
  CHECK_OK(hr_history_open_readonly(path, &h, err, sizeof err));
  CHECK_OK(hr_history_query(h, 0, 0, &rows, &nr, &ev, &ne, err, sizeof err));
  CHECK_EQ_U64(nr, 4);
  CHECK(isnan(rows[0].warn_pct) && isnan(rows[0].critical_pct));
  char src[1024];
  size_t n_lines = 0;
  char **lines = fake_lines(
      hr_test_src(src, sizeof src, "tests/fixtures/events/history-v4-read.txt"), &n_lines);
  CHECK(lines && n_lines == 2 * ne && ne > 5);
  for (size_t i = 0; lines && i < ne && ev[i].event.kind != HR_EVENT_BROKER; i++) {
    char *json = NULL;
    CHECK_OK(hr_event_json(&ev[i].event, &json));
    CHECK_STR(json, lines[2 * i]);
    free(json);
  }
  fake_lines_free(lines, n_lines);
  hr_history_free_rows(rows, ev, ne);
  fake_t f;
  fake_init(&f, 20, 0, 1);
  CHECK_RC(hr_history_add_snapshot(h, &f.s, err, sizeof err), HR_EPERM);
  CHECK_CONTAINS(err, "reading only");
  hr_watch_event_t ex = {.kind = HR_EVENT_EXIT, .time = 20, .pid = 1};
  CHECK_RC(hr_history_add_event(h, &ex, err, sizeof err), HR_EPERM);
  CHECK_RC(hr_history_prune(h, 1e12, err, sizeof err), HR_EPERM);
  CHECK_OK(hr_history_flush(h, err, sizeof err));
  hr_history_close(h);
  char *after = slurp(path, &n1);
  CHECK(before && after && n0 == n1 && memcmp(before, after, n0) == 0);
  free(before), free(after);
  CHECK(!exists(path, "-wal") && !exists(path, "-shm"));
  CHECK_EQ_INT(scalar(path, "PRAGMA user_version"), 4);

  CHECK_OK(hr_history_open(path, &h, err, sizeof err));
  hr_history_thresholds_t t = {70, 80, 90, 97};
  CHECK_OK(hr_history_set_thresholds(h, &t));
  CHECK_OK(hr_history_add_snapshot(h, &f.s, err, sizeof err));
  CHECK_OK(hr_history_flush(h, err, sizeof err));
  hr_history_close(h);
  CHECK_EQ_INT(scalar(path, "PRAGMA user_version"), 5);
  CHECK(integrity_ok(path));
  CHECK_EQ_INT(scalar(path, "SELECT count(*) FROM samples WHERE warn_pct IS NULL"), 2);
  CHECK_EQ_INT(scalar(path, "SELECT count(*) FROM samples WHERE time = 20 AND scope = 'host'"
                            " AND warn_pct = 70 AND critical_pct = 80"),
               1);
  CHECK_OK(hr_history_open_readonly(path, &h, err, sizeof err));
  CHECK_OK(hr_history_query(h, 0, 0, &rows, &nr, &ev, &ne, err, sizeof err));
  CHECK_EQ_U64(nr, 4 + 2 + 2); /* the new sample: host, gpu0 and two processes */
  int scopes = 0;
  for (size_t i = 0; i < nr; i++) {
    bool gpu = strcmp(rows[i].scope, "gpu0") == 0, host = strcmp(rows[i].scope, "host") == 0;
    if (rows[i].time != 20 || !(gpu || host)) {
      CHECK(isnan(rows[i].warn_pct) && isnan(rows[i].critical_pct));
      continue;
    }
    scopes++;
    CHECK_NEAR(rows[i].warn_pct, gpu ? 90 : 70, 1e-9);
    CHECK_NEAR(rows[i].critical_pct, gpu ? 97 : 80, 1e-9);
  }
  CHECK_EQ_INT(scopes, 2);
  hr_history_free_rows(rows, ev, ne);
  hr_history_close(h);
}

/* Read-only opening of a file a writer holds open: what it committed is
 * read, what it has not is not, and nothing is written. A missing file is
 * HR_ENOENT and stays missing; a FIFO, a directory and /dev/zero are
 * refused at once (a FIFO opened as SQLite opens it would wait for ever);
 * schemas that need a migration, or are newer, are refused with the reason. */
static void test_readonly_open(void) {
  char path[512], err[512];
  hr_history_t *w, *r;
  CHECK_OK(hr_history_open(db_path(path, sizeof path, "ro-live.db"), &w, err, sizeof err));
  fake_t f;
  fake_init(&f, 30, 0, 1);
  CHECK_OK(hr_history_add_snapshot(w, &f.s, err, sizeof err));
  CHECK_OK(hr_history_flush(w, err, sizeof err));
  fake_init(&f, 31, 0, 1);
  CHECK_OK(hr_history_add_snapshot(w, &f.s, err, sizeof err)); /* not committed */
  CHECK(exists(path, "-wal"));
  CHECK_OK(hr_history_open_readonly(path, &r, err, sizeof err));
  hr_history_row_t *rows;
  hr_history_event_t *ev;
  size_t nr, ne;
  CHECK_OK(hr_history_query(r, 0, 0, &rows, &nr, &ev, &ne, err, sizeof err));
  CHECK_EQ_U64(nr, 4); /* host, gpu0, two processes of the committed sample */
  hr_history_free_rows(rows, ev, ne);
  hr_history_close(r);
  hr_history_close(w);
  CHECK(!exists(path, "-wal"));

  char missing[512], fifo[512];
  db_path(missing, sizeof missing, "ro-missing.db");
  CHECK_RC(hr_history_open_readonly(missing, &r, err, sizeof err), HR_ENOENT);
  CHECK(r == NULL && !exists(missing, ""));
  CHECK_CONTAINS(err, "ro-missing.db");
  CHECK(mkfifo(db_path(fifo, sizeof fifo, "ro.fifo"), 0600) == 0);
  static const char *const what[] = {"a FIFO", "a directory", "a character device"};
  const char *const paths[] = {fifo, dir, "/dev/zero"};
  for (int i = 0; i < 3; i++) {
    CHECK_RC(hr_history_open_readonly(paths[i], &r, err, sizeof err), HR_EIO);
    CHECK_CONTAINS(err, what[i]);
    CHECK_RC(hr_history_open(paths[i], &r, err, sizeof err), HR_EIO);
    CHECK_CONTAINS(err, "not a regular file");
  }
  static const struct {
    int version, rc;
    const char *says;
  } old[] = {{0, HR_EPARSE, "not a headroom history"},
             {2, HR_EVERSION, "needs write access"},
             {99, HR_EVERSION, "newer"}};
  for (size_t i = 0; i < sizeof old / sizeof old[0]; i++) {
    char p[512], name[32], sql[64];
    snprintf(name, sizeof name, "ro-v%d.db", old[i].version);
    sqlite3 *db;
    CHECK(sqlite3_open(db_path(p, sizeof p, name), &db) == SQLITE_OK);
    snprintf(sql, sizeof sql, "CREATE TABLE x(a); PRAGMA user_version = %d", old[i].version);
    CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    CHECK_RC(hr_history_open_readonly(p, &r, err, sizeof err), old[i].rc);
    CHECK_CONTAINS(err, old[i].says);
    CHECK_EQ_INT(scalar(p, "PRAGMA user_version"), old[i].version);
  }
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/hr-test-history-XXXXXX");
  if (!mkdtemp(dir)) return 1;
  HR_RUN(test_round_trip);
  HR_RUN(test_kill9_mid_write);
  HR_RUN(test_retention);
  HR_RUN(test_migration_from_v1);
  HR_RUN(test_newer_schema_refused);
  HR_RUN(test_unwritable_paths);
  HR_RUN(test_full_disk_keeps_going);
  HR_RUN(test_default_path);
  HR_RUN(test_broker_events);
  HR_RUN(test_v4_file);
  HR_RUN(test_thresholds_recorded);
  HR_RUN(test_v4_readonly_then_migrated);
  HR_RUN(test_readonly_open);
  int rc = hr_test_finish("test_history");
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  return rc;
}
