/* History: samples and events in one SQLite file.
 *
 * WAL mode with synchronous=NORMAL: a killed writer loses at most the open
 * transaction and never corrupts the file (SQLite's own guarantee; power loss
 * may also lose the last commits). Writes go into one open transaction that
 * hr_history_flush() commits, so a sample costs no fsync. The schema version
 * is PRAGMA user_version; each step in `migrations` takes a file from one
 * version to the next inside a transaction, so a failed migration leaves the
 * old version whole.
 *
 * Version 1 had samples and events (without the process name); version 2
 * adds events.name and the per-process table proc_samples; version 3 keeps
 * each event's typed payload in columns of its own (EVENT_COLUMNS: one
 * column per payload field, named like its JSON key) instead of the JSON
 * text, which it converts once and drops; version 4 adds the columns of the
 * broker's events (BROKER_COLUMNS: kind "broker", what it did in `broker`;
 * its message goes in `message`).
 *
 * The processes of a sample are the ones hr_snapshot_select picks, so
 * history records what status, watch and the exporter show. */
#include "store/store.h"

#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct hr_history {
  sqlite3 *db;
  char path[1024];
  bool in_tx;
  size_t pending;
  sqlite3_stmt *ins_sample, *ins_proc, *ins_event;
};

/* The schema at version 1, kept to test migrations from it. */
const char hr__history_schema_v1[] =
    "CREATE TABLE samples(time REAL NOT NULL, scope TEXT NOT NULL, used_bytes INTEGER,"
    " total_bytes INTEGER);"
    "CREATE INDEX samples_time ON samples(time);"
    "CREATE TABLE events(time REAL NOT NULL, kind TEXT NOT NULL, pid INTEGER, json TEXT);"
    "CREATE INDEX events_time ON events(time);"
    "PRAGMA user_version = 1;";

/* The event payload columns (version 3), in the order of the INSERT and
 * SELECT below: name, SQL type. A level is stored as its number (0 ok, 1
 * warning, 2 critical). */
#define EVENT_COLUMNS(X)                                                                           \
  X(scope, TEXT)                                                                                   \
  X(level, INTEGER)                                                                                \
  X(previous, INTEGER)                                                                             \
  X(used_pct, REAL)                                                                                \
  X(used_bytes, INTEGER)                                                                           \
  X(total_bytes, INTEGER)                                                                          \
  X(series, TEXT)                                                                                  \
  X(slope_bytes_per_min, REAL)                                                                     \
  X(window_s, REAL)                                                                                \
  X(span_s, REAL)                                                                                  \
  X(points, INTEGER)                                                                               \
  X(confidence, REAL)                                                                              \
  X(gpu, INTEGER)                                                                                  \
  X(gpu_bytes, INTEGER)                                                                            \
  X(share_pct, REAL)                                                                               \
  X(util_pct, INTEGER)                                                                             \
  X(samples, INTEGER)                                                                              \
  X(path, TEXT)                                                                                    \
  X(kills, INTEGER)                                                                                \
  X(total, INTEGER)                                                                                \
  X(action, TEXT)                                                                                  \
  X(result, TEXT)                                                                                  \
  X(detail, TEXT)                                                                                  \
  X(message, TEXT)

/* The broker event's columns (version 4), after EVENT_COLUMNS. */
#define BROKER_COLUMNS(X)                                                                          \
  X(broker, TEXT)                                                                                  \
  X(uid, INTEGER)                                                                                  \
  X(device, TEXT)                                                                                  \
  X(priority, INTEGER)                                                                             \
  X(bytes, INTEGER)                                                                                \
  X(released_bytes, INTEGER)                                                                       \
  X(latency_s, REAL)                                                                               \
  X(status, INTEGER)                                                                               \
  X(lease, INTEGER)

/* Column numbers in the event INSERT (1-based binds) and SELECT (0-based):
 * time, kind, pid, name, then EVENT_COLUMNS. */
enum {
  EV_TIME,
  EV_KIND,
  EV_PID,
  EV_NAME,
#define X(n, t) EV_##n,
  EVENT_COLUMNS(X) BROKER_COLUMNS(X)
#undef X
      EV_COLUMNS_
};

#define ADD_COLUMN(n, t) "ALTER TABLE events ADD COLUMN " #n " " #t ";"
#define FROM_JSON(n, t)  ", " #n " = json_extract(json, '$." #n "')"
#define LEVEL_NUMBER(c)                                                                            \
  c " = CASE " c " WHEN 'ok' THEN 0 WHEN 'warning' THEN 1 WHEN 'critical' THEN 2 ELSE NULL END"

/* 2 -> 3: the payload columns, filled once from the JSON text that version
 * 2 stored (SQLite's own JSON functions; a row whose text is not valid JSON
 * keeps its time, kind, pid and name), then the text column goes. */
#define MIGRATE_V3                                                                                 \
  EVENT_COLUMNS(ADD_COLUMN)                                                                        \
  "UPDATE events SET pid = pid" EVENT_COLUMNS(                                                     \
      FROM_JSON) " WHERE json_valid(json);"                                                        \
                 "UPDATE events SET " LEVEL_NUMBER("level") ", " LEVEL_NUMBER(                     \
                     "previous") ";"                                                               \
                                 "ALTER TABLE events DROP COLUMN json;"                            \
                                 "PRAGMA user_version = 3;"

/* migrations[v] takes a file from version v to v + 1. */
static const char *const migrations[] = {
    /* 0 -> 1: a new file. */
    hr__history_schema_v1,
    /* 1 -> 2 */
    "ALTER TABLE events ADD COLUMN name TEXT;"
    "CREATE TABLE proc_samples(time REAL NOT NULL, pid INTEGER NOT NULL, start_ticks INTEGER,"
    " name TEXT, rss_bytes INTEGER, rss_anon_bytes INTEGER, gpu_bytes INTEGER);"
    "CREATE INDEX proc_samples_time ON proc_samples(time);"
    "CREATE INDEX proc_samples_pid ON proc_samples(pid, time);"
    "PRAGMA user_version = 2;",
    /* 2 -> 3 */
    MIGRATE_V3,
    /* 3 -> 4: the broker's events; earlier rows have none. */
    BROKER_COLUMNS(ADD_COLUMN) "PRAGMA user_version = 4;",
};
_Static_assert(sizeof migrations / sizeof migrations[0] == HR_HISTORY_SCHEMA,
               "one migration per schema version");

/* Maps an SQLite result to an HR_E* code and writes "what: path: reason". */
static int db_err(hr_history_t *h, int src, char *err, size_t errlen, const char *what) {
  int code = src & 0xff;
  int rc = code == SQLITE_FULL                               ? HR_ENOSPC
           : code == SQLITE_READONLY || code == SQLITE_PERM  ? HR_EPERM
           : code == SQLITE_CANTOPEN || code == SQLITE_AUTH  ? HR_EPERM
           : code == SQLITE_BUSY || code == SQLITE_LOCKED    ? HR_EBUSY
           : code == SQLITE_CORRUPT || code == SQLITE_NOTADB ? HR_EPARSE
           : code == SQLITE_NOMEM                            ? HR_ENOMEM
                                                             : HR_EIO;
  const char *why = h && h->db ? sqlite3_errmsg(h->db) : sqlite3_errstr(src);
  if (code == SQLITE_FULL) why = "disk full (or the database reached its size limit)";
  return hr__err(err, errlen, rc, "history %s: %s: %s", what, h ? h->path : "?", why);
}

int hr__history_exec(hr_history_t *h, const char *sql, char *err, size_t errlen) {
  int rc = sqlite3_exec(h->db, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? 0 : db_err(h, rc, err, errlen, "exec");
}

/* Creates the folders above `path` (like mkdir -p), leaving the last part. */
static int make_parents(const char *path, char *err, size_t errlen) {
  char buf[1024];
  hr__strlcpy(buf, path, sizeof buf);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0700) != 0 && errno != EEXIST) {
      int e = errno;
      return hr__err(err, errlen, e == EACCES || e == EROFS || e == EPERM ? HR_EPERM : HR_EIO,
                     "history: cannot create folder %s: %s", buf, strerror(e));
    }
    *p = '/';
  }
  return 0;
}

int hr_history_default_path(char *buf, size_t n) {
  const char *state = getenv("XDG_STATE_HOME");
  int w;
  if (state && *state)
    w = snprintf(buf, n, "%s/headroom/history.db", state);
  else {
    const char *home = getenv("HOME");
    if (!home || !*home) return HR_ENOENT;
    w = snprintf(buf, n, "%s/.local/state/headroom/history.db", home);
  }
  return w < 0 || (size_t)w >= n ? HR_ERANGE : 0;
}

static int migrate(hr_history_t *h, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int version = 0, rc = sqlite3_prepare_v2(h->db, "PRAGMA user_version", -1, &st, NULL);
  if (rc != SQLITE_OK) return db_err(h, rc, err, errlen, "open");
  if ((rc = sqlite3_step(st)) == SQLITE_ROW) version = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW) return db_err(h, rc, err, errlen, "open");
  if (version > HR_HISTORY_SCHEMA)
    return hr__err(err, errlen, HR_EVERSION,
                   "history: %s: schema version %d is newer than this headroom (%d)", h->path,
                   version, HR_HISTORY_SCHEMA);
  for (int v = version; v < HR_HISTORY_SCHEMA; v++) {
    if ((rc = sqlite3_exec(h->db, "BEGIN IMMEDIATE", NULL, NULL, NULL)) != SQLITE_OK)
      return db_err(h, rc, err, errlen, "migrate");
    rc = sqlite3_exec(h->db, migrations[v], NULL, NULL, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_exec(h->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
      int r = db_err(h, rc, err, errlen, "migrate");
      sqlite3_exec(h->db, "ROLLBACK", NULL, NULL, NULL);
      return r;
    }
    if (v > 0) hr__log(HR_LOG_INFO, "history: %s: schema %d -> %d", h->path, v, v + 1);
  }
  return 0;
}

#define NAME_LIST(n, t) "," #n
#define PARAM(n, t)     ",?"
static const char insert_event_sql[] =
    "INSERT INTO events(time,kind,pid,name" EVENT_COLUMNS(NAME_LIST)
        BROKER_COLUMNS(NAME_LIST) ") VALUES(?,?,?,?" EVENT_COLUMNS(PARAM) BROKER_COLUMNS(PARAM) ")";
static const char select_event_cols[] =
    "SELECT time,kind,pid,name" EVENT_COLUMNS(NAME_LIST) BROKER_COLUMNS(NAME_LIST);

int hr_history_open(const char *path, hr_history_t **out, char *err, size_t errlen) {
  if (!path || !*path || !out) return hr__err(err, errlen, HR_EINVAL, "history: no path");
  *out = NULL;
  hr_history_t *h = calloc(1, sizeof *h);
  if (!h) return HR_ENOMEM;
  hr__strlcpy(h->path, path, sizeof h->path);
  int rc = make_parents(path, err, errlen);
  if (rc) goto out;
  int src = sqlite3_open_v2(path, &h->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (src != SQLITE_OK) {
    rc = db_err(h, src, err, errlen, "open");
    goto out;
  }
  sqlite3_busy_timeout(h->db, 2000);
  /* journal_mode answers with the mode it got; a read-only file answers
   * without switching, which the write in migrate() or the check below
   * turns into a clear error. */
  sqlite3_stmt *st = NULL;
  if ((src = sqlite3_prepare_v2(h->db, "PRAGMA journal_mode=WAL", -1, &st, NULL)) != SQLITE_OK ||
      (src = sqlite3_step(st)) != SQLITE_ROW) {
    sqlite3_finalize(st);
    rc = db_err(h, src, err, errlen, "open");
    goto out;
  }
  bool wal = strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
  sqlite3_finalize(st);
  if ((rc = hr__history_exec(h, "PRAGMA synchronous=NORMAL", err, errlen)) != 0) goto out;
  if ((rc = migrate(h, err, errlen)) != 0) goto out;
  if (!wal || sqlite3_db_readonly(h->db, "main") == 1) {
    rc = hr__err(err, errlen, HR_EPERM, "history open: %s: the database is read-only", path);
    goto out;
  }
  if ((src = sqlite3_prepare_v2(h->db, "INSERT INTO samples VALUES(?,?,?,?)", -1, &h->ins_sample,
                                NULL)) != SQLITE_OK ||
      (src = sqlite3_prepare_v2(h->db, "INSERT INTO proc_samples VALUES(?,?,?,?,?,?,?)", -1,
                                &h->ins_proc, NULL)) != SQLITE_OK ||
      (src = sqlite3_prepare_v2(h->db, insert_event_sql, -1, &h->ins_event, NULL)) != SQLITE_OK) {
    rc = db_err(h, src, err, errlen, "open");
    goto out;
  }
out:
  if (rc) {
    hr_history_close(h);
    return rc;
  }
  *out = h;
  return 0;
}

void hr_history_close(hr_history_t *h) {
  if (!h) return;
  if (h->in_tx) hr_history_flush(h, NULL, 0);
  sqlite3_finalize(h->ins_sample);
  sqlite3_finalize(h->ins_proc);
  sqlite3_finalize(h->ins_event);
  sqlite3_close(h->db);
  free(h);
}

size_t hr_history_pending(const hr_history_t *h) {
  return h ? h->pending : 0;
}

static int begin(hr_history_t *h, char *err, size_t errlen) {
  if (h->in_tx) return 0;
  int rc = sqlite3_exec(h->db, "BEGIN", NULL, NULL, NULL);
  if (rc != SQLITE_OK) return db_err(h, rc, err, errlen, "write");
  h->in_tx = true;
  return 0;
}

/* Steps an INSERT and resets it for the next use. */
static int step_insert(hr_history_t *h, sqlite3_stmt *st, char *err, size_t errlen) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  if (rc != SQLITE_DONE) return db_err(h, rc, err, errlen, "write");
  h->pending++;
  return 0;
}

static int64_t i64(uint64_t v) {
  return v == HR_UNKNOWN || v > INT64_MAX ? -1 : (int64_t)v;
}

static int add_scope(hr_history_t *h, double t, const char *scope, uint64_t used, uint64_t total,
                     char *err, size_t errlen) {
  sqlite3_bind_double(h->ins_sample, 1, t);
  sqlite3_bind_text(h->ins_sample, 2, scope, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(h->ins_sample, 3, i64(used));
  sqlite3_bind_int64(h->ins_sample, 4, i64(total));
  return step_insert(h, h->ins_sample, err, errlen);
}

int hr_history_add_snapshot(hr_history_t *h, const hr_snapshot_t *s, size_t top, char *err,
                            size_t errlen) {
  if (!h || !s) return HR_EINVAL;
  int rc = begin(h, err, errlen);
  if (rc) return rc;
  if (s->host_state == HR_PROBE_OK && s->host.total_bytes != HR_UNKNOWN &&
      s->host.available_bytes != HR_UNKNOWN &&
      (rc = add_scope(h, s->time, "host", s->host.total_bytes - s->host.available_bytes,
                      s->host.total_bytes, err, errlen)) != 0)
    return rc;
  if (s->cgroup.state == HR_PROBE_OK &&
      (rc = add_scope(h, s->time, "cgroup", s->cgroup.usage_bytes,
                      s->cgroup.limit_bytes == HR_UNLIMITED ? HR_UNKNOWN : s->cgroup.limit_bytes,
                      err, errlen)) != 0)
    return rc;
  for (size_t i = 0; i < s->n_gpus; i++) {
    char scope[16];
    snprintf(scope, sizeof scope, "gpu%u", s->gpus[i].index);
    if ((rc = add_scope(h, s->time, scope, s->gpus[i].used_bytes, s->gpus[i].total_bytes, err,
                        errlen)) != 0)
      return rc;
  }
  size_t *idx = malloc((s->n_procs ? s->n_procs : 1) * sizeof *idx), k = 0;
  if (!idx) return HR_ENOMEM;
  hr_snapshot_select(s, top, NULL, idx, &k);
  for (size_t j = 0; j < k && rc == 0; j++) {
    const hr_proc_t *p = &s->procs[idx[j]];
    sqlite3_stmt *st = h->ins_proc;
    sqlite3_bind_double(st, 1, s->time);
    sqlite3_bind_int(st, 2, p->pid);
    sqlite3_bind_int64(st, 3, i64(p->start_ticks));
    sqlite3_bind_text(st, 4, p->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 5, i64(p->rss_bytes));
    sqlite3_bind_int64(st, 6, i64(p->rss_anon_bytes));
    sqlite3_bind_int64(st, 7, i64(p->gpu_bytes));
    rc = step_insert(h, st, err, errlen);
  }
  free(idx);
  return rc;
}

static void bind_text(sqlite3_stmt *st, int col, const char *v) {
  sqlite3_bind_text(st, col + 1, v, -1, SQLITE_TRANSIENT);
}
static void bind_real(sqlite3_stmt *st, int col, double v) {
  if (isfinite(v)) sqlite3_bind_double(st, col + 1, v); /* else NULL */
}
static void bind_u64(sqlite3_stmt *st, int col, uint64_t v) {
  sqlite3_bind_int64(st, col + 1, i64(v));
}

/* Binds the payload of `e` to the event INSERT; columns of other kinds
 * stay NULL. */
static void bind_payload(sqlite3_stmt *st, const hr_watch_event_t *e) {
  switch (e->kind) {
  case HR_EVENT_LEVEL:
    bind_text(st, EV_scope, e->level.scope);
    sqlite3_bind_int(st, EV_level + 1, (int)e->level.level);
    sqlite3_bind_int(st, EV_previous + 1, (int)e->level.previous);
    bind_real(st, EV_used_pct, e->level.used_pct);
    bind_u64(st, EV_used_bytes, e->level.used_bytes);
    bind_u64(st, EV_total_bytes, e->level.total_bytes);
    break;
  case HR_EVENT_LEAK:
    bind_text(st, EV_series, e->leak.series);
    bind_real(st, EV_slope_bytes_per_min, e->leak.slope_bytes_per_min);
    bind_real(st, EV_window_s, e->leak.window_s);
    bind_real(st, EV_span_s, e->leak.span_s);
    bind_u64(st, EV_points, e->leak.points);
    bind_real(st, EV_confidence, e->leak.confidence);
    break;
  case HR_EVENT_IDLE_HOG:
    sqlite3_bind_int64(st, EV_gpu + 1, e->idle_hog.gpu);
    bind_u64(st, EV_gpu_bytes, e->idle_hog.gpu_bytes);
    bind_real(st, EV_share_pct, e->idle_hog.share_pct);
    sqlite3_bind_int(st, EV_util_pct + 1, e->idle_hog.util_pct);
    bind_u64(st, EV_samples, e->idle_hog.samples);
    break;
  case HR_EVENT_OOM_KILL:
    bind_text(st, EV_scope, e->oom_kill.scope);
    bind_text(st, EV_path, e->oom_kill.path);
    bind_u64(st, EV_kills, e->oom_kill.kills);
    bind_u64(st, EV_total, e->oom_kill.total);
    break;
  case HR_EVENT_ACTION:
    bind_text(st, EV_action, e->action.action);
    bind_text(st, EV_result, e->action.result);
    if (e->action.detail[0]) bind_text(st, EV_detail, e->action.detail);
    break;
  case HR_EVENT_ERROR:
    bind_text(st, EV_message, e->error.message);
    break;
  case HR_EVENT_BROKER:
    bind_text(st, EV_broker, e->broker.what);
    sqlite3_bind_int64(st, EV_uid + 1, e->broker.uid);
    bind_text(st, EV_device, e->broker.device);
    sqlite3_bind_int(st, EV_priority + 1, e->broker.priority);
    bind_u64(st, EV_bytes, e->broker.bytes);
    bind_u64(st, EV_released_bytes, e->broker.released_bytes);
    bind_real(st, EV_latency_s, e->broker.latency_s);
    sqlite3_bind_int(st, EV_status + 1, e->broker.status);
    bind_u64(st, EV_lease, e->broker.lease);
    if (e->broker.message[0]) bind_text(st, EV_message, e->broker.message);
    break;
  default:
    break;
  }
}

int hr_history_add_event(hr_history_t *h, const hr_watch_event_t *e, char *err, size_t errlen) {
  if (!h || !e || (unsigned)e->kind >= HR_EVENT_KINDS_) return HR_EINVAL;
  int rc = begin(h, err, errlen);
  if (rc) return rc;
  sqlite3_stmt *st = h->ins_event;
  sqlite3_bind_double(st, EV_TIME + 1, e->time);
  sqlite3_bind_text(st, EV_KIND + 1, hr_event_kind_name(e->kind), -1, SQLITE_STATIC);
  sqlite3_bind_int(st, EV_PID + 1, e->pid);
  bind_text(st, EV_NAME, e->name);
  bind_payload(st, e);
  return step_insert(h, st, err, errlen);
}

int hr_history_flush(hr_history_t *h, char *err, size_t errlen) {
  if (!h) return HR_EINVAL;
  if (!h->in_tx) return 0;
  int rc = sqlite3_exec(h->db, "COMMIT", NULL, NULL, NULL);
  if (rc == SQLITE_OK) {
    h->in_tx = false;
    h->pending = 0;
    return 0;
  }
  int r = db_err(h, rc, err, errlen, "commit");
  /* The batch is lost; roll back so the next batch starts from a clean
   * state instead of piling onto a transaction that cannot commit. */
  sqlite3_exec(h->db, "ROLLBACK", NULL, NULL, NULL);
  h->in_tx = false;
  h->pending = 0;
  return r;
}

int hr_history_prune(hr_history_t *h, double before, char *err, size_t errlen) {
  if (!h) return HR_EINVAL;
  int rc = begin(h, err, errlen);
  if (rc) return rc;
  static const char *const sql[] = {"DELETE FROM samples WHERE time < ?",
                                    "DELETE FROM proc_samples WHERE time < ?",
                                    "DELETE FROM events WHERE time < ?"};
  for (size_t i = 0; i < HR_ARRAY_LEN(sql); i++) {
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(h->db, sql[i], -1, &st, NULL);
    if (src == SQLITE_OK) {
      sqlite3_bind_double(st, 1, before);
      src = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (src != SQLITE_DONE) return db_err(h, src, err, errlen, "prune");
  }
  return 0;
}

/* Grows *arr by one element of `size` bytes; returns the new element. */
static void *push(void **arr, size_t *n, size_t *cap, size_t size) {
  if (*n == *cap) {
    size_t nc = *cap ? *cap * 2 : 256;
    void *p = realloc(*arr, nc * size);
    if (!p) return NULL;
    *arr = p, *cap = nc;
  }
  void *e = (char *)*arr + (*n)++ * size;
  memset(e, 0, size);
  return e;
}

static uint64_t u64(sqlite3_stmt *st, int col) {
  int64_t v = sqlite3_column_int64(st, col);
  return v < 0 ? HR_UNKNOWN : (uint64_t)v;
}

static const char *text(sqlite3_stmt *st, int col) {
  const char *s = (const char *)sqlite3_column_text(st, col);
  return s ? s : "";
}

static double real(sqlite3_stmt *st, int col) {
  return sqlite3_column_type(st, col) == SQLITE_NULL ? NAN : sqlite3_column_double(st, col);
}

static hr_level_t level_of(sqlite3_stmt *st, int col) {
  int v = sqlite3_column_int(st, col);
  return v == HR_LEVEL_WARNING || v == HR_LEVEL_CRITICAL ? (hr_level_t)v : HR_LEVEL_OK;
}

static void read_broker(sqlite3_stmt *st, hr_event_broker_t *x) {
  hr__strlcpy(x->what, text(st, EV_broker), sizeof x->what);
  x->uid = (uint32_t)sqlite3_column_int64(st, EV_uid);
  hr__strlcpy(x->device, text(st, EV_device), sizeof x->device);
  x->priority = sqlite3_column_int(st, EV_priority);
  x->bytes = u64(st, EV_bytes);
  x->released_bytes = u64(st, EV_released_bytes);
  x->latency_s = real(st, EV_latency_s);
  x->status = sqlite3_column_int(st, EV_status);
  x->lease = u64(st, EV_lease);
  hr__strlcpy(x->message, text(st, EV_message), sizeof x->message);
}

/* The event of one row of select_event_cols. A kind this library does not
 * know reads as an error event that says so. */
static void read_event(sqlite3_stmt *st, hr_watch_event_t *e) {
  memset(e, 0, sizeof *e);
  e->time = sqlite3_column_double(st, EV_TIME);
  e->pid = sqlite3_column_int(st, EV_PID);
  hr__strlcpy(e->name, text(st, EV_NAME), sizeof e->name);
  e->kind = hr_event_kind_from_name(text(st, EV_KIND));
  switch (e->kind) {
  case HR_EVENT_LEVEL:
    hr__strlcpy(e->level.scope, text(st, EV_scope), sizeof e->level.scope);
    e->level.level = level_of(st, EV_level);
    e->level.previous = level_of(st, EV_previous);
    e->level.used_pct = real(st, EV_used_pct);
    e->level.used_bytes = u64(st, EV_used_bytes);
    e->level.total_bytes = u64(st, EV_total_bytes);
    break;
  case HR_EVENT_LEAK:
    hr__strlcpy(e->leak.series, text(st, EV_series), sizeof e->leak.series);
    e->leak.slope_bytes_per_min = real(st, EV_slope_bytes_per_min);
    e->leak.window_s = real(st, EV_window_s);
    e->leak.span_s = real(st, EV_span_s);
    e->leak.points = u64(st, EV_points);
    e->leak.confidence = real(st, EV_confidence);
    break;
  case HR_EVENT_IDLE_HOG:
    e->idle_hog.gpu = (unsigned)sqlite3_column_int64(st, EV_gpu);
    e->idle_hog.gpu_bytes = u64(st, EV_gpu_bytes);
    e->idle_hog.share_pct = real(st, EV_share_pct);
    e->idle_hog.util_pct = sqlite3_column_int(st, EV_util_pct);
    e->idle_hog.samples = u64(st, EV_samples);
    break;
  case HR_EVENT_OOM_KILL:
    hr__strlcpy(e->oom_kill.scope, text(st, EV_scope), sizeof e->oom_kill.scope);
    hr__strlcpy(e->oom_kill.path, text(st, EV_path), sizeof e->oom_kill.path);
    e->oom_kill.kills = u64(st, EV_kills);
    e->oom_kill.total = u64(st, EV_total);
    break;
  case HR_EVENT_ACTION:
    hr__strlcpy(e->action.action, text(st, EV_action), sizeof e->action.action);
    hr__strlcpy(e->action.result, text(st, EV_result), sizeof e->action.result);
    hr__strlcpy(e->action.detail, text(st, EV_detail), sizeof e->action.detail);
    break;
  case HR_EVENT_ERROR:
    hr__strlcpy(e->error.message, text(st, EV_message), sizeof e->error.message);
    break;
  case HR_EVENT_BROKER:
    read_broker(st, &e->broker);
    break;
  case HR_EVENT_KINDS_:
    e->kind = HR_EVENT_ERROR;
    snprintf(e->error.message, sizeof e->error.message, "history: unknown event kind '%.40s'",
             text(st, EV_KIND));
    break;
  default:
    break;
  }
}

int hr_history_query(hr_history_t *h, double since, int pid, hr_history_row_t **rows,
                     size_t *n_rows, hr_history_event_t **events, size_t *n_events, char *err,
                     size_t errlen) {
  if (!h || !rows || !n_rows || !events || !n_events) return HR_EINVAL;
  *rows = NULL, *events = NULL, *n_rows = *n_events = 0;
  size_t cap_r = 0, cap_e = 0;
  sqlite3_stmt *st = NULL;
  int rc = 0, src;
  const char *q_rows = pid > 0 ? "SELECT time,'proc',pid,name,rss_bytes,gpu_bytes FROM proc_samples"
                                 " WHERE time >= ?1 AND pid = ?2 ORDER BY time"
                               : "SELECT time,scope,0,scope,used_bytes,total_bytes FROM samples"
                                 " WHERE time >= ?1 UNION ALL"
                                 " SELECT time,'proc',pid,name,rss_bytes,gpu_bytes FROM"
                                 " proc_samples WHERE time >= ?1 ORDER BY 1";
  char q_events[2048];
  snprintf(q_events, sizeof q_events, "%s FROM events WHERE time >= ?1%s ORDER BY time",
           select_event_cols, pid > 0 ? " AND pid = ?2" : "");
  if ((src = sqlite3_prepare_v2(h->db, q_rows, -1, &st, NULL)) != SQLITE_OK) goto fail;
  sqlite3_bind_double(st, 1, since);
  if (pid > 0) sqlite3_bind_int(st, 2, pid);
  while ((src = sqlite3_step(st)) == SQLITE_ROW) {
    hr_history_row_t *r = push((void **)rows, n_rows, &cap_r, sizeof *r);
    if (!r) {
      rc = HR_ENOMEM;
      goto out;
    }
    r->time = sqlite3_column_double(st, 0);
    hr__strlcpy(r->scope, text(st, 1), sizeof r->scope);
    r->pid = sqlite3_column_int(st, 2);
    hr__strlcpy(r->name, text(st, 3), sizeof r->name);
    r->used_bytes = u64(st, 4);
    r->total_bytes = u64(st, 5);
  }
  if (src != SQLITE_DONE) goto fail;
  sqlite3_finalize(st);
  if ((src = sqlite3_prepare_v2(h->db, q_events, -1, &st, NULL)) != SQLITE_OK) goto fail;
  sqlite3_bind_double(st, 1, since);
  if (pid > 0) sqlite3_bind_int(st, 2, pid);
  while ((src = sqlite3_step(st)) == SQLITE_ROW) {
    hr_history_event_t *e = push((void **)events, n_events, &cap_e, sizeof *e);
    if (!e) {
      rc = HR_ENOMEM;
      goto out;
    }
    read_event(st, &e->event);
    e->time = e->event.time, e->pid = e->event.pid;
    hr__strlcpy(e->kind, text(st, EV_KIND), sizeof e->kind);
    hr__strlcpy(e->name, e->event.name, sizeof e->name);
  }
  if (src == SQLITE_DONE) goto out;
fail:
  rc = db_err(h, src, err, errlen, "query");
out:
  sqlite3_finalize(st);
  if (rc) {
    hr_history_free_rows(*rows, *events, *n_events);
    *rows = NULL, *events = NULL, *n_rows = *n_events = 0;
  }
  return rc;
}

void hr_history_free_rows(hr_history_row_t *rows, hr_history_event_t *events, size_t n_events) {
  free(rows);
  (void)n_events; /* events own nothing since schema 3 */
  free(events);
}
