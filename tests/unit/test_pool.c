/* The pool's rules, one test each, on the sim backend: rounding, pool
 * choice, split, coalesce, max_split_size, GC, streams and events, the
 * memory fraction, the reclaimer order, statistics, tags and the
 * out-of-memory diagnosis (expandable segments: test_pool_expand.c). hr_pool_check runs
 * after the interesting steps. */
#include "pool_sim.h"

static char logbuf[4096];
static void log_capture(hr_log_level_t lvl, const char *msg, void *arg) {
  hr__strlcpy(logbuf, msg, sizeof logbuf);
}

static void test_rounding(void) {
  hr_pool_config_t c;
  hr_pool_config_pytorch(&c);
  CHECK_EQ_U64(hr__round_size(&c, 1), 512);
  CHECK_EQ_U64(hr__round_size(&c, 512), 512);
  CHECK_EQ_U64(hr__round_size(&c, 513), 1024);
  CHECK_EQ_U64(hr__round_size(&c, 3 * MiB + 1), 3 * MiB + 512);
  /* Power-of-two divisions: 4 per power of two above 512*4. */
  for (int i = 0; i < HR_ROUNDUP_INTERVALS; i++) c.roundup_divisions[i] = 4;
  CHECK_EQ_U64(hr__round_size(&c, 1200), 1536); /* 1200 < 512*4: plain 512 rounding */
  CHECK_EQ_U64(hr__round_size(&c, 5000), 5120); /* 4096 + 1024 */
  CHECK_EQ_U64(hr__round_size(&c, 4096), 4096);
  CHECK_EQ_U64(hr__round_size(&c, 65 * MiB), 80 * MiB);
  CHECK_EQ_U64(hr__round_size(&c, 96 * MiB), 96 * MiB);
  /* Stats count the rounded size as allocated, the asked one as requested. */
  CHECK_OK(mk("pytorch", 4 * GiB));
  void *p = A(1000, NULL);
  CHECK(p);
  hr_pool_stats_t s = stats();
  CHECK_EQ_U64(s.allocated_bytes.current, 1024);
  CHECK_EQ_U64(s.requested_bytes.current, 1000);
  CHECK_OK(hr_pool_free(pool, p, NULL));
  CHECK_OK(hr_pool_check(pool));
  rm();
}

static uint64_t seg_of(void *ptr) {
  hr__block_t *b = hr__table_find_locked(pool, (uint64_t)(uintptr_t)ptr);
  return b ? b->seg->size : 0;
}

static void test_pool_choice(void) {
  CHECK_OK(mk("pytorch", 8 * GiB));
  void *a = A(MiB, NULL), *b = A(MiB + 1, NULL), *c = A(10 * MiB - 512, NULL),
       *d = A(10 * MiB, NULL), *e = A(33 * MiB + 7, NULL);
  CHECK(a && b && c && d && e);
  CHECK_EQ_U64(seg_of(a), 2 * MiB);  /* small pool */
  CHECK_EQ_U64(seg_of(b), 20 * MiB); /* 1-10 MiB: 20 MiB segments */
  /* c fits in the rest of b's segment (best fit over a new segment). */
  CHECK_EQ_U64((uint64_t)(uintptr_t)c, (uint64_t)(uintptr_t)b + MiB + 512);
  CHECK_EQ_U64(seg_of(d), 10 * MiB); /* from 10 MiB: own size */
  CHECK_EQ_U64(seg_of(e), 34 * MiB); /* rounded to 2 MiB */
  hr_pool_stats_t s = stats();
  CHECK_EQ_U64(s.reserved_bytes.current, (2 + 20 + 10 + 34) * MiB);
  CHECK_EQ_U64(s.segment.current, 4);
  /* A second small block comes from the same small segment. */
  void *f = A(4096, NULL);
  CHECK(f);
  CHECK_EQ_U64((uint64_t)(uintptr_t)f, (uint64_t)(uintptr_t)a + MiB);
  CHECK_OK(hr_pool_check(pool));
  rm();
}

static void test_split(void) {
  CHECK_OK(mk("pytorch", 8 * GiB));
  /* Large pool: a 20 MiB segment split for 2 MiB leaves 18 MiB (> 1 MiB). */
  void *a = A(2 * MiB, NULL);
  hr_pool_stats_t s = stats();
  CHECK_EQ_U64(s.inactive_split_bytes.current, 18 * MiB);
  CHECK_EQ_U64(s.inactive_split.current, 1);
  /* 19.5 MiB of 20: the rest (0.5 MiB) is not over 1 MiB, so no split. */
  void *b = A(19 * MiB + 512 * 1024, NULL);
  CHECK(a && b);
  CHECK(seg_of(b) == 20 * MiB);
  s = stats();
  CHECK_EQ_U64(s.allocated_bytes.current, 2 * MiB + 20 * MiB);
  /* Small pool: rest of 512 bytes is enough to split. */
  void *c = A(2 * MiB - 1024, NULL);
  (void)c;
  void *d = A(MiB - 512, NULL), *e = A(512, NULL);
  CHECK(d && e && seg_of(d) == 2 * MiB);
  CHECK_EQ_U64((uint64_t)(uintptr_t)e, (uint64_t)(uintptr_t)d + MiB - 512);
  CHECK_OK(hr_pool_check(pool));
  rm();
}

static void test_coalesce(void) {
  CHECK_OK(mk("pytorch", 8 * GiB));
  void *a = A(4 * MiB, NULL), *b = A(4 * MiB, NULL), *c = A(4 * MiB, NULL);
  CHECK(a && b && c);
  CHECK_OK(hr_pool_free(pool, a, NULL));
  CHECK_OK(hr_pool_free(pool, c, NULL));
  CHECK_OK(hr_pool_check(pool));
  hr_pool_stats_t s = stats();
  CHECK_EQ_U64(s.inactive_split.current, 2); /* a's hole and c+tail */
  CHECK_OK(hr_pool_free(pool, b, NULL));
  s = stats();
  CHECK_EQ_U64(s.inactive_split.current, 0); /* one whole free segment */
  CHECK_OK(hr_pool_check(pool));
  /* The whole 20 MiB serves one 20 MiB request without a new segment. */
  void *d = A(20 * MiB, NULL);
  CHECK(d == a);
  CHECK_EQ_U64(stats().segment.current, 1);
  CHECK_OK(hr_pool_release_cached(pool));
  CHECK_EQ_U64(stats().segment.current, 1);
  CHECK_OK(hr_pool_free(pool, d, NULL));
  CHECK_OK(hr_pool_release_cached(pool));
  CHECK_EQ_U64(stats().reserved_bytes.current, 0);
  CHECK_OK(hr_pool_check(pool));
  rm();
}

static void test_max_split_size(void) {
  CHECK_OK(mk("pytorch,max_split_size_mb:64", 8 * GiB));
  void *big = A(100 * MiB, NULL);
  CHECK(big);
  CHECK_OK(hr_pool_free(pool, big, NULL));
  /* An oversize cached block is not split for a smaller request. */
  void *small = A(30 * MiB, NULL);
  CHECK(small && small != big);
  CHECK_EQ_U64(stats().segment.current, 2);
  /* Nor given to a large request 20 MiB or more below its size. */
  void *l1 = A(80 * MiB, NULL);
  CHECK(l1 && l1 != big);
  /* But one close to its size takes it whole, unsplit. */
  void *l2 = A(90 * MiB, NULL);
  CHECK(l2 == big);
  CHECK_EQ_U64(stats().allocated_bytes.current, 30 * MiB + 80 * MiB + 100 * MiB);
  CHECK_OK(hr_pool_check(pool));
  rm();
  /* On a miss, oversize cached blocks are released before all cache. */
  CHECK_OK(mk("pytorch,max_split_size_mb:64", 300 * MiB));
  void *o = A(200 * MiB, NULL), *keep = A(2 * MiB, NULL), *kf = A(2 * MiB, NULL);
  CHECK(o && keep && kf);
  CHECK_OK(hr_pool_free(pool, o, NULL));
  CHECK_OK(hr_pool_free(pool, kf, NULL));
  void *n = A(150 * MiB, NULL); /* 200 MiB oversize is too big to hand out; release it */
  CHECK(n);
  hr_pool_stats_t s = stats();
  CHECK_EQ_U64(s.reserved_bytes.current, 20 * MiB + 150 * MiB);
  CHECK_EQ_U64(s.num_ooms, 0);
  CHECK_OK(hr_pool_check(pool));
  rm();
}

static int seg_addrs(const hr_segment_info_t *s, const hr_block_info_t *b, size_t n, void *arg) {
  uint64_t *a = arg;
  if (a[0] < 15) a[++a[0]] = s->addr;
  return 0;
}

static void test_gc(void) {
  /* Threshold 0.5 of 1 GiB: above 512 MiB reserved, a miss frees old
   * cached segments first. */
  CHECK_OK(mk("pytorch,garbage_collection_threshold:0.5,memory_fraction:0.99", GiB));
  void *p[6];
  for (int i = 0; i < 6; i++) p[i] = A(100 * MiB, NULL);
  for (int i = 0; i < 6; i++) CHECK(p[i]);
  for (int i = 0; i < 6; i++) CHECK_OK(hr_pool_free(pool, p[i], NULL));
  CHECK_EQ_U64(stats().reserved_bytes.current, 600 * MiB);
  /* Best fit takes the lowest addresses among equals, p[0..2]: those stay
   * young while p[3..5] age. */
  for (int k = 0; k < 10; k++) {
    void *q[3];
    for (int i = 0; i < 3; i++) CHECK((q[i] = A(100 * MiB, NULL)) == p[i]);
    for (int i = 0; i < 3; i++) CHECK_OK(hr_pool_free(pool, q[i], NULL));
  }
  void *x = A(150 * MiB, NULL); /* nothing cached fits: a miss, the GC runs */
  CHECK(x);
  hr_pool_stats_t s = stats();
  /* 600 MiB is 88 MiB over the threshold: one old segment went, and the
   * recently used ones stayed. */
  CHECK_EQ_U64(s.reserved_bytes.current, 650 * MiB);
  uint64_t segs[16] = {0};
  CHECK_OK(hr_pool_segments(pool, seg_addrs, segs));
  int old_left = 0, young_left = 0;
  for (int k = 1; k <= (int)segs[0]; k++)
    for (int i = 0; i < 6; i++)
      if (segs[k] == (uint64_t)(uintptr_t)p[i]) i < 3 ? young_left++ : old_left++;
  CHECK_EQ_INT(old_left, 2);
  CHECK_EQ_INT(young_left, 3);
  CHECK_EQ_U64(s.num_ooms, 0);
  CHECK_OK(hr_pool_check(pool));
  rm();
  /* PyTorch collects only with a memory fraction set: without one, the
   * same miss just adds a segment. Headroom's own configuration collects. */
  const char *confs[] = {"pytorch,garbage_collection_threshold:0.5",
                         "expandable_segments:False,garbage_collection_threshold:0.5"};
  const int64_t want[] = {750, 650};
  for (int c = 0; c < 2; c++) {
    CHECK_OK(mk(confs[c], GiB));
    for (int i = 0; i < 6; i++) p[i] = A(100 * MiB, NULL);
    for (int i = 0; i < 6; i++) CHECK_OK(hr_pool_free(pool, p[i], NULL));
    CHECK(A(150 * MiB, NULL));
    CHECK_EQ_U64(stats().reserved_bytes.current, want[c] * (int64_t)MiB);
    rm();
  }
}

static void test_streams_and_events(void) {
  void *s1 = (void *)0x1, *s2 = (void *)0x2;
  CHECK_OK(mk("pytorch", 8 * GiB));
  void *a = A(4 * MiB, s1);
  CHECK(a);
  CHECK_OK(hr_pool_free(pool, a, s1));
  /* Reused by its own stream at once; another stream gets new memory. */
  void *b = A(4 * MiB, s2);
  CHECK(b && b != a);
  void *c = A(4 * MiB, s1);
  CHECK(c == a);
  /* record_stream: the free waits for an event on s2. */
  hr__sim_hold_events(be, true);
  CHECK_OK(hr_pool_record_stream(pool, c, s2));
  CHECK_OK(hr_pool_free(pool, c, s1));
  hr_pool_stats_t s = stats();
  CHECK_EQ_U64(s.allocated_bytes.current, 4 * MiB); /* b only */
  CHECK_EQ_U64(s.active_bytes.current, 8 * MiB);    /* b, and c pending */
  CHECK_OK(hr_pool_check(pool));
  void *d = A(4 * MiB, s1);
  CHECK(d && d != c); /* still pending */
  hr__sim_complete_events(be);
  void *e = A(4 * MiB, s1);
  CHECK(e == c); /* the event completed: c is free for s1 */
  /* A free on another stream than the allocation's counts as a use. */
  CHECK_OK(hr_pool_free(pool, e, s2));
  CHECK_EQ_U64(stats().active_bytes.current, 12 * MiB);
  hr__sim_complete_events(be);
  hr__sim_hold_events(be, false);
  void *f = A(4 * MiB, s1);
  CHECK(f == c);
  CHECK_OK(hr_pool_check(pool));
  /* Double free and foreign pointers are refused. */
  CHECK_OK(hr_pool_free(pool, f, s1));
  CHECK_RC(hr_pool_free(pool, f, s1), HR_EINVAL);
  CHECK_RC(hr_pool_free(pool, (void *)0x1234, s1), HR_EINVAL);
  CHECK_OK(hr_pool_check(pool));
  rm();
}

static void test_fraction_limit(void) {
  CHECK_OK(mk("pytorch,memory_fraction:0.25", GiB));
  void *a = A(200 * MiB, NULL);
  CHECK(a);
  void *b = NULL;
  CHECK_RC(hr_pool_alloc(pool, 100 * MiB, NULL, &b), HR_ENOMEM); /* 300 > 256 MiB */
  hr_pool_stats_t s = stats();
  CHECK_EQ_U64(s.num_ooms, 1);
  CHECK_OK(hr_pool_check(pool));
  rm();
  /* reserve_mb keeps the last bytes of the device out of reach. */
  CHECK_OK(mk("pytorch,reserve_mb:900", GiB));
  CHECK(A(100 * MiB, NULL));
  CHECK_RC(hr_pool_alloc(pool, 30 * MiB, NULL, &b), HR_ENOMEM);
  rm();
}

static int order[8], norder;
static void *victims[8];
static int rec_a(hr_pool_t *p, uint64_t needed, uint64_t *freed, void *arg) {
  order[norder++] = 1;
  return 0; /* frees nothing */
}
static int rec_b(hr_pool_t *p, uint64_t needed, uint64_t *freed, void *arg) {
  order[norder++] = 2;
  /* The cache was released before this call: nothing cached is left. */
  hr_pool_stats_t s = {.size = sizeof s};
  hr_pool_stats(p, &s);
  order[norder++] = s.reserved_bytes.current == s.allocated_bytes.current ? 10 : 11;
  *freed = 0;
  for (int i = 0; i < 2; i++)
    if (victims[i]) {
      hr_pool_free(p, victims[i], NULL);
      *freed += 200 * MiB;
      victims[i] = NULL;
    }
  return 0;
}
static int rec_c(hr_pool_t *p, uint64_t needed, uint64_t *freed, void *arg) {
  order[norder++] = 3; /* never reached: b made room */
  return 0;
}

static void test_reclaimer_order(void) {
  CHECK_OK(mk("pytorch", GiB));
  CHECK_OK(hr_pool_add_reclaimer(pool, rec_a, NULL));
  CHECK_OK(hr_pool_add_reclaimer(pool, rec_b, NULL));
  CHECK_OK(hr_pool_add_reclaimer(pool, rec_c, NULL));
  victims[0] = A(200 * MiB, NULL);
  victims[1] = A(200 * MiB, NULL);
  void *cached = A(300 * MiB, NULL), *keep = A(250 * MiB, NULL);
  CHECK(victims[0] && victims[1] && cached && keep);
  CHECK_OK(hr_pool_free(pool, cached, NULL)); /* 300 MiB cached, unusable for 350 */
  norder = 0;
  void *big = A(500 * MiB, NULL);
  CHECK(big);
  CHECK_EQ_INT(norder, 3);
  CHECK_EQ_INT(order[0], 1);
  CHECK_EQ_INT(order[1], 2);
  CHECK_EQ_INT(order[2], 10);
  hr_pool_stats_t s = stats();
  CHECK_EQ_U64(s.num_alloc_retries, 2);
  CHECK_EQ_U64(s.num_ooms, 0);
  CHECK_OK(hr_pool_check(pool));
  rm();
}

static void test_oom_diagnosis(void) {
  char diag[2048];
  hr_set_log(log_capture, NULL, HR_LOG_WARN);
  CHECK_OK(mk("pytorch", GiB));
  CHECK_RC(hr_pool_last_diagnosis(pool, diag, sizeof diag), HR_ENOENT);
  hr_pool_set_tag("unet");
  void *a = A(600 * MiB, NULL);
  hr_pool_set_tag("vae");
  void *b = A(300 * MiB, NULL);
  hr_pool_set_tag(NULL);
  CHECK(a && b);
  void *c = NULL;
  CHECK_RC(hr_pool_alloc(pool, 200 * MiB, NULL, &c), HR_ENOMEM);
  CHECK_OK(hr_pool_last_diagnosis(pool, diag, sizeof diag));
  CHECK_CONTAINS(diag, "tried to allocate 200.00 MiB");
  CHECK_CONTAINS(diag, "allocated 900.00 MiB");
  CHECK_CONTAINS(diag, "reserved 900.00 MiB");
  CHECK_CONTAINS(diag, "device free 124.00 MiB of 1.00 GiB");
  CHECK_CONTAINS(diag, "live by tag: unet 600.00 MiB, vae 300.00 MiB");
  CHECK_CONTAINS(logbuf, "out of memory on device 0");
  hr_set_log(NULL, NULL, HR_LOG_WARN);
  CHECK_OK(hr_pool_check(pool));
  rm();
}

static void test_peak_and_reset(void) {
  CHECK_OK(mk("pytorch", 4 * GiB));
  void *a = A(100 * MiB, NULL);
  CHECK_OK(hr_pool_free(pool, a, NULL));
  hr_pool_stats_t s = stats();
  CHECK_EQ_U64(s.allocated_bytes.peak, 100 * MiB);
  CHECK_EQ_U64(s.allocated_bytes.total, 100 * MiB);
  CHECK_EQ_U64(s.allocated_bytes.current, 0);
  CHECK_EQ_U64(s.num_device_alloc, 1);
  CHECK_OK(hr_pool_reset_peak(pool));
  s = stats();
  CHECK_EQ_U64(s.allocated_bytes.peak, 0);
  CHECK_EQ_U64(s.reserved_bytes.peak, 100 * MiB);
  CHECK_EQ_INT(s.version, HR_POOL_STATS_VERSION);
  /* An old caller's smaller struct gets only what it knows. */
  hr_pool_stats_t old = {.size = (uint32_t)offsetof(hr_pool_stats_t, reserved_)};
  CHECK_OK(hr_pool_stats(pool, &old));
  CHECK_EQ_U64(old.size, offsetof(hr_pool_stats_t, reserved_));
  hr_pool_stats_t bad = {.size = 8};
  CHECK_RC(hr_pool_stats(pool, &bad), HR_EINVAL);
  rm();
}

static int find_tags(const hr_segment_info_t *s, const hr_block_info_t *b, size_t n, void *arg) {
  int *seen = arg;
  for (size_t i = 0; i < n; i++) {
    if (!b[i].allocated) continue;
    if (b[i].tag && !strcmp(b[i].tag, "text-encoder")) seen[0]++;
    if (b[i].tag && !strcmp(b[i].tag, "(other)")) seen[1]++;
    if (b[i].tag && !strcmp(b[i].tag, "(untagged)")) seen[2]++;
  }
  return 0;
}

static int stop_at_first(const hr_segment_info_t *s, const hr_block_info_t *b, size_t n,
                         void *arg) {
  (*(int *)arg)++;
  return 1;
}

static void test_tags(void) {
  CHECK_OK(mk("pytorch", 4 * GiB));
  hr_pool_set_tag("text-encoder");
  void *a = A(3 * MiB, NULL);
  hr_pool_set_tag(NULL);
  void *b = A(3 * MiB, NULL);
  /* Past the table's 254 names every new tag is "(other)". */
  char name[32];
  for (int i = 0; i < 300; i++) {
    snprintf(name, sizeof name, "tag-%d", i);
    hr_pool_set_tag(name);
  }
  void *c = A(3 * MiB, NULL);
  hr_pool_set_tag(NULL);
  CHECK(a && b && c);
  int seen[3] = {0};
  CHECK_OK(hr_pool_segments(pool, find_tags, seen));
  CHECK_EQ_INT(seen[0], 1);
  CHECK_EQ_INT(seen[1], 1);
  CHECK_EQ_INT(seen[2], 1);
  /* A visitor's non-zero return stops the walk. */
  CHECK(A(50 * MiB, NULL));
  int calls = 0;
  CHECK_OK(hr_pool_segments(pool, stop_at_first, &calls));
  CHECK_EQ_INT(calls, 1);
  CHECK_OK(hr_pool_check(pool));
  rm();
}

static void test_torch_entry_points(void) {
  setenv("HEADROOM_POOL_BACKEND", "sim", 1);
  hr_options_process_reload();
  setenv("HEADROOM_ALLOC_CONF", "expandable_segments:False", 1);
  hr_options_process_reload();
  void *p = hr_torch_malloc(1 << 20, 3, NULL);
  CHECK(p);
  hr_torch_free(p, 1 << 20, 3, NULL);
  CHECK(hr_torch_malloc(-1, 3, NULL) == NULL);
  CHECK(hr_torch_malloc(16, 99, NULL) == NULL);
  /* A bad configuration fails the device's pool, with the key named. */
  setenv("HEADROOM_ALLOC_CONF", "max_split_size_mb:1", 1);
  hr_options_process_reload();
  hr_set_log(log_capture, NULL, HR_LOG_ERROR);
  CHECK(hr_torch_malloc(16, 4, NULL) == NULL);
  hr_set_log(NULL, NULL, HR_LOG_WARN);
  CHECK_CONTAINS(logbuf, "max_split_size_mb");
  unsetenv("HEADROOM_POOL_BACKEND");
  hr_options_process_reload();
  unsetenv("HEADROOM_ALLOC_CONF");
  hr_options_process_reload();
}

int main(void) {
  HR_RUN(test_rounding);
  HR_RUN(test_pool_choice);
  HR_RUN(test_split);
  HR_RUN(test_coalesce);
  HR_RUN(test_max_split_size);
  HR_RUN(test_gc);
  HR_RUN(test_streams_and_events);
  HR_RUN(test_fraction_limit);
  HR_RUN(test_reclaimer_order);
  HR_RUN(test_oom_diagnosis);
  HR_RUN(test_peak_and_reset);
  HR_RUN(test_tags);
  HR_RUN(test_torch_entry_points);
  return hr_test_finish("pool");
}
