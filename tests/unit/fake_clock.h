/* A clock the test moves by hand, for the engines that take their time from
 * a clock the caller sets (hr_watch_set_clock): time stands still until the
 * test advances it or the engine "sleeps", which only moves it on. A test
 * so counts in samples and never waits for real time, however loaded the
 * machine. */
#ifndef HR_FAKE_CLOCK_H
#define HR_FAKE_CLOCK_H

#include <headroom/daemon.h>

typedef struct fake_clock {
  double mono;  /* seconds */
  double wall;  /* seconds since the epoch, moved with mono */
  int sleeps;   /* sleep_until calls */
  double slept; /* seconds they moved the clock on */
} fake_clock_t;

static inline double fake_clock_mono(void *arg) {
  return ((fake_clock_t *)arg)->mono;
}

static inline double fake_clock_wall(void *arg) {
  return ((fake_clock_t *)arg)->wall;
}

static inline void fake_clock_advance(fake_clock_t *c, double s) {
  c->mono += s, c->wall += s;
}

static inline void fake_clock_sleep_until(void *arg, double until, volatile sig_atomic_t *stop) {
  fake_clock_t *c = arg;
  c->sleeps++;
  if (stop && *stop) return;
  if (until > c->mono) c->slept += until - c->mono, fake_clock_advance(c, until - c->mono);
}

/* A clock at monotonic time 0 and wall time 1.7e9 (2023), as the watch's. */
static inline hr_watch_clock_t fake_clock(fake_clock_t *c) {
  *c = (fake_clock_t){.mono = 0, .wall = 1.7e9};
  return (hr_watch_clock_t){.mono = fake_clock_mono,
                            .wall = fake_clock_wall,
                            .sleep_until = fake_clock_sleep_until,
                            .arg = c};
}

#endif /* HR_FAKE_CLOCK_H */
