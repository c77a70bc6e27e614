/* What the pool's rule tests share (test_pool, test_pool_expand): one pool
 * at a time on a fresh sim backend, built from a PYTORCH_CUDA_ALLOC_CONF
 * string, with short helpers to allocate and read its statistics. */
#ifndef HR_TEST_POOL_SIM_H
#define HR_TEST_POOL_SIM_H

#include "hr_test.h"
#include "backend/backend.h"
#include "pool/pool_internal.h"

#define MiB (1ull << 20)
#define GiB (1ull << 30)

static hr_backend_t *be;
static hr_pool_t *pool;

/* A pool on a fresh sim backend; `conf` in PYTORCH_CUDA_ALLOC_CONF syntax. */
static inline int mk(const char *conf, uint64_t capacity) {
  hr_pool_config_t c;
  char err[256];
  int rc = hr_pool_config_parse(conf, &c, err, sizeof err);
  if (rc) {
    fprintf(stderr, "config: %s\n", err);
    return rc;
  }
  rc = hr_backend_create("sim", 0, capacity, &be);
  if (!rc) rc = hr_pool_create(&c, be, 0, &pool);
  return rc;
}

static inline void rm(void) {
  hr_pool_destroy(pool);
  hr_backend_destroy(be);
  pool = NULL;
  be = NULL;
}

static inline hr_pool_stats_t stats(void) {
  hr_pool_stats_t s = {.size = sizeof s};
  hr_pool_stats(pool, &s);
  return s;
}

/* Allocates on `stream`; NULL on any failure. */
static inline void *A(uint64_t size, void *stream) {
  void *p = NULL;
  int rc = hr_pool_alloc(pool, size, stream, &p);
  return rc ? NULL : p;
}

/* The address of p plus `mib` MiB, for comparing placements. */
static inline void *at(void *p, uint64_t mib) {
  return (void *)((uintptr_t)p + mib * MiB);
}

#endif /* HR_TEST_POOL_SIM_H */
