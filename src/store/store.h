/* Internal parts of the history store that its files, the watch loop and the
 * tests share: the events table's columns made from the event field lists
 * (columns.c), and hooks for tests. Not public API. */
#ifndef HR_STORE_H
#define HR_STORE_H

#include "event/event.h"
#include "util/util.h"

struct sqlite3_stmt;

/* The version-1 schema, for tests that migrate from it. */
HR_INTERNAL extern const char hr__history_schema_v1[];

/* Runs SQL on the history's connection (tests: PRAGMA max_page_count to
 * fill the "disk"). */
HR_INTERNAL int hr__history_exec(hr_history_t *h, const char *sql, char *err, size_t errlen);

/* ---- the payload columns (columns.c) ------------------------------------ */

#define HR__COLUMNS_MAX 64

typedef struct hr__columns {
  /* Each column: its name (the field's; a WHAT field's is its kind's), the
   * first field kept in it, and its number. */
  const char *name[HR__COLUMNS_MAX];
  const hr__event_field_t *col[HR__COLUMNS_MAX];
  size_t n;
  /* Each field's column, by kind and place in its list; 0xff: not kept. */
  unsigned char of[HR_EVENT_KINDS_][HR__EVENT_FIELDS_MAX];
} hr__columns_t;

/* Fills c from the field lists. */
HR_INTERNAL void hr__columns_init(hr__columns_t *c);
/* Appends ",name" for each column (",?" with params), to follow
 * "time,kind,pid,name" in an INSERT or a SELECT. */
HR_INTERNAL void hr__columns_names(const hr__columns_t *c, hr__buf_t *b, bool params);
/* Appends ",name" for each column a file at schema `version` (3 or later)
 * has and ",NULL" for each it does not, to follow "time,kind,pid,name" in a
 * SELECT that reads an older file without migrating it. */
HR_INTERNAL void hr__columns_select(const hr__columns_t *c, int version, hr__buf_t *b);
/* Appends an ALTER TABLE ... ADD COLUMN for each column schema `version`
 * added. */
HR_INTERNAL void hr__columns_added(const hr__columns_t *c, int version, hr__buf_t *b);
/* Appends the UPDATEs that fill the columns version 3 added from the JSON
 * text version 2 kept, keyed like the columns (a row whose text is not JSON
 * keeps its time, kind, pid and name), levels turned into their numbers. */
HR_INTERNAL void hr__columns_from_json(const hr__columns_t *c, hr__buf_t *b);
/* Binds e's payload to the statement's parameters after the first `first`
 * (its columns in hr__columns_names' order); other kinds' stay NULL. */
HR_INTERNAL void hr__columns_bind(const hr__columns_t *c, struct sqlite3_stmt *st, int first,
                                  const hr_watch_event_t *e);
/* Reads e's payload (e->kind set) from the row's columns after the first
 * `first`. */
HR_INTERNAL void hr__columns_read(const hr__columns_t *c, struct sqlite3_stmt *st, int first,
                                  hr_watch_event_t *e);

#endif /* HR_STORE_H */
