/* Errors, the option table and its layering, and the parsers it uses. */
#include "hr_test.h"
#include "util/util.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static void test_errors(void) {
  CHECK_STR(hr_strerror(0), "success");
  CHECK_STR(hr_strerror(HR_ENOMEM), "out of memory");
  CHECK_STR(hr_err_name(HR_ENOSPC), "HR_ENOSPC");
  CHECK_STR(hr_strerror(-9999), "unknown error");
  CHECK_STR(hr_err_name(12345), "HR_E?");
  /* Every code in the list has a distinct name and a text. */
#define ONE_(name, code, text)                                                                     \
  CHECK_STR(hr_err_name(code), #name);                                                             \
  CHECK_STR(hr_strerror(code), text);
  HR_ERRORS(ONE_)
#undef ONE_
}

static void test_version(void) {
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", HR_VERSION_MAJOR, HR_VERSION_MINOR, HR_VERSION_PATCH);
  CHECK_STR(hr_version(), want);
}

static void test_parse_size(void) {
  static const struct {
    const char *s;
    uint64_t want;
  } ok[] = {{"0", 0},
            {"512", 512},
            {"4K", 4096},
            {"400M", 400ull << 20},
            {"1.5GiB", 3ull << 29},
            {"2t", 2ull << 40},
            /* The unit's spellings: a prefix in either case, "i" and "B" after it. */
            {"3kIb ", 3072},
            {"2B", 2},
            {"16384T", 1ull << 54}};
  static const char *const bad[] = {"",   "-1",  "12Q", "abc",      "99999999999999999999999",
                                    "1i", "1KK", "1 K", "16777216T"};
  uint64_t v = 0;
  for (size_t i = 0; i < HR_ARRAY_LEN(ok); i++) {
    int rc = hr_parse_size(ok[i].s, &v);
    CHECK_MSG(rc == 0 && v == ok[i].want, "hr_parse_size(\"%s\"): %d, %" PRIu64 ", want %" PRIu64,
              ok[i].s, rc, v, ok[i].want);
  }
  for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++)
    CHECK_MSG(hr_parse_size(bad[i], &v) == HR_EINVAL, "hr_parse_size(\"%s\") is not refused",
              bad[i]);
}

static void test_parse_duration_bool(void) {
  double d;
  bool b;
  CHECK_OK(hr_parse_duration("1", &d));
  CHECK_NEAR(d, 1, 1e-12);
  CHECK_OK(hr_parse_duration("250ms", &d));
  CHECK_NEAR(d, 0.25, 1e-12);
  CHECK_OK(hr_parse_duration("10m", &d));
  CHECK_NEAR(d, 600, 1e-9);
  CHECK_OK(hr_parse_duration("7d", &d));
  CHECK_NEAR(d, 7 * 86400, 1e-6);
  CHECK_RC(hr_parse_duration("5 minutes", &d), HR_EINVAL);
  CHECK_RC(hr_parse_duration("nan", &d), HR_EINVAL);
  CHECK_OK(hr_parse_duration("20us", &d));
  CHECK_NEAR(d, 20e-6, 1e-15);
  CHECK_OK(hr_parse_duration("2h ", &d));
  CHECK_NEAR(d, 7200, 1e-9);
  CHECK_OK(hr_parse_duration("3s", &d));
  CHECK_NEAR(d, 3, 1e-12);
  CHECK_RC(hr_parse_duration("1M", &d), HR_EINVAL);
  CHECK_RC(hr_parse_duration("1mss", &d), HR_EINVAL);
  const char *yes[] = {"1", "true", "YES", "on"}, *no[] = {"0", "False", "no", "OFF"};
  for (int i = 0; i < 4; i++) {
    CHECK_OK(hr_parse_bool(yes[i], &b));
    CHECK(b);
    CHECK_OK(hr_parse_bool(no[i], &b));
    CHECK(!b);
  }
  CHECK_RC(hr_parse_bool("maybe", &b), HR_EINVAL);
}

static void test_options_defaults_and_errors(void) {
  hr_options_t *o;
  char err[256];
  CHECK_OK(hr_options_create(&o));
  CHECK_STR(hr_options_get_str(o, HR_OPTION_root), "/");
  CHECK_NEAR(hr_options_get_double(o, HR_OPTION_vram_warn), 85, 0);
  CHECK_NEAR(hr_options_get_double(o, HR_OPTION_interval), 1, 0);
  CHECK_EQ_U64(hr_options_get_size(o, HR_OPTION_reserve), 400ull << 20);
  CHECK_EQ_INT(hr_options_source(o, HR_OPTION_top), HR_SRC_DEFAULT);

  CHECK_RC(hr_options_set(o, "nope", "1", HR_SRC_CLI, err, sizeof err), HR_ENOENT);
  CHECK_CONTAINS(err, "unknown option 'nope'");
  CHECK_RC(hr_options_set(o, "vram-warn", "120", HR_SRC_CLI, err, sizeof err), HR_ERANGE);
  CHECK_CONTAINS(err, "vram_warn");
  CHECK_CONTAINS(err, "[1, 100]");
  CHECK_RC(hr_options_set(o, "top", "ten", HR_SRC_CLI, err, sizeof err), HR_EINVAL);
  CHECK_CONTAINS(err, "top");
  CHECK_RC(hr_options_set(o, "mode", "reckless", HR_SRC_CLI, err, sizeof err), HR_EINVAL);
  CHECK_CONTAINS(err, "conservative|balanced|aggressive");
  CHECK_RC(hr_options_set(o, "interval", "0", HR_SRC_CLI, err, sizeof err), HR_ERANGE);
  /* A failed set leaves the old value. */
  CHECK_NEAR(hr_options_get_double(o, HR_OPTION_vram_warn), 85, 0);
  CHECK_OK(hr_options_set(o, "vram-warn", "90%", HR_SRC_CLI, err, sizeof err));
  CHECK_NEAR(hr_options_get_double(o, HR_OPTION_vram_warn), 90, 0);
  hr_options_destroy(o);
}

/* A row of the CLI's own read by the table's rules: the same suffixes,
 * ranges and words, the message opened by the row's name. */
static void test_option_parse_row(void) {
  char err[256];
  hr_option_value_t v;
  hr_option_info_t count = {
      .name = "--count", .type = HR_OPT_INT, .min = 1, .max = 999999999999999};
  CHECK_OK(hr_option_parse(&count, "42", &v, err, sizeof err));
  CHECK_EQ_INT(v.i, 42);
  /* Digits with an optional minus, nothing else: " 3" and "+3" are not
   * whole numbers as a person types them, "-1" is one out of range. */
  static const char *bad[] = {" 3", "+3", "3 ", "", "3x", "0x10", "18446744073709551617"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK_RC(hr_option_parse(&count, bad[i], &v, err, sizeof err), HR_EINVAL);
    CHECK_CONTAINS(err, "--count: '");
    CHECK_CONTAINS(err, "is not an integer in [1, 999999999999999]");
  }
  CHECK_RC(hr_option_parse(&count, "-1", &v, err, sizeof err), HR_ERANGE);
  CHECK_CONTAINS(err, "--count: '-1' is out of range [1, 999999999999999]");
  hr_option_info_t since = {.name = "--since", .type = HR_OPT_DURATION, .max = 3650 * 86400.0};
  CHECK_OK(hr_option_parse(&since, "2h", &v, err, sizeof err));
  CHECK_NEAR(v.d, 7200, 0);
  CHECK_RC(hr_option_parse(&since, "2x", &v, err, sizeof err), HR_EINVAL);
  CHECK_CONTAINS(err, "[0, 315360000] seconds"); /* in full, not 3.1536e+08 */
  hr_option_info_t size = {.name = "--budget", .type = HR_OPT_SIZE, .min = 1, .max = 1 << 30};
  CHECK_OK(hr_option_parse(&size, "512M", &v, err, sizeof err));
  CHECK_EQ_U64(v.u, 512ull << 20);
  CHECK_RC(hr_option_parse(&size, "2G", &v, err, sizeof err), HR_ERANGE);
  CHECK_CONTAINS(err, "[1, 1073741824] bytes");
  hr_option_info_t kind = {.name = "--backend", .type = HR_OPT_ENUM, .choices = "sim|host"};
  CHECK_OK(hr_option_parse(&kind, "host", &v, err, sizeof err));
  CHECK_STR(v.s, "host");
  CHECK_RC(hr_option_parse(&kind, "gpu", &v, err, sizeof err), HR_EINVAL);
  CHECK_CONTAINS(err, "--backend: 'gpu' is not one of sim|host");
  /* A library row reads the same: hr_options_set is this parse plus the
   * layering. */
  size_t n;
  const hr_option_info_t *top = &hr_options_table(&n)[HR_OPTION_top];
  CHECK_RC(hr_option_parse(top, "+3", &v, err, sizeof err), HR_EINVAL);
  CHECK_RC(hr_option_parse(NULL, "3", &v, err, sizeof err), HR_EINVAL);
}

/* A bad value is an error even where a higher source has already set the
 * option: the CLI sets its flags before it reads the file and the
 * environment. */
static void test_options_lower_source_still_checked(void) {
  hr_options_t *o;
  char err[256];
  CHECK_OK(hr_options_create(&o));
  CHECK_OK(hr_options_set(o, "top", "7", HR_SRC_CLI, err, sizeof err));
  CHECK_RC(hr_options_set(o, "top", "x", HR_SRC_ENV, err, sizeof err), HR_EINVAL);
  CHECK_CONTAINS(err, "option top: 'x' is not an integer in [1, 100000]");
  CHECK_OK(hr_options_set(o, "top", "3", HR_SRC_ENV, err, sizeof err));
  CHECK_EQ_INT(hr_options_get_int(o, HR_OPTION_top), 7);
  hr_options_destroy(o);
}

static void test_options_layering(void) {
  char path[] = "/tmp/hr_test_conf_XXXXXX", err[256];
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  const char *text = "# comment\n\ntop = 5\nmode = balanced  # trailing\nvram_warn=70\n"
                     "db = \"/tmp/x.db\"\n";
  CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
  close(fd);

  hr_options_t *o;
  CHECK_OK(hr_options_create(&o));
  /* The command line first: a later, lower source must not override it. */
  CHECK_OK(hr_options_set(o, "top", "7", HR_SRC_CLI, err, sizeof err));
  setenv("HEADROOM_VRAM_WARN", "75", 1);
  setenv("HEADROOM_MODE", "aggressive", 1);
  unsetenv("HEADROOM_CONFIG");
  int rc = hr_options_load_defaults(o, path, err, sizeof err);
  unsetenv("HEADROOM_VRAM_WARN");
  unsetenv("HEADROOM_MODE");
  unlink(path);
  CHECK_OK(rc);
  CHECK_EQ_INT(hr_options_get_int(o, HR_OPTION_top), 7); /* cli beats file */
  CHECK_EQ_INT(hr_options_source(o, HR_OPTION_top), HR_SRC_CLI);
  CHECK_STR(hr_options_get_str(o, HR_OPTION_mode), "aggressive"); /* env beats file */
  CHECK_NEAR(hr_options_get_double(o, HR_OPTION_vram_warn), 75, 0);
  CHECK_STR(hr_options_get_str(o, HR_OPTION_db), "/tmp/x.db"); /* file beats default */
  CHECK_EQ_INT(hr_options_source(o, HR_OPTION_db), HR_SRC_FILE);
  hr_options_destroy(o);
}

static void test_options_bad_file_and_env(void) {
  char path[] = "/tmp/hr_test_conf_XXXXXX", err[256];
  int fd = mkstemp(path);
  const char *text = "top = 3\nthis line has no equals\n";
  CHECK(write(fd, text, strlen(text)) > 0);
  close(fd);
  hr_options_t *o;
  CHECK_OK(hr_options_create(&o));
  CHECK_RC(hr_options_load_file(o, path, err, sizeof err), HR_EPARSE);
  CHECK_CONTAINS(err, ":2:");
  unlink(path);
  /* An explicit config path that is missing is an error; the default one is not. */
  CHECK_RC(hr_options_load_defaults(o, "/nonexistent/headroom.conf", err, sizeof err), HR_ENOENT);
  setenv("HEADROOM_RAM_CRITICAL", "lots", 1);
  CHECK_RC(hr_options_load_env(o, err, sizeof err), HR_EINVAL);
  unsetenv("HEADROOM_RAM_CRITICAL");
  CHECK_CONTAINS(err, "HEADROOM_RAM_CRITICAL");
  hr_options_destroy(o);
}

static void test_option_table_env_names(void) {
  size_t n;
  const hr_option_info_t *t = hr_options_table(&n);
  CHECK(n > 10);
  for (size_t i = 0; i < n; i++) {
    CHECK(strncmp(t[i].env, "HEADROOM_", 9) == 0);
    CHECK(t[i].help && *t[i].help);
    CHECK_EQ_INT(hr_options_id(t[i].name), (int)i); /* identifiers follow the table */
  }
  CHECK_EQ_INT(hr_options_id("pool-backend"), HR_OPTION_pool_backend);
  CHECK_RC(hr_options_id("no_such_option"), HR_ENOENT);
  CHECK_RC(hr_options_id(NULL), HR_ENOENT);
  /* The variables the backend, the pool and replay read are rows too. */
  CHECK_STR(t[HR_OPTION_libcuda].env, "HEADROOM_LIBCUDA");
  CHECK_STR(t[HR_OPTION_pool_backend].env, "HEADROOM_POOL_BACKEND");
  CHECK_STR(t[HR_OPTION_no_progress].env, "HEADROOM_NO_PROGRESS");
  CHECK_STR(t[HR_OPTION_config].env, "HEADROOM_CONFIG");
}

/* The process's options are read once: a variable set after the first call
 * changes nothing, and every call hands out the same set. */
static void test_options_process_once(void) {
  char err[256];
  setenv("HEADROOM_POOL_BACKEND", "host", 1);
  setenv("XDG_CONFIG_HOME", "/nonexistent", 1);
  const hr_options_t *a, *b;
  CHECK_OK(hr_options_process(&a, err, sizeof err));
  CHECK_STR(hr_options_get_str(a, HR_OPTION_pool_backend), "host");
  CHECK_EQ_INT(hr_options_source(a, HR_OPTION_pool_backend), HR_SRC_ENV);
  setenv("HEADROOM_POOL_BACKEND", "sim", 1);
  CHECK_OK(hr_options_process(&b, err, sizeof err));
  CHECK(a == b);
  CHECK_STR(hr_options_get_str(b, HR_OPTION_pool_backend), "host");
  unsetenv("HEADROOM_POOL_BACKEND");
}

static int log_count;
static char log_last[256];
static void capture(hr_log_level_t level, const char *msg, void *arg) {
  (void)level;
  *(int *)arg += 1;
  snprintf(log_last, sizeof log_last, "%s", msg);
}

static void test_log(void) {
  hr_set_log(capture, &log_count, HR_LOG_WARN);
  hr__log(HR_LOG_INFO, "quiet %d", 1);
  CHECK_EQ_INT(log_count, 0);
  hr__log(HR_LOG_ERROR, "loud %d", 2);
  CHECK_EQ_INT(log_count, 1);
  CHECK_STR(log_last, "loud 2");
  hr_set_log(NULL, NULL, HR_LOG_DEBUG);
  hr__log(HR_LOG_ERROR, "nobody");
  CHECK_EQ_INT(log_count, 1);
}

static void test_read_file(void) {
  char buf[64];
  CHECK_RC((int)hr__read_file("/nonexistent/file", buf, sizeof buf), HR_ENOENT);
  char p[128];
  CHECK_OK(hr__path(p, sizeof p, "/tmp/root/", "/proc/meminfo"));
  CHECK_STR(p, "/tmp/root/proc/meminfo");
  CHECK_OK(hr__path(p, sizeof p, "/", "/proc/meminfo"));
  CHECK_STR(p, "/proc/meminfo");
  uint64_t v;
  const char *end;
  CHECK_OK(hr__parse_u64("  1234 kB", &v, &end));
  CHECK_EQ_U64(v, 1234);
  CHECK_RC(hr__parse_u64("18446744073709551616", &v, &end), HR_ERANGE);
  CHECK_RC(hr__parse_u64("12x", &v, &end), HR_EPARSE);
}

/* Binds a Unix socket at `path` (left bound: the test removes the path). */
static int bind_socket(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  hr__strlcpy(a.sun_path, path, sizeof a.sun_path);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0) return -1;
  return fd;
}

/* Everything that is not a regular file is refused before it is read, and
 * a symbolic link to it too; a regular file opens blocking, with its size.
 * A FIFO without a writer would block a plain open() or read(): this test
 * ends only because neither happens. */
static void test_open_regular(void) {
  char dir[] = "/tmp/hr-test-regular-XXXXXX", p[5][256], link[5][256], err[512];
  CHECK(mkdtemp(dir));
  static const char *const names[] = {"file", "fifo", "sock", "dir", "zero"};
  static const char *const kinds[] = {
      NULL, "not a regular file (a FIFO)", "not a regular file (a socket)",
      "not a regular file (a directory)", "not a regular file (a character device)"};
  for (int i = 0; i < 5; i++) {
    snprintf(p[i], sizeof p[i], "%s/%s", dir, names[i]);
    snprintf(link[i], sizeof link[i], "%s/link-%s", dir, names[i]);
  }
  snprintf(p[4], sizeof p[4], "/dev/zero");
  FILE *f = fopen(p[0], "w");
  CHECK(f && fputs("12345", f) >= 0 && fclose(f) == 0);
  CHECK(mkfifo(p[1], 0600) == 0);
  int sock = bind_socket(p[2]);
  CHECK(sock >= 0);
  CHECK(mkdir(p[3], 0700) == 0);
  for (int i = 0; i < 5; i++) CHECK(symlink(p[i], link[i]) == 0);
  for (int i = 0; i < 10; i++) {
    const char *path = i < 5 ? p[i] : link[i - 5];
    int fd = -2;
    uint64_t size = 0;
    int rc = hr__open_regular(path, 0, &fd, &size, err, sizeof err);
    if (i % 5 == 0) {
      CHECK_OK(rc);
      CHECK_EQ_U64(size, 5);
      CHECK(fd >= 0 && !(fcntl(fd, F_GETFL) & O_NONBLOCK) && (fcntl(fd, F_GETFD) & FD_CLOEXEC));
      close(fd);
      CHECK_OK(hr__check_regular(path, err, sizeof err));
      FILE *fp = NULL;
      char got[8] = "";
      CHECK_OK(hr__fopen_regular(path, &fp, err, sizeof err));
      CHECK(fp && fgets(got, sizeof got, fp));
      CHECK_STR(got, "12345");
      fclose(fp);
      continue;
    }
    CHECK_RC(rc, HR_EIO);
    CHECK_EQ_INT(fd, -1);
    CHECK_CONTAINS(err, path);
    CHECK_CONTAINS(err, kinds[i % 5]);
    CHECK_RC(hr__check_regular(path, err, sizeof err), HR_EIO);
    CHECK_RC(hr__check_library(path, err, sizeof err), HR_EIO);
    CHECK_CONTAINS(err, kinds[i % 5]);
    FILE *fp = (FILE *)1;
    CHECK_RC(hr__fopen_regular(path, &fp, err, sizeof err), HR_EIO);
    CHECK(fp == NULL);
  }
  /* The /proc reader does not wait on a FIFO either (a fixture tree under
   * --root): empty without a writer, an error with a silent one. */
  char buf[64];
  CHECK_EQ_INT(hr__read_file(p[1], buf, sizeof buf), 0);
  int wfd = open(p[1], O_RDWR | O_NONBLOCK);
  CHECK(wfd >= 0);
  CHECK_EQ_INT(hr__read_file(p[1], buf, sizeof buf), HR_EIO);
  close(wfd);
  CHECK_EQ_INT(hr__read_file("/dev/zero", buf, sizeof buf), sizeof buf - 1);
  int fd;
  CHECK_RC(hr__open_regular("/dev/null", 0, &fd, NULL, err, sizeof err), HR_EIO);
  CHECK_OK(hr__open_regular("/dev/null", HR__OPEN_DEV_NULL, &fd, NULL, err, sizeof err));
  close(fd);
  CHECK_RC(hr__open_regular("/dev/zero", HR__OPEN_DEV_NULL, &fd, NULL, err, sizeof err), HR_EIO);
  char missing[300];
  snprintf(missing, sizeof missing, "%s/none", dir);
  /* A library: a bare name is dlopen's to search, a missing file dlopen's
   * to report, a regular file is read. */
  CHECK_OK(hr__check_library("libnvidia-ml.so.1", err, sizeof err));
  CHECK_OK(hr__check_library(missing, err, sizeof err));
  CHECK_OK(hr__check_library(p[0], err, sizeof err));
  CHECK_OK(hr__check_library(NULL, err, sizeof err));
  CHECK_RC(hr__open_regular(missing, 0, &fd, NULL, err, sizeof err), HR_ENOENT);
  CHECK_CONTAINS(err, "No such file");
  CHECK_RC(hr__open_regular("", 0, &fd, NULL, err, sizeof err), HR_EINVAL);
  close(sock);
  for (int i = 0; i < 5; i++) unlink(link[i]);
  unlink(p[0]), unlink(p[1]), unlink(p[2]), rmdir(p[3]), rmdir(dir);
}

/* The one JSON string writer: whatever bytes a name holds, the result is
 * valid JSON (checked here byte for byte; tests/python parses it strictly). */
static void test_json_string(void) {
  static const struct {
    const char *in, *want;
  } cases[] = {
      {"plain", "\"plain\""},
      {"a\"b\\c", "\"a\\\"b\\\\c\""},
      {"tab\tnl\ncr\r\x01\x7f", "\"tab\\tnl\\ncr\\r\\u0001\\u007f\""},
      {"caf\xc3\xa9", "\"caf\xc3\xa9\""},                       /* valid UTF-8 stays */
      {"\xff\xfe", "\"\\ufffd\\ufffd\""},                       /* invalid bytes */
      {"\xc3", "\"\\ufffd\""},                                  /* truncated */
      {"\xc0\xaf", "\"\\ufffd\\ufffd\""},                       /* overlong */
      {"\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""},            /* surrogate */
      {"\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""}, /* > U+10FFFF */
      {"\xf0\x9f\x98\x80!", "\"\xf0\x9f\x98\x80!\""},           /* 4-byte */
  };
  for (size_t i = 0; i < HR_ARRAY_LEN(cases); i++) {
    char *q = NULL;
    CHECK_OK(hr_json_string(cases[i].in, &q));
    CHECK_STR(q, cases[i].want);
    free(q);
  }
  char *q = NULL;
  CHECK_OK(hr_json_string(NULL, &q));
  CHECK_STR(q, "null");
  free(q);
  CHECK_RC(hr_json_string("x", NULL), HR_EINVAL);
  /* A long name grows the buffer many times over. */
  char big[100000];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  big[500] = (char)0xff;
  CHECK_OK(hr_json_string(big, &q));
  CHECK_EQ_U64(strlen(q), sizeof big - 1 + 2 + 5);
  free(q);
}

int main(void) {
  HR_RUN(test_errors);
  HR_RUN(test_version);
  HR_RUN(test_parse_size);
  HR_RUN(test_parse_duration_bool);
  HR_RUN(test_options_defaults_and_errors);
  HR_RUN(test_option_parse_row);
  HR_RUN(test_options_lower_source_still_checked);
  HR_RUN(test_options_layering);
  HR_RUN(test_options_bad_file_and_env);
  HR_RUN(test_option_table_env_names);
  HR_RUN(test_options_process_once);
  HR_RUN(test_json_string);
  HR_RUN(test_log);
  HR_RUN(test_read_file);
  HR_RUN(test_open_regular);
  return hr_test_finish("test_util");
}
