/* The events table's payload columns, made from the event field lists
 * (headroom/event.h): which columns there are, the SQL that adds them when a
 * file is migrated, and an event bound to them and read back from them.
 *
 * The columns after time, kind, pid and name are the fields history keeps
 * (`since` > 0), kinds in their order and fields in theirs, each name once:
 * kinds may share a column (level and oom_kill share `scope`, error and
 * broker `message`), which then has one type. Values are stored as typed as
 * SQLite allows: a size as INTEGER (-1 for unknown), a number as REAL (NULL
 * when not finite), a level as 0/1/2, a broker event's `what` as its name,
 * an empty string as NULL. Nothing here names a field. */
#include "event/event.h"
#include "store/store.h"

#include <math.h>
#include <sqlite3.h>
#include <string.h>

static const char *sql_type(hr__field_type_t t) {
  switch (t) {
  case HR__FIELD_STR:
  case HR__FIELD_WHAT:
    return "TEXT";
  case HR__FIELD_REAL:
    return "REAL";
  default:
    return "INTEGER";
  }
}

static size_t find(const hr__columns_t *c, const char *name) {
  size_t j = 0;
  while (j < c->n && strcmp(c->name[j], name) != 0) j++;
  return j;
}

void hr__columns_init(hr__columns_t *c) {
  memset(c, 0, sizeof *c);
  memset(c->of, 0xff, sizeof c->of);
  for (int k = 0; k < HR_EVENT_KINDS_; k++) {
    const hr__event_kind_info_t *info = hr__event_kind_info((hr_event_kind_t)k);
    for (size_t i = 0; i < info->n_fields; i++) {
      const hr__event_field_t *f = &info->fields[i];
      if (!f->since) continue;
      const char *name = f->type == HR__FIELD_WHAT ? info->name : f->name;
      size_t j = find(c, name);
      if (j == c->n && c->n < HR__COLUMNS_MAX) c->name[c->n] = name, c->col[c->n++] = f;
      /* A shared column has one type and one version (tests/unit/test_history.c). */
      HR_ASSERT(j < c->n && sql_type(c->col[j]->type) == sql_type(f->type));
      c->of[k][i] = (unsigned char)j;
    }
  }
}

void hr__columns_names(const hr__columns_t *c, hr__buf_t *b, bool params) {
  for (size_t j = 0; j < c->n; j++) hr__buf_printf(b, ",%s", params ? "?" : c->name[j]);
}

void hr__columns_select(const hr__columns_t *c, int version, hr__buf_t *b) {
  for (size_t j = 0; j < c->n; j++)
    hr__buf_printf(b, ",%s", c->col[j]->since <= version ? c->name[j] : "NULL");
}

void hr__columns_added(const hr__columns_t *c, int version, hr__buf_t *b) {
  for (size_t j = 0; j < c->n; j++)
    if (c->col[j]->since == version)
      hr__buf_printf(b, "ALTER TABLE events ADD COLUMN %s %s;", c->name[j],
                     sql_type(c->col[j]->type));
}

/* `col` = its level's number, from the level's name that version 2 kept. */
static void level_number(hr__buf_t *b, const char *col) {
  hr__buf_printf(b, "%s = CASE %s", col, col);
  for (int l = HR_LEVEL_OK; l <= HR_LEVEL_CRITICAL; l++)
    hr__buf_printf(b, " WHEN '%s' THEN %d", hr__field_value_name(HR__FIELD_LEVEL, l), l);
  hr__buf_puts(b, " ELSE NULL END");
}

void hr__columns_from_json(const hr__columns_t *c, hr__buf_t *b) {
  hr__buf_puts(b, "UPDATE events SET pid = pid");
  for (size_t j = 0; j < c->n; j++)
    if (c->col[j]->since == 3)
      hr__buf_printf(b, ", %s = json_extract(json, '$.%s')", c->name[j], c->name[j]);
  hr__buf_puts(b, " WHERE json_valid(json);UPDATE events SET pid = pid");
  for (size_t j = 0; j < c->n; j++)
    if (c->col[j]->since == 3 && c->col[j]->type == HR__FIELD_LEVEL) {
      hr__buf_puts(b, ", ");
      level_number(b, c->name[j]);
    }
  hr__buf_puts(b, ";");
}

static int64_t i64(uint64_t v) {
  return v == HR_UNKNOWN || v > INT64_MAX ? -1 : (int64_t)v;
}

/* Binds one field's value to parameter `at` (1-based). */
static void bind(sqlite3_stmt *st, int at, const hr__event_field_t *f, const void *v) {
  switch (f->type) {
  case HR__FIELD_STR:
    if (*(const char *)v) sqlite3_bind_text(st, at, v, -1, SQLITE_TRANSIENT);
    break;
  case HR__FIELD_U64:
    sqlite3_bind_int64(st, at, i64(*(const uint64_t *)v));
    break;
  case HR__FIELD_INT:
    sqlite3_bind_int(st, at, *(const int *)v);
    break;
  case HR__FIELD_UINT:
    sqlite3_bind_int64(st, at, *(const unsigned *)v);
    break;
  case HR__FIELD_REAL:
    if (isfinite(*(const double *)v)) sqlite3_bind_double(st, at, *(const double *)v);
    break;
  case HR__FIELD_LEVEL:
    sqlite3_bind_int(st, at, (int)*(const hr_level_t *)v);
    break;
  case HR__FIELD_WHAT:
    sqlite3_bind_text(st, at, hr__field_value_name(f->type, *(const int *)v), -1, SQLITE_STATIC);
    break;
  }
}

void hr__columns_bind(const hr__columns_t *c, struct sqlite3_stmt *st, int first,
                      const hr_watch_event_t *e) {
  const hr__event_kind_info_t *info = hr__event_kind_info(e->kind);
  for (size_t i = 0; info && i < info->n_fields; i++)
    if (c->of[e->kind][i] != 0xff)
      bind(st, first + c->of[e->kind][i] + 1, &info->fields[i], hr__field_in(&info->fields[i], e));
}

/* Reads column `col` (0-based) into one field. */
static void read_field(sqlite3_stmt *st, int col, const hr__event_field_t *f, void *v) {
  bool text = f->type == HR__FIELD_STR || f->type == HR__FIELD_WHAT;
  const char *s = text ? (const char *)sqlite3_column_text(st, col) : NULL;
  int64_t n = text ? 0 : sqlite3_column_int64(st, col);
  switch (f->type) {
  case HR__FIELD_STR:
    hr__strlcpy(v, s ? s : "", f->size);
    break;
  case HR__FIELD_U64:
    *(uint64_t *)v = n < 0 ? HR_UNKNOWN : (uint64_t)n;
    break;
  case HR__FIELD_INT:
    *(int *)v = (int)n;
    break;
  case HR__FIELD_UINT:
    *(unsigned *)v = (unsigned)n;
    break;
  case HR__FIELD_REAL:
    *(double *)v =
        sqlite3_column_type(st, col) == SQLITE_NULL ? NAN : sqlite3_column_double(st, col);
    break;
  case HR__FIELD_LEVEL:
    *(hr_level_t *)v =
        n == HR_LEVEL_WARNING || n == HR_LEVEL_CRITICAL ? (hr_level_t)n : HR_LEVEL_OK;
    break;
  case HR__FIELD_WHAT:
    *(hr_broker_event_kind_t *)v = hr__broker_event_from_name(s);
    break;
  }
}

void hr__columns_read(const hr__columns_t *c, struct sqlite3_stmt *st, int first,
                      hr_watch_event_t *e) {
  const hr__event_kind_info_t *info = hr__event_kind_info(e->kind);
  for (size_t i = 0; info && i < info->n_fields; i++)
    if (c->of[e->kind][i] != 0xff)
      read_field(st, first + c->of[e->kind][i], &info->fields[i],
                 hr__field_of(&info->fields[i], e));
}
