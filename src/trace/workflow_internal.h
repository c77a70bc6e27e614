/* The parsed form of a workflow, shared by the parser and simulator
 * (workflow.c) and the reference optimum (optimum.c). */
#ifndef HR_WORKFLOW_INTERNAL_H
#define HR_WORKFLOW_INTERNAL_H

#include "util/util.h"

typedef struct wf_asset {
  char name[128], variant[32];
  uint64_t bytes, host_bytes;
  int parent; /* index of an earlier asset, or -1 */
  bool pinned, partial;
  int priority;
} wf_asset_t;

typedef struct wf_step {
  char name[64];
  uint32_t *use; /* asset indexes */
  size_t n_use;
  uint64_t working;
} wf_step_t;

struct hr_workflow {
  uint64_t budget_bytes, reserve_bytes;
  wf_asset_t *assets;
  size_t n_assets;
  wf_step_t *tmpl; /* distinct steps */
  size_t n_tmpl;
  uint32_t *seq; /* template index of each step after repetition */
  size_t n_seq;
};

/* The exact optimum (want_exact; whole assets, n <= HR_OPTIMUM_MAX_ASSETS)
 * or the relaxed lower bound, whatever the workflow's assets say; for
 * tests that check one against the other. */
HR_INTERNAL int hr__workflow_bound(const hr_workflow_t *w, uint64_t budget, bool want_exact,
                                   uint64_t *bytes);

#endif /* HR_WORKFLOW_INTERNAL_H */
