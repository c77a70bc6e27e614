/* Helpers every subcommand shares: option setting with clear errors, colour, JSON strings. */
#include "cli.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int hr_cli_set(hr_cli_t *cli, const char *name, const char *value) {
  char err[512];
  int rc = hr_options_set(cli->opts, name, value, HR_SRC_CLI, err, sizeof err);
  if (rc) {
    hr_cli_error("%s", err);
    return 2;
  }
  return 0;
}

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
