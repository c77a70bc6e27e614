/* The bash completion script, written by `headroom __completion` from the
 * option tables: the commands, each command's options and the global ones,
 * and the values each option takes (its choices, files, folders, pids).
 * packaging/completion/headroom.bash is this output, committed; a test
 * keeps the two equal and runs the script in bash. */
#include "cli.h"

#include <string.h>

#define MAX_VALUED 160 /* options that take a value, over all commands */

/* An option that takes a value, with the command it belongs to ("" for
 * the global level). */
typedef struct valued {
  const char *cmd;
  hr_cli_row_t row;
} valued_t;

/* What completes the value of `r`, as a line of bash ending in return. */
static void action(const hr_cli_row_t *r, char *buf, size_t n) {
  if (r->arg == HR_CLI_CHOICE && r->choices) {
    char words[256];
    snprintf(words, sizeof words, "%s", r->choices);
    for (char *c = words; *c; c++)
      if (*c == '|') *c = ' ';
    snprintf(buf, n, "COMPREPLY=($(compgen -W '%s' -- \"$cur\"))", words);
    return;
  }
  switch (r->complete) {
  case HR_CLI_COMPLETE_FILE:
    snprintf(buf, n, "COMPREPLY=($(compgen -f -- \"$cur\"))");
    break;
  case HR_CLI_COMPLETE_DIR:
    snprintf(buf, n, "COMPREPLY=($(compgen -d -- \"$cur\"))");
    break;
  case HR_CLI_COMPLETE_CGROUP:
    snprintf(buf, n, "COMPREPLY=($(compgen -d -- \"${cur:-/sys/fs/cgroup/}\"))");
    break;
  case HR_CLI_COMPLETE_PID:
    snprintf(buf, n,
             "COMPREPLY=($(compgen -W \"$(ls /proc 2>/dev/null | grep -E '^[0-9]+$')\" "
             "-- \"$cur\"))");
    break;
  case HR_CLI_COMPLETE_NONE:
    snprintf(buf, n, "COMPREPLY=()");
    break;
  }
}

/* Adds cmd's options that take a value to v. */
static void gather(const hr_cli_command_t *cmd, valued_t *v, size_t *nv) {
  for (size_t i = 0; i < cmd->n_opts && *nv < MAX_VALUED; i++) {
    hr_cli_row(&cmd->opts[i], &v[*nv].row);
    v[*nv].cmd = cmd->name;
    if (v[*nv].row.arg != HR_CLI_FLAG) (*nv)++;
  }
}

/* The case arms of option values: options completed alike share an arm. */
static void value_arms(FILE *f, const valued_t *v, size_t nv) {
  bool done[MAX_VALUED] = {false};
  char a[320], b[320];
  for (size_t i = 0; i < nv; i++) {
    if (done[i]) continue;
    action(&v[i].row, a, sizeof a);
    fprintf(f, "  %s:--%s", v[i].cmd, v[i].row.name);
    for (size_t j = i + 1, k = 1; j < nv; j++) {
      action(&v[j].row, b, sizeof b);
      if (done[j] || strcmp(a, b) != 0) continue;
      fprintf(f, " |%s%s:--%s", k++ % 4 ? " " : " \\\n    ", v[j].cmd, v[j].row.name);
      done[j] = true;
    }
    fprintf(f, ")\n    %s\n    return\n    ;;\n", a);
  }
}

/* cmd's option names, space-separated, --help last. */
static void option_words(FILE *f, const hr_cli_command_t *cmd) {
  for (size_t i = 0; i < cmd->n_opts; i++) {
    hr_cli_row_t r;
    fprintf(f, "--%s ", hr_cli_row(&cmd->opts[i], &r)->name);
  }
  fputs("--help", f);
}

/* The global options that take a value, as a case pattern. */
static void global_valued(FILE *f) {
  bool first = true;
  for (size_t i = 0; i < hr_cli_global.n_opts; i++) {
    hr_cli_row_t r;
    if (hr_cli_row(&hr_cli_global.opts[i], &r)->arg == HR_CLI_FLAG) continue;
    fprintf(f, "%s--%s", first ? "" : " | ", r.name);
    first = false;
  }
}

/* The script up to the global options that take a value, and from there
 * to the arms of option values. */
static const char script_head[] =
    "_headroom() {\n"
    "  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}\n"
    "  local i j cmd= opts\n"
    "  # The command: the first word that is not a global option or its value.\n"
    "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
    "    case ${COMP_WORDS[i]} in\n"
    "    ";
static const char script_values[] =
    ") ((i++)) ;;\n"
    "    -*) ;;\n"
    "    *)\n"
    "      cmd=${COMP_WORDS[i]}\n"
    "      break\n"
    "      ;;\n"
    "    esac\n"
    "  done\n"
    "  # After \"--\" (reserve SIZE -- CMD ARGS): a program, then its arguments.\n"
    "  for ((j = i + 1; j < COMP_CWORD; j++)); do\n"
    "    if [[ ${COMP_WORDS[j]} == -- ]]; then\n"
    "      if ((j + 1 == COMP_CWORD)); then\n"
    "        COMPREPLY=($(compgen -c -- \"$cur\"))\n"
    "      else\n"
    "        COMPREPLY=($(compgen -f -- \"$cur\"))\n"
    "      fi\n"
    "      return\n"
    "    fi\n"
    "  done\n"
    "  # The value of the option just typed.\n"
    "  case $cmd:$prev in\n";

static const char script_tail[] = "  if [[ $cur == -* ]]; then\n"
                                  "    COMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))\n"
                                  "  elif [[ -z $cmd ]]; then\n"
                                  "    COMPREPLY=($(compgen -W \"$commands help\" -- \"$cur\"))\n"
                                  "  else\n"
                                  "    COMPREPLY=($(compgen -f -- \"$cur\"))\n"
                                  "  fi\n"
                                  "}\n\n"
                                  "complete -F _headroom headroom\n";

/* The options of each command and of the global level. */
static void option_arms(FILE *f, const hr_cli_command_t *const *cmds, size_t n) {
  fputs("  case $cmd in\n  '')\n    opts='", f);
  option_words(f, &hr_cli_global);
  fputs("'\n    ;;\n  help)\n    COMPREPLY=($(compgen -W \"$commands\" -- \"$cur\"))\n"
        "    return\n    ;;\n",
        f);
  for (size_t i = 0; i < n; i++) {
    if (cmds[i]->hidden) continue;
    fprintf(f, "  %s)\n    opts='", cmds[i]->name);
    option_words(f, cmds[i]);
    fputs("'\n    ;;\n", f);
  }
  fputs("  *)\n    opts=--help\n    ;;\n  esac\n", f);
}

int hr_cli_completion(FILE *f) {
  size_t n, nv = 0;
  const hr_cli_command_t *const *cmds = hr_cli_commands(&n);
  valued_t v[MAX_VALUED];
  gather(&hr_cli_global, v, &nv);
  for (size_t i = 0; i < n; i++)
    if (!cmds[i]->hidden) gather(cmds[i], v, &nv);
  fputs("# bash completion for headroom, written by `headroom __completion` from the\n"
        "# CLI's option tables: edit those (tools/headroom), then run `make packaging`.\n\n",
        f);
  fputs(script_head, f);
  global_valued(f);
  fputs(script_values, f);
  value_arms(f, v, nv);
  fputs("  esac\n  local commands='", f);
  for (size_t i = 0, k = 0; i < n; i++)
    if (!cmds[i]->hidden) fprintf(f, "%s%s", k++ ? " " : "", cmds[i]->name);
  fputs("'\n", f);
  option_arms(f, cmds, n);
  fputs(script_tail, f);
  return fflush(f) == 0 && !ferror(f) ? 0 : 1;
}
