/* pool_ideas: replays headroom traces (docs/trace-format.md) through the
 * pool under several configurations, side by side, to judge policy ideas by
 * peak reserved / peak live and by out-of-memory failures at PyTorch's own
 * peak reserved. A small reader of its own keeps it independent of the
 * replay command; `headroom replay` is the reference.
 *
 *   pool_ideas [--capacity-scale X] TRACE... -- CONF...
 *
 * Each CONF is a PYTORCH_CUDA_ALLOC_CONF string for hr_pool_config_parse
 * (with the presets "default" and "pytorch"); "pytorch+" means "pytorch"
 * plus the trace's own alloc_conf. Prints one markdown row per trace and
 * device, and the mean ratio per configuration. */
#include <headroom/headroom.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct res {
  double ratio, pt_ratio;
  uint64_t ooms, peak_live, peak_res, calls;
} res_t;

static int replay_section(FILE *f, const char *conf, uint64_t slots, uint64_t capacity, res_t *r) {
  hr_pool_config_t c;
  char err[256], line[4096];
  if (hr_pool_config_parse(conf, &c, err, sizeof err)) {
    fprintf(stderr, "conf '%s': %s\n", conf, err);
    return -1;
  }
  hr_backend_t *be;
  hr_pool_t *p;
  if (hr_backend_create("sim", 0, capacity, &be) || hr_pool_create(&c, be, 0, &p)) return -1;
  void **ptr = calloc(slots + 1, sizeof *ptr);
  uint64_t *sz = calloc(slots + 1, sizeof *sz);
  uint64_t live = 0;
  memset(r, 0, sizeof *r);
  long pos;
  while ((pos = ftell(f)), fgets(line, sizeof line, f)) {
    char op = line[0];
    unsigned long long a = 0, b = 0, s = 0;
    if (op == 'L' || op == 'A') {
      sscanf(line + 2, "%llu %llu %llu", &a, &b, &s);
      void *q = NULL;
      if (hr_pool_alloc(p, b, (void *)(uintptr_t)s, &q)) {
        r->ooms++;
        continue;
      }
      ptr[a] = q;
      sz[a] = b;
      live += b;
      if (live > r->peak_live) r->peak_live = live;
    } else if (op == 'F') {
      sscanf(line + 2, "%llu", &a);
      if (ptr[a]) {
        hr_pool_free(p, ptr[a], NULL);
        live -= sz[a];
        ptr[a] = NULL;
      }
    } else if (op == 'd' || op == 'e') {
      fseek(f, pos, SEEK_SET);
      break;
    }
  }
  hr_pool_stats_t st = {.size = sizeof st};
  hr_pool_stats(p, &st);
  r->peak_res = (uint64_t)st.reserved_bytes.peak;
  r->calls = st.num_device_alloc + st.num_device_free;
  r->ratio = r->peak_live ? (double)r->peak_res / (double)r->peak_live : 0;
  hr_pool_destroy(p);
  hr_backend_destroy(be);
  free(ptr);
  free(sz);
  return 0;
}

static void log_stderr(hr_log_level_t level, const char *msg, void *arg) {
  fprintf(stderr, "%s: %s\n", hr_log_level_name(level), msg);
}

int main(int argc, char **argv) {
  int i = 1, nconf = 0;
  if (getenv("HR_VERBOSE")) hr_set_log(log_stderr, NULL, HR_LOG_WARN);
  double scale = 1.0;
  const char *traces[64], *confs[32];
  int ntr = 0;
  if (i + 1 < argc && !strcmp(argv[i], "--capacity-scale")) scale = atof(argv[i + 1]), i += 2;
  for (; i < argc && strcmp(argv[i], "--"); i++) traces[ntr++] = argv[i];
  for (i++; i < argc; i++) confs[nconf++] = argv[i];
  if (!ntr || !nconf) {
    fprintf(stderr, "usage: pool_ideas [--capacity-scale X] TRACE... -- CONF...\n");
    return 2;
  }
  double sum[32] = {0}, worst[32] = {0};
  int beat[32] = {0}, rows = 0;
  uint64_t ooms[32] = {0};
  printf("| trace | dev | PyTorch |");
  for (int k = 0; k < nconf; k++) printf(" %s |", confs[k]);
  printf("\n|---|---|---|");
  for (int k = 0; k < nconf; k++) printf("---|");
  printf("\n");
  for (int t = 0; t < ntr; t++) {
    FILE *f = fopen(traces[t], "r");
    if (!f) {
      perror(traces[t]);
      return 1;
    }
    char line[4096], aconf[1024] = "";
    while (fgets(line, sizeof line, f)) {
      if (!strncmp(line, "alloc_conf ", 11)) {
        sscanf(line + 11, "%1023s", aconf);
        if (!strcmp(aconf, "-")) aconf[0] = '\0';
      }
      if (strncmp(line, "device ", 7)) continue;
      int dev = 0;
      unsigned long long slots = 0, pres = 0, plive = 0;
      sscanf(line, "device %d slots=%llu", &dev, &slots);
      char *q = strstr(line, "pytorch_peak_reserved=");
      if (q) pres = strtoull(q + 22, NULL, 10);
      q = strstr(line, "pytorch_peak_live=");
      if (q) plive = strtoull(q + 18, NULL, 10);
      long start = ftell(f);
      const char *name = strrchr(traces[t], '/');
      printf("| %s | %d | %.3f |", name ? name + 1 : traces[t], dev,
             plive ? (double)pres / (double)plive : 0);
      for (int k = 0; k < nconf; k++) {
        char conf[2048];
        if (!strcmp(confs[k], "pytorch+"))
          snprintf(conf, sizeof conf, "pytorch%s%s", aconf[0] ? "," : "", aconf);
        else
          snprintf(conf, sizeof conf, "%s", confs[k]);
        fseek(f, start, SEEK_SET);
        res_t r;
        if (replay_section(f, conf, slots, (uint64_t)((double)pres * scale), &r)) return 1;
        double pt = plive ? (double)pres / (double)plive : 0;
        printf(" %.4f%s%s, %" PRIu64 " calls |", r.ratio, r.ooms ? " OOM" : "",
               r.ratio > pt + 1e-9 ? " (worse)" : "", r.calls);
        sum[k] += r.ratio;
        if (r.ratio > worst[k]) worst[k] = r.ratio;
        beat[k] += r.ratio <= pt + 1e-9;
        ooms[k] += r.ooms;
      }
      rows++;
      printf("\n");
    }
    fclose(f);
  }
  printf("| mean | | |");
  for (int k = 0; k < nconf; k++)
    printf(" %.4f (<=PyTorch %d/%d, OOMs %" PRIu64 ") |", sum[k] / rows, beat[k], rows, ooms[k]);
  printf("\n");
  return 0;
}
