/* Threads on one pool: each thread allocates and frees on its own stream
 * under its own tag, hands some blocks to a neighbour to free, records
 * streams, reads statistics and releases the cache, while a reclaimer
 * frees blocks parked in a shared list when memory runs out. Run under
 * ThreadSanitizer (label "threads"); the end state must pass
 * hr_pool_check and hold nothing. */
#include "hr_test.h"

#include <pthread.h>

#define NTHREADS 4
#define OPS      50000
#define MiB      (1ull << 20)

static hr_pool_t *pool;

/* Blocks handed between threads, and parked ones for the reclaimer. */
static pthread_mutex_t box_lock = PTHREAD_MUTEX_INITIALIZER;
static void *box[NTHREADS][64];
static int nbox[NTHREADS];
static void *parked[256];
static int nparked;
static int reclaims;
static _Atomic int check_failed;

static int reclaim(hr_pool_t *p, uint64_t needed, uint64_t *freed, void *arg) {
  pthread_mutex_lock(&box_lock);
  reclaims++;
  while (nparked > 0) {
    hr_pool_free(p, parked[--nparked], NULL);
    *freed += MiB;
  }
  pthread_mutex_unlock(&box_lock);
  return 0;
}

static void *worker(void *arg) {
  int id = (int)(intptr_t)arg;
  void *stream = (void *)(intptr_t)(0x100 * (id + 1));
  char tag[16];
  snprintf(tag, sizeof tag, "model-%d", id);
  hr_pool_set_tag(tag);
  uint64_t rng = hr_test_seed() + (uint64_t)id * 7919;
  void *mine[32] = {0};
  for (int i = 0; i < OPS; i++) {
    uint64_t r = hr_test_rand(&rng);
    int k = (int)((r >> 8) % 32);
    if (!mine[k]) {
      uint64_t size = r % 3 == 0 ? 1 + (r >> 20) % (4 * MiB) : 1 + (r >> 20) % 65536;
      if (hr_pool_alloc(pool, size, stream, &mine[k])) mine[k] = NULL;
    } else if (r % 7 == 0) {
      /* Hand it over: the neighbour frees it on its own stream. */
      pthread_mutex_lock(&box_lock);
      int to = (id + 1) % NTHREADS;
      if (nbox[to] < 64) box[to][nbox[to]++] = mine[k], mine[k] = NULL;
      pthread_mutex_unlock(&box_lock);
    } else if (r % 11 == 0) {
      pthread_mutex_lock(&box_lock);
      if (nparked < 256) parked[nparked++] = mine[k], mine[k] = NULL;
      pthread_mutex_unlock(&box_lock);
    } else {
      if (r % 5 == 0) hr_pool_record_stream(pool, mine[k], (void *)0x999);
      hr_pool_free(pool, mine[k], stream);
      mine[k] = NULL;
    }
    if (i % 64 == 0) {
      pthread_mutex_lock(&box_lock);
      void *got[64];
      int n = nbox[id];
      memcpy(got, box[id], (size_t)n * sizeof *got);
      nbox[id] = 0;
      pthread_mutex_unlock(&box_lock);
      for (int j = 0; j < n; j++) hr_pool_free(pool, got[j], stream);
    }
    if (i % 1000 == 0) {
      hr_pool_stats_t st = {.size = sizeof st};
      hr_pool_stats(pool, &st);
      if (id == 0) hr_pool_release_cached(pool);
      if (id == 1 && hr_pool_check(pool)) check_failed = 1;
    }
  }
  for (int k = 0; k < 32; k++)
    if (mine[k]) hr_pool_free(pool, mine[k], stream);
  hr_pool_set_tag(NULL);
  return NULL;
}

static void test_threads(void) {
  hr_backend_t *be;
  hr_pool_config_t c;
  pthread_t t[NTHREADS];
  const char *confs[] = {"default", "pytorch"};
  for (int ci = 0; ci < 2; ci++) {
    CHECK_OK(hr_pool_config_parse(confs[ci], &c, NULL, 0));
    CHECK_OK(hr_backend_create("sim", 0, 256 * MiB, &be));
    CHECK_OK(hr_pool_create(&c, be, 0, &pool));
    CHECK_OK(hr_pool_add_reclaimer(pool, reclaim, NULL));
    for (int i = 0; i < NTHREADS; i++)
      CHECK(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < NTHREADS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < NTHREADS; i++)
      for (int j = 0; j < nbox[i]; j++) CHECK_OK(hr_pool_free(pool, box[i][j], NULL));
    while (nparked > 0) CHECK_OK(hr_pool_free(pool, parked[--nparked], NULL));
    memset(nbox, 0, sizeof nbox);
    CHECK_MSG(!check_failed, "hr_pool_check failed while the threads ran");
    CHECK_OK(hr_pool_check(pool));
    CHECK_OK(hr_pool_release_cached(pool));
    hr_pool_stats_t st = {.size = sizeof st};
    CHECK_OK(hr_pool_stats(pool, &st));
    CHECK_EQ_U64(st.allocated_bytes.current, 0);
    CHECK_EQ_U64(st.reserved_bytes.current, 0);
    CHECK(st.allocation.total > 10000);
    fprintf(stderr, "  %s: %" PRIu64 " allocations, %d reclaimer calls, %" PRIu64 " OOMs\n",
            confs[ci], st.allocation.total, reclaims, st.num_ooms);
    hr_pool_destroy(pool);
    hr_backend_destroy(be);
  }
}

int main(void) {
  hr_test_seed();
  HR_RUN(test_threads);
  return hr_test_finish("pool_threads");
}
