/* The process-wide log callback, and hr__size_text, the byte counts every
 * message shares. The callback, its argument and the level are one record
 * swapped under a mutex, so a message never sees a callback with another
 * callback's argument. */
#include "util/util.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static hr_log_fn log_fn;
static void *log_arg;
static hr_log_level_t log_min = HR_LOG_INFO;

void hr_set_log(hr_log_fn fn, void *arg, hr_log_level_t min_level) {
  pthread_mutex_lock(&log_mu);
  log_fn = fn;
  log_arg = arg;
  log_min = min_level;
  pthread_mutex_unlock(&log_mu);
}

const char *hr_log_level_name(hr_log_level_t level) {
  static const char *const names[] = {[HR_LOG_DEBUG] = "debug",
                                      [HR_LOG_INFO] = "info",
                                      [HR_LOG_WARN] = "warn",
                                      [HR_LOG_ERROR] = "error"};
  return hr__enum_name(names, HR_ARRAY_LEN(names), (int)level, "?");
}

bool hr__log_enabled(hr_log_level_t level) {
  pthread_mutex_lock(&log_mu);
  bool on = log_fn != NULL && level >= log_min;
  pthread_mutex_unlock(&log_mu);
  return on;
}

void hr__log(hr_log_level_t level, const char *fmt, ...) {
  char msg[1024];
  pthread_mutex_lock(&log_mu);
  hr_log_fn fn = log_fn;
  void *arg = log_arg;
  bool on = fn != NULL && level >= log_min;
  if (on) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fn(level, msg, arg);
  }
  pthread_mutex_unlock(&log_mu);
}

#ifdef HR_DEBUG
void hr__assert_fail(const char *expr, const char *file, int line) {
  fprintf(stderr, "headroom: assertion failed: %s (%s:%d)\n", expr, file, line);
  abort();
}
#endif

double hr__now_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double hr__now_wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *hr__size_text(char *buf, size_t n, uint64_t bytes) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = (double)bytes;
  size_t u = 0;
  while (v >= 1024 && u + 1 < HR_ARRAY_LEN(units)) v /= 1024, u++;
  if (u == 0)
    snprintf(buf, n, "%llu B", (unsigned long long)bytes);
  else
    snprintf(buf, n, "%.2f %s", v, units[u]);
  return buf;
}

const char *hr_size_text(char *buf, size_t n, uint64_t bytes) {
  return hr__size_text(buf, n, bytes);
}
