/* Leak detector on synthetic series: a linear leak is found within a minute
 * at 1 Hz; a garbage-collection sawtooth, a step followed by a plateau (with
 * and without a ramp) and noisy stable memory never alarm over ten minutes;
 * a reused pid starts a new series. Noise is random from a printed seed. */
#include "hr_test.h"

#include <math.h>

#define MB (1024.0 * 1024.0)

static uint64_t rng;

/* Uniform in [-1, 1). */
static double noise(void) {
  return (double)(hr_test_rand(&rng) >> 11) / (double)(1ULL << 52) - 1;
}

static hr_leak_config_t default_cfg(void) {
  hr_leak_config_t c = {.window_s = 600, .min_samples = 30, .min_rate = 2 * MB};
  return c;
}

typedef double (*series_fn)(double t);

/* Feeds `secs` samples at 1 Hz; returns the second of the first alarm, or -1. */
static double first_alarm(series_fn f, int secs, int pid, uint64_t start) {
  hr_leak_config_t c = default_cfg();
  hr_leak_t *d = NULL;
  if (hr_leak_create(&c, &d) != 0) return -2;
  double when = -1;
  for (int i = 0; i < secs && when < 0; i++) {
    hr_leak_result_t r;
    double t = 1000.0 + i;
    double v = f(i);
    if (hr_leak_add(d, pid, start, 0, t, (uint64_t)(v < 0 ? 0 : v), &r) != 0) break;
    if (r.suspected) when = i;
  }
  hr_leak_destroy(d);
  return when;
}

static double linear_leak(double t) {
  return 300 * MB + 5 * MB * t / 60 + 64 * 1024 * noise();
}
static double sawtooth(double t) {
  return 300 * MB + 40 * MB * fmod(t, 20) / 20 + 64 * 1024 * noise();
}
static double slow_sawtooth(double t) {
  return 300 * MB + 30 * MB * fmod(t, 90) / 90;
}
static double step_plateau(double t) {
  return t < 25 ? 300 * MB : 900 * MB;
}
static double ramp_plateau(double t) {
  return 300 * MB + (t < 20 ? 0 : t < 35 ? 600 * MB * (t - 20) / 15 : 600 * MB) + MB * noise();
}
static double noisy_stable(double t) {
  return 2000 * MB + 8 * MB * noise();
}
static double flat(double t) {
  return 500 * MB;
}

static void test_mann_kendall_known(void) {
  double y[10];
  for (int i = 0; i < 10; i++) y[i] = i + 1;
  double s, z, p;
  CHECK_OK(hr_mann_kendall(y, 10, &s, &z, &p));
  CHECK_NEAR(s, 45, 1e-9);
  CHECK_NEAR(z, 44 / sqrt(125), 1e-9);
  CHECK(p < 1e-4);
  /* All equal: every pair is a tie, no trend. */
  for (int i = 0; i < 10; i++) y[i] = 7;
  CHECK_OK(hr_mann_kendall(y, 10, &s, &z, &p));
  CHECK_NEAR(s, 0, 0);
  CHECK_NEAR(z, 0, 0);
  CHECK_RC(hr_mann_kendall(y, 2, &s, &z, &p), HR_EINVAL);
}

static void test_theil_sen_known(void) {
  double t[9], y[9], slope;
  for (int i = 0; i < 9; i++) t[i] = i, y[i] = 2 * i + 1;
  y[4] = 1000; /* one wild point does not move the median slope */
  CHECK_OK(hr_theil_sen(t, y, 9, NULL, &slope));
  CHECK_NEAR(slope, 2, 1e-9);
  double t1[3] = {5, 5, 5};
  CHECK_RC(hr_theil_sen(t1, y, 3, NULL, &slope), HR_EINVAL);
}

static void test_linear_leak_found_within_a_minute(void) {
  double when = first_alarm(linear_leak, 120, 100, 1);
  CHECK_MSG(when >= 29 && when <= 60, "5 MB/min leak first alarmed at %gs", when);
}

static void test_slow_leak_under_threshold_quiet(void) {
  /* 1 MB/min is a trend, but under the 2 MB/min bar. */
  hr_leak_config_t c = default_cfg();
  double t[300], y[300];
  for (int i = 0; i < 300; i++) t[i] = i, y[i] = 100 * MB + MB * i / 60.0;
  hr_leak_result_t r;
  CHECK_OK(hr_leak_evaluate(&c, t, y, 300, &r));
  CHECK(!r.suspected);
  CHECK(r.p < 1e-6);
  CHECK_NEAR(r.slope_per_min, MB, 1);
  c.min_rate = 0.5 * MB;
  CHECK_OK(hr_leak_evaluate(&c, t, y, 300, &r));
  CHECK(r.suspected);
}

static void test_sawtooth_quiet(void) {
  double when = first_alarm(sawtooth, 600, 101, 1);
  CHECK_MSG(when < 0, "sawtooth alarmed at %gs", when);
  when = first_alarm(slow_sawtooth, 600, 101, 1);
  /* A 90 s sawtooth is a steady climb for its first period: only judge the
   * time after two periods are in the window. */
  CHECK_MSG(when < 0 || when < 90, "slow sawtooth alarmed at %gs", when);
}

static void test_step_then_plateau_quiet(void) {
  double when = first_alarm(step_plateau, 600, 102, 1);
  CHECK_MSG(when < 0, "step then plateau alarmed at %gs", when);
  when = first_alarm(ramp_plateau, 600, 102, 1);
  CHECK_MSG(when < 0, "ramp then plateau alarmed at %gs", when);
}

static void test_noise_quiet(void) {
  double when = first_alarm(noisy_stable, 600, 103, 1);
  CHECK_MSG(when < 0, "noisy stable memory alarmed at %gs", when);
  when = first_alarm(flat, 600, 103, 1);
  CHECK_MSG(when < 0, "flat memory alarmed at %gs", when);
}

static void test_too_few_samples(void) {
  hr_leak_config_t c = default_cfg();
  c.min_samples = 50;
  hr_leak_t *d;
  CHECK_OK(hr_leak_create(&c, &d));
  hr_leak_result_t r = {0};
  bool early = false;
  for (int i = 0; i < 49; i++) {
    CHECK_OK(hr_leak_add(d, 1, 1, 0, i, (uint64_t)(100 * MB + 50 * MB * i), &r));
    early |= r.suspected;
  }
  CHECK(!early);
  CHECK_OK(hr_leak_add(d, 1, 1, 0, 49, (uint64_t)(100 * MB + 50 * MB * 49), &r));
  CHECK(r.suspected);
  CHECK(r.raised);
  CHECK_OK(hr_leak_add(d, 1, 1, 0, 50, (uint64_t)(100 * MB + 50 * MB * 50), &r));
  CHECK(r.suspected);
  CHECK(!r.raised); /* raised once, not on every sample */
  hr_leak_destroy(d);
}

static void test_pid_reuse(void) {
  hr_leak_config_t c = default_cfg();
  hr_leak_t *d;
  CHECK_OK(hr_leak_create(&c, &d));
  hr_leak_result_t r = {0};
  for (int i = 0; i < 90; i++)
    CHECK_OK(hr_leak_add(d, 42, 1000, 0, i, (uint64_t)linear_leak(i), &r));
  CHECK(r.suspected);
  /* Same pid, another start time: a new process with a flat series. */
  CHECK_OK(hr_leak_add(d, 42, 5000, 0, 90, (uint64_t)(50 * MB), &r));
  CHECK(!r.suspected);
  CHECK_EQ_U64(r.n, 1);
  for (int i = 91; i < 200; i++) {
    CHECK_OK(hr_leak_add(d, 42, 5000, 0, i, (uint64_t)(50 * MB), &r));
    CHECK(!r.suspected);
  }
  CHECK_EQ_U64(hr_leak_count(d), 1);
  double slope;
  CHECK_RC(hr_leak_slope(d, 42, 1000, 0, &slope), HR_ENOENT);
  CHECK_OK(hr_leak_slope(d, 42, 5000, 0, &slope));
  CHECK_NEAR(slope, 0, 1e-6);
  /* Another series of the same process is separate. */
  CHECK_OK(hr_leak_add(d, 42, 5000, 1, 200, 1, &r));
  CHECK_EQ_U64(hr_leak_count(d), 2);
  hr_leak_prune(d, 150);
  CHECK_EQ_U64(hr_leak_count(d), 2);
  hr_leak_prune(d, 200.5);
  CHECK_EQ_U64(hr_leak_count(d), 0);
  hr_leak_destroy(d);
}

static void test_many_series_and_merging(void) {
  /* 0.1 s samples over a 600 s window merge into at most 120 points, and a
   * thousand series grow the table without losing any. */
  hr_leak_config_t c = default_cfg();
  hr_leak_t *d;
  CHECK_OK(hr_leak_create(&c, &d));
  hr_leak_result_t r = {0};
  for (int i = 0; i < 3000; i++)
    CHECK_OK(hr_leak_add(d, 7, 1, 0, i * 0.1, (uint64_t)(100 * MB + 10 * MB * i * 0.1 / 60), &r));
  CHECK(r.n <= 120);
  CHECK(r.suspected);
  CHECK_NEAR(r.slope_per_min, 10 * MB, 0.2 * MB);
  for (int pid = 1; pid <= 1000; pid++) CHECK_OK(hr_leak_add(d, pid, 9, 1, 1, 5, NULL));
  CHECK_EQ_U64(hr_leak_count(d), 1001);
  hr_leak_destroy(d);
}

/* A whole recorded series judged at once, as history judges a process:
 * 3,600 samples (an hour at 1 Hz) go through at most max_points points; a
 * steady leak is found with its rate, a one-off load, a wave and noise are
 * not (with no rate bar to hide behind); too few samples say nothing; the
 * window drops what is older. */
static void test_evaluate_samples(void) {
  enum { N = 3600 };
  static double t[N], y[N];
  static const struct {
    series_fn f;
    bool leak;
  } cases[] = {{linear_leak, true}, {step_plateau, false},  {ramp_plateau, false},
               {sawtooth, false},   {slow_sawtooth, false}, {noisy_stable, false},
               {flat, false}};
  hr_leak_config_t c = {.window_s = N + 1, .min_samples = 30, .min_rate = 1};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    for (int i = 0; i < N; i++) t[i] = 5000.0 + i, y[i] = cases[k].f(i);
    hr_leak_result_t r;
    CHECK_OK(hr_leak_evaluate_samples(&c, t, y, N, &r));
    CHECK_MSG(r.suspected == cases[k].leak, "case %zu: suspected %d", k, r.suspected);
    CHECK(r.n <= 120 && r.n >= 100 && !r.raised);
    if (cases[k].leak) CHECK_NEAR(r.slope_per_min, 5 * MB, 0.05 * MB);
  }
  /* Unknown values are skipped, not read as zero. */
  for (int i = 0; i < N; i++) t[i] = i, y[i] = i % 7 == 3 ? NAN : linear_leak(i);
  hr_leak_result_t r;
  CHECK_OK(hr_leak_evaluate_samples(&c, t, y, N, &r));
  CHECK(r.suspected);
  /* min_samples counts samples: 29 two minutes apart (29 points) are too
   * few, 30 are enough. */
  for (int i = 0; i < 30; i++) t[i] = 120.0 * i, y[i] = linear_leak(120.0 * i);
  CHECK_OK(hr_leak_evaluate_samples(&c, t, y, 29, &r));
  CHECK(!r.suspected && r.n == 29);
  CHECK_OK(hr_leak_evaluate_samples(&c, t, y, 30, &r));
  CHECK(r.suspected);
  for (int i = 0; i < N; i++) t[i] = i;
  /* A window of 10 minutes sees only the flat end of a leak that stopped. */
  for (int i = 0; i < N; i++) y[i] = i < N / 2 ? linear_leak(i) : linear_leak(N / 2);
  c.window_s = 600;
  CHECK_OK(hr_leak_evaluate_samples(&c, t, y, N, &r));
  CHECK(!r.suspected && r.span_s <= 600);
  CHECK_RC(hr_leak_evaluate_samples(NULL, t, y, N, &r), HR_EINVAL);
  c.window_s = 0;
  CHECK_RC(hr_leak_evaluate_samples(&c, t, y, N, &r), HR_EINVAL);
}

int main(void) {
  rng = hr_test_seed();
  HR_RUN(test_mann_kendall_known);
  HR_RUN(test_theil_sen_known);
  HR_RUN(test_linear_leak_found_within_a_minute);
  HR_RUN(test_slow_leak_under_threshold_quiet);
  HR_RUN(test_sawtooth_quiet);
  HR_RUN(test_step_then_plateau_quiet);
  HR_RUN(test_noise_quiet);
  HR_RUN(test_too_few_samples);
  HR_RUN(test_pid_reuse);
  HR_RUN(test_many_series_and_merging);
  HR_RUN(test_evaluate_samples);
  return hr_test_finish("test_leak");
}
