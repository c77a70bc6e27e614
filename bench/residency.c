/* Residency benchmark: bytes moved by each policy (comfy, lru, lookahead)
 * divided by the reference no plan can beat, for the example workflows and
 * for random ones: 100 small workflows (3-10 whole assets, 5-30 steps)
 * against the exact optimum and 20 large ones (12-40 assets, some partial,
 * 100-300 steps) against the proven lower bound. Writes a markdown table.
 *
 * usage: residency [SOURCE_DIR [OUT.md [SEED]]]  (defaults: ., stdout, 1) */
#include "util/util.h"
#include <headroom/daemon.h>

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const hr_policy_t policies[] = {HR_POLICY_COMFY, HR_POLICY_LRU, HR_POLICY_LOOKAHEAD};
#define NP 3

static uint64_t rnd(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

/* A random workflow as JSON: assets of 256 MiB to 10 GiB, steps using 1-3
 * of them with up to 1.75 GiB of working memory, and a budget between the
 * largest step and that plus half of everything. */
static char *random_workflow(uint64_t *st, size_t na, size_t ns, bool partial) {
  size_t cap = 256 + na * 96 + ns * 128, len = 0;
  char *buf = malloc(cap);
  uint64_t *sizes = calloc(na, sizeof *sizes), maxset = 0, total = 0;
  size_t(*uses)[3] = calloc(ns, sizeof *uses), *nu = calloc(ns, sizeof *nu);
  uint64_t *work = calloc(ns, sizeof *work);
  for (size_t i = 0; i < na; i++) total += sizes[i] = (1 + rnd(st) % 40) * (256ull << 20);
  for (size_t k = 0; k < ns; k++) {
    uint64_t set = 0;
    nu[k] = 1 + rnd(st) % 3;
    for (size_t j = 0; j < nu[k]; j++) {
      uses[k][j] = rnd(st) % na;
      bool dup = false;
      for (size_t q = 0; q < j; q++) dup = dup || uses[k][q] == uses[k][j];
      if (dup)
        uses[k][j] = uses[k][0];
      else
        set += sizes[uses[k][j]];
    }
    work[k] = (rnd(st) % 8) * (256ull << 20);
    maxset = HR_MAX(maxset, set + work[k]);
  }
  uint64_t budget = maxset + rnd(st) % (total / 2 + 1);
  len += (size_t)snprintf(buf + len, cap - len,
                          "{\"budget_bytes\": %" PRIu64 ", \"reserve_bytes\": 0, \"assets\": [",
                          budget);
  for (size_t i = 0; i < na; i++)
    len += (size_t)snprintf(buf + len, cap - len,
                            "%s{\"name\": \"m%zu\", \"bytes\": %" PRIu64 ", \"partial\": %s}",
                            i ? "," : "", i, sizes[i], partial && rnd(st) % 2 ? "true" : "false");
  len += (size_t)snprintf(buf + len, cap - len, "], \"steps\": [");
  for (size_t k = 0; k < ns; k++) {
    len += (size_t)snprintf(buf + len, cap - len, "%s{\"use\": [", k ? "," : "");
    for (size_t j = 0; j < nu[k]; j++)
      len += (size_t)snprintf(buf + len, cap - len, "%s\"m%zu\"", j ? "," : "", uses[k][j]);
    len += (size_t)snprintf(buf + len, cap - len, "], \"working_bytes\": %" PRIu64 "}", work[k]);
  }
  snprintf(buf + len, cap - len, "]}");
  free(sizes), free(uses), free(nu), free(work);
  return buf;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct agg {
  double *r[NP];
  size_t n;
  size_t at_target; /* lookahead <= 1.10 */
} agg_t;

/* Runs one workflow; adds ratios to agg (when given). Returns 0 or a code. */
static int run_one(hr_workflow_t *w, double ratio[NP], uint64_t moved[NP], uint64_t *ref,
                   bool *exact) {
  int rc = hr_workflow_reference(w, 0, ref, exact);
  if (rc) return rc;
  for (int p = 0; p < NP; p++) {
    hr_sim_result_t res;
    if ((rc = hr_workflow_simulate(w, policies[p], 0, NULL, NULL, &res))) return rc;
    if (res.failed_steps) return HR_ENOSPC;
    moved[p] = res.bytes_moved;
    ratio[p] = *ref ? (double)res.bytes_moved / (double)*ref : 1.0;
  }
  return 0;
}

static void summary(FILE *out, const char *what, agg_t *a) {
  fprintf(out, "| %s | %zu |", what, a->n);
  for (int p = 0; p < NP; p++) {
    qsort(a->r[p], a->n, sizeof(double), cmp_double);
    double sum = 0;
    for (size_t i = 0; i < a->n; i++) sum += a->r[p][i];
    fprintf(out, " %.3f / %.3f / %.3f |", a->r[p][a->n / 2], sum / (double)a->n, a->r[p][a->n - 1]);
  }
  fprintf(out, " %zu of %zu |\n", a->at_target, a->n);
}

static int random_set(FILE *out, const char *what, uint64_t *st, int count, size_t amin,
                      size_t amax, size_t smin, size_t smax, bool partial) {
  agg_t a = {0};
  for (int p = 0; p < NP; p++) a.r[p] = calloc((size_t)count, sizeof(double));
  for (int i = 0; i < count; i++) {
    size_t na = amin + rnd(st) % (amax - amin + 1), ns = smin + rnd(st) % (smax - smin + 1);
    char *json = random_workflow(st, na, ns, partial), err[512];
    hr_workflow_t *w = NULL;
    int rc = hr_workflow_parse(json, strlen(json), "random", &w, err, sizeof err);
    free(json);
    double ratio[NP];
    uint64_t moved[NP], ref;
    bool exact;
    if (rc == 0) rc = run_one(w, ratio, moved, &ref, &exact);
    hr_workflow_destroy(w);
    if (rc) {
      fprintf(stderr, "residency bench: random workflow %d: %s\n", i, hr_strerror(rc));
      return rc;
    }
    for (int p = 0; p < NP; p++) a.r[p][a.n] = ratio[p];
    a.at_target += ratio[2] <= 1.10 + 1e-9;
    a.n++;
  }
  summary(out, what, &a);
  for (int p = 0; p < NP; p++) free(a.r[p]);
  return 0;
}

int main(int argc, char **argv) {
  static const char *examples[] = {"sdxl-refiner-ipadapter", "flux-variants", "face-swap-video",
                                   "lip-sync-video"};
  const char *src = argc > 1 ? argv[1] : ".";
  FILE *out = argc > 2 ? fopen(argv[2], "w") : stdout;
  uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 0) : 1, st = seed ? seed : 1;
  if (!out) {
    fprintf(stderr, "residency bench: cannot write %s\n", argv[2]);
    return 2;
  }
  double t0 = hr__now_mono();
  fprintf(out,
          "# Residency: bytes moved per policy / the best possible\n\n"
          "Bytes copied to the device (full and partial loads) by each policy, divided by\n"
          "the reference no plan can beat: the exact offline optimum (search over every\n"
          "resident set at every step) where every asset moves whole and there are at most\n"
          "%d assets, else the proven lower bound (every byte movable alone,\n"
          "furthest-next-use per byte). 1.000 means optimal. Produced by `bench/residency`\n"
          "(build/release/bench/residency . bench/results/residency.md %" PRIu64 ").\n\n",
          HR_OPTIMUM_MAX_ASSETS, seed);
  fprintf(out, "## Example workflows (examples/)\n\n"
               "| workflow | steps | reference | reference bytes | comfy | lru | lookahead |\n"
               "| --- | ---: | --- | ---: | ---: | ---: | ---: |\n");
  for (size_t i = 0; i < HR_ARRAY_LEN(examples); i++) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/examples/%s.json", src, examples[i]);
    hr_workflow_t *w = NULL;
    if (hr_workflow_load(path, &w, err, sizeof err) != 0) {
      fprintf(stderr, "residency bench: %s\n", err);
      return 1;
    }
    double ratio[NP];
    uint64_t moved[NP], ref;
    bool exact;
    int rc = run_one(w, ratio, moved, &ref, &exact);
    hr_workflow_info_t info;
    hr_workflow_info(w, &info);
    hr_workflow_destroy(w);
    if (rc) {
      fprintf(stderr, "residency bench: %s: %s\n", path, hr_strerror(rc));
      return 1;
    }
    fprintf(out, "| %s | %zu | %s | %" PRIu64 " |", examples[i], info.steps,
            exact ? "exact" : "lower bound", ref);
    for (int p = 0; p < NP; p++) fprintf(out, " %.3f |", ratio[p]);
    fprintf(out, "\n");
  }
  fprintf(out,
          "\n## Random workflows (seed %" PRIu64 ")\n\n"
          "Median / mean / worst ratio per policy; the last column counts workflows where\n"
          "lookahead moves at most 1.10 x the reference.\n\n"
          "| set | workflows | comfy | lru | lookahead | lookahead <= 1.10 |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: |\n",
          seed);
  if (random_set(out, "small: 3-10 whole assets, 5-30 steps, vs exact optimum", &st, 100, 3, 10, 5,
                 30, false) ||
      random_set(out, "large: 12-40 assets (half partial), 100-300 steps, vs lower bound", &st, 20,
                 12, 40, 100, 300, true))
    return 1;
  fprintf(out, "\nRun time %.1f s.\n", hr__now_mono() - t0);
  if (out != stdout) fclose(out);
  return 0;
}
