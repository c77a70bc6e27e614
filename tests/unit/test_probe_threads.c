/* hr_snapshot_take from several threads at once: the NVML library cache is
 * the probe's only shared state, so threads race to load and initialise the
 * same (stand-in) library and must all get the same complete snapshot. Run
 * under the thread sanitizer (label "threads"). */
#include "hr_test.h"

#include <pthread.h>

#define N_THREADS 4
#define ROUNDS    20

static char lib[1024], root[1024];

typedef struct result {
  int failures;
  char why[512];
} result_t;

static void *worker(void *arg) {
  result_t *r = arg;
  for (int i = 0; i < ROUNDS; i++) {
    hr_probe_options_t o = {.root = root, .nvml_path = lib};
    hr_snapshot_t *s = NULL;
    int rc = hr_snapshot_take(&o, &s);
    if (rc) {
      r->failures++;
      snprintf(r->why, sizeof r->why, "hr_snapshot_take: %s", hr_err_name(rc));
      continue;
    }
    if (s->gpu_state != HR_PROBE_OK || s->n_gpus != 2 || s->n_gpu_procs != 2 || s->n_procs != 3 ||
        s->gpu_procs[0].local_pid != 100) {
      r->failures++;
      snprintf(r->why, sizeof r->why, "gpu state %d (%s), %zu gpus, %zu gpu procs, %zu procs",
               s->gpu_state, s->gpu_message, s->n_gpus, s->n_gpu_procs, s->n_procs);
    }
    hr_snapshot_free(s);
  }
  return NULL;
}

static void test_concurrent_snapshots(void) {
  const char *bin = getenv("HR_BINARY_DIR");
  if (!bin) SKIP("HR_BINARY_DIR is not set (run under CTest)");
  snprintf(lib, sizeof lib, "%s/helpers/libfake-nvml-v3.so", bin);
  hr_test_src(root, sizeof root, "tests/fixtures/probe/v2_limited");
  /* The stand-in reads its answers from the environment: set before the
   * threads start, never changed while they run. */
  setenv("FAKE_NVML_GPUS", "2", 1);
  setenv("FAKE_NVML_PROCS", "0:100:1024,1:200:2048", 1);
  pthread_t t[N_THREADS];
  result_t r[N_THREADS] = {{0}};
  for (int i = 0; i < N_THREADS; i++) CHECK(pthread_create(&t[i], NULL, worker, &r[i]) == 0);
  for (int i = 0; i < N_THREADS; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < N_THREADS; i++) CHECK_MSG(r[i].failures == 0, "thread %d: %s", i, r[i].why);
}

int main(void) {
  HR_RUN(test_concurrent_snapshots);
  return hr_test_finish("probe_threads");
}
