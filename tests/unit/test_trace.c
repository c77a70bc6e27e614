/* The trace reader (every error names its line) and, with a pool, the replay
 * of small hand-written traces whose peaks are known exactly. */
#include "hr_test.h"
#include "util/util.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[256];

/* Writes `text` to a fresh file in the test's folder; returns its path. */
static const char *write_trace(const char *name, const char *text) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "w");
  if (!f) return NULL;
  fputs(text, f);
  fclose(f);
  return path;
}

/* Reads the whole trace; returns the first error (or 0) and its message. */
static int read_all(const char *path, char *err, size_t errlen, uint64_t *n_events) {
  hr_trace_reader_t *r;
  int rc = hr_trace_open(path, &r, err, errlen);
  if (rc) return rc;
  hr_trace_event_t ev;
  uint64_t n = 0;
  while ((rc = hr_trace_next(r, &ev, err, errlen)) == 0 && ev.op != HR_TRACE_END) n++;
  if (n_events) *n_events = n;
  hr_trace_close(r);
  return rc;
}

static const char *GOOD = "headroom-trace 1\n"
                          "source pytorch-snapshot x.pickle\n"
                          "alloc_conf expandable_segments:True\n"
                          "# a comment\n"
                          "device 0 slots=3 initial=1 ops=4 pytorch_reserved_start=4194304 "
                          "pytorch_peak_reserved=6291456 pytorch_peak_live=3000 pytorch_ooms=1 "
                          "future_key=7\n"
                          "L 0 1000 0\n"
                          "A 1 1500 7\n"
                          "R +2097152\n"
                          "\n"
                          "F 1\n"
                          "A 2 500 0\n"
                          "O 99 0\n"
                          "F 0\n"
                          "R -2097152\n"
                          "device 2 slots=1 initial=0 ops=0\n"
                          "end\n";

/* A trace the reader must refuse, and words its message must hold. */
typedef struct bad_trace {
  const char *text, *want;
} bad_trace_t;

/* Each case fails with HR_EPARSE and a message that starts with the path
 * and holds the case's words. */
static void check_refused(const bad_trace_t *cases, size_t n) {
  char err[512];
  for (size_t i = 0; i < n; i++) {
    const char *p = write_trace("bad.hrt", cases[i].text);
    err[0] = '\0';
    int rc = read_all(p, err, sizeof err, NULL);
    CHECK_MSG(rc == HR_EPARSE, "case %zu: rc %d (%s), want HR_EPARSE", i, rc, err);
    CHECK_MSG(strstr(err, cases[i].want) != NULL, "case %zu: \"%s\" lacks \"%s\"", i, err,
              cases[i].want);
    CHECK_MSG(strncmp(err, p, strlen(p)) == 0, "case %zu: \"%s\" does not start with the path", i,
              err);
  }
}

static void test_read_good(void) {
  char err[512] = "";
  const char *p = write_trace("good.hrt", GOOD);
  hr_trace_reader_t *r;
  CHECK_OK(hr_trace_open(p, &r, err, sizeof err));
  CHECK_STR(hr_trace_source(r), "pytorch-snapshot x.pickle");
  hr_trace_event_t ev;
  hr_trace_op_t want[] = {HR_TRACE_DEVICE,   HR_TRACE_LIVE,   HR_TRACE_ALLOC, HR_TRACE_RESERVED,
                          HR_TRACE_FREE,     HR_TRACE_ALLOC,  HR_TRACE_OOM,   HR_TRACE_FREE,
                          HR_TRACE_RESERVED, HR_TRACE_DEVICE, HR_TRACE_END,   HR_TRACE_END};
  for (size_t i = 0; i < HR_ARRAY_LEN(want); i++) {
    int rc = hr_trace_next(r, &ev, err, sizeof err);
    if (rc) hr_trace_close(r);
    CHECK_MSG(rc == 0, "event %zu: %s", i, err);
    if (ev.op != want[i]) hr_trace_close(r);
    CHECK_EQ_INT(ev.op, want[i]);
    if (i == 0) {
      const hr_trace_device_t *d = hr_trace_device(r);
      CHECK_STR(hr_trace_alloc_conf(r), "expandable_segments:True");
      CHECK(d->has_pytorch && d->device == 0 && d->slots == 3 && d->initial == 1 && d->ops == 4);
      CHECK_EQ_U64(d->pytorch_reserved_start, 4194304);
      CHECK_EQ_U64(d->pytorch_peak_reserved, 6291456);
      CHECK_EQ_U64(d->pytorch_peak_live, 3000);
      CHECK_EQ_U64(d->pytorch_ooms, 1);
      CHECK(!d->has_times); /* version 1 keeps no times */
    }
    CHECK_EQ_U64(ev.time_us, 0);
    if (i == 2) CHECK(ev.slot == 1 && ev.size == 1500 && ev.stream == 7);
    if (i == 3) CHECK(ev.delta == 2097152);
    if (i == 4) CHECK_EQ_U64(hr_trace_line(r), 10);
    if (i == 8) CHECK(ev.delta == -2097152);
    if (i == 9) CHECK(hr_trace_device(r)->device == 2 && !hr_trace_device(r)->has_pytorch);
  }
  uint64_t done, total;
  hr_trace_progress(r, &done, &total);
  CHECK_EQ_U64(done, total);
  CHECK_EQ_U64(total, strlen(GOOD));
  hr_trace_close(r);
}

/* Each broken trace must fail with HR_EPARSE naming the line and the reason. */
static void test_read_errors(void) {
  static const bad_trace_t cases[] = {
      {"", "empty file"},
      {"hello\n", ":1: not a headroom trace"},
      {"headroom-trace x\n", ":1: bad version"},
      {"headroom-trace 1\nA 0 1 0\nend\n", ":2: 'A' line before any device line"},
      {"headroom-trace 1\ndevice 0 slots=1 initial=0\nend\n", ":2: device: needs slots="},
      {"headroom-trace 1\ndevice 0 slots=x initial=0 ops=0\nend\n", ":2: device: 'slots' needs"},
      {"headroom-trace 1\ndevice 0 slots=1 initial=0 ops=1\nA 1 5 0\nend\n",
       ":3: slot 1 out of range"},
      {"headroom-trace 1\ndevice 0 slots=1 initial=0 ops=1\nA 0 5\nend\n", ":3: expected a stream"},
      {"headroom-trace 1\ndevice 0 slots=1 initial=0 ops=1\nA 0 -5 0\nend\n",
       ":3: expected a size"},
      {"headroom-trace 1\ndevice 0 slots=1 initial=0 ops=1\nA 0 5 0 9\nend\n",
       ":3: unexpected '9'"},
      {"headroom-trace 1\ndevice 0 slots=1 initial=0 ops=1\nA 0 99999999999999999999 0\nend\n",
       ":3: expected a size"},
      {"headroom-trace 1\ndevice 0 slots=1 initial=0 ops=0\nR 5\nend\n", ":3: R needs a signed"},
      {"headroom-trace 1\ndevice 0 slots=1 initial=0 ops=0\nX 1 2\nend\n", ":3: unknown record 'X"},
      {"headroom-trace 1\ndevice 0 slots=1 initial=0 ops=0\nfrobnicate\nend\n",
       ":3: unknown record 'frobnicate'"},
      {"headroom-trace 1\ndevice 0 slots=2 initial=0 ops=2\nA 0 5 0\nF 0\nA 1 5 0\nend\n",
       ":6: device 0 declares ops=2 but has 3"},
      {"headroom-trace 1\ndevice 0 slots=2 initial=1 ops=0\ndevice 1 slots=1 initial=0 "
       "ops=0\nend\n",
       ":3: device 0 declares initial=1 but has 0"},
      {"headroom-trace 1\ndevice 0 slots=2 initial=1 ops=1\nA 0 5 0\nL 1 5 0\nend\n",
       ":4: L line after the section's first event"},
      {"headroom-trace 1\ndevice 0 slots=2 initial=0 ops=1\nA 0 5 0\n", ":3: truncated"},
      {"headroom-trace 1\ndevice 0 slots=2 initial=0 ops=1\nA 0 5", ":3: truncated"},
      {"headroom-trace 1\ndevice 0 slots=1 initial=0 ops=0\nend\nA 0 1 0\n",
       ":4: 'A 0 1 0' after the 'end' line"},
  };
  check_refused(cases, HR_ARRAY_LEN(cases));
  if (hr_t_cur_failed) return;
  char err[512];
  CHECK_RC(read_all(write_trace("v3.hrt", "headroom-trace 3\nend\n"), err, sizeof err, NULL),
           HR_EVERSION);
  CHECK_CONTAINS(err, "format version 3, this reader knows 1 to 2");
  CHECK_RC(read_all(write_trace("v0.hrt", "headroom-trace 0\nend\n"), err, sizeof err, NULL),
           HR_EVERSION);
  CHECK_RC(read_all("/nonexistent/trace.hrt", err, sizeof err, NULL), HR_ENOENT);
  CHECK_CONTAINS(err, "/nonexistent/trace.hrt: No such file or directory");
}

/* Version 2: T lines give each event's time, absolute or as a change, and
 * are no events themselves; a section without duration_us has no times. */
static void test_read_times(void) {
  static const char *text = "headroom-trace 2\n"
                            "device 0 slots=3 initial=1 ops=4 duration_us=1500000\n"
                            "L 0 1000 0\n"
                            "T 0\n"
                            "A 1 1500 7\n"
                            "R +2097152\n"
                            "T 250\n"
                            "F 1\n"
                            "T +750\n"
                            "T +0\n"
                            "A 2 500 0\n"
                            "O 99 0\n"
                            "T 1500000\n"
                            "F 0\n"
                            "device 1 slots=1 initial=0 ops=2\n"
                            "A 0 5 0\n"
                            "F 0\n"
                            "device 2 slots=1 initial=0 ops=2 duration_us=9\n"
                            "A 0 5 0\n"
                            "T +9\n"
                            "F 0\n"
                            "end\n";
  static const struct {
    hr_trace_op_t op;
    uint64_t time_us;
  } want[] = {{HR_TRACE_DEVICE, 0},   {HR_TRACE_LIVE, 0},       {HR_TRACE_ALLOC, 0},
              {HR_TRACE_RESERVED, 0}, {HR_TRACE_FREE, 250},     {HR_TRACE_ALLOC, 1000},
              {HR_TRACE_OOM, 1000},   {HR_TRACE_FREE, 1500000}, {HR_TRACE_DEVICE, 0},
              {HR_TRACE_ALLOC, 0},    {HR_TRACE_FREE, 0},       {HR_TRACE_DEVICE, 0},
              {HR_TRACE_ALLOC, 0},    {HR_TRACE_FREE, 9},       {HR_TRACE_END, 0}};
  char err[512] = "";
  hr_trace_reader_t *r;
  CHECK_OK(hr_trace_open(write_trace("times.hrt", text), &r, err, sizeof err));
  hr_trace_event_t ev;
  for (size_t i = 0; i < HR_ARRAY_LEN(want); i++) {
    int rc = hr_trace_next(r, &ev, err, sizeof err);
    if (rc || ev.op != want[i].op || ev.time_us != want[i].time_us) hr_trace_close(r);
    CHECK_MSG(rc == 0, "event %zu: %s", i, err);
    CHECK_MSG(ev.op == want[i].op && ev.time_us == want[i].time_us,
              "event %zu: op %d at %" PRIu64 " us, want op %d at %" PRIu64 " us", i, (int)ev.op,
              ev.time_us, (int)want[i].op, want[i].time_us);
    const hr_trace_device_t *d = hr_trace_device(r);
    if (i == 0) CHECK(d->has_times && d->duration_us == 1500000);
    if (i == 8) CHECK(!d->has_times && d->duration_us == 0);
    if (i == 11) CHECK(d->has_times && d->duration_us == 9);
  }
  hr_trace_close(r);
  /* A version 1 trace is read as before: its duration_us, a later version's
   * key to it, is ignored, so it has no times. */
  CHECK_OK(hr_trace_open(write_trace("v1d.hrt", "headroom-trace 1\n"
                                                "device 0 slots=1 initial=0 ops=0 duration_us=5\n"
                                                "end\n"),
                         &r, err, sizeof err));
  CHECK_OK(hr_trace_next(r, &ev, err, sizeof err));
  CHECK(ev.op == HR_TRACE_DEVICE && !hr_trace_device(r)->has_times);
  hr_trace_close(r);
}

/* Each malformed T line is refused with HR_EPARSE naming its line. */
static void test_read_time_errors(void) {
  static const bad_trace_t cases[] = {
      {"headroom-trace 2\nT 0\nend\n", ":2: 'T' line before any device line"},
      {"headroom-trace 2\ndevice 0 slots=1 initial=0 ops=0 duration_us=9\nT x\nend\n",
       ":3: T needs microseconds"},
      {"headroom-trace 2\ndevice 0 slots=1 initial=0 ops=0 duration_us=9\nT -1\nend\n",
       ":3: T needs microseconds"},
      {"headroom-trace 2\ndevice 0 slots=1 initial=0 ops=0 duration_us=9\nT 5 6\nend\n",
       ":3: T needs microseconds"},
      {"headroom-trace 2\ndevice 0 slots=1 initial=0 ops=0 duration_us=9\nT\nend\n",
       ":3: unknown record 'T'"},
      {"headroom-trace 2\ndevice 0 slots=1 initial=0 ops=0 duration_us=9\nT 5\nT 4\nend\n",
       ":4: time goes backwards (T 4 after 5)"},
      {"headroom-trace 2\ndevice 0 slots=1 initial=0 ops=0 duration_us=9\nT 5\nT +5\nend\n",
       ":4: time 10 beyond the device line's duration_us=9"},
      {"headroom-trace 2\ndevice 0 slots=1 initial=0 ops=0 duration_us=18446744073709551615\n"
       "T 18446744073709551615\nT +1\nend\n",
       ":4: time overflows"},
      {"headroom-trace 2\ndevice 0 slots=1 initial=0 ops=0\nT 0\nend\n",
       ":3: T line in a section whose device line has no duration_us="},
      {"headroom-trace 1\ndevice 0 slots=1 initial=0 ops=0 duration_us=9\nT 0\nend\n",
       ":3: T line in a version 1 trace (times need version 2)"},
  };
  check_refused(cases, HR_ARRAY_LEN(cases));
}

static void test_read_long_line(void) {
  char path[512], err[512];
  snprintf(path, sizeof path, "%s/long.hrt", tmpdir);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  fprintf(f, "headroom-trace 1\n# ");
  for (int i = 0; i < 10000; i++) fputc('x', f);
  fprintf(f, "\nend\n");
  fclose(f);
  CHECK_RC(read_all(path, err, sizeof err, NULL), HR_EPARSE);
  CHECK_CONTAINS(err, ":2: line longer than 4096 bytes");
}

static long max_rss_kib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

/* Streams a trace of two million events, each pair with its T line: the
 * reader's memory must not grow with the file (the file is ~40 MB; the reader
 * may use a few hundred KiB). */
static void test_read_bounded_memory(void) {
  char path[512], err[512];
  const uint64_t pairs = 1000000;
  snprintf(path, sizeof path, "%s/big.hrt", tmpdir);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  fprintf(f,
          "headroom-trace 2\ndevice 0 slots=4 initial=0 ops=%" PRIu64 " duration_us=%" PRIu64 "\n",
          2 * pairs, pairs);
  for (uint64_t i = 0; i < pairs; i++)
    fprintf(f, "T +1\nA %u %" PRIu64 " 0\nF %u\n", (unsigned)(i & 3), 512 + i, (unsigned)(i & 3));
  fprintf(f, "end\n");
  fclose(f);
  long before = max_rss_kib();
  uint64_t n = 0;
  CHECK_OK(read_all(path, err, sizeof err, &n));
  long grew = max_rss_kib() - before;
  CHECK_EQ_U64(n, 2 * pairs + 1);
  CHECK_MSG(grew < 2048, "max RSS grew by %ld KiB while reading a 40 MB trace", grew);
  unlink(path);
}

/* ---- replay ------------------------------------------------------------- */

#define MIB (1024ull * 1024ull)

/* A small trace whose peaks follow from PyTorch's documented policy alone:
 * a 1000-byte request takes a 2 MiB small-pool segment; 5 MiB takes a 20 MiB
 * segment and 4 MiB fits in the rest of it; once both are free they coalesce,
 * and 30 MiB (over 10 MiB: rounded to 2 MiB) needs a segment of its own. */
static const char *SMALL = "headroom-trace 1\n"
                           "source hand-written\n"
                           "device 0 slots=4 initial=1 ops=6 pytorch_reserved_start=0 "
                           "pytorch_peak_reserved=54525952 pytorch_peak_live=31458280 "
                           "pytorch_ooms=0\n"
                           "L 0 1000 0\n"
                           "A 1 5242880 0\n"
                           "R +2097152\n"
                           "R +20971520\n"
                           "A 2 4194304 0\n"
                           "F 1\n"
                           "F 2\n"
                           "R +31457280\n"
                           "A 3 31457280 0\n"
                           "F 3\n"
                           "end\n";

static void test_replay_exact_peaks(void) {
  char err[512] = "";
  const char *p = write_trace("small.hrt", SMALL);
  hr_replay_opts_t o = {.conf = "pytorch"};
  hr_replay_result_t res[2];
  size_t n = 0;
  CHECK_OK(hr_replay_file(p, &o, res, 2, &n, err, sizeof err));
  CHECK_EQ_U64(n, 1);
  CHECK_EQ_U64(res[0].events, 7);
  CHECK_EQ_U64(res[0].peak_live_bytes, 1000 + 30 * MIB);
  CHECK_EQ_U64(res[0].peak_reserved_bytes, 52 * MIB);
  CHECK_EQ_U64(res[0].ooms, 0);
  CHECK_EQ_U64(res[0].capacity, 52 * MIB); /* PyTorch's recorded peak reserved */
  CHECK(res[0].has_pytorch);
  CHECK_NEAR(res[0].ratio, 52.0 * MIB / (1000 + 30 * MIB), 1e-9);
  CHECK_NEAR(res[0].pytorch_ratio, res[0].ratio, 1e-9);
  CHECK(res[0].ns_per_op_median > 0 && res[0].ns_per_op_p99 >= res[0].ns_per_op_median);
}

/* At 40 MiB the 30 MiB request fits only once the free 20 MiB segment goes
 * back (peak 22, then 2 + 30 = 32 MiB); a further 20 MiB cannot fit at all. */
static void test_replay_capacity_and_oom(void) {
  char err[512] = "";
  const char *p = write_trace("oom.hrt", "headroom-trace 1\n"
                                         "device 0 slots=5 initial=1 ops=6\n"
                                         "L 0 1000 0\n"
                                         "A 1 5242880 0\n"
                                         "A 2 4194304 0\n"
                                         "F 1\n"
                                         "F 2\n"
                                         "A 3 31457280 0\n"
                                         "A 4 20971520 0\n"
                                         "end\n");
  hr_replay_opts_t o = {.conf = "pytorch", .capacity = 40 * MIB};
  hr_replay_result_t res;
  size_t n = 0;
  CHECK_OK(hr_replay_file(p, &o, &res, 1, &n, err, sizeof err));
  CHECK(!res.has_pytorch);
  CHECK_EQ_U64(res.capacity, 40 * MIB);
  CHECK_EQ_U64(res.ooms, 1);
  CHECK_EQ_U64(res.peak_reserved_bytes, 32 * MIB);
  CHECK_EQ_U64(res.peak_live_bytes, 1000 + 30 * MIB);
}

/* The default configuration on the same trace: whatever its policy, it must
 * reserve at least what is live and fail nothing at PyTorch's capacity. */
static void test_replay_default(void) {
  char err[512] = "";
  hr_replay_result_t res;
  size_t n = 0;
  CHECK_OK(hr_replay_file(write_trace("small.hrt", SMALL), NULL, &res, 1, &n, err, sizeof err));
  CHECK_EQ_U64(res.peak_live_bytes, 1000 + 30 * MIB);
  CHECK(res.peak_reserved_bytes >= res.peak_live_bytes);
  CHECK_EQ_U64(res.ooms, 0);
}

static void test_replay_errors(void) {
  char err[512] = "";
  hr_replay_result_t res;
  size_t n = 0;
  const char *p = write_trace("e1.hrt", "headroom-trace 1\ndevice 0 slots=2 initial=0 ops=2\n"
                                        "A 0 100 0\nF 1\nend\n");
  CHECK_RC(hr_replay_file(p, NULL, &res, 1, &n, err, sizeof err), HR_EPARSE);
  CHECK_CONTAINS(err, "e1.hrt:4: free of slot 1, which is not live");
  p = write_trace("e2.hrt", "headroom-trace 1\ndevice 0 slots=1 initial=0 ops=2\n"
                            "A 0 100 0\nA 0 100 0\nend\n");
  CHECK_RC(hr_replay_file(p, NULL, &res, 1, &n, err, sizeof err), HR_EPARSE);
  CHECK_CONTAINS(err, "e2.hrt:4: slot 0 is allocated while live");
  hr_replay_opts_t o = {.conf = "no_such_key:1"};
  CHECK_RC(hr_replay_file(write_trace("small.hrt", SMALL), &o, &res, 1, &n, err, sizeof err),
           HR_EINVAL);
  CHECK_CONTAINS(err, "no_such_key");
}

/* The command line: JSON keys, side-by-side configurations, the chart. */
static void test_replay_cli(void) {
  const char *cli = getenv("HR_CLI");
  if (!cli) SKIP("HR_CLI is not set");
  char cmd[1024], out[8192] = "";
  const char *p = write_trace("small.hrt", SMALL);
  snprintf(cmd, sizeof cmd, "%s replay %s --conf default --conf pytorch --json --svg %s/c.svg", cli,
           p, tmpdir);
  FILE *f = popen(cmd, "r");
  CHECK(f != NULL);
  size_t len = fread(out, 1, sizeof out - 1, f);
  out[len] = '\0';
  CHECK_EQ_INT(pclose(f), 0);
  static const char *keys[] = {"\"trace\": \"small.hrt\"",
                               "\"device\": 0",
                               "\"config\": \"default\"",
                               "\"config\": \"pytorch\"",
                               "\"events\": 7",
                               "\"peak_live_bytes\": 31458280",
                               "\"peak_reserved_bytes\": 54525952",
                               "\"ratio\": ",
                               "\"pytorch_peak_reserved_bytes\": 54525952",
                               "\"pytorch_ratio\": ",
                               "\"ooms\": 0",
                               "\"ns_per_op_median\": ",
                               "\"ns_per_op_p99\": "};
  for (size_t i = 0; i < HR_ARRAY_LEN(keys); i++) CHECK_CONTAINS(out, keys[i]);
  size_t lines = 0;
  for (char *q = out; (q = strchr(q, '\n')); q++) lines++;
  CHECK_EQ_U64(lines, 2);
  char svg[512], buf[16384];
  snprintf(svg, sizeof svg, "%s/c.svg", tmpdir);
  f = fopen(svg, "r");
  CHECK(f != NULL);
  len = fread(buf, 1, sizeof buf - 1, f);
  buf[len] = '\0';
  fclose(f);
  CHECK_CONTAINS(buf, "<svg");
  CHECK_CONTAINS(buf, ">memory<");
  CHECK_CONTAINS(buf, ".00 MiB<"); /* byte ticks, written by hr_size_text */
  CHECK_CONTAINS(buf, "PyTorch reserved (recorded)");
  CHECK_CONTAINS(buf, "headroom reserved, pytorch");
  CHECK_CONTAINS(buf, "</svg>");
  /* The table, and a clean failure for a missing trace. */
  snprintf(cmd, sizeof cmd, "%s replay %s --conf default --conf pytorch", cli, p);
  f = popen(cmd, "r");
  len = fread(out, 1, sizeof out - 1, f);
  out[len] = '\0';
  CHECK_EQ_INT(pclose(f), 0);
  CHECK_CONTAINS(out, "PyTorch (recorded)");
  CHECK_CONTAINS(out, "small.hrt");
  snprintf(cmd, sizeof cmd, "%s replay %s/missing.hrt 2>&1", cli, tmpdir);
  f = popen(cmd, "r");
  len = fread(out, 1, sizeof out - 1, f);
  out[len] = '\0';
  CHECK(WEXITSTATUS(pclose(f)) == 1);
  CHECK_CONTAINS(out, "missing.hrt: No such file or directory");
}

/* Runs `headroom replay TRACE --json --svg` on `text`; returns the JSON line
 * in out and the SVG in svg (each empty on failure). */
static int replay_svg(const char *cli, const char *name, const char *text, char *out, size_t outlen,
                      char *svg, size_t svglen) {
  char cmd[1024], svg_path[512];
  const char *p = write_trace(name, text);
  snprintf(svg_path, sizeof svg_path, "%s/%s.svg", tmpdir, name);
  /* A capacity, since the traces have no recorded peak to take it from. */
  snprintf(cmd, sizeof cmd, "%s replay %s --capacity 1G --json --svg %s", cli, p, svg_path);
  out[0] = svg[0] = '\0';
  FILE *f = popen(cmd, "r");
  if (!f) return -1;
  size_t len = fread(out, 1, outlen - 1, f);
  out[len] = '\0';
  int st = pclose(f);
  if (st != 0) return st;
  f = fopen(svg_path, "r");
  if (!f) return -1;
  len = fread(svg, 1, svglen - 1, f);
  svg[len] = '\0';
  fclose(f);
  return 0;
}

/* Checks that every polyline's x coordinates never decrease; counts the
 * points it saw into *points. */
static void check_polylines(const char *svg, size_t *points) {
  *points = 0;
  for (const char *q = svg; (q = strstr(q, "<polyline")); q++) {
    const char *pts = strstr(q, "points=\"");
    CHECK(pts != NULL);
    pts += 8;
    double last = -1;
    while (*pts && *pts != '"') {
      char *end;
      double x = strtod(pts, &end);
      CHECK_MSG(end != pts && *end == ',', "bad point at '%.20s'", pts);
      CHECK_MSG(x >= last, "polyline x goes back: %.1f after %.1f", x, last);
      last = x;
      (*points)++;
      pts = strchr(end, ' ');
      CHECK(pts != NULL);
      pts++;
    }
  }
}

/* The chart's x axis: seconds for a trace with times (their spread decides
 * where the points lie), the events' order for one without; --json gives
 * the duration when known. */
static void test_replay_cli_axis(void) {
  const char *cli = getenv("HR_CLI");
  if (!cli) SKIP("HR_CLI is not set");
  static char out[8192], svg[65536];
  /* 2.5 s in all; every event but the last in the first millisecond. */
  static const char *timed = "headroom-trace 2\n"
                             "device 0 slots=2 initial=0 ops=4 duration_us=2500000\n"
                             "T 0\n"
                             "A 0 1048576 0\n"
                             "T +1\n"
                             "A 1 2097152 0\n"
                             "T 1000\n"
                             "F 0\n"
                             "T 2500000\n"
                             "F 1\n"
                             "end\n";
  CHECK_OK(replay_svg(cli, "timed.hrt", timed, out, sizeof out, svg, sizeof svg));
  CHECK_CONTAINS(out, "\"duration_seconds\": 2.500000}");
  CHECK_CONTAINS(svg, ">seconds from the start of the recorded window<");
  CHECK(strstr(svg, "in order: the trace keeps no times") == NULL);
  CHECK_CONTAINS(svg, ">2.5</text>"); /* the last tick, in seconds */
  size_t points;
  check_polylines(svg, &points);
  /* 2 lines, 2 bins (0-1 ms and 2.5 s) and the step between them. */
  CHECK_EQ_U64(points, 2 * 3);
  /* The same events without times: one bin per event. */
  static const char *untimed = "headroom-trace 1\n"
                               "device 0 slots=2 initial=0 ops=4\n"
                               "A 0 1048576 0\n"
                               "A 1 2097152 0\n"
                               "F 0\n"
                               "F 1\n"
                               "end\n";
  CHECK_OK(replay_svg(cli, "untimed.hrt", untimed, out, sizeof out, svg, sizeof svg));
  CHECK_CONTAINS(out, "\"duration_seconds\": null}");
  CHECK_CONTAINS(svg, ">events (allocations and frees) of the recorded window, in order");
  CHECK(strstr(svg, "seconds") == NULL);
  check_polylines(svg, &points);
  CHECK_EQ_U64(points, 2 * (4 + 3)); /* 4 bins, 600 / 4 apart, with a step between each */
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/hr_test_trace.XXXXXX");
  if (!mkdtemp(tmpdir)) return 1;
  HR_RUN(test_read_good);
  HR_RUN(test_read_errors);
  HR_RUN(test_read_times);
  HR_RUN(test_read_time_errors);
  HR_RUN(test_read_long_line);
  HR_RUN(test_read_bounded_memory);
  HR_RUN(test_replay_exact_peaks);
  HR_RUN(test_replay_capacity_and_oom);
  HR_RUN(test_replay_default);
  HR_RUN(test_replay_errors);
  HR_RUN(test_replay_cli);
  HR_RUN(test_replay_cli_axis);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return hr_test_finish("test_trace");
}
