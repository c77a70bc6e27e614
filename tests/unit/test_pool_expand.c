/* Expandable segments (src/pool/expand.c), on the sim backend: reuse of
 * mapped memory before growth, growth at the lowest address, the growth
 * step, extents and the last granule of a large block, compaction at the
 * mark (which extents, across streams), release, the out-of-memory path,
 * and the PyTorch-like model (pages, its best fit, no unmapping until
 * release). Each expected count of device calls is worked out in the
 * comment above it; hr_pool_check runs after the interesting steps. */
#include "pool_sim.h"

/* Counts segments, mapped bytes, allocated bytes and the largest
 * reservation. */
static int count_segs(const hr_segment_info_t *s, const hr_block_info_t *b, size_t n, void *arg) {
  uint64_t *acc = arg;
  acc[0]++;
  acc[1] += s->mapped;
  for (size_t i = 0; i < n; i++) acc[2] += b[i].allocated ? b[i].size : 0;
  if (s->size > acc[3]) acc[3] = s->size;
  return 0;
}

/* Mapped memory is reused before the segment grows; growth starts at the
 * lowest room, in the free block before the unmapped space; a free maps
 * and unmaps nothing. */
static void test_reuse_before_growth(void) {
  CHECK_OK(mk("default", 4 * GiB));
  void *a = A(30 * MiB, NULL); /* 15 granules, one extent */
  CHECK(a);
  hr_pool_stats_t s = stats();
  CHECK_EQ_U64(s.num_device_alloc, 1);
  CHECK_EQ_U64(s.reserved_bytes.current, 30 * MiB);
  CHECK_OK(hr_pool_free(pool, a, NULL));
  s = stats();
  CHECK_EQ_U64(s.num_device_free, 0);
  CHECK_EQ_U64(s.reserved_bytes.current, 30 * MiB);
  void *b = A(20 * MiB, NULL);
  CHECK(b == a);
  CHECK_EQ_U64(stats().num_device_alloc, 1);
  /* 30 MiB fits in no free block: the free 10 MiB after b and 20 MiB
   * mapped after it (one call) hold it. */
  void *c = A(30 * MiB, NULL);
  CHECK(c == at(a, 20));
  s = stats();
  CHECK_EQ_U64(s.num_device_alloc, 2);
  CHECK_EQ_U64(s.reserved_bytes.current, 50 * MiB);
  CHECK_OK(hr_pool_check(pool));
  uint64_t acc[4] = {0};
  CHECK_OK(hr_pool_segments(pool, count_segs, acc));
  CHECK_EQ_U64(acc[0], 1);
  CHECK_EQ_U64(acc[1], 50 * MiB);
  CHECK_EQ_U64(acc[2], 50 * MiB);
  CHECK_OK(hr_pool_free(pool, b, NULL));
  CHECK_OK(hr_pool_free(pool, c, NULL));
  CHECK_OK(hr_pool_release_cached(pool));
  s = stats();
  CHECK_EQ_U64(s.reserved_bytes.current, 0);
  CHECK_EQ_U64(s.segment.current, 0);
  CHECK_EQ_U64(s.num_device_free, 2);
  CHECK_OK(hr_pool_check(pool));
  rm();
}

/* Before reserved memory would pass the mark (the most ever allocated,
 * this request included, plus one growth step of 20 MiB), growth unmaps
 * free extents elsewhere, whole: the largest first when no single one is
 * enough. The hole it leaves is where the next growth goes. */
static void test_compaction_at_mark(void) {
  CHECK_OK(mk("default", 4 * GiB));
  void *a = A(100 * MiB, NULL); /* 50 granules: extents of 16, 16, 16 and 2 */
  CHECK(a);
  CHECK_EQ_U64(stats().num_device_alloc, 4);
  /* 4 MiB grows by the step: 20 MiB in one call (mark 104 + 20 MiB). */
  void *b = A(4 * MiB, NULL);
  CHECK(b == at(a, 100));
  hr_pool_stats_t s = stats();
  CHECK_EQ_U64(s.num_device_alloc, 5);
  CHECK_EQ_U64(s.reserved_bytes.current, 120 * MiB);
  CHECK_OK(hr_pool_free(pool, a, NULL));
  /* 150 MiB: the free 16 MiB after b and 134 MiB more. The mark is
   * 154 + 20 MiB, so 80 MiB must go first: no one extent of a's holds it,
   * three of 16 granules do (three calls); then 67 granules as 16, 16,
   * 16, 16 and 3 (five calls). */
  void *c = A(150 * MiB, NULL);
  CHECK(c == at(a, 104));
  s = stats();
  CHECK_EQ_U64(s.num_device_free, 3);
  CHECK_EQ_U64(s.num_device_alloc, 10);
  CHECK_EQ_U64(s.reserved_bytes.current, 158 * MiB);
  CHECK((uint64_t)s.reserved_bytes.current <= (uint64_t)s.allocated_bytes.peak + 20 * MiB);
  CHECK_OK(hr_pool_check(pool));
  /* The lowest room is the hole compaction left: 90 MiB goes there, in 16,
   * 16 and 13 granules, without unmapping anything (under the mark). */
  void *d = A(90 * MiB, NULL);
  CHECK(d == a);
  s = stats();
  CHECK_EQ_U64(s.num_device_alloc, 13);
  CHECK_EQ_U64(s.num_device_free, 3);
  CHECK_OK(hr_pool_check(pool));
  rm();
}

/* When one free extent is enough, compaction takes the smallest such one,
 * whichever stream's segment holds it: memory moves between streams. */
static void test_compaction_smallest_across_streams(void) {
  CHECK_OK(mk("default", 4 * GiB));
  void *s2 = (void *)0x20;
  void *a = A(20 * MiB, NULL), *b = A(20 * MiB, NULL); /* one extent each */
  void *c = A(64 * MiB, NULL), *d = A(20 * MiB, NULL); /* c: two extents of 16 */
  CHECK(a && b && c && d);
  CHECK_EQ_U64(stats().num_device_alloc, 5);
  CHECK_OK(hr_pool_free(pool, a, NULL));
  CHECK_OK(hr_pool_free(pool, c, NULL));
  /* A new stream gets a segment of its own. 30 MiB there would take
   * reserved to 154 MiB, past the mark of 124 + 20: 10 MiB must go, and
   * a's 20 MiB extent is the smallest that holds it. */
  void *e = A(30 * MiB, s2);
  CHECK(e);
  hr_pool_stats_t s = stats();
  CHECK_EQ_U64(s.num_device_free, 1);
  CHECK_EQ_U64(s.reserved_bytes.current, 134 * MiB);
  CHECK_EQ_U64(s.segment.current, 2);
  /* c's extents are still mapped: 40 MiB on the first stream costs no call. */
  void *f = A(40 * MiB, NULL);
  CHECK(f == c);
  CHECK_EQ_U64(stats().num_device_alloc, 6);
  CHECK_OK(hr_pool_check(pool));
  rm();
}

/* A block of 16 granules or more that ends inside a granule gets that
 * granule as an extent of its own: the block after it shares it, and once
 * the large block is freed its other extents go back whole. */
static void test_last_granule_extent(void) {
  CHECK_OK(mk("default", 4 * GiB));
  void *a = A(40 * MiB + 512, NULL); /* 21 granules: 16, 4 and 1 */
  CHECK(a);
  CHECK_EQ_U64(stats().num_device_alloc, 3);
  /* b shares a's last granule and maps one step of 10 more (one call). */
  void *b = A(4 * MiB, NULL);
  CHECK(b == (void *)((uintptr_t)a + 40 * MiB + 512));
  hr_pool_stats_t s = stats();
  CHECK_EQ_U64(s.num_device_alloc, 4);
  CHECK_EQ_U64(s.reserved_bytes.current, 62 * MiB);
  CHECK_OK(hr_pool_free(pool, a, NULL));
  /* a's 16 and 4 granules go; the shared one and b's step stay. */
  CHECK_OK(hr_pool_release_cached(pool));
  s = stats();
  CHECK_EQ_U64(s.num_device_free, 2);
  CHECK_EQ_U64(s.reserved_bytes.current, 22 * MiB);
  CHECK_OK(hr_pool_check(pool));
  CHECK_OK(hr_pool_free(pool, b, NULL));
  CHECK_OK(hr_pool_release_cached(pool));
  s = stats();
  CHECK_EQ_U64(s.reserved_bytes.current, 0);
  CHECK_EQ_U64(s.num_device_free, s.num_device_alloc);
  rm();
}

/* Growth maps a step at least: 1/64 of the most memory ever allocated,
 * 20 MiB (PyTorch's segment for 1-10 MiB requests) to 40 MiB. Four 5 MiB
 * blocks cost one call; the step never passes the pool's limit. */
static void test_growth_step(void) {
  CHECK_OK(mk("default", 4 * GiB));
  void *p[5];
  for (int i = 0; i < 5; i++) {
    p[i] = A(5 * MiB, NULL);
    CHECK(p[i]);
  }
  hr_pool_stats_t s = stats();
  CHECK_EQ_U64(s.num_device_alloc, 2);
  CHECK_EQ_U64(s.reserved_bytes.current, 40 * MiB);
  CHECK(p[3] == at(p[0], 15));
  CHECK_OK(hr_pool_check(pool));
  rm();
  /* Under a 12 MiB limit the first step stops at the limit. */
  CHECK_OK(mk("default", 12 * MiB));
  void *a = A(5 * MiB, NULL), *b = A(5 * MiB, NULL);
  CHECK(a && b);
  s = stats();
  CHECK_EQ_U64(s.num_device_alloc, 1);
  CHECK_EQ_U64(s.reserved_bytes.current, 12 * MiB);
  CHECK_OK(hr_pool_check(pool));
  rm();
  /* After 2 GiB (64 calls of 16 granules) the step is 2052 MiB / 64:
   * 4 MiB maps 34 MiB (16 and 1 granules), and seven more fit in it. */
  CHECK_OK(mk("default", 8 * GiB));
  CHECK(A(2 * GiB, NULL));
  CHECK(A(4 * MiB, NULL));
  s = stats();
  CHECK_EQ_U64(s.num_device_alloc, 66);
  CHECK_EQ_U64(s.reserved_bytes.current, 2 * GiB + 34 * MiB);
  for (int i = 0; i < 7; i++) CHECK(A(4 * MiB, NULL));
  CHECK_EQ_U64(stats().num_device_alloc, 66);
  rm();
  /* From 2.5 GiB on the step stays at 40 MiB. */
  CHECK_OK(mk("default", 16 * GiB));
  CHECK(A(4 * GiB, NULL));
  CHECK(A(4 * MiB, NULL));
  CHECK_EQ_U64(stats().reserved_bytes.current, 4 * GiB + 40 * MiB);
  CHECK_OK(hr_pool_check(pool));
  rm();
}

/* At the pool's limit, compaction makes room from free extents; when none
 * is left the allocation fails with the pool unchanged, and succeeds
 * again once a block is freed. */
static void test_limit(void) {
  CHECK_OK(mk("default", 100 * MiB));
  void *a = A(60 * MiB, NULL), *b = A(30 * MiB, NULL);
  CHECK(a && b);
  CHECK_OK(hr_pool_free(pool, a, NULL));
  /* 70 MiB: a's two extents (32 and 28 MiB) go, then 70 MiB is mapped. */
  void *c = A(70 * MiB, NULL);
  CHECK(c == at(b, 30));
  hr_pool_stats_t s = stats();
  CHECK_EQ_U64(s.reserved_bytes.current, 100 * MiB);
  CHECK_EQ_U64(s.num_device_free, 2);
  void *d = NULL;
  CHECK_RC(hr_pool_alloc(pool, 10 * MiB, NULL, &d), HR_ENOMEM);
  s = stats();
  CHECK_EQ_U64(s.num_ooms, 1);
  CHECK_EQ_U64(s.reserved_bytes.current, 100 * MiB);
  CHECK_EQ_U64(s.allocated_bytes.current, 100 * MiB);
  CHECK_OK(hr_pool_check(pool));
  CHECK_OK(hr_pool_free(pool, b, NULL));
  d = A(10 * MiB, NULL);
  CHECK(d == b); /* b's mapped memory, no call */
  CHECK_EQ_U64(stats().num_device_free, 2);
  CHECK_OK(hr_pool_check(pool));
  rm();
}

/* PyTorch's expandable segments: 20 MiB pages in the large pool and 2 MiB
 * in the small one, one call per page; a reservation of 1 1/8 of the
 * device; nothing unmapped until the cache is released, then whole pages
 * of free blocks, one call each. */
static void test_pytorch_pages(void) {
  CHECK_OK(mk("pytorch,expandable_segments:True", 4 * GiB));
  void *a = A(30 * MiB, NULL);
  CHECK(a);
  hr_pool_stats_t s = stats();
  CHECK_EQ_U64(s.num_device_alloc, 2);
  CHECK_EQ_U64(s.reserved_bytes.current, 40 * MiB);
  uint64_t acc[4] = {0};
  CHECK_OK(hr_pool_segments(pool, count_segs, acc));
  CHECK_EQ_U64(acc[3], 231 * 20 * MiB); /* 4.5 GiB rounded up to pages */
  CHECK_OK(hr_pool_free(pool, a, NULL));
  CHECK_EQ_U64(stats().num_device_free, 0);
  void *b = A(30 * MiB, NULL);
  CHECK(b == a);
  void *c = A(50 * MiB, NULL); /* the free 10 MiB and two more pages */
  CHECK(c == at(a, 30));
  void *t = A(1000, NULL); /* small pool: one 2 MiB page */
  CHECK(t);
  s = stats();
  CHECK_EQ_U64(s.num_device_alloc, 5);
  CHECK_EQ_U64(s.reserved_bytes.current, 82 * MiB);
  CHECK_OK(hr_pool_release_cached(pool));
  CHECK_EQ_U64(stats().num_device_free, 0); /* every page holds a live block */
  CHECK_OK(hr_pool_free(pool, b, NULL));
  CHECK_OK(hr_pool_release_cached(pool)); /* the first page alone lies inside b */
  s = stats();
  CHECK_EQ_U64(s.num_device_free, 1);
  CHECK_EQ_U64(s.reserved_bytes.current, 62 * MiB);
  CHECK_OK(hr_pool_check(pool));
  CHECK_OK(hr_pool_free(pool, c, NULL));
  CHECK_OK(hr_pool_free(pool, t, NULL));
  CHECK_OK(hr_pool_release_cached(pool));
  s = stats();
  CHECK_EQ_U64(s.num_device_free, 5);
  CHECK_EQ_U64(s.reserved_bytes.current, 0);
  CHECK_EQ_U64(s.segment.current, 0);
  rm();
}

/* PyTorch's best fit in expandable segments counts a free block that
 * borders unmapped space as the size it can grow to: a smaller block
 * there loses to a larger one elsewhere. */
static void test_pytorch_best_fit(void) {
  CHECK_OK(mk("pytorch,expandable_segments:True", 4 * GiB));
  void *a1 = A(40 * MiB, NULL), *a2 = A(30 * MiB, NULL), *a3 = A(20 * MiB, NULL);
  CHECK(a1 && a2 && a3);
  CHECK(a3 == at(a1, 70)); /* free after it: 10 MiB, then unmapped */
  CHECK_OK(hr_pool_free(pool, a1, NULL));
  void *x = A(8 * MiB, NULL);
  CHECK(x == a1);
  CHECK_OK(hr_pool_check(pool));
  rm();
}

int main(void) {
  HR_RUN(test_reuse_before_growth);
  HR_RUN(test_compaction_at_mark);
  HR_RUN(test_compaction_smallest_across_streams);
  HR_RUN(test_last_granule_extent);
  HR_RUN(test_growth_step);
  HR_RUN(test_limit);
  HR_RUN(test_pytorch_pages);
  HR_RUN(test_pytorch_best_fit);
  return hr_test_finish("pool_expand");
}
