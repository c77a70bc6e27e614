/* headroom plan: runs a workflow file through the residency registry with a
 * fixed budget and prints what it would load and offload, the bytes moved,
 * the peak, the steps that cannot run with what would fit instead, and how
 * the plan compares with the best possible one. */
#include "cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define PLAN_MAX_LISTED 40 /* steps with actions printed in text mode */

static void plan_usage(FILE *f) {
  fprintf(f, "usage: headroom plan WORKFLOW.json [--budget BYTES] [--policy POLICY] [--json]\n\n"
             "Simulates a workflow (docs/workflow-format.md): which models are loaded and\n"
             "offloaded at each step, bytes moved, peak device bytes, and the steps that cannot\n"
             "run with suggestions. Compares the bytes moved with the best possible plan (exact\n"
             "for small workflows, a proven lower bound otherwise).\n\n"
             "  --budget BYTES   device budget (K/M/G suffixes); overrides budget_bytes\n"
             "  --policy NAME    auto, comfy, lru or lookahead (option residency_policy;\n"
             "                   auto is lookahead, since a workflow knows its next steps)\n"
             "  --json           one JSON object\n\n"
             "Exit status: 0 when every step fits, 1 when some cannot run, 2 for bad input.\n");
}

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

static void on_step(size_t step, const char *name, int rc, const hr_plan_t *p, hr_residency_t *r,
                    void *arg) {
  plan_out_t *o = arg;
  char an[200], sz[32];
  if (o->json) {
    for (size_t i = 0; i < p->n_actions; i++) {
      asset_name(r, p->actions[i].id, an, sizeof an);
      fprintf(o->actions,
              "%s{\"step\": %zu, \"kind\": \"%s\", \"asset\": ", o->n_actions++ ? ", " : "",
              step + 1, hr_action_kind_name(p->actions[i].kind));
      hr_cli_json_str(o->actions, an);
      fprintf(o->actions, ", \"bytes\": %" PRIu64 "}", p->actions[i].bytes);
    }
    if (rc) {
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
    return;
  }
  if (rc) {
    char buf[64];
    if (o->failed_listed++ < PLAN_MAX_LISTED) {
      printf("step %4zu  %-28s %s: %s\n", step + 1, name,
             hr_cli_paint(o->cli, buf, sizeof buf, "red", "cannot run"), p->message);
      for (size_t i = 0; i < p->n_suggestions; i++)
        printf("%36s- %s\n", "", p->suggestions[i].text);
    }
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

static int plan_run(hr_cli_t *cli, int argc, char **argv) {
  static const struct option longopts[] = {{"budget", required_argument, NULL, 'b'},
                                           {"policy", required_argument, NULL, 'p'},
                                           {"json", no_argument, NULL, 'j'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  plan_out_t o = {.cli = cli};
  uint64_t budget = 0;
  hr_workflow_t *w = NULL;
  char err[512], *abuf = NULL, *fbuf = NULL;
  size_t alen = 0, flen = 0;
  int c, status = 0;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
    case 'b':
      if (hr_parse_size(optarg, &budget) != 0 || budget == 0) {
        hr_cli_error("plan: --budget: '%s' is not a size in bytes above 0 (such as 24G)", optarg);
        return 2;
      }
      break;
    case 'p':
      if ((status = hr_cli_set(cli, "residency_policy", optarg)) != 0) return status;
      break;
    case 'j':
      o.json = true;
      break;
    case 'h':
      plan_usage(stdout);
      return 0;
    default:
      plan_usage(stderr);
      return 2;
    }
  }
  if (optind + 1 != argc) {
    if (optind >= argc)
      hr_cli_error("plan: a workflow file is needed");
    else
      hr_cli_error("plan: unexpected argument '%s'", argv[optind + 1]);
    plan_usage(stderr);
    return 2;
  }
  const char *path = argv[optind];
  hr_policy_t policy;
  if (hr_policy_parse(hr_options_get_str(cli->opts, HR_OPTION_residency_policy), &policy) != 0) {
    hr_cli_error("plan: unknown policy");
    return 2;
  }
  if (hr_workflow_load(path, &w, err, sizeof err) != 0) {
    hr_cli_error("%s", err);
    return 2;
  }
  hr_workflow_info_t info;
  hr_workflow_info(w, &info);
  if (!budget && !info.budget_bytes) {
    hr_cli_error("plan: %s has no budget_bytes; give --budget", path);
    status = 2;
    goto out;
  }
  if (o.json) {
    o.actions = open_memstream(&abuf, &alen);
    o.failures = open_memstream(&fbuf, &flen);
    if (!o.actions || !o.failures) {
      hr_cli_error("plan: out of memory");
      status = 2;
      goto out;
    }
  }
  hr_sim_result_t res;
  int rc = hr_workflow_simulate(w, policy, budget, on_step, &o, &res);
  if (rc) {
    hr_cli_error("plan: simulation failed: %s", hr_strerror(rc));
    status = 2;
    goto out;
  }
  uint64_t ref = 0;
  bool exact = false;
  int rrc = hr_workflow_reference(w, budget, &ref, &exact);
  double ratio = rrc == 0 && ref > 0 ? (double)res.bytes_moved / (double)ref : 0;
  char s1[32], s2[32], s3[32], s4[32];
  if (o.json) {
    fclose(o.actions), o.actions = NULL;
    fclose(o.failures), o.failures = NULL;
    printf("{\"workflow\": ");
    hr_cli_json_str(stdout, path);
    printf(", \"policy\": \"%s\", \"budget_bytes\": %" PRIu64 ", \"reserve_bytes\": %" PRIu64
           ", \"steps\": %zu, \"bytes_moved\": %" PRIu64 ", \"bytes_offloaded\": %" PRIu64
           ", \"loads\": %" PRIu64 ", \"partial_loads\": %" PRIu64 ", \"offloads\": %" PRIu64
           ", \"partial_offloads\": %" PRIu64 ", \"peak_device_bytes\": %" PRIu64
           ", \"failed_steps\": %zu, ",
           hr_policy_name(res.policy), res.budget_bytes, info.reserve_bytes, res.steps,
           res.bytes_moved, res.bytes_offloaded, res.loads, res.partial_loads, res.offloads,
           res.partial_offloads, res.peak_device_bytes, res.failed_steps);
    if (rrc == 0)
      printf("\"reference_bytes\": %" PRIu64 ", \"reference\": \"%s\", \"ratio\": %.4f, ", ref,
             exact ? "exact" : "lower_bound", ratio);
    else
      printf("\"reference_bytes\": null, \"reference\": null, \"ratio\": null, ");
    printf("\"failures\": [%s], \"actions\": [%s]}\n", fbuf ? fbuf : "", abuf ? abuf : "");
  } else {
    if (o.with_actions > o.listed)
      printf("... %zu more steps with loads or offloads\n", o.with_actions - o.listed);
    if (o.failed_listed > PLAN_MAX_LISTED)
      printf("... %zu more steps that cannot run\n", o.failed_listed - PLAN_MAX_LISTED);
    printf("\n%s: %zu steps, policy %s, budget %s (reserve %s)\n", path, res.steps,
           hr_policy_name(res.policy), hr_size_text(s1, sizeof s1, res.budget_bytes),
           hr_size_text(s2, sizeof s2, info.reserve_bytes));
    printf("  moved to the device  %s in %" PRIu64 " loads (%" PRIu64 " partial)\n",
           hr_size_text(s1, sizeof s1, res.bytes_moved), res.loads, res.partial_loads);
    printf("  offloaded            %s in %" PRIu64 " offloads (%" PRIu64 " partial)\n",
           hr_size_text(s2, sizeof s2, res.bytes_offloaded), res.offloads, res.partial_offloads);
    printf("  peak on the device   %s\n", hr_size_text(s3, sizeof s3, res.peak_device_bytes));
    if (rrc == 0)
      printf("  best possible        %s (%s); this plan moves %.3fx\n",
             hr_size_text(s4, sizeof s4, ref),
             exact ? "exact optimum"
                   : "lower bound: the exact search is made for at most 12 whole assets "
                     "and 2^28 resident sets over all steps",
             ratio);
    else
      printf("  best possible        n/a: %s\n", hr_strerror(rrc));
    printf("  steps that cannot run %zu\n", res.failed_steps);
  }
  status = res.failed_steps ? 1 : 0;
out:
  if (o.actions) fclose(o.actions);
  if (o.failures) fclose(o.failures);
  free(abuf);
  free(fbuf);
  hr_workflow_destroy(w);
  return status;
}

const hr_cli_command_t hr_cmd_plan = {"plan", "simulate which models a workflow loads and offloads",
                                      plan_run, plan_usage};
