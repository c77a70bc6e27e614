/* Traces built to hurt the replay: many streams without a recorded peak (the
 * shape of every RMM log import), a misspelt peak key in the device line,
 * and R lines whose running sum leaves the range of the counter. Each must
 * finish fast and either replay or be refused with path:line; the
 * sanitizer builds catch any overflow on the way. */
#include "hr_test.h"

#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Before the fix this took minutes (263 s in a release build). The
 * sanitizer builds pay for shadow memory on each stream's maps: they get
 * more room. The time is this process's CPU time, which a loaded machine
 * does not stretch. */
#ifdef HR_SANITIZE_BUILD
#define LIMIT_S 10.0
#else
#define LIMIT_S 1.0
#endif

static char tmp[] = "/tmp/hr_test_trace_attack_XXXXXX";

/* CPU seconds of this process. */
static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A trace of `streams` streams, each allocating and freeing one 1 MiB and
 * one 64 KiB block, under the device line `device_line`. */
static int write_streams(int streams, const char *device_line) {
  strcpy(tmp, "/tmp/hr_test_trace_attack_XXXXXX");
  int fd = mkstemp(tmp);
  if (fd < 0) return -1;
  FILE *f = fdopen(fd, "w");
  fprintf(f, "headroom-trace 2\nsource rmm-csv synthetic\n");
  fprintf(f, device_line, streams * 2, streams * 4);
  fputc('\n', f);
  for (int i = 0; i < streams; i++)
    fprintf(f, "A %d 1048576 %d\nA %d 65536 %d\n", 2 * i, i + 1, 2 * i + 1, i + 1);
  for (int i = 0; i < 2 * streams; i++) fprintf(f, "F %d\n", i);
  fprintf(f, "end\n");
  return fclose(f) == 0 ? 0 : -1;
}

/* Without a recorded peak every stream's segment reserved four times a
 * 1 PiB default, and destroying the pool walked all 2^31 granules of each:
 * about 3 s a stream. Now the default is 1 TiB and the walk stops at the
 * last mapped granule. */
static void check_fast(const char *device_line) {
  CHECK(write_streams(40, device_line) == 0);
  hr_replay_result_t res;
  size_t n = 0;
  char err[512] = "";
  double t0 = now_s();
  int rc = hr_replay_file(tmp, NULL, &res, 1, &n, err, sizeof err);
  double took = now_s() - t0;
  unlink(tmp);
  CHECK_MSG(rc == 0, "%s", err);
  CHECK_EQ_INT(n, 1);
  CHECK_EQ_U64(res.events, 160);
  CHECK_EQ_U64(res.ooms, 0);
  CHECK_EQ_U64(res.capacity, 1ull << 40);
  CHECK_EQ_U64(res.peak_live_bytes, 40ull * (1048576 + 65536));
  CHECK_MSG(took < LIMIT_S, "40 streams without a peak took %.2f s", took);
}

static void test_many_streams_without_peak(void) {
  check_fast("device 0 slots=%d initial=0 ops=%d");
}

static void test_misspelt_peak_key(void) {
  check_fast("device 0 slots=%d initial=0 ops=%d pytorch_peak_reservd=8589934592");
}

static int replay_text(const char *text, char *err, size_t errlen) {
  strcpy(tmp, "/tmp/hr_test_trace_attack_XXXXXX");
  int fd = mkstemp(tmp);
  if (fd < 0) return HR_EIO;
  bool ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
  close(fd);
  hr_replay_result_t res;
  size_t n = 0;
  int rc = ok ? hr_replay_file(tmp, NULL, &res, 1, &n, err, errlen) : HR_EIO;
  unlink(tmp);
  return rc;
}

/* A signed sum of the start and a change near 2^63 overflowed (UBSan aborts
 * the sanitizer build); now the count is unsigned and leaving its range is
 * a damaged trace. */
static void test_reserved_overflow(void) {
  static const struct {
    const char *text, *want;
  } cases[] = {
      {"headroom-trace 1\ndevice 0 slots=1 initial=0 ops=2 "
       "pytorch_reserved_start=4611686018427387904"
       "\nA 0 512 0\nR +9223372036854775807\nR +9223372036854775807\nF 0\nend\n",
       ":5: R +9223372036854775807 takes PyTorch's reserved memory"},
      {"headroom-trace 1\ndevice 0 slots=1 initial=0 ops=2 pytorch_reserved_start=1\n"
       "A 0 512 0\nR -9223372036854775807\nF 0\nend\n",
       ":4: R -9223372036854775807 takes PyTorch's reserved memory (1 bytes) below zero"},
      {"headroom-trace 1\ndevice 0 slots=1 initial=0 ops=2 "
       "pytorch_reserved_start=18446744073709551615\nA 0 512 0\nR +1\nF 0\nend\n",
       "past 2^64 bytes"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char err[512] = "";
    int rc = replay_text(cases[i].text, err, sizeof err);
    CHECK_MSG(rc == HR_EPARSE, "case %zu: %d %s", i, rc, err);
    CHECK_CONTAINS(err, cases[i].want);
  }
  /* Changes that stay in range still replay. */
  char err[512] = "";
  CHECK_OK(replay_text("headroom-trace 1\ndevice 0 slots=1 initial=0 ops=2 "
                       "pytorch_reserved_start=9223372036854775808\nA 0 512 0\n"
                       "R +9223372036854775807\nR -9223372036854775807\nF 0\nend\n",
                       err, sizeof err));
}

static long max_rss_kib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

/* Found by fuzzing: a device line declaring 3*10^8 slots made the replay
 * allocate 9.6 GB before reading a single event. Slots are now dense and
 * the replay's array grows with them. */
static void test_declared_slots_cost_nothing(void) {
  long before = max_rss_kib();
  char err[512] = "";
  CHECK_OK(replay_text("headroom-trace 1\ndevice 0 slots=4294967295 initial=1 ops=2\n"
                       "L 0 0 7\nA 1 5 0\nF 1\nend\n",
                       err, sizeof err));
  CHECK_MSG(max_rss_kib() - before < 64 * 1024, "max RSS grew by %ld KiB", max_rss_kib() - before);
  int rc = replay_text("headroom-trace 1\ndevice 0 slots=4294967295 initial=0 ops=2\n"
                       "A 4294967294 5 0\nF 4294967294\nend\n",
                       err, sizeof err);
  CHECK_RC(rc, HR_EPARSE);
  CHECK_CONTAINS(err, ":3: slot 4294967294 before slot 0 was used");
  rc = replay_text("headroom-trace 1\ndevice 0 slots=9 initial=0 ops=2\nA 0 5 0\nF 7\nend\n", err,
                   sizeof err);
  CHECK_RC(rc, HR_EPARSE);
  CHECK_CONTAINS(err, ":4: free of slot 7, which is not live");
}

int main(void) {
  HR_RUN(test_many_streams_without_peak);
  HR_RUN(test_misspelt_peak_key);
  HR_RUN(test_reserved_overflow);
  HR_RUN(test_declared_slots_cost_nothing);
  return hr_test_finish("test_trace_attack");
}
