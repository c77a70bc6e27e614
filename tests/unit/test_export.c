/* Exporter: the Prometheus text checked line by line against the 0.0.4
 * format (names, labels, escaping, HELP/TYPE once per family, bounded
 * process series), then served over loopback and scraped with curl as a
 * real HTTP client: /metrics, /api/snapshot (parsed as JSON), 404 on other
 * paths, 405 on other methods, oversized requests refused without harm, a
 * port in use and a bad address as clear errors. */
#include "hr_test.h"

#include "fake_snapshot.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <unistd.h>

static bool have_curl(void) {
  return system("curl --version >/dev/null 2>&1") == 0;
}

/* Runs curl; the body goes to `body` (malloc'd), the status code is
 * returned (0 when curl itself failed). */
static int curl(const char *args, char **body, char *ctype, size_t ctn) {
  char cmd[1024], path[] = "/tmp/hr-test-export-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return 0;
  close(fd);
  snprintf(cmd, sizeof cmd, "curl -s -m 10 -o %s -w '%%{http_code} %%{content_type}' %s", path,
           args);
  FILE *p = popen(cmd, "r");
  int code = 0;
  char ct[256] = "";
  if (p) {
    if (fscanf(p, "%d %255[^\n]", &code, ct) < 1) code = 0;
    pclose(p);
  }
  if (ctype) snprintf(ctype, ctn, "%s", ct);
  if (body) {
    FILE *f = fopen(path, "rb");
    *body = NULL;
    if (f) {
      fseek(f, 0, SEEK_END);
      long n = ftell(f);
      fseek(f, 0, SEEK_SET);
      *body = calloc(1, (size_t)n + 1);
      if (*body && fread(*body, 1, (size_t)n, f) != (size_t)n) (*body)[0] = '\0';
      fclose(f);
    }
  }
  unlink(path);
  return code;
}

/* Checks one exposition in text format 0.0.4. Returns NULL when it is
 * valid, else a static message naming the line. */
static const char *check_format(const char *text, int *n_samples) {
  static char msg[512];
  char typed[64][80];
  size_t n_typed = 0;
  *n_samples = 0;
  size_t len = strlen(text);
  if (len == 0 || text[len - 1] != '\n') return "does not end with a newline";
  for (const char *line = text; *line;) {
    const char *end = strchr(line, '\n');
    int ll = (int)(end - line);
    char buf[1024];
    snprintf(buf, sizeof buf, "%.*s", ll, line);
    line = end + 1;
    if (buf[0] == '#') {
      char kw[8], name[80], rest[256];
      if (sscanf(buf, "# %7s %79s %255[^\n]", kw, name, rest) != 3) goto bad;
      if (strcmp(kw, "TYPE") == 0) {
        if (strcmp(rest, "gauge") && strcmp(rest, "counter")) goto bad;
        for (size_t i = 0; i < n_typed; i++)
          if (strcmp(typed[i], name) == 0) goto bad; /* a family typed twice */
        if (n_typed < 64) snprintf(typed[n_typed++], sizeof typed[0], "%s", name);
      } else if (strcmp(kw, "HELP") != 0)
        goto bad;
      continue;
    }
    const char *c = buf;
    if (!(isalpha((unsigned char)*c) || *c == '_' || *c == ':')) goto bad;
    while (isalnum((unsigned char)*c) || *c == '_' || *c == ':') c++;
    char name[80];
    snprintf(name, sizeof name, "%.*s", (int)(c - buf), buf);
    bool known = false;
    for (size_t i = 0; i < n_typed; i++) known |= strcmp(typed[i], name) == 0;
    if (!known) goto bad; /* a sample before its TYPE line */
    if (*c == '{') {
      c++;
      while (*c != '}') {
        if (!(isalpha((unsigned char)*c) || *c == '_')) goto bad;
        while (isalnum((unsigned char)*c) || *c == '_') c++;
        if (*c++ != '=' || *c++ != '"') goto bad;
        while (*c && *c != '"') {
          if (*c == '\\') {
            c++;
            if (*c != '\\' && *c != '"' && *c != 'n') goto bad;
          }
          c++;
        }
        if (*c++ != '"') goto bad;
        if (*c == ',')
          c++;
        else if (*c != '}')
          goto bad;
      }
      c++;
    }
    if (*c++ != ' ') goto bad;
    if (strcmp(c, "+Inf") && strcmp(c, "-Inf") && strcmp(c, "NaN")) {
      char *e;
      strtod(c, &e);
      if (e == c || *e) goto bad;
    }
    (*n_samples)++;
    continue;
  bad:
    snprintf(msg, sizeof msg, "bad line: %.400s", buf);
    return msg;
  }
  return NULL;
}

static hr_options_t *opts_with(const char *top) {
  hr_options_t *o;
  if (hr_options_create(&o) != 0) return NULL;
  char err[256];
  if (top) hr_options_set(o, "top", top, HR_SRC_CLI, err, sizeof err);
  return o;
}

/* A watch fed one snapshot with two GPUs and 5 processes, one with a name
 * that needs escaping. */
static hr_watch_t *fed_watch(const char *top) {
  hr_options_t *o = opts_with(top);
  hr_watch_t *w = NULL;
  char err[256];
  if (o && hr_watch_create(o, &w, err, sizeof err) == 0) {
    hr_snapshot_t *s = fake_snapshot(1700000000.0, 60 * GiB, 2, 5);
    snprintf(s->procs[4].name, sizeof s->procs[4].name, "we\"ird\\na\nme");
    fake_gpu_proc(s, 1, 0, 3 * GiB);
    s->gpus[0].used_bytes = 23 * GiB;
    s->cgroup.limit_bytes = HR_UNLIMITED;
    if (hr_watch_feed(w, s) != 0) hr_watch_destroy(w), w = NULL;
  }
  hr_options_destroy(o);
  return w;
}

/* The labels of fake GPU i as the exporter writes them (dcgm-exporter's names). */
static const char *gpu_labels(int i) {
  static char buf[2][512];
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  snprintf(buf[i], sizeof buf[i],
           "gpu=\"%d\",UUID=\"GPU-0000-000%d\",device=\"nvidia%d\",modelName=\"Test GPU %d\","
           "pci_bus_id=\"\",Hostname=\"%s\"",
           i, i, i, i, host);
  return buf[i];
}

static int count_lines(const char *m, const char *prefix) {
  int n = 0;
  size_t len = strlen(prefix);
  for (const char *p = m; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
    n += strncmp(p, prefix, len) == 0;
  return n;
}

static void test_metrics_format(void) {
  hr_watch_t *w = fed_watch("1");
  CHECK(w);
  char *m = NULL;
  CHECK_OK(hr_watch_metrics(w, &m));
  int n;
  const char *bad = check_format(m, &n);
  if (bad) fprintf(stderr, "%s\n", m);
  CHECK_MSG(!bad, "%s", bad ? bad : "");
  CHECK(n > 20);
  char want[1024];
  const struct {
    const char *fmt;
    int gpu;
  } gpu_lines[] = {
      {"headroom_gpu_memory_used_bytes{%s} 24696061952\n", 0},
      {"headroom_gpu_memory_total_bytes{%s} 25769803776\n", 1},
      {"headroom_gpu_memory_free_bytes{%s} 23622320128\n", 1},
      {"headroom_gpu_utilization_ratio{%s} 0.5\n", 0},
      {"headroom_gpu_memory_utilization_ratio{%s} 0.1\n", 0},
      {"headroom_gpu_temperature_celsius{%s} 40\n", 1},
      {"headroom_gpu_power_watts{%s} 100\n", 0},
      {"headroom_gpu_state{%s,state=\"ok\"} 1\n", 0},
      {"headroom_gpu_state{%s,state=\"error\"} 0\n", 1},
      {"headroom_level{scope=\"gpu\",%s} 2\n", 0},
      {"headroom_level{scope=\"gpu\",%s} 0\n", 1},
      {"headroom_process_gpu_memory_bytes{%s,pid=\"1001\",comm=\"proc1\",container_id=\"\","
       "pod_uid=\"\"} 3221225472\n",
       0},
  };
  for (size_t i = 0; i < sizeof gpu_lines / sizeof gpu_lines[0]; i++) {
    snprintf(want, sizeof want, gpu_lines[i].fmt, gpu_labels(gpu_lines[i].gpu));
    CHECK_CONTAINS(m, want);
  }
  static const char *lines[] = {
      "\nheadroom_host_memory_available_bytes 4294967296\n",
      "\nheadroom_cgroup_memory_limit_bytes +Inf\n",
      "\nheadroom_cgroup_memory_usage_bytes 4294967296\n",
      "\nheadroom_cgroup_oom_kills_total 0\n",
      "\nheadroom_process_rss_bytes{pid=\"1001\",comm=\"proc1\",container_id=\"\",pod_uid=\"\"} "
      "209715200\n",
      /* The largest without GPU memory, keyed by name, container and pod. */
      "\nheadroom_process_group_rss_bytes{comm=\"we\\\"ird\\\\na\\nme\",container_id=\"\","
      "pod_uid=\"\"} 524288000\n",
      "\nheadroom_process_group_processes{comm=\"we\\\"ird\\\\na\\nme\",container_id=\"\","
      "pod_uid=\"\"} 1\n",
      "\nheadroom_level{scope=\"host\"} 2\n",
      "\nheadroom_level{scope=\"cgroup\"} 0\n",
      "\nheadroom_probe_state{part=\"nvml\",state=\"ok\"} 1\n",
      "\nheadroom_probe_state{part=\"nvml\",state=\"absent\"} 0\n",
      "\nheadroom_probe_state{part=\"host\",state=\"ok\"} 1\n",
      "\nheadroom_gpus 2\n",
      "\nheadroom_last_sample_timestamp_seconds 1700000000.000\n",
      "\nheadroom_sample_errors_total 0\n",
      "# TYPE headroom_sample_duration_seconds gauge\n",
      "# TYPE headroom_process_leak_suspected gauge\n",
      "# TYPE headroom_events_total counter\n",
      "\nheadroom_events_total{kind=\"level\"} 2\n",
      "\nheadroom_events_total{kind=\"leak\"} 0\n",
      "\nheadroom_build_info{version=\"",
      "# TYPE process_cpu_seconds_total counter\n",
      "\nprocess_resident_memory_bytes ",
      "\nprocess_open_fds ",
      "\nprocess_start_time_seconds ",
  };
  for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) CHECK_CONTAINS(m, lines[i]);
  /* One GPU holder on one GPU: one series, and no zero-valued GPU series for
   * the four processes that hold none. */
  CHECK_EQ_INT(count_lines(m, "headroom_process_gpu_memory_bytes{"), 1);
  CHECK_EQ_INT(count_lines(m, "headroom_process_rss_bytes{"), 1);
  /* metrics_top (5 by default) of the 4 others: the 4, whatever --top says. */
  CHECK_EQ_INT(count_lines(m, "headroom_process_group_rss_bytes{"), 4);
  CHECK(!strstr(m, "scope=\"gpu0\""));
  CHECK(!strstr(m, "uuid="));
  CHECK(!strstr(m, "name=\"proc"));
  free(m);
  char *j = NULL;
  CHECK_OK(hr_watch_status_json(w, &j));
  cJSON *doc = cJSON_Parse(j);
  CHECK(doc);
  cJSON_Delete(doc);
  free(j);
  hr_watch_destroy(w);
}

/* Labels of the distinct series in m, added to set (n of them). */
static void collect_series(const char *m, char (*set)[256], size_t cap, size_t *n) {
  for (const char *p = m; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
    if (*p == '#' || strncmp(p, "headroom_process_", 17) != 0) continue;
    const char *sp = strrchr(p, ' '), *nl = strchr(p, '\n');
    while (sp && nl && sp > nl) sp = NULL;
    char key[256];
    snprintf(key, sizeof key, "%.*s", sp ? (int)(sp - p) : 0, p);
    bool seen = false;
    for (size_t i = 0; i < *n && !seen; i++) seen = strcmp(set[i], key) == 0;
    if (!seen && *n < cap) snprintf(set[(*n)++], 256, "%s", key);
  }
}

/* Fifteen minutes at 1 Hz of a host where short-lived workers come and go
 * (a new pid every 10 s, each the largest process for its life) beside a
 * GPU server: the per-process series stay a handful, because pids are
 * labels only on GPU holders and the workers share one name. Keyed by
 * pid, the same churn made 90 worker series. */
static void test_series_churn(void) {
  hr_options_t *o = opts_with(NULL);
  hr_watch_t *w = NULL;
  char err[256];
  CHECK(o && hr_watch_create(o, &w, err, sizeof err) == 0);
  static char set[512][256];
  size_t n = 0;
  for (int t = 0; t < 900; t++) {
    hr_snapshot_t *s = fake_snapshot(1700000000.0 + t, 8 * GiB, 1, 8);
    CHECK(s);
    fake_gpu_proc(s, 0, 0, 4 * GiB);
    hr_proc_t *worker = &s->procs[7];
    worker->pid = 5000 + t / 10; /* pids stay sorted: 5000 > 1006 */
    worker->start_ticks = 100000 + (uint64_t)t / 10;
    snprintf(worker->name, sizeof worker->name, "worker");
    worker->rss_bytes = 2 * GiB;
    CHECK_OK(hr_watch_feed(w, s));
    char *m = NULL;
    CHECK_OK(hr_watch_metrics(w, &m));
    collect_series(m, set, 512, &n);
    free(m);
  }
  /* GPU holder: gpu memory + rss (2); 5 groups x (rss + count) = 10. */
  CHECK_MSG(n <= 12, "%zu process series over 15 minutes", n);
  hr_watch_destroy(w);
  hr_options_destroy(o);
}

/* Container and pod labels come from the process's cgroup path. */
static void test_container_labels(void) {
  hr_options_t *o = opts_with(NULL);
  hr_watch_t *w = NULL;
  char err[256];
  CHECK(o && hr_watch_create(o, &w, err, sizeof err) == 0);
  hr_snapshot_t *s = fake_snapshot(1700000000.0, 8 * GiB, 1, 3);
  snprintf(s->procs[2].container_id, sizeof s->procs[2].container_id, "%s",
           "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  snprintf(s->procs[2].pod_uid, sizeof s->procs[2].pod_uid, "%s",
           "6f1b2a3c-0d4e-4f5a-8b6c-7d8e9f0a1b2c");
  fake_gpu_proc(s, 2, 0, GiB);
  CHECK_OK(hr_watch_feed(w, s));
  char *m = NULL;
  CHECK_OK(hr_watch_metrics(w, &m));
  CHECK_CONTAINS(m, ",pid=\"1002\",comm=\"proc2\",container_id=\"0123456789abcdef0123456789abcdef"
                    "0123456789abcdef0123456789abcdef\",pod_uid=\"6f1b2a3c-0d4e-4f5a-8b6c-"
                    "7d8e9f0a1b2c\"} 1073741824\n");
  free(m);
  hr_watch_destroy(w);
  hr_options_destroy(o);
}

/* Strips the exporter's own lines, which change between renders: its
 * process_* metrics and its connection counters (headroom_exporter_*, added
 * as /metrics is served). */
static bool own_line(const char *p) {
  static const char *const prefixes[] = {"process_", "headroom_exporter_"};
  for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
    size_t n = strlen(prefixes[i]);
    if (strncmp(p, prefixes[i], n) == 0 ||
        ((strncmp(p, "# HELP ", 7) == 0 || strncmp(p, "# TYPE ", 7) == 0) &&
         strncmp(p + 7, prefixes[i], n) == 0))
      return true;
  }
  return false;
}

static void strip_self(char *m) {
  char *out = m;
  for (char *p = m; *p;) {
    char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) + 1 : strlen(p);
    bool self = own_line(p);
    if (!self) memmove(out, p, len), out += len;
    p += len;
  }
  *out = '\0';
}

static void test_scrape_over_loopback(void) {
  if (!have_curl()) SKIP("curl is not installed");
  char err[256], url[256], ct[256];
  hr_exporter_t *e = NULL;
  CHECK_OK(hr_exporter_start("127.0.0.1:0", &e, err, sizeof err));
  int port = hr_exporter_port(e);
  CHECK(port > 0);
  char *body = NULL;
  /* Before the first sample: a clear "not yet". */
  snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
  CHECK_EQ_INT(curl(url, &body, ct, sizeof ct), 503);
  free(body);

  hr_watch_t *w = fed_watch("3");
  CHECK(w);
  hr_watch_attach_exporter(w, e);
  hr_snapshot_t *s = fake_snapshot(1700000001.0, 10 * GiB, 1, 4);
  CHECK_OK(hr_watch_feed(w, s));
  char *want = NULL;
  CHECK_OK(hr_watch_metrics(w, &want));

  CHECK_EQ_INT(curl(url, &body, ct, sizeof ct), 200);
  CHECK_CONTAINS(ct, "text/plain; version=0.0.4");
  /* The exporter's counters follow what the watch rendered, in the format
   * too; this scrape is at least the third connection accepted. */
  int n;
  const char *bad = check_format(body, &n);
  CHECK_MSG(!bad, "%s", bad ? bad : "");
  CHECK_CONTAINS(body, "# TYPE headroom_exporter_connections_dropped_total counter\n");
  CHECK_CONTAINS(body, "headroom_exporter_requests_shed_total 0\n");
  static const char accepted[] = "\nheadroom_exporter_connections_accepted_total ";
  const char *acc = strstr(body, accepted);
  CHECK(acc && strtoull(acc + sizeof accepted - 1, NULL, 10) >= 2);
  strip_self(body);
  strip_self(want);
  CHECK_STR(body, want);
  free(body);
  free(want);

  snprintf(url, sizeof url, "http://127.0.0.1:%d/api/snapshot", port);
  CHECK_EQ_INT(curl(url, &body, ct, sizeof ct), 200);
  CHECK_CONTAINS(ct, "application/json");
  cJSON *doc = cJSON_Parse(body);
  CHECK_MSG(doc, "snapshot is not JSON: %.200s", body);
  cJSON_Delete(doc);
  free(body);

  /* / is a page that links both. */
  snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
  CHECK_EQ_INT(curl(url, &body, ct, sizeof ct), 200);
  CHECK_CONTAINS(ct, "text/html");
  CHECK_CONTAINS(body, "<a href=\"/metrics\">");
  CHECK_CONTAINS(body, "<a href=\"/api/snapshot\">");
  free(body);

  /* Everything else is 404; other methods 405; nothing changes. */
  static const char *paths[] = {"/index.html",     "/metrics/",      "/api",
                                "/api/snapshot/x", "/../etc/passwd", "/metrics?x=1%00"};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    snprintf(url, sizeof url, "'http://127.0.0.1:%d%s'", port, paths[i]);
    int code = curl(url, NULL, NULL, 0);
    /* A query string leaves the path /metrics: that one is served. */
    if (strncmp(paths[i], "/metrics?", 9) == 0)
      CHECK_EQ_INT(code, 200);
    else
      CHECK_MSG(code == 404, "%s gave %d", paths[i], code);
  }
  snprintf(url, sizeof url, "-X POST -d x=1 http://127.0.0.1:%d/metrics", port);
  CHECK_EQ_INT(curl(url, NULL, NULL, 0), 405);
  snprintf(url, sizeof url, "-X DELETE http://127.0.0.1:%d/api/snapshot", port);
  CHECK_EQ_INT(curl(url, NULL, NULL, 0), 405);

  /* Oversized requests: 64 KiB of headers, then a 4 MiB body. Neither is
   * answered 200, and the server goes on serving. */
  char big[] = "/tmp/hr-test-export-big-XXXXXX";
  int fd = mkstemp(big);
  CHECK(fd >= 0);
  FILE *f = fdopen(fd, "w");
  fputs("X-Big: ", f);
  for (int i = 0; i < 65536; i++) fputc('a', f);
  fputc('\n', f);
  fclose(f);
  snprintf(url, sizeof url, "-H @%s http://127.0.0.1:%d/metrics", big, port);
  int code = curl(url, NULL, NULL, 0);
  CHECK_MSG(code != 200, "64 KiB of headers were accepted");
  f = fopen(big, "w");
  for (int i = 0; i < 4 << 20; i++) fputc('b', f);
  fclose(f);
  snprintf(url, sizeof url, "-X POST --data-binary @%s http://127.0.0.1:%d/metrics", big, port);
  code = curl(url, NULL, NULL, 0);
  CHECK_MSG(code != 200, "a 4 MiB body was answered %d", code);
  unlink(big);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
  CHECK_EQ_INT(curl(url, NULL, NULL, 0), 200);

  hr_watch_destroy(w);
  hr_exporter_stop(e);
}

static void test_port_in_use(void) {
  char err[256], addr[64];
  hr_exporter_t *a = NULL, *b = NULL;
  CHECK_OK(hr_exporter_start("127.0.0.1:0", &a, err, sizeof err));
  snprintf(addr, sizeof addr, "127.0.0.1:%d", hr_exporter_port(a));
  CHECK_RC(hr_exporter_start(addr, &b, err, sizeof err), HR_EBUSY);
  CHECK(b == NULL);
  CHECK_CONTAINS(err, "already in use");
  CHECK_CONTAINS(err, addr);
  hr_exporter_stop(a);
  /* Freed: the port can be taken again. */
  CHECK_OK(hr_exporter_start(addr, &b, err, sizeof err));
  hr_exporter_stop(b);
}

static void test_bad_addresses(void) {
  static const char *bad[] = {"nonsense",      "127.0.0.1", "127.0.0.1:",  "127.0.0.1:99999",
                              "127.0.0.1:80x", "[::1",      "300.1.2.3:80"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char err[256] = "";
    hr_exporter_t *e = NULL;
    int rc = hr_exporter_start(bad[i], &e, err, sizeof err);
    CHECK_MSG(rc == HR_EINVAL, "%s gave %d", bad[i], rc);
    CHECK(e == NULL);
    CHECK_CONTAINS(err, bad[i]);
  }
}

int main(void) {
  HR_RUN(test_metrics_format);
  HR_RUN(test_series_churn);
  HR_RUN(test_container_labels);
  HR_RUN(test_scrape_over_loopback);
  HR_RUN(test_port_in_use);
  HR_RUN(test_bad_addresses);
  return hr_test_finish("test_export");
}
