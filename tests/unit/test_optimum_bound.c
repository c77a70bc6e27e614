/* The exact optimum under attack: a workflow file of under a kilobyte can
 * name 12 whole assets and 10^5 steps, 3^12 subsets a step for the exact
 * search, which ran for minutes. The search is bounded by
 * HR_OPTIMUM_MAX_WORK; past it the reference is the proven lower bound,
 * said so through *exact, and comes back fast. */
#include "hr_test.h"

#include <time.h>

/* CPU seconds of this process: a loaded machine does not stretch them. */
static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 12 whole assets of about 1 GB, a budget of 11.5 GB, and a block of 12
 * steps (one asset each, in a scrambled order) repeated `repeat` times. */
static int make(int repeat, hr_workflow_t **w, char *err, size_t errlen) {
  char json[2048];
  int n = snprintf(json, sizeof json, "{\"budget_bytes\": 11500000000, \"assets\": [");
  for (int i = 0; i < 12; i++)
    n += snprintf(json + n, sizeof json - (size_t)n, "%s{\"name\": \"a%d\", \"bytes\": %d}",
                  i ? ", " : "", i, 1000000000 + i * 1000);
  n += snprintf(json + n, sizeof json - (size_t)n, "], \"steps\": [{\"repeat\": %d, \"steps\": [",
                repeat);
  static const int order[12] = {0, 5, 2, 7, 11, 3, 9, 1, 6, 10, 4, 8};
  for (int i = 0; i < 12; i++)
    n += snprintf(json + n, sizeof json - (size_t)n, "%s{\"use\": [\"a%d\"]}", i ? ", " : "",
                  order[i]);
  n += snprintf(json + n, sizeof json - (size_t)n, "]}]}");
  return hr_workflow_parse(json, (size_t)n, "attack.json", w, err, errlen);
}

static void check(int repeat, bool want_exact) {
  hr_workflow_t *w = NULL;
  char err[512] = "";
  CHECK_MSG(make(repeat, &w, err, sizeof err) == 0, "%s", err);
  uint64_t ref = 0;
  bool exact = !want_exact;
  double t0 = now_s();
  int rc = hr_workflow_reference(w, 0, &ref, &exact);
  double took = now_s() - t0;
  hr_workflow_destroy(w);
  CHECK_OK(rc);
  CHECK_EQ_INT(exact, want_exact);
  CHECK(ref > 0);
  /* The bound is about a second of work in a release build; sanitizers get
   * generous room, the unbounded search took minutes (of CPU). */
  CHECK_MSG(took < 20.0, "%d repeats: %.2f s", repeat, took);
  printf("  %d steps: %s in %.3f s\n", repeat * 12, exact ? "exact" : "lower bound", took);
}

/* 83,328 steps: steps x states alone is past the bound. */
static void test_many_steps(void) {
  check(6944, false);
}

/* 4,800 steps: steps x states is under the bound, the subsets tried are
 * not; the search stops part way. */
static void test_bound_reached_mid_search(void) {
  check(400, false);
}

/* Small enough: still exact, and never below the lower bound. */
static void test_small_still_exact(void) {
  check(2, true);
}

int main(void) {
  HR_RUN(test_many_steps);
  HR_RUN(test_bound_reached_mid_search);
  HR_RUN(test_small_still_exact);
  return hr_test_finish("test_optimum_bound");
}
