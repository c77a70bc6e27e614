/* Helpers every subcommand shares: option setting with clear errors, human
 * sizes, colour, JSON strings. */
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

const char *hr_cli_size(char *buf, size_t n, uint64_t bytes) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = (double)bytes;
  size_t u = 0;
  while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) v /= 1024, u++;
  if (u == 0)
    snprintf(buf, n, "%llu B", (unsigned long long)bytes);
  else
    snprintf(buf, n, v >= 100 ? "%.0f %s" : v >= 10 ? "%.1f %s" : "%.2f %s", v, units[u]);
  return buf;
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
