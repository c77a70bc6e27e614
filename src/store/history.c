/* History: samples and events in one SQLite file.
 *
 * WAL mode with synchronous=NORMAL: a killed writer loses at most the open
 * transaction and never corrupts the file (SQLite's own guarantee; power loss
 * may also lose the last commits). Writes go into one open transaction that
 * hr_history_flush() commits, so a sample costs no fsync. The schema version
 * is PRAGMA user_version; each step (migration_sql) takes a file from one
 * version to the next inside a transaction, so a failed migration leaves the
 * old version whole.
 *
 * Version 1 had samples and events (without the process name); version 2
 * adds events.name and the per-process table proc_samples; version 3 keeps
 * each event's typed payload in columns of its own (one per field of the
 * event field lists, named like its JSON key: columns.c) instead of the JSON
 * text, which it converts once and drops; version 4 adds the columns of the
 * broker's events; version 5 keeps with each scope sample the warning and
 * critical thresholds in force (percent), so a picture drawn later shows
 * the ones watch ran with. Which event columns a version adds is each
 * field's `since`.
 *
 * A file opened read-only (hr_history_open_readonly) is never migrated nor
 * written: it is read at its own schema (3 or later), a column it does not
 * have reading as NULL, so a reader needs no write access and never changes
 * a file that an older watch may still be writing.
 *
 * The processes of a sample are the ones the probe selected, so history
 * records what status, watch and the exporter show. */
#include "store/store.h"

#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct hr_history {
  sqlite3 *db;
  char path[1024];
  bool in_tx, readonly;
  int version; /* the file's schema: HR_HISTORY_SCHEMA, or older when read-only */
  size_t pending;
  sqlite3_stmt *ins_sample, *ins_proc, *ins_event;
  hr__columns_t cols;
  hr_history_thresholds_t thr; /* written with each scope sample */
};

/* The schema at version 1, kept to test migrations from it. */
const char hr__history_schema_v1[] =
    "CREATE TABLE samples(time REAL NOT NULL, scope TEXT NOT NULL, used_bytes INTEGER,"
    " total_bytes INTEGER);"
    "CREATE INDEX samples_time ON samples(time);"
    "CREATE TABLE events(time REAL NOT NULL, kind TEXT NOT NULL, pid INTEGER, json TEXT);"
    "CREATE INDEX events_time ON events(time);"
    "PRAGMA user_version = 1;";

/* The events columns before the payload's, in INSERT and SELECT. */
#define EV_BASE "time,kind,pid,name"
enum { EV_TIME, EV_KIND, EV_PID, EV_NAME, EV_PAYLOAD };

/* The SQL that takes a file from version v to v + 1: the tables of
 * versions 1 and 2, then the payload columns whose fields say they came
 * with v + 1 (at version 3 filled from the JSON text, which goes). */
static void migration_sql(const hr_history_t *h, int v, hr__buf_t *b) {
  if (v == 0) hr__buf_puts(b, hr__history_schema_v1);
  if (v == 1)
    hr__buf_puts(b, "ALTER TABLE events ADD COLUMN name TEXT;"
                    "CREATE TABLE proc_samples(time REAL NOT NULL, pid INTEGER NOT NULL,"
                    " start_ticks INTEGER, name TEXT, rss_bytes INTEGER, rss_anon_bytes INTEGER,"
                    " gpu_bytes INTEGER);"
                    "CREATE INDEX proc_samples_time ON proc_samples(time);"
                    "CREATE INDEX proc_samples_pid ON proc_samples(pid, time);");
  if (v == 4)
    hr__buf_puts(b, "ALTER TABLE samples ADD COLUMN warn_pct REAL;"
                    "ALTER TABLE samples ADD COLUMN critical_pct REAL;");
  hr__columns_added(&h->cols, v + 1, b);
  if (v == 2) {
    hr__columns_from_json(&h->cols, b);
    hr__buf_puts(b, "ALTER TABLE events DROP COLUMN json;");
  }
  hr__buf_printf(b, "PRAGMA user_version = %d;", v + 1);
}

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

/* Runs one step of migration_sql in a transaction of its own. */
static int migrate_step(hr_history_t *h, int v, char *err, size_t errlen) {
  hr__buf_t sql = {0};
  migration_sql(h, v, &sql);
  if (sql.failed) return hr__buf_free(&sql), HR_ENOMEM;
  int rc = sqlite3_exec(h->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_exec(h->db, sql.s, NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_exec(h->db, "COMMIT", NULL, NULL, NULL);
  hr__buf_free(&sql);
  if (rc == SQLITE_OK) return 0;
  int r = db_err(h, rc, err, errlen, "migrate");
  sqlite3_exec(h->db, "ROLLBACK", NULL, NULL, NULL);
  return r;
}

/* Reads the file's schema version into h->version; returns SQLite's code. */
static int read_version(hr_history_t *h) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(h->db, "PRAGMA user_version", -1, &st, NULL);
  if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    h->version = sqlite3_column_int(st, 0);
    rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  return rc;
}

static int newer(const hr_history_t *h, char *err, size_t errlen) {
  return hr__err(err, errlen, HR_EVERSION,
                 "history: %s: schema version %d is newer than this headroom (%d)", h->path,
                 h->version, HR_HISTORY_SCHEMA);
}

static int migrate(hr_history_t *h, char *err, size_t errlen) {
  int rc = read_version(h);
  if (rc != SQLITE_OK) return db_err(h, rc, err, errlen, "open");
  if (h->version > HR_HISTORY_SCHEMA) return newer(h, err, errlen);
  for (int v = h->version; v < HR_HISTORY_SCHEMA; v++) {
    if ((rc = migrate_step(h, v, err, errlen)) != 0) return rc;
    if (v > 0) hr__log(HR_LOG_INFO, "history: %s: schema %d -> %d", h->path, v, v + 1);
    h->version = v + 1;
  }
  return 0;
}

/* Prepares the three INSERTs; the events one names every payload column. */
static int prepare(hr_history_t *h, char *err, size_t errlen) {
  hr__buf_t ev = {0};
  hr__buf_puts(&ev, "INSERT INTO events(" EV_BASE);
  hr__columns_names(&h->cols, &ev, false);
  hr__buf_puts(&ev, ") VALUES(?,?,?,?");
  hr__columns_names(&h->cols, &ev, true);
  hr__buf_puts(&ev, ")");
  if (ev.failed) return HR_ENOMEM;
  int src = sqlite3_prepare_v2(h->db,
                               "INSERT INTO samples(time,scope,used_bytes,total_bytes,warn_pct,"
                               "critical_pct) VALUES(?,?,?,?,?,?)",
                               -1, &h->ins_sample, NULL);
  if (src == SQLITE_OK)
    src = sqlite3_prepare_v2(h->db, "INSERT INTO proc_samples VALUES(?,?,?,?,?,?,?)", -1,
                             &h->ins_proc, NULL);
  if (src == SQLITE_OK) src = sqlite3_prepare_v2(h->db, ev.s, -1, &h->ins_event, NULL);
  hr__buf_free(&ev);
  return src == SQLITE_OK ? 0 : db_err(h, src, err, errlen, "open");
}

/* Opens the file and asks for WAL mode. journal_mode answers with the mode
 * it got: a read-only file answers without switching (*wal false), which
 * the write in migrate() or the check in hr_history_open turns into a clear
 * error. */
static int open_db(hr_history_t *h, bool *wal, char *err, size_t errlen) {
  int src = sqlite3_open_v2(h->path, &h->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (src != SQLITE_OK) return db_err(h, src, err, errlen, "open");
  sqlite3_busy_timeout(h->db, 2000);
  sqlite3_stmt *st = NULL;
  if ((src = sqlite3_prepare_v2(h->db, "PRAGMA journal_mode=WAL", -1, &st, NULL)) == SQLITE_OK &&
      (src = sqlite3_step(st)) == SQLITE_ROW)
    *wal = strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
  sqlite3_finalize(st);
  if (src != SQLITE_ROW) return db_err(h, src, err, errlen, "open");
  return hr__history_exec(h, "PRAGMA synchronous=NORMAL", err, errlen);
}

/* Refuses a path that is there and is not a regular file (SQLite would wait
 * on a FIFO's first read): HR_EIO, with the reason. A missing file is
 * HR_ENOENT, err untouched. */
static int check_file(const char *path, char *err, size_t errlen) {
  char why[1100];
  int rc = hr__check_regular(path, why, sizeof why);
  return rc == 0 || rc == HR_ENOENT ? rc : hr__err(err, errlen, rc, "history: %s", why);
}

/* A new handle for `path`, its thresholds not known yet. */
static hr_history_t *handle_new(const char *path) {
  hr_history_t *h = calloc(1, sizeof *h);
  if (!h) return NULL;
  hr__strlcpy(h->path, path, sizeof h->path);
  hr__columns_init(&h->cols);
  h->thr = (hr_history_thresholds_t){NAN, NAN, NAN, NAN};
  return h;
}

int hr_history_open(const char *path, hr_history_t **out, char *err, size_t errlen) {
  if (!path || !*path || !out) return hr__err(err, errlen, HR_EINVAL, "history: no path");
  *out = NULL;
  hr_history_t *h = handle_new(path);
  if (!h) return HR_ENOMEM;
  bool wal = false;
  int rc = make_parents(path, err, errlen);
  if (rc == 0 && (rc = check_file(path, err, errlen)) == HR_ENOENT) rc = 0;
  if (rc == 0) rc = open_db(h, &wal, err, errlen);
  if (rc == 0) rc = migrate(h, err, errlen);
  if (rc == 0 && (!wal || sqlite3_db_readonly(h->db, "main") == 1))
    rc = hr__err(err, errlen, HR_EPERM, "history open: %s: the database is read-only", path);
  if (rc == 0) rc = prepare(h, err, errlen);
  if (rc) hr_history_close(h), h = NULL;
  *out = h;
  return rc;
}

/* "file:PATH?immutable=1", PATH percent-encoded. */
static int immutable_uri(const char *path, char *out, size_t n) {
  size_t k = (size_t)snprintf(out, n, "file:");
  for (const unsigned char *p = (const unsigned char *)path; *p && k + 4 < n; p++) {
    if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
        strchr("/._-~", *p))
      out[k++] = (char)*p;
    else
      k += (size_t)snprintf(out + k, n - k, "%%%02X", *p);
  }
  int w = snprintf(out + k, n - k, "?immutable=1");
  return w < 0 || (size_t)w >= n - k ? HR_ERANGE : 0;
}

/* Opens the file read-only and reads its schema version, creating no file.
 * A watch holds its database open in WAL mode, with a -wal and a -shm file
 * beside it for as long as it runs; the last connection to close
 * checkpoints everything into the main file and removes both. So with a
 * -wal file there, the file is opened as SQLite reads a live WAL database
 * (through the -shm file, up to the last commit); without one, everything
 * is in the main file, which is read as immutable: no lock, no -shm, no -wal
 * made (a plain read-only open would make them, or fail in a folder the
 * reader cannot write). */
static int open_readonly(hr_history_t *h, char *err, size_t errlen) {
  char wal[1100], uri[3200];
  snprintf(wal, sizeof wal, "%s-wal", h->path);
  bool live = access(wal, F_OK) == 0 || errno != ENOENT;
  int src = live ? SQLITE_OK : immutable_uri(h->path, uri, sizeof uri);
  if (src != SQLITE_OK)
    return hr__err(err, errlen, HR_ERANGE, "history: %s: path too long", h->path);
  src = sqlite3_open_v2(live ? h->path : uri, &h->db,
                        SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | (live ? 0 : SQLITE_OPEN_URI),
                        NULL);
  if (src == SQLITE_OK) sqlite3_busy_timeout(h->db, 2000), src = read_version(h);
  return src == SQLITE_OK ? 0 : db_err(h, src, err, errlen, "open");
}

/* The schemas a read-only handle reads: 3 (typed event columns) or later. */
static int check_readable(const hr_history_t *h, char *err, size_t errlen) {
  if (h->version > HR_HISTORY_SCHEMA) return newer(h, err, errlen);
  if (h->version == 0)
    return hr__err(err, errlen, HR_EPARSE, "history: %s: not a headroom history (no schema)",
                   h->path);
  if (h->version < 3)
    return hr__err(err, errlen, HR_EVERSION,
                   "history: %s: schema version %d is read once migrated, which needs write "
                   "access: run 'headroom watch --db %s' once",
                   h->path, h->version, h->path);
  return 0;
}

int hr_history_open_readonly(const char *path, hr_history_t **out, char *err, size_t errlen) {
  if (!path || !*path || !out) return hr__err(err, errlen, HR_EINVAL, "history: no path");
  *out = NULL;
  int rc = check_file(path, err, errlen);
  if (rc == HR_ENOENT) return hr__err(err, errlen, HR_ENOENT, "history: %s: no such file", path);
  if (rc) return rc;
  hr_history_t *h = handle_new(path);
  if (!h) return HR_ENOMEM;
  h->readonly = true;
  rc = open_readonly(h, err, errlen);
  if (rc == 0) rc = check_readable(h, err, errlen);
  if (rc) hr_history_close(h), h = NULL;
  *out = h;
  return rc;
}

int hr_history_set_thresholds(hr_history_t *h, const hr_history_thresholds_t *t) {
  if (!h || !t) return HR_EINVAL;
  h->thr = *t;
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
  if (h->readonly)
    return hr__err(err, errlen, HR_EPERM, "history: %s: opened for reading only", h->path);
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

/* One scope's sample with the thresholds in force for it (the GPUs' or the
 * host's and cgroup's; NULL when not known). */
static int add_scope(hr_history_t *h, double t, const char *scope, uint64_t used, uint64_t total,
                     char *err, size_t errlen) {
  bool gpu = strncmp(scope, "gpu", 3) == 0;
  double warn = gpu ? h->thr.vram_warn : h->thr.ram_warn;
  double crit = gpu ? h->thr.vram_critical : h->thr.ram_critical;
  sqlite3_bind_double(h->ins_sample, 1, t);
  sqlite3_bind_text(h->ins_sample, 2, scope, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(h->ins_sample, 3, i64(used));
  sqlite3_bind_int64(h->ins_sample, 4, i64(total));
  if (isfinite(warn)) sqlite3_bind_double(h->ins_sample, 5, warn);
  if (isfinite(crit)) sqlite3_bind_double(h->ins_sample, 6, crit);
  return step_insert(h, h->ins_sample, err, errlen);
}

int hr_history_add_snapshot(hr_history_t *h, const hr_snapshot_t *s, char *err, size_t errlen) {
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
  for (size_t j = 0; s->selected && j < s->n_selected && rc == 0; j++) {
    const hr_proc_t *p = &s->procs[s->selected[j]];
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
  return rc;
}

int hr_history_add_event(hr_history_t *h, const hr_watch_event_t *e, char *err, size_t errlen) {
  if (!h || !e || (unsigned)e->kind >= HR_EVENT_KINDS_) return HR_EINVAL;
  int rc = begin(h, err, errlen);
  if (rc) return rc;
  sqlite3_stmt *st = h->ins_event;
  sqlite3_bind_double(st, EV_TIME + 1, e->time);
  sqlite3_bind_text(st, EV_KIND + 1, hr_event_kind_name(e->kind), -1, SQLITE_STATIC);
  sqlite3_bind_int(st, EV_PID + 1, e->pid);
  sqlite3_bind_text(st, EV_NAME + 1, e->name, -1, SQLITE_TRANSIENT);
  hr__columns_bind(&h->cols, st, EV_PAYLOAD, e);
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

/* The event of one row of the events SELECT. A kind this library does not
 * know reads as an error event that says so. */
static void read_event(const hr_history_t *h, sqlite3_stmt *st, hr_watch_event_t *e) {
  memset(e, 0, sizeof *e);
  e->time = sqlite3_column_double(st, EV_TIME);
  e->pid = sqlite3_column_int(st, EV_PID);
  hr__strlcpy(e->name, text(st, EV_NAME), sizeof e->name);
  e->kind = hr_event_kind_from_name(text(st, EV_KIND));
  if (e->kind != HR_EVENT_KINDS_) {
    hr__columns_read(&h->cols, st, EV_PAYLOAD, e);
    return;
  }
  e->kind = HR_EVENT_ERROR;
  snprintf(e->error.message, sizeof e->error.message, "history: unknown event kind '%.40s'",
           text(st, EV_KIND));
}

static void fill_row(const hr_history_t *h, sqlite3_stmt *st, void *elem) {
  hr_history_row_t *r = elem;
  (void)h;
  r->time = sqlite3_column_double(st, 0);
  hr__strlcpy(r->scope, text(st, 1), sizeof r->scope);
  r->pid = sqlite3_column_int(st, 2);
  hr__strlcpy(r->name, text(st, 3), sizeof r->name);
  r->used_bytes = u64(st, 4);
  r->total_bytes = u64(st, 5);
  r->warn_pct = sqlite3_column_type(st, 6) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 6);
  r->critical_pct = sqlite3_column_type(st, 7) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 7);
}

static void fill_event(const hr_history_t *h, sqlite3_stmt *st, void *elem) {
  hr_history_event_t *e = elem;
  read_event(h, st, &e->event);
  e->time = e->event.time, e->pid = e->event.pid;
  hr__strlcpy(e->kind, text(st, EV_KIND), sizeof e->kind);
  hr__strlcpy(e->name, e->event.name, sizeof e->name);
}

/* Runs `sql` (?1 since, ?2 pid when pid > 0) and appends to *arr one
 * element of `size` bytes per row, filled by `fill`. */
static int select_into(hr_history_t *h, const char *sql, double since, int pid, void **arr,
                       size_t *n, size_t size,
                       void (*fill)(const hr_history_t *, sqlite3_stmt *, void *), char *err,
                       size_t errlen) {
  sqlite3_stmt *st = NULL;
  size_t cap = 0;
  int rc = 0, src = sqlite3_prepare_v2(h->db, sql, -1, &st, NULL);
  if (src == SQLITE_OK) {
    sqlite3_bind_double(st, 1, since);
    if (pid > 0) sqlite3_bind_int(st, 2, pid);
    while (rc == 0 && (src = sqlite3_step(st)) == SQLITE_ROW) {
      void *e = push(arr, n, &cap, size);
      if (e)
        fill(h, st, e);
      else
        rc = HR_ENOMEM;
    }
  }
  sqlite3_finalize(st);
  return rc == 0 && src != SQLITE_DONE ? db_err(h, src, err, errlen, "query") : rc;
}

int hr_history_query(hr_history_t *h, double since, int pid, hr_history_row_t **rows,
                     size_t *n_rows, hr_history_event_t **events, size_t *n_events, char *err,
                     size_t errlen) {
  if (!h || !rows || !n_rows || !events || !n_events) return HR_EINVAL;
  *rows = NULL, *events = NULL, *n_rows = *n_events = 0;
  hr__buf_t r = {0}, q = {0};
  if (pid > 0)
    hr__buf_puts(&r, "SELECT time,'proc',pid,name,rss_bytes,gpu_bytes,NULL,NULL FROM proc_samples"
                     " WHERE time >= ?1 AND pid = ?2 ORDER BY time");
  else
    hr__buf_printf(&r,
                   "SELECT time,scope,0,scope,used_bytes,total_bytes,%s FROM samples"
                   " WHERE time >= ?1 UNION ALL"
                   " SELECT time,'proc',pid,name,rss_bytes,gpu_bytes,NULL,NULL FROM"
                   " proc_samples WHERE time >= ?1 ORDER BY 1",
                   h->version >= 5 ? "warn_pct,critical_pct" : "NULL,NULL");
  hr__buf_puts(&q, "SELECT " EV_BASE);
  hr__columns_select(&h->cols, h->version, &q);
  hr__buf_printf(&q, " FROM events WHERE time >= ?1%s ORDER BY time",
                 pid > 0 ? " AND pid = ?2" : "");
  int rc = q.failed || r.failed ? HR_ENOMEM
           : pid < 0            ? 0 /* events alone */
                     : select_into(h, r.s, since, pid, (void **)rows, n_rows, sizeof **rows,
                                   fill_row, err, errlen);
  if (rc == 0)
    rc = select_into(h, q.s, since, pid, (void **)events, n_events, sizeof **events, fill_event,
                     err, errlen);
  hr__buf_free(&q);
  hr__buf_free(&r);
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
