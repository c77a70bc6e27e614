/* headroom config: every option with its value and where the value came from,
 * so a person can see which file or variable set what; with --example, a
 * config file listing every option at its default, written from the table so
 * that the shipped example (packaging/headroom.conf.example) cannot drift. */
#include "cli.h"

#include <inttypes.h>
#include <string.h>

typedef struct config_args {
  bool json, example;
} config_args_t;

static const hr_cli_opt_t config_opts[] = {
    {"json", HR_CLI_FLAG, HR_CLI_AT(config_args_t, json),
     .help = "one JSON object: {\"options\": [{\"name\", \"value\", \"source\", \"env\", "
             "\"type\", \"help\"}, ...]}"},
    {"example", HR_CLI_FLAG, HR_CLI_AT(config_args_t, example),
     .help = "a config file with every option at its default, commented out (the example "
             "installed as headroom.conf.example)"},
};

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
  static const char *const forms[] = {
      [HR_OPT_BOOL] = "true or false",
      [HR_OPT_INT] = "an integer, %.0f to %.0f",
      [HR_OPT_SIZE] = "a size (K/M/G/T suffixes), %.0f to %.0f bytes",
      [HR_OPT_DURATION] = "a duration (ms/s/m/h/d), %g to %g seconds",
      [HR_OPT_PERCENT] = "a percentage, %g to %g",
      [HR_OPT_STRING] = "text",
      [HR_OPT_ENUM] = "one of %s",
  };
  if (t->type == HR_OPT_ENUM)
    snprintf(buf, n, forms[t->type], t->choices);
  else
    snprintf(buf, n, forms[t->type], t->min, t->max);
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

/* Every option with its value and source, as a table or as JSON. */
static void print_options(const hr_cli_t *cli, bool json) {
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
}

static int config_run(hr_cli_t *cli, const void *args, int argc, char **argv) {
  const config_args_t *a = args;
  (void)argc, (void)argv;
  if (a->json && a->example) {
    hr_cli_error("config: --json and --example do not go together");
    return 2;
  }
  if (a->example)
    print_example();
  else
    print_options(cli, a->json);
  if (fflush(stdout) != 0) {
    hr_cli_error("config: cannot write the output");
    return 1;
  }
  return 0;
}

HR_CLI_COMMAND(config, "show every option, its value and its source",
               .about =
                   "Prints every option: its value, where the value came from (default, file, env, "
                   "cli), its environment variable and what it does.");
