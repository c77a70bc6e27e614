/* The field lists of headroom/event.h as tables, and each kind's name and
 * terminal line.
 *
 * Every row is made from the list by one macro with offsetof and sizeof, so
 * the tables cannot drift from the structs: the JSON writer and the terminal
 * line (event.c) and the history columns, binding and reader
 * (src/store/history.c) walk these rows instead of naming fields. */
#include "event/event.h"

#include <stddef.h>
#include <string.h>

#define ROW_(k, type, member, dims, fmt, flags, since)                                             \
  {#member,                                                                                        \
   HR__FIELD_##type,                                                                               \
   offsetof(hr_watch_event_t, k.member),                                                           \
   sizeof(((hr_watch_event_t *)0)->k.member),                                                      \
   fmt,                                                                                            \
   flags,                                                                                          \
   since},

static const hr__event_field_t level_fields[] = {HR_EVENT_LEVEL_FIELDS(ROW_, level)};
static const hr__event_field_t leak_fields[] = {HR_EVENT_LEAK_FIELDS(ROW_, leak)};
static const hr__event_field_t idle_hog_fields[] = {HR_EVENT_IDLE_HOG_FIELDS(ROW_, idle_hog)};
static const hr__event_field_t oom_kill_fields[] = {HR_EVENT_OOM_KILL_FIELDS(ROW_, oom_kill)};
static const hr__event_field_t action_fields[] = {HR_EVENT_ACTION_FIELDS(ROW_, action)};
static const hr__event_field_t error_fields[] = {HR_EVENT_ERROR_FIELDS(ROW_, error)};
static const hr__event_field_t broker_fields[] = {HR_EVENT_BROKER_FIELDS(ROW_, broker)};

#define LIST_(rows) rows, HR_ARRAY_LEN(rows)

/* The terminal lines keep the words they always had; the templates are
 * described in event/event.h. */
static const hr__event_kind_info_t kinds[HR_EVENT_KINDS_] = {
    [HR_EVENT_SAMPLE] = {"sample", NULL, 0, false, NULL}, /* written by hand: event.c */
    [HR_EVENT_LEVEL] = {"level", LIST_(level_fields), false,
                        "{scope} {previous} -> {level} ({used_pct}%)"},
    [HR_EVENT_LEAK] = {"leak", LIST_(leak_fields), true,
                       "pid {pid} {name} {series} +{slope_bytes_per_min:size}/min"
                       " (confidence {confidence:%.4f})"},
    [HR_EVENT_IDLE_HOG] = {"idle_hog", LIST_(idle_hog_fields), true,
                           "pid {pid} {name} holds {gpu_bytes:size} of idle gpu {gpu}"},
    [HR_EVENT_OOM_KILL] = {"oom_kill", LIST_(oom_kill_fields), false, "{kills} in cgroup {path}"},
    [HR_EVENT_EXIT] = {"exit", NULL, 0, true, "pid {pid} {name}"},
    [HR_EVENT_ACTION] = {"action", LIST_(action_fields), false, "{action} {result} {detail}"},
    [HR_EVENT_ERROR] = {"error", LIST_(error_fields), false, "{message}"},
    [HR_EVENT_BROKER] = {"broker", LIST_(broker_fields), true,
                         "{what} pid {pid} {name} {device} {bytes:size}"
                         "[ released {released_bytes:size}][ in {latency_s:%.3f} s][: {message}]"},
};

_Static_assert(HR_ARRAY_LEN(level_fields) <= HR__EVENT_FIELDS_MAX &&
                   HR_ARRAY_LEN(leak_fields) <= HR__EVENT_FIELDS_MAX &&
                   HR_ARRAY_LEN(idle_hog_fields) <= HR__EVENT_FIELDS_MAX &&
                   HR_ARRAY_LEN(oom_kill_fields) <= HR__EVENT_FIELDS_MAX &&
                   HR_ARRAY_LEN(action_fields) <= HR__EVENT_FIELDS_MAX &&
                   HR_ARRAY_LEN(error_fields) <= HR__EVENT_FIELDS_MAX &&
                   HR_ARRAY_LEN(broker_fields) <= HR__EVENT_FIELDS_MAX,
               "a field list is longer than HR__EVENT_FIELDS_MAX");

const hr__event_kind_info_t *hr__event_kind_info(hr_event_kind_t k) {
  return (unsigned)k < HR_EVENT_KINDS_ ? &kinds[k] : NULL;
}

const char *hr_event_kind_name(hr_event_kind_t k) {
  return (unsigned)k < HR_EVENT_KINDS_ ? kinds[k].name : "unknown";
}

hr_event_kind_t hr_event_kind_from_name(const char *name) {
  for (int k = 0; name && k < HR_EVENT_KINDS_; k++)
    if (strcmp(name, kinds[k].name) == 0) return (hr_event_kind_t)k;
  return HR_EVENT_KINDS_;
}

static const char *const broker_names[] = {
#define HR_BROKER_EV_NAME_(name, text) text,
    HR_BROKER_EVENTS(HR_BROKER_EV_NAME_)
#undef HR_BROKER_EV_NAME_
};

const char *hr_broker_event_name(hr_broker_event_kind_t kind) {
  return (unsigned)kind < HR_BROKER_EV_COUNT ? broker_names[kind] : "?";
}

hr_broker_event_kind_t hr__broker_event_from_name(const char *name) {
  for (int k = 0; name && k < HR_BROKER_EV_COUNT; k++)
    if (strcmp(name, broker_names[k]) == 0) return (hr_broker_event_kind_t)k;
  return HR_BROKER_EV_COUNT;
}

const char *hr__field_value_name(hr__field_type_t type, int v) {
  if (type == HR__FIELD_LEVEL) return hr_level_name((hr_level_t)v);
  if (type == HR__FIELD_WHAT) return hr_broker_event_name((hr_broker_event_kind_t)v);
  return NULL;
}
