/* The config file reader under attack: lines longer than any buffer, a
 * setting hidden in the tail of a long comment, quoted values holding '#',
 * NUL bytes, unclosed quotes, oversized files and files that never end
 * (/dev/zero, a FIFO), each through hr_options_load_file and, where the
 * defect was a hang, through the CLI as a real process. */
#include "hr_test.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char path[] = "/tmp/hr_test_conf_XXXXXX";

/* Writes `n` bytes of `text` to a fresh temporary file named in `path`. */
static int write_conf(const void *text, size_t n) {
  strcpy(path, "/tmp/hr_test_conf_XXXXXX");
  int fd = mkstemp(path);
  if (fd < 0) return -1;
  bool ok = write(fd, text, n) == (ssize_t)n;
  close(fd);
  return ok ? 0 : -1;
}

/* Loads `text` into fresh options; returns the code, err filled. */
static int load(const void *text, size_t n, hr_options_t **o, char *err, size_t errlen) {
  *o = NULL;
  if (write_conf(text, n) != 0) return HR_EIO;
  int rc = hr_options_create(o);
  if (rc == 0) rc = hr_options_load_file(*o, path, err, errlen);
  unlink(path);
  return rc;
}

/* '#' and 4,094 characters filled the old 4,096-byte buffer, so the rest of
 * the line came back as a line of its own and set `listen`. */
static void test_long_comment_sets_nothing(void) {
  for (size_t pad = 4080; pad < 4112; pad++) {
    char text[8192], err[256] = "";
    text[0] = '#';
    memset(text + 1, 'c', pad);
    int n = 1 + (int)pad + snprintf(text + 1 + pad, 100, "listen = 0.0.0.0:9999\n");
    hr_options_t *o;
    int rc = load(text, (size_t)n, &o, err, sizeof err);
    CHECK_MSG(rc == 0, "pad %zu: %s", pad, err);
    CHECK_STR(hr_options_get_str(o, HR_OPTION_listen), "127.0.0.1:10460");
    CHECK_EQ_INT(hr_options_source(o, HR_OPTION_listen), HR_SRC_DEFAULT);
    hr_options_destroy(o);
  }
}

/* Past the line cap the line is refused with its number, never cut. */
static void test_line_over_cap_refused(void) {
  size_t pad = 20000;
  char *text = malloc(pad + 64), err[256] = "";
  CHECK(text != NULL);
  int n = snprintf(text, 64, "top = 3\n#");
  memset(text + n, 'c', pad);
  n += (int)pad + snprintf(text + n + pad, 64, "listen = 0.0.0.0:9999\n");
  hr_options_t *o;
  int rc = load(text, (size_t)n, &o, err, sizeof err);
  free(text);
  CHECK_RC(rc, HR_EPARSE);
  CHECK_CONTAINS(err, ":2: line longer than 16384 bytes");
  CHECK_STR(hr_options_get_str(o, HR_OPTION_listen), "127.0.0.1:10460");
  hr_options_destroy(o);
}

/* A long value arrives whole. */
static void test_long_value_whole(void) {
  char text[12000], want[11000], err[256] = "";
  memset(want, 'v', sizeof want - 1);
  want[0] = '/', want[sizeof want - 1] = '\0';
  int n = snprintf(text, sizeof text, "db = %s\ntop = 4\n", want);
  hr_options_t *o;
  CHECK_OK(load(text, (size_t)n, &o, err, sizeof err));
  CHECK_STR(hr_options_get_str(o, HR_OPTION_db), want);
  CHECK_EQ_INT(hr_options_get_int(o, HR_OPTION_top), 4);
  hr_options_destroy(o);
}

/* '#' inside quotes is text; outside quotes it starts a comment. */
static void test_hash_in_quotes(void) {
  const char *text = "on_warning = \"curl http://127.0.0.1/x#frag\"  # the hook\n"
                     "on_critical = curl \"http://127.0.0.1/y#z\" -d '' # note\n"
                     "db = \"\"\n";
  char err[256] = "";
  hr_options_t *o;
  CHECK_OK(load(text, strlen(text), &o, err, sizeof err));
  CHECK_STR(hr_options_get_str(o, HR_OPTION_on_warning), "curl http://127.0.0.1/x#frag");
  CHECK_STR(hr_options_get_str(o, HR_OPTION_on_critical), "curl \"http://127.0.0.1/y#z\" -d ''");
  CHECK_STR(hr_options_get_str(o, HR_OPTION_db), "");
  CHECK_EQ_INT(hr_options_source(o, HR_OPTION_db), HR_SRC_FILE);
  hr_options_destroy(o);
}

static void test_malformed_lines(void) {
  static const struct {
    const char *text;
    size_t n; /* 0: strlen */
    const char *want;
  } cases[] = {
      {"top = 3\0listen = 0.0.0.0:1\n", 27, ":1: a NUL byte"},
      {"top = 3\nlisten = \"0.0.0.0:1\n", 0, ":2: a quote that is not closed"},
      {"on_warning = echo \"a # b\n", 0, ":1: a quote that is not closed"},
      {"listen = \"127.0.0.1:1\" 0.0.0.0:2\n", 0, ":1: text after the closing quote"},
      {"# ok\n = 3\n", 0, ":2: no name before '='"},
      {"top # = 3\n", 0, ":1: expected 'name = value'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char err[256] = "";
    hr_options_t *o;
    size_t n = cases[i].n ? cases[i].n : strlen(cases[i].text);
    int rc = load(cases[i].text, n, &o, err, sizeof err);
    CHECK_MSG(rc == HR_EPARSE, "case %zu gave %d (%s)", i, rc, err);
    CHECK_CONTAINS(err, path);
    CHECK_CONTAINS(err, cases[i].want);
    CHECK_STR(hr_options_get_str(o, HR_OPTION_listen), "127.0.0.1:10460");
    hr_options_destroy(o);
  }
}

/* Files that never end or are far too big are refused before reading. */
static void test_not_a_config_file(void) {
  char err[256] = "";
  hr_options_t *o;
  CHECK_OK(hr_options_create(&o));
  CHECK_RC(hr_options_load_file(o, "/dev/zero", err, sizeof err), HR_EIO);
  CHECK_CONTAINS(err, "/dev/zero: not a regular file");
  CHECK_OK(hr_options_load_file(o, "/dev/null", err, sizeof err)); /* "no config file" */
  CHECK_RC(hr_options_load_file(o, "/tmp", err, sizeof err), HR_EIO);
  char fifo[] = "/tmp/hr_test_fifo_XXXXXX";
  int fd = mkstemp(fifo);
  CHECK(fd >= 0);
  close(fd);
  unlink(fifo);
  CHECK(mkfifo(fifo, 0600) == 0);
  int rc = hr_options_load_file(o, fifo, err, sizeof err); /* no writer: must not block */
  unlink(fifo);
  CHECK_RC(rc, HR_EIO);
  hr_options_destroy(o);

  size_t big = 1024 * 1024 + 1;
  char *text = malloc(big);
  CHECK(text != NULL);
  memset(text, '\n', big);
  rc = load(text, big, &o, err, sizeof err);
  free(text);
  CHECK_RC(rc, HR_ERANGE);
  CHECK_CONTAINS(err, "larger than 1048576 bytes");
  hr_options_destroy(o);
}

/* The CLI given /dev/zero ends at once with a clear message. */
static void test_cli_dev_zero(void) {
  const char *cli = getenv("HR_CLI");
  if (!cli) SKIP("HR_CLI is set by CTest");
  char cmd[1024], out[1024] = "";
  snprintf(cmd, sizeof cmd, "timeout 10 '%s' --config /dev/zero config 2>&1", cli);
  FILE *p = popen(cmd, "r");
  CHECK(p != NULL);
  size_t n = fread(out, 1, sizeof out - 1, p);
  out[n] = '\0';
  int st = pclose(p);
  CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 124, "exit status %d: %s",
            st, out);
  CHECK_CONTAINS(out, "/dev/zero: not a regular file");
}

int main(void) {
  unsetenv("HEADROOM_LISTEN");
  HR_RUN(test_long_comment_sets_nothing);
  HR_RUN(test_line_over_cap_refused);
  HR_RUN(test_long_value_whole);
  HR_RUN(test_hash_in_quotes);
  HR_RUN(test_malformed_lines);
  HR_RUN(test_not_a_config_file);
  HR_RUN(test_cli_dev_zero);
  return hr_test_finish("test_config_file");
}
