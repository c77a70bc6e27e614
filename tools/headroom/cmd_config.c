/* headroom config: every option with its value and where the value came from,
 * so a person can see which file or variable set what. */
#include "cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <string.h>

static void config_usage(FILE *f) {
  fprintf(f, "usage: headroom config [--json]\n\n"
             "Prints every option: its value, where the value came from (default, file,\n"
             "env, cli), its environment variable and what it does.\n\n"
             "  --json   one JSON object: {\"options\": [{\"name\", \"value\", \"source\",\n"
             "           \"env\", \"type\", \"help\"}, ...]}\n");
}

static const char *source_name(hr_opt_source_t s) {
  static const char *names[] = {"default", "file", "env", "cli"};
  return names[s];
}

/* Formats the option's current value as text. */
static void value_text(const hr_options_t *o, hr_option_id_t id, char *buf, size_t n) {
  const hr_option_info_t *t = &hr_options_table(NULL)[id];
  switch (t->type) {
  case HR_OPT_BOOL:
    snprintf(buf, n, "%s", hr_options_get_bool(o, id) ? "true" : "false");
    break;
  case HR_OPT_INT:
    snprintf(buf, n, "%" PRId64, hr_options_get_int(o, id));
    break;
  case HR_OPT_SIZE:
    snprintf(buf, n, "%" PRIu64, hr_options_get_size(o, id));
    break;
  case HR_OPT_DURATION:
  case HR_OPT_PERCENT:
    snprintf(buf, n, "%g", hr_options_get_double(o, id));
    break;
  case HR_OPT_STRING:
  case HR_OPT_ENUM:
    snprintf(buf, n, "%s", hr_options_get_str(o, id));
    break;
  }
}

static int config_run(hr_cli_t *cli, int argc, char **argv) {
  static const struct option longopts[] = {
      {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
  bool json = false;
  int c;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    if (c == 'j')
      json = true;
    else if (c == 'h')
      return config_usage(stdout), 0;
    else
      return config_usage(stderr), 2;
  }
  if (optind < argc) {
    hr_cli_error("config: unexpected argument '%s'", argv[optind]);
    return 2;
  }
  static const char *types[] = {"bool", "int", "size", "duration", "percent", "string", "enum"};
  size_t n;
  const hr_option_info_t *t = hr_options_table(&n);
  char val[512];
  if (json) printf("{\"options\": [");
  for (size_t i = 0; i < n; i++) {
    value_text(cli->opts, (hr_option_id_t)i, val, sizeof val);
    const char *src = source_name(hr_options_source(cli->opts, (hr_option_id_t)i));
    if (json) {
      printf("%s{\"name\": \"%s\", \"value\": ", i ? ", " : "", t[i].name);
      hr_cli_json_str(stdout, val);
      printf(", \"source\": \"%s\", \"env\": \"%s\", \"type\": \"%s\", \"help\": ", src, t[i].env,
             types[t[i].type]);
      hr_cli_json_str(stdout, t[i].help);
      printf("}");
    } else {
      printf("%-14s %-22s %-8s %s\n", t[i].name, val, src, t[i].help);
    }
  }
  if (json) printf("]}\n");
  return 0;
}

const hr_cli_command_t hr_cmd_config = {"config", "show every option, its value and its source",
                                        config_run, config_usage};
