/* The watch's clock: where the engine reads the time and how its loop waits.
 *
 * By default the system's: CLOCK_MONOTONIC for what is timed (cooldowns,
 * hook deadlines, history flushes, the loop's schedule), CLOCK_REALTIME for
 * the time of an event without a snapshot, and nanosleep() in slices for the
 * wait between samples. hr_watch_set_clock() puts another in its place, so a
 * test drives the engine and the loop sample by sample and asserts in
 * samples, never in wall seconds. Snapshot times are not the clock's: they
 * come from the sampler (the probe stamps them with the wall clock). */
#include "watch/watch_int.h"

#include <time.h>

static double system_mono(void *arg) {
  (void)arg;
  return hr__now_mono();
}

static double system_wall(void *arg) {
  (void)arg;
  return hr__now_wall();
}

/* Sleeps until the monotonic time `until`, in slices, so a stop request
 * is seen within 50 ms whichever thread the signal went to. */
static void system_sleep_until(void *arg, double until, volatile sig_atomic_t *stop) {
  (void)arg;
  for (;;) {
    double left = until - hr__now_mono();
    if (left <= 0 || (stop && *stop)) return;
    if (left > 0.05) left = 0.05;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(left * 1e9)};
    nanosleep(&ts, NULL);
  }
}

void hr_watch_set_clock(hr_watch_t *w, const hr_watch_clock_t *clock) {
  if (!w) return;
  hr_watch_clock_t c = clock ? *clock : (hr_watch_clock_t){0};
  w->clock.mono = c.mono ? c.mono : system_mono;
  w->clock.wall = c.wall ? c.wall : system_wall;
  w->clock.sleep_until = c.sleep_until ? c.sleep_until : system_sleep_until;
  w->clock.arg = c.arg;
}

double hr__watch_mono(const hr_watch_t *w) {
  return w->clock.mono(w->clock.arg);
}

double hr__watch_wall(const hr_watch_t *w) {
  return w->clock.wall(w->clock.arg);
}

void hr__watch_sleep_until(const hr_watch_t *w, double until, volatile sig_atomic_t *stop) {
  w->clock.sleep_until(w->clock.arg, until, stop);
}
