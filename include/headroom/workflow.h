/* workflow: the `headroom plan` simulator. A workflow file (JSON, read with
 * cJSON) names assets and the steps that use them; the simulator plays it
 * through a residency registry (headroom/residency.h) with a fixed budget,
 * and the reference gives the bytes the best possible plan moves. Part of the
 * daemon library: an inference process needs the registry, not the planner.
 * Included by headroom/daemon.h; do not include it alone. */
#ifndef HEADROOM_WORKFLOW_H
#define HEADROOM_WORKFLOW_H

#ifdef __cplusplus
extern "C" {
#endif

/* ---- workflows (the `headroom plan` simulator) --------------------------- */

/* A workflow: assets with sizes and variants, and steps that each need a set
 * of assets and working memory, with repetition. The format is in
 * docs/workflow-format.md. */
typedef struct hr_workflow hr_workflow_t;

/* Parses a workflow from JSON text. `source` names it in messages (a path).
 * A syntax error gives "source:line:col: ..." and HR_EPARSE; a wrong value
 * gives its place in the document ("source: steps[2].use[0]: ...") and
 * HR_EPARSE or HR_ERANGE. */
HR_API int hr_workflow_parse(const char *text, size_t len, const char *source, hr_workflow_t **out,
                             char *err, size_t errlen);
/* Reads and parses a file; HR_ENOENT/HR_EIO for an unreadable one. */
HR_API int hr_workflow_load(const char *path, hr_workflow_t **out, char *err, size_t errlen);
HR_API void hr_workflow_destroy(hr_workflow_t *w);

typedef struct hr_workflow_info {
  uint64_t budget_bytes, reserve_bytes;
  size_t assets;
  size_t steps; /* after repetition */
} hr_workflow_info_t;

HR_API int hr_workflow_info(const hr_workflow_t *w, hr_workflow_info_t *out);

typedef struct hr_sim_result {
  hr_policy_t policy;
  uint64_t budget_bytes;
  uint64_t bytes_moved;     /* copied to the device by full and partial loads */
  uint64_t bytes_offloaded; /* sent back to the host */
  uint64_t loads, partial_loads, offloads, partial_offloads;
  uint64_t peak_device_bytes; /* resident assets plus working bytes, at most */
  size_t steps, failed_steps;
} hr_sim_result_t;

/* Called after each step: `step` is its index after repetition, `name` its
 * name, `rc` what require returned, `plan` what it did or suggested, `r` the
 * registry (for hr_asset_info; asset i of the workflow has id i + 1). */
typedef void (*hr_sim_step_fn)(size_t step, const char *name, int rc, const hr_plan_t *plan,
                               hr_residency_t *r, void *arg);

/* Runs the workflow through a registry with a fixed budget (the workflow's,
 * or `budget_bytes` when not 0) and callbacks that only count bytes. The
 * lookahead policy is given every upcoming use. A step that cannot fit is
 * counted in failed_steps and skipped. */
HR_API int hr_workflow_simulate(const hr_workflow_t *w, hr_policy_t policy, uint64_t budget_bytes,
                                hr_sim_step_fn fn, void *arg, hr_sim_result_t *out);

/* Bytes moved by the best possible plan, as the reference a policy is held
 * to. With at most HR_OPTIMUM_MAX_ASSETS assets, none of them partial, and
 * a search of at most HR_OPTIMUM_MAX_WORK resident sets and subsets in all
 * (about a second), it is the exact offline optimum (search over every
 * resident set at every step; *exact = true). Otherwise it is a proven lower
 * bound: the optimum when any byte of any asset may be moved alone, which
 * furthest-next-use per byte reaches (*exact = false). HR_ENOSPC when a step
 * cannot fit at all. */
#define HR_OPTIMUM_MAX_ASSETS 12
#define HR_OPTIMUM_MAX_WORK   (1ull << 28)
HR_API int hr_workflow_reference(const hr_workflow_t *w, uint64_t budget_bytes, uint64_t *bytes,
                                 bool *exact);

#ifdef __cplusplus
}
#endif

#endif /* HEADROOM_WORKFLOW_H */
