/* Helpers every subcommand shares: colour, sizes and shares as the tables
 * show them, JSON strings, whole files, the probe's options. */
#include "cli.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const char *hr_cli_paint(const hr_cli_t *cli, char *buf, size_t n, const char *color,
                         const char *text) {
  const char *code = NULL;
  if (cli->color) {
    if (strcmp(color, "red") == 0)
      code = "31";
    else if (strcmp(color, "yellow") == 0)
      code = "33";
    else if (strcmp(color, "green") == 0)
      code = "32";
    else if (strcmp(color, "bold") == 0)
      code = "1";
    else if (strcmp(color, "dim") == 0)
      code = "2";
  }
  if (code)
    snprintf(buf, n, "\033[%sm%s\033[0m", code, text);
  else
    snprintf(buf, n, "%s", text);
  return buf;
}

void hr_cli_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("headroom: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

void hr_cli_json_str(FILE *f, const char *s) {
  char *q = NULL;
  if (hr_json_string(s, &q) == 0)
    fputs(q, f);
  else
    fputs("null", f); /* out of memory: still valid JSON */
  free(q);
}

hr_probe_options_t hr_cli_probe_options(const hr_cli_t *cli, unsigned what, char *err,
                                        size_t errlen) {
  const char *nvml = hr_options_get_str(cli->opts, HR_OPTION_nvml_library);
  return (hr_probe_options_t){.root = hr_options_get_str(cli->opts, HR_OPTION_root),
                              .what = what,
                              .nvml_path = *nvml ? nvml : NULL,
                              .err = err,
                              .errlen = errlen,
                              .cgroup = hr_options_get_str(cli->opts, HR_OPTION_cgroup),
                              .cgroup_pid =
                                  (int)hr_options_get_int(cli->opts, HR_OPTION_cgroup_pid)};
}

const char *hr_cli_size(char *buf, size_t n, uint64_t v) {
  if (v == HR_UNKNOWN) return snprintf(buf, n, "-"), buf;
  if (v == HR_UNLIMITED) return snprintf(buf, n, "unlimited"), buf;
  return hr_size_text(buf, n, v);
}

double hr_cli_pct(uint64_t part, uint64_t whole) {
  if (part == HR_UNKNOWN || whole == HR_UNKNOWN || whole == HR_UNLIMITED || whole == 0) return -1;
  return 100.0 * (double)part / (double)whole;
}

int hr_cli_write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  int rc = fputs(text, f) < 0 ? -1 : 0;
  if (fclose(f) != 0) rc = -1;
  return rc;
}
