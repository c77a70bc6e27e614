/* Events posted from other threads: the broker's.
 *
 * The broker runs on its own thread, and history (SQLite, one connection
 * without a mutex), the event counters and the callback belong to the
 * watch's thread. So a posted event is copied into a queue under a lock,
 * and the watch delivers the queue at each sample like its own events: one
 * order, one writer, one history. A queue that would grow past
 * HR_WATCH_POSTED_MAX drops the newest, and an error event says how many:
 * a flood of connections cannot make the watch grow without bound. */
#include "watch/watch_int.h"

#include <stdlib.h>

int hr_watch_post_event(hr_watch_t *w, const hr_watch_event_t *e) {
  if (!w || !e || (unsigned)e->kind >= HR_EVENT_KINDS_ || e->kind == HR_EVENT_SAMPLE)
    return HR_EINVAL;
  int rc = 0;
  pthread_mutex_lock(&w->post_lock);
  if (w->n_posted == HR_WATCH_POSTED_MAX) {
    w->posted_dropped++;
    goto out;
  }
  if (w->n_posted == w->cap_posted) {
    size_t cap = w->cap_posted ? w->cap_posted * 2 : 16;
    hr_watch_event_t *p = realloc(w->posted, cap * sizeof *p);
    if (!p) {
      w->posted_dropped++;
      rc = HR_ENOMEM;
      goto out;
    }
    w->posted = p, w->cap_posted = cap;
  }
  w->posted[w->n_posted++] = *e;
out:
  pthread_mutex_unlock(&w->post_lock);
  return rc;
}

void hr_watch_set_broker_counters(hr_watch_t *w, hr_watch_broker_counters_fn fn, void *arg) {
  if (!w) return;
  w->broker_counters = fn, w->broker_counters_arg = arg;
}

void hr__watch_deliver_posted(hr_watch_t *w) {
  /* Take the queue whole, so the broker is never held up by SQLite. */
  pthread_mutex_lock(&w->post_lock);
  hr_watch_event_t *q = w->posted;
  size_t n = w->n_posted;
  uint64_t dropped = w->posted_dropped;
  w->posted = NULL, w->n_posted = w->cap_posted = 0, w->posted_dropped = 0;
  pthread_mutex_unlock(&w->post_lock);
  for (size_t i = 0; i < n; i++) hr__watch_emit(w, &q[i]);
  free(q);
  if (dropped) {
    char m[128];
    snprintf(m, sizeof m, "%llu events from the broker were dropped: more than %d waited",
             (unsigned long long)dropped, HR_WATCH_POSTED_MAX);
    hr__watch_error(w, hr__watch_wall(w), m);
  }
}
