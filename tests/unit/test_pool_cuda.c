/* The pool on a real CUDA device: random walks through the cuda backend
 * under several configurations, with every block proven usable over its
 * whole size by kernels, on real streams.
 *
 * Each walk allocates on two created (non-blocking) streams and the null
 * stream, frees in random order, uses blocks from other streams (an event
 * orders the use after the fill, record_stream or a free on that stream
 * tells the pool), releases the cache now and then, and has an out-of-memory
 * phase under a capacity cap. Every allocated block gets hr_fill (byte o is
 * byte o % 8 of stamp ^ (o / 8)) on its stream, and hr_verify on each
 * stream that uses it before it is freed: mismatches are counted on the
 * device and read back at checkpoints and at the end, so two blocks that
 * overlap, a block reused before its last user finished, or memory that is
 * not mapped all show up as mismatches or faults. The host checks that live
 * blocks never overlap. A last phase asks for more than the device has free,
 * so the driver's own out-of-memory answer goes through the pool.
 * At the end of each walk the pool's statistics are zero and the device's
 * free memory is back where it started (within HR_CUDA_FREE_SLACK_MB,
 * default 16).
 *
 * The kernels are tests/gpu/pattern.cu as PTX (pattern_ptx.h), loaded with
 * cuModuleLoadData. The driver calls this test needs besides the backend's
 * are loaded here; where cuda.h is installed their types are checked
 * against it at compile time.
 *
 * Skips (exit 77, with the reason) without libcuda.so.1 or device 0.
 * HEADROOM_LIBCUDA picks another driver library (the tests' fake one).
 * Environment: HR_CUDA_OPS (operations per configuration, default 100000;
 * the walk under a cap gets a quarter more), HR_CUDA_CONF (configurations
 * separated by ';' instead of the list), HR_CUDA_DEVICE_OOM=0 (leave out the
 * phase whose expected CUDA_ERROR_OUT_OF_MEMORY compute-sanitizer would
 * count as an error), HR_CUDA_WALKS=0 (that phase alone). HR_TEST_SEED
 * replays a run. Each walk prints one
 * line "cuda-walk key=value ..." on stdout for bench/gpu/cuda.sh. */
#if defined(__has_include)
#if __has_include("/usr/local/cuda/include/cuda.h")
#include "/usr/local/cuda/include/cuda.h"
#define HR_HAVE_CUDA_H 1
#endif
#endif

#include "hr_test.h"
#include "pool_walk.h"
#include "pattern_ptx.h"
#include "backend/backend.h"
#include "backend/cuda_api.h"

#include <dlfcn.h>

#define MiB      ((uint64_t)1 << 20)
#define SLOTS    96
#define NSTREAMS 3

typedef struct CUmod_st *t_module;
typedef struct CUfunc_st *t_function;

/* X(name in the driver, our pointer type's name, parameters) */
#define TEST_CUDA_FUNCS(X)                                                                         \
  X(cuInit, t_init_fn, (unsigned int flags))                                                       \
  X(cuDeviceGet, t_device_get_fn, (hr_cu_device * dev, int ordinal))                               \
  X(cuDevicePrimaryCtxRetain, t_ctx_retain_fn, (hr_cu_context * ctx, hr_cu_device dev))            \
  X(cuDevicePrimaryCtxRelease_v2, t_ctx_release_fn, (hr_cu_device dev))                            \
  X(cuCtxGetCurrent, t_ctx_get_current_fn, (hr_cu_context * ctx))                                  \
  X(cuCtxSetCurrent, t_ctx_set_current_fn, (hr_cu_context ctx))                                    \
  X(cuCtxSynchronize, t_ctx_synchronize_fn, (void))                                                \
  X(cuMemGetInfo_v2, t_mem_get_info_fn, (size_t * free_bytes, size_t * total_bytes))               \
  X(cuMemAlloc_v2, t_mem_alloc_fn, (hr_cu_deviceptr * dptr, size_t size))                          \
  X(cuMemFree_v2, t_mem_free_fn, (hr_cu_deviceptr dptr))                                           \
  X(cuMemcpyDtoH_v2, t_memcpy_dtoh_fn, (void *dst, hr_cu_deviceptr src, size_t n))                 \
  X(cuMemcpyHtoD_v2, t_memcpy_htod_fn, (hr_cu_deviceptr dst, const void *src, size_t n))           \
  X(cuStreamCreate, t_stream_create_fn, (hr_cu_stream * s, unsigned int flags))                    \
  X(cuStreamDestroy_v2, t_stream_destroy_fn, (hr_cu_stream s))                                     \
  X(cuStreamWaitEvent, t_stream_wait_event_fn, (hr_cu_stream s, hr_cu_event ev, unsigned int f))   \
  X(cuEventCreate, t_event_create_fn, (hr_cu_event * ev, unsigned int flags))                      \
  X(cuEventRecord, t_event_record_fn, (hr_cu_event ev, hr_cu_stream s))                            \
  X(cuEventDestroy_v2, t_event_destroy_fn, (hr_cu_event ev))                                       \
  X(cuModuleLoadData, t_module_load_data_fn, (t_module * m, const void *image))                    \
  X(cuModuleUnload, t_module_unload_fn, (t_module m))                                              \
  X(cuModuleGetFunction, t_module_get_function_fn, (t_function * f, t_module m, const char *name)) \
  X(cuLaunchKernel, t_launch_kernel_fn,                                                            \
    (t_function f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,             \
     unsigned int by, unsigned int bz, unsigned int shmem, hr_cu_stream s, void **params,          \
     void **extra))

#define T_TYPEDEF_(sym, type, params) typedef hr_cu_result(*type) params;
TEST_CUDA_FUNCS(T_TYPEDEF_)
#undef T_TYPEDEF_

#ifdef HR_HAVE_CUDA_H
#define SAME_TYPE_(sym, type, params)                                                              \
  _Static_assert(__builtin_types_compatible_p(type, __typeof__(&sym)),                             \
                 "our declaration of " #sym " differs from cuda.h");
TEST_CUDA_FUNCS(SAME_TYPE_)
#undef SAME_TYPE_
_Static_assert(CU_STREAM_NON_BLOCKING == 1, "stream flag");
#endif

#define CU_STREAM_NON_BLOCKING_ 0x1u

static struct dev {
  void *lib;
#define T_FIELD_(sym, type, params) type sym;
  TEST_CUDA_FUNCS(T_FIELD_)
#undef T_FIELD_
  hr_cu_device dev;
  hr_cu_context ctx;
  hr_cu_stream streams[NSTREAMS]; /* [0] is the null stream */
  t_module mod;
  t_function fill, verify;
  hr_cu_deviceptr bad;  /* two words: mismatches, lowest bad word index */
  uint64_t base_free;   /* device free memory after setup */
  const char *skip_why; /* set when there is no device to run on */
  bool ready;
} d;

/* A driver call that must succeed, or the current test fails. */
#define CU_OK(call)                                                                                \
  do {                                                                                             \
    hr_cu_result r_ = d.call;                                                                      \
    if (r_) HR_FAIL_("%s returned CUresult %u", #call, r_);                                        \
  } while (0)

static char skip_buf[256];

/* Loads the driver, opens device 0 in its primary context, makes streams
 * and loads the kernels. Skips when there is no driver or device. */
static void test_open(void) {
  const char *path = getenv("HEADROOM_LIBCUDA");
  void *sym;
  path = path && *path ? path : "libcuda.so.1";
  d.lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!d.lib) {
    snprintf(skip_buf, sizeof skip_buf, "no CUDA driver (%s: %s)", path, dlerror());
    d.skip_why = skip_buf;
    return;
  }
#define T_LOAD_(name, type, params)                                                                \
  sym = dlsym(d.lib, #name);                                                                       \
  memcpy(&d.name, &sym, sizeof sym);                                                               \
  CHECK_MSG(sym, "the driver lacks %s", #name);
  TEST_CUDA_FUNCS(T_LOAD_)
#undef T_LOAD_
  hr_cu_result r = d.cuInit(0);
  if (!r) r = d.cuDeviceGet(&d.dev, 0);
  if (r) {
    snprintf(skip_buf, sizeof skip_buf, "CUDA driver present but device 0 cannot be opened (%u)",
             r);
    d.skip_why = skip_buf;
    return;
  }
  CU_OK(cuDevicePrimaryCtxRetain(&d.ctx, d.dev));
  CU_OK(cuCtxSetCurrent(d.ctx));
  d.streams[0] = NULL;
  for (int i = 1; i < NSTREAMS; i++) CU_OK(cuStreamCreate(&d.streams[i], CU_STREAM_NON_BLOCKING_));
  char *ptx = hr_pattern_ptx();
  CHECK(ptx);
  r = d.cuModuleLoadData(&d.mod, ptx);
  free(ptx);
  CHECK_MSG(!r, "cuModuleLoadData of the embedded PTX returned CUresult %u", r);
  CU_OK(cuModuleGetFunction(&d.fill, d.mod, "hr_fill"));
  CU_OK(cuModuleGetFunction(&d.verify, d.mod, "hr_verify"));
  CU_OK(cuMemAlloc_v2(&d.bad, 4096));
  d.ready = true;
}

static void test_open_or_skip(void) {
  test_open();
  if (d.skip_why) SKIP("%s", d.skip_why);
}

static void dev_close(void) {
  if (!d.lib) return;
  if (d.ready) {
    d.cuCtxSynchronize();
    d.cuMemFree_v2(d.bad);
    d.cuModuleUnload(d.mod);
    for (int i = 1; i < NSTREAMS; i++) d.cuStreamDestroy_v2(d.streams[i]);
  }
  /* The last reference resets the primary context, which is when
   * compute-sanitizer's leak check looks. */
  if (d.ctx) d.cuDevicePrimaryCtxRelease_v2(d.dev);
  dlclose(d.lib);
}

static int launch(t_function f, int stream, uint64_t ptr, uint64_t size, uint64_t stamp) {
  uint64_t words = size / 8, grid = (words + 255) / 256;
  hr_cu_deviceptr bad = d.bad;
  void *args[] = {&ptr, &size, &stamp, &bad};
  grid = grid < 1 ? 1 : grid > 2048 ? 2048 : grid;
  return (int)d.cuLaunchKernel(f, (unsigned)grid, 1, 1, 256, 1, 1, 0, d.streams[stream], args,
                               NULL);
}

/* Zeroes the mismatch counter (word 0) and the lowest bad index (word 1). */
static int bad_reset(void) {
  uint64_t v[2] = {0, UINT64_MAX};
  return (int)(d.cuCtxSynchronize() || d.cuMemcpyHtoD_v2(d.bad, v, sizeof v));
}

/* Waits for every stream and reads the counter. */
static int bad_read(uint64_t v[2]) {
  return (int)(d.cuCtxSynchronize() || d.cuMemcpyDtoH_v2(v, d.bad, 2 * sizeof *v));
}

/* Orders stream `to` after the work queued on stream `from`. */
static int stream_after(int to, int from) {
  hr_cu_event ev;
  hr_cu_result r = d.cuEventCreate(&ev, HR_CU_EVENT_DISABLE_TIMING);
  if (r) return (int)r;
  r = d.cuEventRecord(ev, d.streams[from]);
  if (!r) r = d.cuStreamWaitEvent(d.streams[to], ev, 0);
  d.cuEventDestroy_v2(ev); /* released once it completes */
  return (int)r;
}

static uint64_t env_u64(const char *name, uint64_t dflt) {
  const char *e = getenv(name);
  return e && *e ? strtoull(e, NULL, 0) : dflt;
}

typedef struct slot {
  void *p;
  uint64_t size, stamp;
  int stream;
} slot_t;

typedef struct walk {
  uint64_t ops, allocs, verified, ooms;
  double wall;
} walk_t;

/* Checks that the device's free memory is back to where setup left it. */
static void check_free_back(const char *conf, const char *phase, int64_t *delta_out) {
  size_t f = 0, t = 0;
  CU_OK(cuCtxSynchronize());
  CU_OK(cuMemGetInfo_v2(&f, &t));
  int64_t delta = (int64_t)d.base_free - (int64_t)f;
  *delta_out = delta;
  uint64_t slack = env_u64("HR_CUDA_FREE_SLACK_MB", 16) * MiB;
  CHECK_MSG(delta <= (int64_t)slack,
            "%s '%s': device free memory %" PRId64 " MiB below its start (slack %" PRIu64 " MiB)",
            phase, conf, delta / (int64_t)MiB, slack / MiB);
}

static void report(const char *phase, const char *conf, const walk_t *w, int64_t delta) {
  printf("cuda-walk phase=%s ops=%" PRIu64 " allocs=%" PRIu64 " verified=%" PRIu64 " ooms=%" PRIu64
         " bad=0 free_delta_mib=%.1f wall_s=%.2f conf=%s\n",
         phase, w->ops, w->allocs, w->verified, w->ooms, (double)delta / (double)MiB, w->wall,
         conf);
  fflush(stdout);
}

/* Verifies `s` on its own stream, maybe uses it from another stream too,
 * and frees it; counts the verify launches into *verified. */
static void retire(hr_pool_t *p, slot_t *s, uint64_t r, uint64_t *verified) {
  int own = s->stream, free_on = own;
  uint64_t a = (uint64_t)(uintptr_t)s->p;
  CHECK_OK(launch(d.verify, own, a, s->size, s->stamp));
  (*verified)++;
  if ((r >> 44) % 8 == 0) {
    /* Another stream reads it after the fill and frees it from there. */
    free_on = (own + 1 + (int)((r >> 48) % (NSTREAMS - 1))) % NSTREAMS;
    CHECK_OK(stream_after(free_on, own));
    CHECK_OK(launch(d.verify, free_on, a, s->size, s->stamp));
    (*verified)++;
  }
  CHECK_OK(hr_pool_free(p, s->p, d.streams[free_on]));
  s->p = NULL;
}

/* A block just allocated into `s`: checks it overlaps no live block, fills
 * it on its stream and, now and then, has another stream read it too
 * (ordered after the fill by an event) and tells the pool with
 * record_stream. */
static void fresh(hr_pool_t *p, slot_t *s, int rc, uint64_t size, int st, uint64_t i, uint64_t r,
                  uint64_t *rng, const slot_t *slot, walk_t *w) {
  CHECK_MSG(rc == 0 && s->p, "op %" PRIu64 ": alloc %" PRIu64 " gave %d", i, size, rc);
  w->allocs++;
  s->size = size;
  s->stamp = hr_test_rand(rng);
  s->stream = st;
  uint64_t a = (uint64_t)(uintptr_t)s->p;
  for (int k = 0; k < SLOTS; k++) {
    const slot_t *o = &slot[k];
    uint64_t b = (uint64_t)(uintptr_t)o->p;
    if (o == s || !o->p) continue;
    CHECK_MSG(a + s->size <= b || b + o->size <= a,
              "op %" PRIu64 ": new block %#" PRIx64 "+%" PRIu64 " overlaps live %#" PRIx64
              "+%" PRIu64,
              i, a, s->size, b, o->size);
  }
  CHECK_OK(launch(d.fill, st, a, size, s->stamp));
  if ((r >> 40) % 16 == 0) {
    int other = (st + 1 + (int)((r >> 36) % (NSTREAMS - 1))) % NSTREAMS;
    CHECK_OK(stream_after(other, st));
    CHECK_OK(launch(d.verify, other, a, size, s->stamp));
    w->verified++;
    CHECK_OK(hr_pool_record_stream(p, s->p, d.streams[other]));
  }
}

/* Runs `ops` random operations on a pool over a cuda backend capped at
 * `capacity` bytes; fails through CHECK on the first fault. */
static void walk(const char *phase, const char *conf, uint64_t capacity, uint64_t ops,
                 uint64_t maxsize, walk_t *w) {
  hr_backend_t *be = NULL;
  hr_pool_t *p = NULL;
  hr_pool_config_t c;
  slot_t slot[SLOTS] = {{0}};
  uint64_t rng = hr_test_seed() ^ (uint64_t)strlen(conf) * 0x9E3779B97F4A7C15ull ^ capacity;
  double t0 = hr__now_mono();
  memset(w, 0, sizeof *w);
  w->ops = ops;
  fprintf(stderr, "  %s '%s': %" PRIu64 " ops, capacity %" PRIu64 " MiB\n", phase, conf, ops,
          capacity / MiB);
  CHECK_OK(hr_pool_config_parse(conf, &c, NULL, 0));
  CHECK_OK(hr_backend_create("cuda", 0, capacity, &be));
  CHECK_OK(hr_pool_create(&c, be, 0, &p));
  CHECK_OK(bad_reset());
  for (uint64_t i = 0; i < ops; i++) {
    uint64_t r = hr_test_rand(&rng);
    slot_t *s = &slot[(r >> 8) % SLOTS];
    int st = (int)((r >> 20) % NSTREAMS);
    unsigned what = (unsigned)(r % 100);
    if (!s->p && what < 70) {
      uint64_t size = hr_test_pool_size(&rng, maxsize);
      int rc = hr_pool_alloc(p, size, d.streams[st], &s->p);
      if (rc == HR_ENOMEM) {
        w->ooms++;
        s->p = NULL;
      } else {
        fresh(p, s, rc, size, st, i, r, &rng, slot, w);
        if (hr_t_cur_failed) return;
      }
    } else if (s->p && what < 90) {
      retire(p, s, r, &w->verified);
      if (hr_t_cur_failed) return;
    } else if (what == 97 && (r >> 40) % 16 == 0) {
      CHECK_OK(hr_pool_release_cached(p));
    } else if (what == 98 && (r >> 40) % 64 == 0) {
      CHECK_OK(hr_pool_reset_peak(p));
    } else if (what == 99 && (r >> 40) % 32 == 0) {
      uint64_t v[2];
      CHECK_OK(bad_read(v));
      CHECK_MSG(v[0] == 0,
                "by op %" PRIu64 ": %" PRIu64 " mismatching words (first bad word %" PRIu64 ")", i,
                v[0], v[1]);
    }
#ifdef HR_DEBUG
    int rc = hr_pool_check(p);
    CHECK_MSG(rc == 0, "op %" PRIu64 ": hr_pool_check failed (seed above)", i);
#endif
  }
  for (int k = 0; k < SLOTS; k++)
    if (slot[k].p) {
      retire(p, &slot[k], hr_test_rand(&rng), &w->verified);
      if (hr_t_cur_failed) return;
    }
  uint64_t v[2];
  CHECK_OK(bad_read(v));
  CHECK_MSG(v[0] == 0, "%" PRIu64 " mismatching words (first bad word %" PRIu64 ")", v[0], v[1]);
  /* Every fully free segment goes back: nothing is reserved. */
  hr_test_pool_drained(p, w->ooms);
  if (hr_t_cur_failed) return;
  uint64_t f, t;
  CHECK_OK(hr_backend_mem_info(be, &f, &t));
  CHECK_EQ_U64(t, capacity);
  CHECK_MSG(f <= t, "backend free %" PRIu64 " above its total %" PRIu64, f, t);
  hr_pool_destroy(p);
  hr_backend_destroy(be);
  w->wall = hr__now_mono() - t0;
}

static const char *default_confs[] = {
    "pytorch",
    "pytorch,expandable_segments:True",
    "default",
    "default,compact_mapping:False",
    "pytorch,max_split_size_mb:32,garbage_collection_threshold:0.7,memory_fraction:0.9",
};

/* Calls fn for each configuration: those of HR_CUDA_CONF (separated by
 * ';', as a configuration holds commas) or the list above. */
static void run_confs(void (*fn)(const char *)) {
  const char *list = getenv("HR_CUDA_CONF");
  if (!list || !*list) {
    for (size_t i = 0; i < HR_ARRAY_LEN(default_confs) && !hr_t_cur_failed; i++)
      fn(default_confs[i]);
    return;
  }
  char buf[1024], *save = NULL;
  hr__strlcpy(buf, list, sizeof buf);
  for (char *c = strtok_r(buf, ";", &save); c && !hr_t_cur_failed; c = strtok_r(NULL, ";", &save))
    fn(c);
}

/* The main walk (2 GiB cap) and the out-of-memory walk (192 MiB cap, blocks
 * up to 48 MiB: the pool must release cache and fail cleanly, often). */
static void walks_of(const char *conf) {
  uint64_t ops = env_u64("HR_CUDA_OPS", 100000);
  walk_t w;
  int64_t delta;
  walk("main", conf, 2048 * MiB, ops, 64 * MiB, &w);
  if (hr_t_cur_failed) return;
  check_free_back(conf, "main", &delta);
  report("main", conf, &w, delta);
  walk("oom", conf, 192 * MiB, ops / 4 + 1, 48 * MiB, &w);
  if (hr_t_cur_failed) return;
  CHECK_MSG(ops < 1000 || w.ooms > 0, "oom '%s': the capped walk never ran out of memory", conf);
  check_free_back(conf, "oom", &delta);
  report("oom", conf, &w, delta);
}

static void test_walks(void) {
  if (d.skip_why) SKIP("%s", d.skip_why);
  if (env_u64("HR_CUDA_WALKS", 1) == 0) SKIP("HR_CUDA_WALKS=0");
  CHECK(d.ready);
  run_confs(walks_of);
}

/* Asks the uncapped pool for more than the device has free while one block
 * is live: the driver says out of memory, the pool releases its cache,
 * retries, fails with HR_ENOMEM and a diagnosis, and the live block and
 * the pool stay sound. A ballast allocated outside the pool first leaves
 * about 1 GiB free, so that expandable segments reach the driver's refusal
 * after mapping that much rather than the whole device, twice (slow under
 * compute-sanitizer). Runs with no context current, which the backend must
 * give back as it found it. */
static void device_oom_of(const char *conf) {
  hr_backend_t *be = NULL;
  hr_pool_t *p = NULL;
  hr_pool_config_t c;
  void *keep = NULL, *big = NULL, *again = NULL;
  size_t f = 0, t = 0;
  walk_t w = {.ops = 4};
  int64_t delta;
  double t0 = hr__now_mono();
  hr_cu_deviceptr ballast = 0;
  CU_OK(cuMemGetInfo_v2(&f, &t));
  if (f > 2048 * MiB && d.cuMemAlloc_v2(&ballast, f - 1024 * MiB)) {
    fprintf(stderr, "  device-oom '%s': no ballast (%" PRIu64 " MiB refused)\n", conf,
            (uint64_t)(f - 1024 * MiB) / MiB);
    ballast = 0;
  }
  CHECK_OK(hr_pool_config_parse(conf, &c, NULL, 0));
  CHECK_OK(hr_backend_create("cuda", 0, 0, &be));
  CHECK_OK(hr_pool_create(&c, be, 0, &p));
  CHECK_OK(bad_reset());
  CHECK_OK(hr_pool_alloc(p, 8 * MiB, d.streams[1], &keep));
  w.allocs++;
  CHECK_OK(launch(d.fill, 1, (uint64_t)(uintptr_t)keep, 8 * MiB, 0x5eed));
  CU_OK(cuCtxSynchronize());
  CU_OK(cuMemGetInfo_v2(&f, &t));
  CHECK(t > f);
  uint64_t extra = (t - f) / 2 < 256 * MiB ? (t - f) / 2 : 256 * MiB;
  uint64_t want = f + extra;
  fprintf(stderr, "  device-oom '%s': %" PRIu64 " MiB free, asking %" PRIu64 " MiB\n", conf,
          (uint64_t)f / MiB, want / MiB);
  hr_cu_context cur = (hr_cu_context)&cur;
  CU_OK(cuCtxSetCurrent(NULL));
  int rc = hr_pool_alloc(p, want, d.streams[1], &big);
  CU_OK(cuCtxGetCurrent(&cur));
  CU_OK(cuCtxSetCurrent(d.ctx));
  CHECK_RC(rc, HR_ENOMEM);
  CHECK(big == NULL);
  CHECK_MSG(cur == NULL, "the backend left its context current on a thread that had none");
  w.ooms++;
  char diag[2048];
  CHECK_OK(hr_pool_last_diagnosis(p, diag, sizeof diag));
  CHECK(diag[0] != '\0');
  hr_pool_stats_t st = {.size = sizeof st};
  CHECK_OK(hr_pool_stats(p, &st));
  CHECK_EQ_U64(st.num_ooms, 1);
  CHECK_OK(hr_pool_check(p));
  /* The pool still works, and the live block kept its contents. */
  CHECK_OK(hr_pool_alloc(p, 64 * MiB, d.streams[2], &again));
  w.allocs++;
  CHECK_OK(launch(d.fill, 2, (uint64_t)(uintptr_t)again, 64 * MiB, 0xfeed));
  CHECK_OK(launch(d.verify, 2, (uint64_t)(uintptr_t)again, 64 * MiB, 0xfeed));
  CHECK_OK(launch(d.verify, 1, (uint64_t)(uintptr_t)keep, 8 * MiB, 0x5eed));
  w.verified += 2;
  uint64_t v[2];
  CHECK_OK(bad_read(v));
  CHECK_MSG(v[0] == 0, "%" PRIu64 " mismatching words after the OOM", v[0]);
  CHECK_OK(hr_pool_free(p, again, d.streams[2]));
  CHECK_OK(hr_pool_free(p, keep, d.streams[1]));
  CHECK_OK(hr_pool_release_cached(p));
  CHECK_OK(hr_pool_stats(p, &st));
  CHECK_EQ_U64(st.reserved_bytes.current, 0);
  hr_pool_destroy(p);
  hr_backend_destroy(be);
  if (ballast) CU_OK(cuMemFree_v2(ballast));
  w.wall = hr__now_mono() - t0;
  check_free_back(conf, "device-oom", &delta);
  report("device-oom", conf, &w, delta);
}

static void test_device_oom(void) {
  if (d.skip_why) SKIP("%s", d.skip_why);
  if (env_u64("HR_CUDA_DEVICE_OOM", 1) == 0) SKIP("HR_CUDA_DEVICE_OOM=0");
  CHECK(d.ready);
  run_confs(device_oom_of);
}

/* Runs both kernels once on a scratch buffer: loads the module for good
 * (lazy loading) and proves the kernels detect a wrong stamp, so that a
 * zero count later means something. Then takes the free-memory baseline. */
static void test_kernels_detect(void) {
  if (d.skip_why) SKIP("%s", d.skip_why);
  CHECK(d.ready);
  hr_cu_deviceptr buf = 0;
  uint64_t v[2], size = 3 * MiB + 5; /* a tail of 5 bytes */
  size_t f = 0, t = 0;
  CU_OK(cuMemAlloc_v2(&buf, size));
  CHECK_OK(bad_reset());
  CHECK_OK(launch(d.fill, 1, buf, size, 42));
  CHECK_OK(launch(d.verify, 1, buf, size, 42));
  CHECK_OK(bad_read(v));
  CHECK_EQ_U64(v[0], 0);
  CHECK_OK(launch(d.verify, 2, buf, size, 43)); /* every word and tail byte differ */
  CHECK_OK(bad_read(v));
  CHECK_MSG(v[0] >= size / 8 && v[1] == 0, "wrong stamp: %" PRIu64 " mismatches, first %" PRIu64,
            v[0], v[1]);
  /* One byte of the tail changed: found, at the tail's word. */
  unsigned char byte = (unsigned char)~((42 ^ (size / 8)) >> 32);
  CU_OK(cuMemcpyHtoD_v2(buf + size - 1, &byte, 1));
  CHECK_OK(bad_reset());
  CHECK_OK(launch(d.verify, 0, buf, size, 42));
  CHECK_OK(bad_read(v));
  CHECK_EQ_U64(v[0], 1);
  CHECK_EQ_U64(v[1], size / 8);
  CU_OK(cuMemFree_v2(buf));
  CU_OK(cuCtxSynchronize());
  CU_OK(cuMemGetInfo_v2(&f, &t));
  d.base_free = f;
  fprintf(stderr, "  device: %" PRIu64 " MiB free of %" PRIu64 " MiB after setup\n",
          (uint64_t)f / MiB, (uint64_t)t / MiB);
}

/* Under the tests' fake driver (tests/fake_cuda): the driver saw no breach
 * of its rules and holds nothing once every walk is done. */
static void test_fake_driver_clean(void) {
  void *v = d.lib ? dlsym(d.lib, "fake_cuda_violations") : NULL;
  void *l = d.lib ? dlsym(d.lib, "fake_cuda_live") : NULL;
  void *m = d.lib ? dlsym(d.lib, "fake_cuda_last_violation") : NULL;
  int (*violations)(void), (*live)(int);
  const char *(*last)(void);
  if (!v || !l || !m) SKIP("not the fake driver");
  memcpy(&violations, &v, sizeof v);
  memcpy(&live, &l, sizeof l);
  memcpy(&last, &m, sizeof m);
  CHECK_MSG(violations() == 0, "%d breaches of the driver's rules, the last: %s", violations(),
            last());
  /* Left: the counter buffer, two streams and the module (freed at close). */
  CHECK_EQ_INT(live(1), 1);
  CHECK_EQ_INT(live(2) + live(3) + live(4) + live(5), 0);
}

int main(void) {
  hr_test_seed();
  HR_RUN(test_open_or_skip);
  HR_RUN(test_kernels_detect);
  HR_RUN(test_walks);
  HR_RUN(test_device_oom);
  HR_RUN(test_fake_driver_clean);
  dev_close();
  return hr_test_finish("pool_cuda");
}
