/* Randomised stress of the pool on sim and host: millions of operations
 * (allocations with random sizes, also drawn from the real traces in
 * ../shared/traces when present, frees in random order, record_stream,
 * events held and completed, release_cached) under several configurations.
 * Debug builds run hr_pool_check after every operation; the host backend
 * writes a pattern into every block and checks it at free, which catches
 * blocks that overlap. The seed is printed: HR_TEST_SEED replays a run.
 * HR_STRESS_OPS scales the number of operations: by default 1000000 on sim
 * plus 500000 on host and at a tight capacity (300000 in all under sanitizers). */
#include "hr_test.h"
#include "pool_walk.h"
#include "trace_sizes.h"
#include "backend/backend.h"

#define MiB      (1ull << 20)
#define SLOTS    96
#define NSTREAMS 3

static uint64_t *trace_sizes;
static size_t ntrace_sizes;

static void load_trace_sizes(void) {
  char dir[1024], src[1024];
  hr_test_src(dir, sizeof dir, "../shared/traces");
  hr_test_src(src, sizeof src, ".");
  ntrace_sizes = hr_trace_sizes_load(src, dir, 200000, 64 * MiB, &trace_sizes);
}

/* Half the sizes come from the real traces when they are there. */
static uint64_t draw_size(uint64_t *rng, uint64_t max) {
  if (ntrace_sizes && hr_test_rand(rng) % 2 == 0) {
    uint64_t s = trace_sizes[(hr_test_rand(rng) >> 8) % ntrace_sizes];
    return s > max ? 1 + s % max : s;
  }
  return hr_test_pool_size(rng, max);
}

typedef struct slot {
  void *p;
  uint64_t size, stamp;
} slot_t;

/* The last word of the block, unless it overlaps a word of the grid. */
static bool tail_ok(const slot_t *s) {
  return s->size >= 8 && (s->size - 8) % 512 >= 8;
}

static void fill(slot_t *s) {
  volatile uint64_t *w = s->p;
  for (uint64_t off = 0; off + 8 <= s->size; off += 512) w[off / 8] = s->stamp ^ off;
  uint64_t t = ~s->stamp;
  if (tail_ok(s)) memcpy((char *)s->p + s->size - 8, &t, 8); /* may be unaligned */
}

static int verify(const slot_t *s) {
  volatile uint64_t *w = s->p;
  for (uint64_t off = 0; off + 8 <= s->size; off += 512)
    if (w[off / 8] != (s->stamp ^ off)) return 0;
  uint64_t t;
  if (tail_ok(s)) {
    memcpy(&t, (char *)s->p + s->size - 8, 8);
    if (t != ~s->stamp) return 0;
  }
  return 1;
}

/* Runs `ops` random operations; returns through CHECK on the first fault. */
static void stress(const char *kind, const char *conf, uint64_t capacity, uint64_t ops,
                   uint64_t maxsize) {
  hr_backend_t *be = NULL;
  hr_pool_t *p = NULL;
  hr_pool_config_t c;
  slot_t slot[SLOTS] = {{0}};
  void *streams[NSTREAMS] = {NULL, (void *)0x10, (void *)0x20};
  bool host = !strcmp(kind, "host"), sim = !strcmp(kind, "sim");
  uint64_t rng = hr_test_seed() ^ (uint64_t)strlen(conf) * 0x9E3779B97F4A7C15ull;
  uint64_t ooms = 0, allocs = 0;
  fprintf(stderr, "  %s '%s': %" PRIu64 " ops\n", kind, conf, ops);
  CHECK_OK(hr_pool_config_parse(conf, &c, NULL, 0));
  CHECK_OK(hr_backend_create(kind, 0, capacity, &be));
  CHECK_OK(hr_pool_create(&c, be, 0, &p));
  for (uint64_t i = 0; i < ops; i++) {
    uint64_t r = hr_test_rand(&rng);
    slot_t *s = &slot[(r >> 8) % SLOTS];
    void *st = streams[(r >> 20) % NSTREAMS];
    unsigned what = (unsigned)(r % 100);
    if (!s->p && what < 70) {
      uint64_t size = draw_size(&rng, maxsize);
      int rc = hr_pool_alloc(p, size, st, &s->p);
      if (rc == HR_ENOMEM) {
        ooms++;
        s->p = NULL;
      } else {
        CHECK_MSG(rc == 0 && s->p, "op %" PRIu64 ": alloc %" PRIu64 " gave %d", i, size, rc);
        allocs++;
        s->size = size;
        s->stamp = hr_test_rand(&rng);
        for (int k = 0; k < SLOTS; k++) {
          slot_t *o = &slot[k];
          if (o == s || !o->p) continue;
          uint64_t a = (uint64_t)(uintptr_t)s->p, b = (uint64_t)(uintptr_t)o->p;
          CHECK_MSG(a + s->size <= b || b + o->size <= a,
                    "op %" PRIu64 ": new block %p+%" PRIu64 " overlaps live %p+%" PRIu64, i, s->p,
                    s->size, o->p, o->size);
        }
        if (host) fill(s);
      }
    } else if (s->p && what < 90) {
      if (host) CHECK_MSG(verify(s), "op %" PRIu64 ": block %p was overwritten", i, s->p);
      if (what < 10) CHECK_OK(hr_pool_record_stream(p, s->p, streams[(r >> 30) % NSTREAMS]));
      CHECK_OK(hr_pool_free(p, s->p, (r >> 40) % 8 ? NULL : st));
      s->p = NULL;
    } else if (what == 95 && sim) {
      hr__sim_hold_events(be, (r >> 33) & 1);
    } else if (what == 96 && sim) {
      hr__sim_complete_events(be);
    } else if (what == 97 && (r >> 40) % 16 == 0) {
      CHECK_OK(hr_pool_release_cached(p));
    } else if (what == 98 && (r >> 40) % 64 == 0) {
      CHECK_OK(hr_pool_reset_peak(p));
    }
#ifdef HR_DEBUG
    int rc = hr_pool_check(p);
    CHECK_MSG(rc == 0, "op %" PRIu64 ": hr_pool_check failed (seed above)", i);
#endif
  }
  for (int k = 0; k < SLOTS; k++)
    if (slot[k].p) {
      if (host) CHECK_MSG(verify(&slot[k]), "block %p was overwritten", slot[k].p);
      CHECK_OK(hr_pool_free(p, slot[k].p, NULL));
    }
  if (sim) hr__sim_hold_events(be, false);
  /* Every fully free segment goes back: nothing is reserved. */
  hr_test_pool_drained(p, ooms);
  if (hr_t_cur_failed) return;
  CHECK(allocs > ops / 10);
  uint64_t f, t;
  CHECK_OK(hr_backend_mem_info(be, &f, &t));
  CHECK_EQ_U64(f, t); /* the backend got everything back */
  CHECK_OK(hr_pool_check(p));
  hr_pool_destroy(p);
  hr_backend_destroy(be);
}

static const char *confs[] = {
    "pytorch",
    "pytorch,expandable_segments:True",
    "default",
    "default,compact_mapping:False",
    "pytorch,max_split_size_mb:32,garbage_collection_threshold:0.7,memory_fraction:0.9",
    "pytorch,roundup_power2_divisions:[1:2,16:4,>:8]",
};

static uint64_t total_ops(void) {
  const char *e = getenv("HR_STRESS_OPS");
#ifdef HR_SANITIZE_BUILD
  /* Sanitizers make each operation ~5x slower; keep within the timeout. */
  return e ? strtoull(e, NULL, 0) : 300000;
#else
  return e ? strtoull(e, NULL, 0) : 1000000;
#endif
}

static void test_stress_sim(void) {
  uint64_t per = total_ops() / HR_ARRAY_LEN(confs);
  for (size_t i = 0; i < HR_ARRAY_LEN(confs); i++) {
    stress("sim", confs[i], 1024 * MiB, per, 64 * MiB);
    if (hr_t_cur_failed) return;
  }
}

static void test_stress_host(void) {
  uint64_t per = total_ops() / 4 / HR_ARRAY_LEN(confs);
  for (size_t i = 0; i < HR_ARRAY_LEN(confs); i++) {
    stress("host", confs[i], 512 * MiB, per, 8 * MiB);
    if (hr_t_cur_failed) return;
  }
}

/* A tight capacity makes the out-of-memory path (release, retry, fail)
 * part of the random walk. */
static void test_stress_tight(void) {
  uint64_t per = total_ops() / 4 / 4;
  stress("sim", "pytorch", 160 * MiB, per, 64 * MiB);
  if (!hr_t_cur_failed) stress("sim", "default", 160 * MiB, per, 64 * MiB);
  if (!hr_t_cur_failed) stress("sim", "pytorch,max_split_size_mb:24", 160 * MiB, per, 64 * MiB);
  if (!hr_t_cur_failed) stress("sim", "pytorch,expandable_segments:True", 160 * MiB, per, 64 * MiB);
}

int main(void) {
  hr_test_seed();
  load_trace_sizes();
  fprintf(stderr, "sizes from traces: %zu%s\n", ntrace_sizes,
          ntrace_sizes ? "" : " (../shared/traces absent or unreadable: random sizes only)");
  HR_RUN(test_stress_sim);
  HR_RUN(test_stress_host);
  HR_RUN(test_stress_tight);
  free(trace_sizes);
  return hr_test_finish("pool_stress");
}
