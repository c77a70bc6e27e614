/* Cleanup modes: the one table of what conservative, balanced and aggressive
 * do (detect.h).
 *
 * The modes grow by cost. Conservative takes back only what costs nothing to
 * have again (an allocator's cached blocks) and runs nothing outside;
 * balanced also spends time now (a garbage collection) and runs the user's
 * hooks; aggressive also gives up what must be loaded or read again later
 * (idle registered modules, ComfyUI's models, the page cache) and repeats
 * its pass until a pass brings back under a MiB. The rows are in the order
 * of the `mode` option's choices; test_cleanup checks both agree. */
#include "util/util.h"

#include <string.h>

#define MIB_ (UINT64_C(1) << 20)

static const hr_cleanup_mode_t modes[] = {
    {
        .name = "conservative",
        .summary = "reports only (watch); a process releases its allocator caches",
        .caches = true,
        .max_passes = 1,
        .min_pass_bytes = MIB_,
    },
    {
        .name = "balanced",
        .summary = "runs the hooks (watch); a process also collects garbage first",
        .caches = true,
        .collect = true,
        .hooks = true,
        .max_passes = 1,
        .min_pass_bytes = MIB_,
    },
    {
        .name = "aggressive",
        .summary = "also drops the page cache at a critical host or cgroup level (watch); a "
                   "process also offloads idle registered modules and unloads ComfyUI's "
                   "models, and repeats while a pass frees 1 MiB or more",
        .caches = true,
        .collect = true,
        .idle_modules = true,
        .models = true,
        .hooks = true,
        .drop_caches = true,
        .max_passes = 5,
        .min_pass_bytes = MIB_,
    },
};

const hr_cleanup_mode_t *hr_cleanup_modes(size_t *n) {
  if (n) *n = sizeof modes / sizeof *modes;
  return modes;
}

const hr_cleanup_mode_t *hr_cleanup_mode(const char *name) {
  if (!name) return NULL;
  for (size_t i = 0; i < sizeof modes / sizeof *modes; i++)
    if (strcmp(modes[i].name, name) == 0) return &modes[i];
  return NULL;
}
