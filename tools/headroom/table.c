/* The CLI's tables as their readers see them: the list of commands (with
 * the two hidden ones that write the man page and the bash completion from
 * the tables), and an option row resolved, a library row taking its kind,
 * range, default, environment name and help from the library's option
 * table. */
#include "cli.h"

#include <string.h>

static int man_run(hr_cli_t *cli, const void *args, int argc, char **argv) {
  (void)cli, (void)args, (void)argc, (void)argv;
  return hr_cli_manual(stdout);
}

static int completion_run(hr_cli_t *cli, const void *args, int argc, char **argv) {
  (void)cli, (void)args, (void)argc, (void)argv;
  return hr_cli_completion(stdout);
}

const hr_cli_command_t hr_cmd_man = {.name = "__man", .hidden = true, .run = man_run};
const hr_cli_command_t hr_cmd_completion = {
    .name = "__completion", .hidden = true, .run = completion_run};

static const hr_cli_command_t *const commands[] = {
    &hr_cmd_config,  &hr_cmd_status, &hr_cmd_watch,      &hr_cmd_history,
    &hr_cmd_replay,  &hr_cmd_plan,   &hr_cmd_doctor,     &hr_cmd_broker,
    &hr_cmd_reserve, &hr_cmd_man,    &hr_cmd_completion,
};

const hr_cli_command_t *const *hr_cli_commands(size_t *n) {
  *n = sizeof commands / sizeof commands[0];
  return commands;
}

const hr_cli_command_t *hr_cli_find(const char *name) {
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp(commands[i]->name, name) == 0) return commands[i];
  return NULL;
}

static hr_cli_arg_t arg_of(hr_opt_type_t t) {
  switch (t) {
  case HR_OPT_BOOL:
    return HR_CLI_FLAG;
  case HR_OPT_INT:
    return HR_CLI_INT;
  case HR_OPT_SIZE:
    return HR_CLI_SIZE;
  case HR_OPT_DURATION:
    return HR_CLI_DURATION;
  case HR_OPT_PERCENT:
    return HR_CLI_PERCENT;
  case HR_OPT_ENUM:
    return HR_CLI_CHOICE;
  case HR_OPT_STRING:
    break;
  }
  return HR_CLI_STRING;
}

/* The value's name in help when the row gives none. */
static const char *meta_of(hr_cli_arg_t a) {
  static const char *const names[] = {
      [HR_CLI_INT] = "N",     [HR_CLI_SIZE] = "SIZE",     [HR_CLI_DURATION] = "D",
      [HR_CLI_PERCENT] = "P", [HR_CLI_STRING] = "TEXT",   [HR_CLI_CHOICE] = "WORD",
      [HR_CLI_LIST] = "TEXT", [HR_CLI_DEVICE] = "DEVICE",
  };
  return a == HR_CLI_FLAG ? NULL : names[a];
}

const hr_cli_row_t *hr_cli_row(const hr_cli_opt_t *o, hr_cli_row_t *r) {
  *r = (hr_cli_row_t){.arg = o->arg,
                      .meta = o->meta,
                      .help = o->help,
                      .deflt = o->deflt,
                      .choices = o->choices,
                      .min = o->min,
                      .max = o->max,
                      .complete = o->complete};
  const char *name = o->name;
  if (o->to_option) {
    const hr_option_info_t *t = &hr_options_table(NULL)[o->option];
    r->arg = arg_of(t->type);
    r->help = t->help, r->deflt = t->deflt, r->choices = t->choices, r->env = t->env;
    r->min = t->min, r->max = t->max;
    if (!name) name = t->name;
  }
  snprintf(r->name, sizeof r->name, "%s", name);
  for (char *c = r->name; *c; c++)
    if (*c == '_') *c = '-';
  if (!r->meta) r->meta = meta_of(r->arg);
  return r;
}
