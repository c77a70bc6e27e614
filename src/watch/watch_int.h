/* Internal parts of watch: the hook runner and drop_caches (actions.c). */
#ifndef HR_WATCH_INT_H
#define HR_WATCH_INT_H

#include "util/util.h"

#define HR__MAX_HOOKS 8

typedef struct hr__hook {
  pid_t pid;
  double started, deadline;
  char name[16]; /* "on_warning", "on_critical" */
} hr__hook_t;

typedef struct hr__hooks {
  hr__hook_t h[HR__MAX_HOOKS];
  size_t n;
} hr__hooks_t;

typedef struct hr__hook_result {
  char name[16];
  pid_t pid;
  double seconds;
  bool timed_out;
  int exit_code; /* -1 when it did not exit normally */
  int signal;    /* the signal that ended it, or 0 */
} hr__hook_result_t;

/* Starts `/bin/sh -c cmd` with HEADROOM_EVENT=event_json in its environment,
 * in a process group of its own, without waiting. HR_EBUSY when
 * HR__MAX_HOOKS are still running. */
HR_INTERNAL int hr__hook_start(hr__hooks_t *hk, const char *name, const char *cmd,
                               const char *event_json, double timeout_s, double now);

/* Reaps hooks that ended and kills those past their deadline (all of them
 * when kill_all); writes up to `max` results and returns how many. */
HR_INTERNAL size_t hr__hooks_reap(hr__hooks_t *hk, double now, bool kill_all,
                                  hr__hook_result_t *out, size_t max);

/* sync(), then "1" into /proc/sys/vm/drop_caches. HR_EPERM when not root. */
HR_INTERNAL int hr__drop_caches(char *err, size_t errlen);

#endif /* HR_WATCH_INT_H */
