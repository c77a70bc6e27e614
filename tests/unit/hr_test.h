/* A small in-tree test harness: one executable per module, tests listed in
 * main with HR_RUN. A failed check prints file:line and ends that test; the
 * run goes on with the next one. The closing line is "N passed, N failed",
 * and the exit status is 1 when anything failed, 77 when everything was
 * skipped (CTest's SKIP_RETURN_CODE).
 *
 * Randomised tests take their seed from hr_test_seed(): HR_TEST_SEED when set,
 * else the time; it is printed so a failure replays. */
#ifndef HR_TEST_H
#define HR_TEST_H

#include <headroom/daemon.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int hr_t_passed, hr_t_failed, hr_t_skipped, hr_t_cur_failed, hr_t_cur_skipped;

#define HR_FAIL_(...)                                                                              \
  do {                                                                                             \
    fprintf(stderr, "  FAIL %s:%d: ", __FILE__, __LINE__);                                         \
    fprintf(stderr, __VA_ARGS__);                                                                  \
    fputc('\n', stderr);                                                                           \
    hr_t_cur_failed = 1;                                                                           \
    return;                                                                                        \
  } while (0)

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) HR_FAIL_("%s", #cond);                                                            \
  } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
  do {                                                                                             \
    if (!(cond)) HR_FAIL_(__VA_ARGS__);                                                            \
  } while (0)

#define CHECK_OK(expr)                                                                             \
  do {                                                                                             \
    int rc_ = (expr);                                                                              \
    if (rc_ != 0) HR_FAIL_("%s returned %d (%s)", #expr, rc_, hr_err_name(rc_));                   \
  } while (0)

#define CHECK_RC(expr, want)                                                                       \
  do {                                                                                             \
    int rc_ = (expr), want_ = (want);                                                              \
    if (rc_ != want_)                                                                              \
      HR_FAIL_("%s returned %d (%s), want %d (%s)", #expr, rc_, hr_err_name(rc_), want_,           \
               hr_err_name(want_));                                                                \
  } while (0)

#define CHECK_EQ_U64(a, b)                                                                         \
  do {                                                                                             \
    uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);                                               \
    if (a_ != b_) HR_FAIL_("%s == %s: %" PRIu64 " != %" PRIu64, #a, #b, a_, b_);                   \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
  do {                                                                                             \
    long long a_ = (long long)(a), b_ = (long long)(b);                                            \
    if (a_ != b_) HR_FAIL_("%s == %s: %lld != %lld", #a, #b, a_, b_);                              \
  } while (0)

#define CHECK_NEAR(a, b, eps)                                                                      \
  do {                                                                                             \
    double a_ = (double)(a), b_ = (double)(b);                                                     \
    if (!(a_ - b_ <= (eps) && b_ - a_ <= (eps)))                                                   \
      HR_FAIL_("%s ~= %s: %.9g vs %.9g (eps %g)", #a, #b, a_, b_, (double)(eps));                  \
  } while (0)

#define CHECK_STR(a, b)                                                                            \
  do {                                                                                             \
    const char *a_ = (a), *b_ = (b);                                                               \
    if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                         \
      HR_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");      \
  } while (0)

#define CHECK_CONTAINS(hay, needle)                                                                \
  do {                                                                                             \
    const char *h_ = (hay), *n_ = (needle);                                                        \
    if (!h_ || !strstr(h_, n_)) HR_FAIL_("\"%s\" does not contain \"%s\"", h_ ? h_ : "", n_);      \
  } while (0)

/* Ends the current test as skipped, with a reason. */
#define SKIP(...)                                                                                  \
  do {                                                                                             \
    fprintf(stderr, "  SKIP: ");                                                                   \
    fprintf(stderr, __VA_ARGS__);                                                                  \
    fputc('\n', stderr);                                                                           \
    hr_t_cur_skipped = 1;                                                                          \
    return;                                                                                        \
  } while (0)

#define HR_RUN(fn)                                                                                 \
  do {                                                                                             \
    hr_t_cur_failed = hr_t_cur_skipped = 0;                                                        \
    fprintf(stderr, "[ RUN  ] %s\n", #fn);                                                         \
    fn();                                                                                          \
    if (hr_t_cur_failed)                                                                           \
      hr_t_failed++, fprintf(stderr, "[ FAIL ] %s\n", #fn);                                        \
    else if (hr_t_cur_skipped)                                                                     \
      hr_t_skipped++, fprintf(stderr, "[ SKIP ] %s\n", #fn);                                       \
    else                                                                                           \
      hr_t_passed++, fprintf(stderr, "[  OK  ] %s\n", #fn);                                        \
  } while (0)

static inline int hr_test_finish(const char *suite) {
  printf("%s: %d passed, %d failed, %d skipped\n", suite, hr_t_passed, hr_t_failed, hr_t_skipped);
  if (hr_t_failed) return 1;
  return (hr_t_passed == 0 && hr_t_skipped > 0) ? 77 : 0;
}

/* Monotonic seconds, for the deadlines of waits on real processes: a test
 * waits for a condition until a deadline far past its usual time, and never
 * asserts on how long something took. */
static inline double hr_test_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline uint64_t hr_test_seed(void) {
  static uint64_t seed;
  if (!seed) {
    const char *s = getenv("HR_TEST_SEED");
    seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
    if (!seed) seed = 1;
    fprintf(stderr, "seed: HR_TEST_SEED=%" PRIu64 "\n", seed);
  }
  return seed;
}

/* xorshift64*: fast, good enough for test inputs, replayable from the seed. */
static inline uint64_t hr_test_rand(uint64_t *state) {
  uint64_t x = *state;
  x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
  *state = x;
  return x * 0x2545F4914F6CDD1DULL;
}

/* A path under the source tree (fixtures) or the build tree. */
static inline const char *hr_test_src(char *buf, size_t n, const char *rel) {
  const char *dir = getenv("HR_SOURCE_DIR");
  snprintf(buf, n, "%s/%s", dir ? dir : ".", rel);
  return buf;
}

#endif /* HR_TEST_H */
