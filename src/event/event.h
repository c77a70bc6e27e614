/* Internal: the event field lists of headroom/event.h as tables (fields.c),
 * for the writers here and the history store, and the JSON writer appending
 * to a buffer, for the watch (hook environment) and anything that writes
 * events among other text. */
#ifndef HR_EVENT_INT_H
#define HR_EVENT_INT_H

#include "util/buf.h"

typedef enum hr__field_type {
  HR__FIELD_STR,
  HR__FIELD_U64,
  HR__FIELD_INT,
  HR__FIELD_UINT,
  HR__FIELD_REAL,
  HR__FIELD_LEVEL,
  HR__FIELD_WHAT,
} hr__field_type_t;

/* One row of a field list (headroom/event.h says what each part means). */
typedef struct hr__event_field {
  const char *name; /* the member, the JSON key and the history column */
  hr__field_type_t type;
  size_t offset; /* in hr_watch_event_t */
  size_t size;   /* of the member: a STR's buffer */
  const char *fmt;
  unsigned flags;
  int since;
} hr__event_field_t;

/* Every field list has at most this many rows. */
#define HR__EVENT_FIELDS_MAX 16

/* One kind: its name, its field list, whether the event is about a
 * process (pid and name follow "time" in JSON), and the terminal line
 * after "HH:MM:SS  kind      " as a template: {field} is a field's value
 * ({pid} and {name} the event's), {field:size} a size in binary units,
 * {field:%.3f} a number with that format; [ ... ] is left out unless the
 * fields it names are set (non-zero, non-empty). */
typedef struct hr__event_kind_info {
  const char *name;
  const hr__event_field_t *fields;
  size_t n_fields;
  bool about_process;
  const char *text;
} hr__event_kind_info_t;

/* The kind's row; NULL for a kind out of range. */
HR_INTERNAL const hr__event_kind_info_t *hr__event_kind_info(hr_event_kind_t k);

/* The name of value v of a LEVEL or WHAT field ("warning", "granted"), as
 * JSON and the terminal line write it; NULL for other types. */
HR_INTERNAL const char *hr__field_value_name(hr__field_type_t type, int v);

/* The broker event named `name`, or HR_BROKER_EV_COUNT when there is none. */
HR_INTERNAL hr_broker_event_kind_t hr__broker_event_from_name(const char *name);

/* Where the field lies inside `e`, to read it or to fill it. */
static inline const void *hr__field_in(const hr__event_field_t *f, const hr_watch_event_t *e) {
  return (const char *)e + f->offset;
}
static inline void *hr__field_of(const hr__event_field_t *f, hr_watch_event_t *e) {
  return (char *)e + f->offset;
}

/* Appends the event as one JSON object (no newline). */
HR_INTERNAL void hr__event_json(hr__buf_t *b, const hr_watch_event_t *e);

#endif /* HR_EVENT_INT_H */
