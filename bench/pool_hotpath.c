/* pool_hotpath: the allocator's hot path on sim, one thread. Keeps a
 * window of live blocks and times two kinds of step with sizes drawn from
 * the real traces (../shared/traces, read with an unpickler that refuses
 * globals) or, when they are absent, from a fixed distribution shaped like
 * them: an alloc+free pair beside the window, and churn (free a random
 * block of the window, allocate its replacement). Each step is timed on
 * its own with CLOCK_MONOTONIC, minus the median cost of an empty timing;
 * glibc malloc/free run the same sizes in the same order in the same run.
 *
 *   pool_hotpath [PAIRS] [--md FILE]
 */
#include <headroom/headroom.h>

#include "trace_sizes.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WINDOW 256
#define MiB    (1ull << 20)

static uint64_t *sizes;
static size_t nsizes;
static const char *size_source = "fixed distribution";

static void load_sizes(void) {
  const char *dir = getenv("TRACES");
  nsizes = hr_trace_sizes_load(".", dir ? dir : "../shared/traces", SIZE_MAX, UINT64_MAX, &sizes);
  if (nsizes) {
    size_source = "allocation sizes of the traces in ../shared/traces";
    return;
  }
  /* Shaped like the traces: mostly small tensors, some MiB-sized, a few
   * large. */
  nsizes = 100000;
  sizes = malloc(nsizes * sizeof *sizes);
  uint64_t x = 88172645463325252ull;
  for (size_t i = 0; i < nsizes; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    unsigned k = x % 100;
    sizes[i] = k < 70   ? 512 + x % (256 * 1024)
               : k < 95 ? MiB + x % (16 * MiB)
                        : 32 * MiB + x % (256 * MiB);
  }
}

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

typedef struct result {
  const char *name;
  double median, p99;
} result_t;

static uint64_t timer_overhead(uint64_t *buf, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint64_t t0 = now_ns();
    buf[i] = now_ns() - t0;
  }
  qsort(buf, n, sizeof *buf, cmp_u64);
  return buf[n / 2];
}

/* Runs `pairs` timed steps; `pool` NULL means glibc malloc/free. In the
 * "churn" mode a step frees a random block of the window and allocates a
 * new one in its place; in the "pair" mode it allocates a block and frees
 * it at once, beside the window's live blocks. */
static result_t run(const char *name, hr_pool_t *pool, size_t pairs, uint64_t *ns, uint64_t ovh,
                    bool churn) {
  void *live[WINDOW] = {0};
  uint64_t x = 0x2545F4914F6CDD1Dull;
  size_t si = 0;
  for (int w = 0; w < WINDOW; w++) {
    uint64_t sz = sizes[si++ % nsizes];
    if (pool)
      hr_pool_alloc(pool, sz, NULL, &live[w]);
    else
      live[w] = malloc(sz);
  }
  for (size_t i = 0; i < pairs + pairs / 10; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    int k = (int)(x % WINDOW);
    uint64_t sz = sizes[si++ % nsizes];
    uint64_t t0 = now_ns();
    if (churn) {
      if (pool) {
        hr_pool_free(pool, live[k], NULL);
        hr_pool_alloc(pool, sz, NULL, &live[k]);
      } else {
        free(live[k]);
        live[k] = malloc(sz);
      }
    } else {
      void *q = NULL;
      if (pool) {
        hr_pool_alloc(pool, sz, NULL, &q);
        hr_pool_free(pool, q, NULL);
      } else {
        q = malloc(sz);
        /* Keeps the compiler from removing a malloc/free pair it can see. */
        __asm__ volatile("" : : "r"(q) : "memory");
        free(q);
      }
    }
    uint64_t dt = now_ns() - t0;
    if (i >= pairs / 10) ns[i - pairs / 10] = dt > ovh ? dt - ovh : 0; /* first 10%: warm-up */
  }
  for (int w = 0; w < WINDOW; w++) {
    if (pool)
      hr_pool_free(pool, live[w], NULL);
    else
      free(live[w]);
  }
  qsort(ns, pairs, sizeof *ns, cmp_u64);
  return (result_t){name, (double)ns[pairs / 2], (double)ns[pairs * 99 / 100]};
}

int main(int argc, char **argv) {
  size_t pairs = 2000000;
  const char *md = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--md") && i + 1 < argc)
      md = argv[++i];
    else
      pairs = strtoull(argv[i], NULL, 10);
  }
  load_sizes();
  uint64_t *ns = malloc(pairs * sizeof *ns);
  uint64_t ovh = timer_overhead(ns, pairs < 1000000 ? pairs : 1000000);
  const char *confs[] = {"default", "pytorch"};
  result_t res[2][3];
  for (int m = 0; m < 2; m++) {
    for (int c = 0; c < 2; c++) {
      hr_pool_config_t cfg;
      hr_backend_t *be;
      hr_pool_t *p;
      if (hr_pool_config_parse(confs[c], &cfg, NULL, 0) ||
          hr_backend_create("sim", 0, 1ull << 40, &be) || hr_pool_create(&cfg, be, 0, &p)) {
        fprintf(stderr, "pool_hotpath: cannot make the %s pool\n", confs[c]);
        return 1;
      }
      res[m][c] = run(confs[c], p, pairs, ns, ovh, m == 1);
      hr_pool_destroy(p);
      hr_backend_destroy(be);
    }
    res[m][2] = run("glibc malloc/free", NULL, pairs, ns, ovh, m == 1);
  }
  FILE *out = md ? fopen(md, "w") : stdout;
  if (!out) {
    perror(md);
    return 1;
  }
  fprintf(out,
          "# Pool hot path\n\n"
          "`build/release/bench/pool_hotpath %zu --md bench/results/pool.md`: one thread, sim "
          "backend, a window of %d live blocks. Sizes: %s (%zu sizes, cycled). Each step is "
          "timed alone with CLOCK_MONOTONIC; the median cost of an empty timing (%" PRIu64
          " ns) is subtracted. The first 10%% of steps are warm-up. glibc runs the same sizes "
          "in the same order in the same process.\n\n"
          "- pair: allocate a block and free it at once, beside the window's live blocks.\n"
          "- churn: free a random block of the window and allocate a new one in its place.\n\n"
          "| allocator | pair: median ns | pair: p99 ns | churn: median ns | churn: p99 ns |\n"
          "| --- | --- | --- | --- | --- |\n",
          pairs, WINDOW, size_source, nsizes, ovh);
  for (int i = 0; i < 3; i++)
    fprintf(out, "| %s%s | %.0f | %.0f | %.0f | %.0f |\n", i < 2 ? "headroom pool, " : "",
            res[0][i].name, res[0][i].median, res[0][i].p99, res[1][i].median, res[1][i].p99);
  fprintf(out, "\nTarget: <= 100 ns median per alloc+free pair.\n");
  if (md) fclose(out);
  for (int i = 0; i < 3; i++)
    printf("%-20s pair median %5.0f p99 %6.0f | churn median %5.0f p99 %6.0f ns\n", res[0][i].name,
           res[0][i].median, res[0][i].p99, res[1][i].median, res[1][i].p99);
  free(ns);
  free(sizes);
  return 0;
}
