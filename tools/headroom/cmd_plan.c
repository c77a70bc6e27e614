/* headroom plan: runs a workflow file through the residency registry with a
 * fixed budget and prints what it would load and offload, the bytes moved,
 * the peak, the steps that cannot run with what would fit instead, and how
 * the plan compares with the best possible one. */
#include "cli.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define PLAN_MAX_LISTED 40 /* steps with actions printed in text mode */

typedef struct plan_args {
  uint64_t budget; /* 0: the workflow's budget_bytes */
  bool json;
} plan_args_t;

static const hr_cli_opt_t plan_opts[] = {
    {"budget", HR_CLI_SIZE, HR_CLI_AT(plan_args_t, budget), .meta = "BYTES", .min = 1,
     .max = 1125899906842624.0,
     .help = "device budget (K/M/G suffixes); overrides the workflow's budget_bytes"},
    HR_CLI_OPTION_AS("policy", residency_policy, "NAME", HR_CLI_COMPLETE_NONE),
    {"json", HR_CLI_FLAG, HR_CLI_AT(plan_args_t, json), .help = "one JSON object"},
};

typedef struct plan_out {
  hr_cli_t *cli;
  bool json;
  size_t listed, with_actions, failed_listed;
  FILE *actions; /* JSON: the actions array, written to a buffer */
  FILE *failures;
  size_t n_actions, n_failures;
} plan_out_t;

static void asset_name(hr_residency_t *r, hr_asset_id_t id, char *buf, size_t n) {
  hr_asset_info_t info;
  if (hr_asset_info(r, id, &info) != 0)
    snprintf(buf, n, "#%u", (unsigned)id);
  else if (info.variant[0])
    snprintf(buf, n, "%s:%s", info.name, info.variant);
  else
    snprintf(buf, n, "%s", info.name);
}

/* A step's actions and its failure as JSON, into the two buffers. */
static void step_json(plan_out_t *o, size_t step, const char *name, int rc, const hr_plan_t *p,
                      hr_residency_t *r) {
  char an[200];
  for (size_t i = 0; i < p->n_actions; i++) {
    asset_name(r, p->actions[i].id, an, sizeof an);
    fprintf(o->actions,
            "%s{\"step\": %zu, \"kind\": \"%s\", \"asset\": ", o->n_actions++ ? ", " : "", step + 1,
            hr_action_kind_name(p->actions[i].kind));
    hr_cli_json_str(o->actions, an);
    fprintf(o->actions, ", \"bytes\": %" PRIu64 "}", p->actions[i].bytes);
  }
  if (!rc) return;
  fprintf(o->failures, "%s{\"step\": %zu, \"name\": ", o->n_failures++ ? ", " : "", step + 1);
  hr_cli_json_str(o->failures, name);
  fprintf(o->failures, ", \"error\": \"%s\", \"message\": ", hr_err_name(rc));
  hr_cli_json_str(o->failures, p->message);
  fprintf(o->failures, ", \"short_bytes\": %" PRIu64 ", \"suggestions\": [", p->short_bytes);
  for (size_t i = 0; i < p->n_suggestions; i++) {
    fprintf(o->failures, "%s", i ? ", " : "");
    hr_cli_json_str(o->failures, p->suggestions[i].text);
  }
  fprintf(o->failures, "]}");
}

/* A step as a line of text: what cannot run with the suggestions, or the
 * loads and offloads; the first PLAN_MAX_LISTED of each. */
static void step_text(plan_out_t *o, size_t step, const char *name, int rc, const hr_plan_t *p,
                      hr_residency_t *r) {
  char an[200], sz[32], buf[64];
  if (rc) {
    if (o->failed_listed++ >= PLAN_MAX_LISTED) return;
    printf("step %4zu  %-28s %s: %s\n", step + 1, name,
           hr_cli_paint(o->cli, buf, sizeof buf, "red", "cannot run"), p->message);
    for (size_t i = 0; i < p->n_suggestions; i++) printf("%36s- %s\n", "", p->suggestions[i].text);
    return;
  }
  if (p->n_actions == 0) return;
  o->with_actions++;
  if (o->listed >= PLAN_MAX_LISTED) return;
  o->listed++;
  printf("step %4zu  %-28s", step + 1, name);
  for (size_t i = 0; i < p->n_actions; i++) {
    asset_name(r, p->actions[i].id, an, sizeof an);
    printf("%s%s %s %s", i ? ", " : " ", hr_action_kind_name(p->actions[i].kind), an,
           hr_size_text(sz, sizeof sz, p->actions[i].bytes));
  }
  printf("\n");
}

static void on_step(size_t step, const char *name, int rc, const hr_plan_t *p, hr_residency_t *r,
                    void *arg) {
  plan_out_t *o = arg;
  if (o->json)
    step_json(o, step, name, rc, p, r);
  else
    step_text(o, step, name, rc, p, r);
}

/* What the simulation found, and the best possible plan to compare with. */
typedef struct plan_result {
  hr_sim_result_t res;
  hr_workflow_info_t info;
  uint64_t ref;
  bool exact;
  int ref_rc;
  double ratio;
} plan_result_t;

static void print_json(const char *path, const plan_result_t *p, const char *failures,
                       const char *actions) {
  const hr_sim_result_t *res = &p->res;
  printf("{\"workflow\": ");
  hr_cli_json_str(stdout, path);
  printf(", \"policy\": \"%s\", \"budget_bytes\": %" PRIu64 ", \"reserve_bytes\": %" PRIu64
         ", \"steps\": %zu, \"bytes_moved\": %" PRIu64 ", \"bytes_offloaded\": %" PRIu64
         ", \"loads\": %" PRIu64 ", \"partial_loads\": %" PRIu64 ", \"offloads\": %" PRIu64
         ", \"partial_offloads\": %" PRIu64 ", \"peak_device_bytes\": %" PRIu64
         ", \"failed_steps\": %zu, ",
         hr_policy_name(res->policy), res->budget_bytes, p->info.reserve_bytes, res->steps,
         res->bytes_moved, res->bytes_offloaded, res->loads, res->partial_loads, res->offloads,
         res->partial_offloads, res->peak_device_bytes, res->failed_steps);
  if (p->ref_rc == 0)
    printf("\"reference_bytes\": %" PRIu64 ", \"reference\": \"%s\", \"ratio\": %.4f, ", p->ref,
           p->exact ? "exact" : "lower_bound", p->ratio);
  else
    printf("\"reference_bytes\": null, \"reference\": null, \"ratio\": null, ");
  printf("\"failures\": [%s], \"actions\": [%s]}\n", failures ? failures : "",
         actions ? actions : "");
}

static void print_text(const char *path, const plan_result_t *p, const plan_out_t *o) {
  const hr_sim_result_t *res = &p->res;
  char s1[32], s2[32];
  if (o->with_actions > o->listed)
    printf("... %zu more steps with loads or offloads\n", o->with_actions - o->listed);
  if (o->failed_listed > PLAN_MAX_LISTED)
    printf("... %zu more steps that cannot run\n", o->failed_listed - PLAN_MAX_LISTED);
  printf("\n%s: %zu steps, policy %s, budget %s (reserve %s)\n", path, res->steps,
         hr_policy_name(res->policy), hr_size_text(s1, sizeof s1, res->budget_bytes),
         hr_size_text(s2, sizeof s2, p->info.reserve_bytes));
  printf("  moved to the device  %s in %" PRIu64 " loads (%" PRIu64 " partial)\n",
         hr_size_text(s1, sizeof s1, res->bytes_moved), res->loads, res->partial_loads);
  printf("  offloaded            %s in %" PRIu64 " offloads (%" PRIu64 " partial)\n",
         hr_size_text(s2, sizeof s2, res->bytes_offloaded), res->offloads, res->partial_offloads);
  printf("  peak on the device   %s\n", hr_size_text(s1, sizeof s1, res->peak_device_bytes));
  if (p->ref_rc == 0)
    printf("  best possible        %s (%s); this plan moves %.3fx\n",
           hr_size_text(s2, sizeof s2, p->ref),
           p->exact ? "exact optimum"
                    : "lower bound: the exact search is made for at most 12 whole assets "
                      "and 2^28 resident sets over all steps",
           p->ratio);
  else
    printf("  best possible        n/a: %s\n", hr_strerror(p->ref_rc));
  printf("  steps that cannot run %zu\n", res->failed_steps);
}

/* Runs the simulation and the reference. Returns 0 or an exit status. */
static int simulate(hr_workflow_t *w, hr_policy_t policy, uint64_t budget, plan_out_t *o,
                    plan_result_t *p) {
  int rc = hr_workflow_simulate(w, policy, budget, on_step, o, &p->res);
  if (rc) {
    hr_cli_error("plan: simulation failed: %s", hr_strerror(rc));
    return 2;
  }
  p->ref_rc = hr_workflow_reference(w, budget, &p->ref, &p->exact);
  p->ratio = p->ref_rc == 0 && p->ref > 0 ? (double)p->res.bytes_moved / (double)p->ref : 0;
  return 0;
}

static int plan_run(hr_cli_t *cli, const void *args, int argc, char **argv) {
  const plan_args_t *a = args;
  plan_out_t o = {.cli = cli, .json = a->json};
  plan_result_t p = {0};
  hr_workflow_t *w = NULL;
  char err[512], *abuf = NULL, *fbuf = NULL;
  size_t alen = 0, flen = 0;
  int status = 2;
  const char *path = argv[0];
  hr_policy_t policy;
  (void)argc;
  if (hr_policy_parse(hr_options_get_str(cli->opts, HR_OPTION_residency_policy), &policy) != 0) {
    hr_cli_error("plan: unknown policy");
    return 2;
  }
  if (hr_workflow_load(path, &w, err, sizeof err) != 0) {
    hr_cli_error("%s", err);
    return 2;
  }
  hr_workflow_info(w, &p.info);
  if (!a->budget && !p.info.budget_bytes) {
    hr_cli_error("plan: %s has no budget_bytes; give --budget", path);
    goto out;
  }
  if (o.json && (!(o.actions = open_memstream(&abuf, &alen)) ||
                 !(o.failures = open_memstream(&fbuf, &flen)))) {
    hr_cli_error("plan: out of memory");
    goto out;
  }
  if ((status = simulate(w, policy, a->budget, &o, &p)) != 0) goto out;
  if (o.json) {
    fclose(o.actions), o.actions = NULL;
    fclose(o.failures), o.failures = NULL;
    print_json(path, &p, fbuf, abuf);
  } else {
    print_text(path, &p, &o);
  }
  status = p.res.failed_steps ? 1 : 0;
out:
  if (o.actions) fclose(o.actions);
  if (o.failures) fclose(o.failures);
  free(abuf);
  free(fbuf);
  hr_workflow_destroy(w);
  return status;
}

HR_CLI_COMMAND(
    plan, "simulate which models a workflow loads and offloads", .operands = "WORKFLOW.json",
    .min_operands = 1, .max_operands = 1, .missing = "a workflow file is needed",
    .about = "Simulates a workflow (docs/workflow-format.md): which models are loaded and "
             "offloaded at each step, bytes moved, peak device bytes, and the steps that cannot "
             "run with suggestions. Compares the bytes moved with the best possible plan (exact "
             "for small workflows, a proven lower bound otherwise). The policy auto is "
             "lookahead here, since a workflow knows its next steps.",
    .notes = "Exit status: 0 when every step fits, 1 when some cannot run, 2 for bad input.");
