/* headroom config: every option with its value and where the value came from,
 * so a person can see which file or variable set what; with --example, a
 * config file listing every option at its default, written from the table so
 * that the shipped example (packaging/headroom.conf.example) cannot drift. */
#include "cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <string.h>

static void config_usage(FILE *f) {
  fprintf(f, "usage: headroom config [--json | --example]\n\n"
             "Prints every option: its value, where the value came from (default, file,\n"
             "env, cli), its environment variable and what it does.\n\n"
             "  --json     one JSON object: {\"options\": [{\"name\", \"value\", \"source\",\n"
             "             \"env\", \"type\", \"help\"}, ...]}\n"
             "  --example  a config file with every option at its default, commented out\n"
             "             (the example installed as headroom.conf.example)\n");
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

/* The accepted values of an option, for the example's comment. */
static void range_text(const hr_option_info_t *t, char *buf, size_t n) {
  switch (t->type) {
  case HR_OPT_BOOL:
    snprintf(buf, n, "true or false");
    break;
  case HR_OPT_INT:
    snprintf(buf, n, "an integer, %.0f to %.0f", t->min, t->max);
    break;
  case HR_OPT_SIZE:
    snprintf(buf, n, "a size (K/M/G/T suffixes), %.0f to %.0f bytes", t->min, t->max);
    break;
  case HR_OPT_DURATION:
    snprintf(buf, n, "a duration (ms/s/m/h/d), %g to %g seconds", t->min, t->max);
    break;
  case HR_OPT_PERCENT:
    snprintf(buf, n, "a percentage, %g to %g", t->min, t->max);
    break;
  case HR_OPT_STRING:
    snprintf(buf, n, "text");
    break;
  case HR_OPT_ENUM:
    snprintf(buf, n, "one of %s", t->choices);
    break;
  }
}

/* Writes the example config file: every option of the table, in table order,
 * commented out at its default, with its help, its values and its variable. */
static void print_example(void) {
  size_t n;
  const hr_option_info_t *t = hr_options_table(&n);
  char range[160];
  printf("# headroom configuration: lines of `name = value`; `#` starts a comment.\n"
         "#\n"
         "# Read in this order, each overriding the one before: the built-in\n"
         "# defaults, /etc/headroom/headroom.conf, the user's\n"
         "# $XDG_CONFIG_HOME/headroom/headroom.conf (~/.config/headroom/headroom.conf),\n"
         "# the HEADROOM_<NAME> environment variables, the command line. A file named\n"
         "# by --config or HEADROOM_CONFIG is read instead of both files.\n"
         "#\n"
         "# Every option is listed below at its default, commented out; `headroom\n"
         "# config` shows each value in force and where it came from. This file is\n"
         "# written by `headroom config --example`.\n");
  for (size_t i = 0; i < n; i++) {
    range_text(&t[i], range, sizeof range);
    printf("\n# %s\n# %s; environment %s\n", t[i].help, range, t[i].env);
    printf("#%s = %s\n", t[i].name, *t[i].deflt ? t[i].deflt : "\"\"");
  }
}

static int config_run(hr_cli_t *cli, int argc, char **argv) {
  static const struct option longopts[] = {{"json", no_argument, NULL, 'j'},
                                           {"example", no_argument, NULL, 'e'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  bool json = false, example = false;
  int c;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    if (c == 'j')
      json = true;
    else if (c == 'e')
      example = true;
    else if (c == 'h')
      return config_usage(stdout), 0;
    else
      return config_usage(stderr), 2;
  }
  if (optind < argc) {
    hr_cli_error("config: unexpected argument '%s'", argv[optind]);
    return 2;
  }
  if (json && example) {
    hr_cli_error("config: --json and --example do not go together");
    return 2;
  }
  if (example) {
    print_example();
    if (fflush(stdout) != 0) {
      hr_cli_error("config: cannot write the output");
      return 1;
    }
    return 0;
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
