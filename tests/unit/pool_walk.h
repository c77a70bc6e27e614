/* What the pool's random walks share (test_pool_stress on sim and host,
 * test_pool_cuda on a device): the sizes they draw and the check that a
 * walk gave everything back. */
#ifndef HR_TEST_POOL_WALK_H
#define HR_TEST_POOL_WALK_H

#include "hr_test.h"

#include <headroom/headroom.h>

/* A request size for the pool's random walks, in PyTorch's mix: 60 % in the
 * small pool (up to 1 MiB), 30 % from 1 to 10 MiB, 10 % from 10 to 64 MiB;
 * folded under `max`. */
static inline uint64_t hr_test_pool_size(uint64_t *rng, uint64_t max) {
  const uint64_t mib = 1ull << 20;
  uint64_t r = hr_test_rand(rng), s;
  if (r % 10 < 6)
    s = 1 + (r >> 16) % mib;
  else if (r % 10 < 9)
    s = mib + (r >> 16) % (9 * mib);
  else
    s = 10 * mib + (r >> 16) % (54 * mib);
  return s > max ? 1 + s % max : s;
}

/* After a walk freed every block: the pool passes its check and, once its
 * cache is released, holds nothing, gave back every device allocation,
 * and counted `ooms` out-of-memory failures. The caller checks hr_t_cur_failed. */
static inline void hr_test_pool_drained(hr_pool_t *p, uint64_t ooms) {
  CHECK_OK(hr_pool_check(p));
  CHECK_OK(hr_pool_release_cached(p));
  hr_pool_stats_t st = {.size = sizeof st};
  CHECK_OK(hr_pool_stats(p, &st));
  CHECK_EQ_U64(st.reserved_bytes.current, 0);
  CHECK_EQ_U64(st.segment.current, 0);
  CHECK_EQ_U64(st.allocated_bytes.current, 0);
  CHECK_EQ_U64(st.active_bytes.current, 0);
  CHECK_EQ_U64(st.num_ooms, ooms);
  CHECK_EQ_U64(st.num_device_alloc, st.num_device_free);
}

#endif /* HR_TEST_POOL_WALK_H */
