/* abi: the layout table of the public structs a binding mirrors (abi.h).
 *
 * Every row is written with sizeof, offsetof and _Alignof, so the numbers are
 * the compiler's own. Each struct lists every one of its members in
 * declaration order; test_abi walks the rows and checks that the members tile
 * the struct with no hole larger than alignment explains, so a member added in
 * a header but not here fails that test, and a binding that does not follow a
 * change here fails its own comparison. This file only reads the headers'
 * types: it calls nothing in the parts it describes. */
#include "headroom/abi.h"

#include <string.h>

/* One row: a member's name, offset, size and alignment. */
#define F_(type, member)                                                                           \
  {#member, offsetof(type, member), sizeof(((type *)0)->member),                                   \
   _Alignof(__typeof__(((type *)0)->member))},

/* F_ of each member named, up to 20 of them (a longer struct fails to
 * compile until a step is added here). */
#define EACH_1_(t, a)       F_(t, a)
#define EACH_2_(t, a, ...)  F_(t, a) EACH_1_(t, __VA_ARGS__)
#define EACH_3_(t, a, ...)  F_(t, a) EACH_2_(t, __VA_ARGS__)
#define EACH_4_(t, a, ...)  F_(t, a) EACH_3_(t, __VA_ARGS__)
#define EACH_5_(t, a, ...)  F_(t, a) EACH_4_(t, __VA_ARGS__)
#define EACH_6_(t, a, ...)  F_(t, a) EACH_5_(t, __VA_ARGS__)
#define EACH_7_(t, a, ...)  F_(t, a) EACH_6_(t, __VA_ARGS__)
#define EACH_8_(t, a, ...)  F_(t, a) EACH_7_(t, __VA_ARGS__)
#define EACH_9_(t, a, ...)  F_(t, a) EACH_8_(t, __VA_ARGS__)
#define EACH_10_(t, a, ...) F_(t, a) EACH_9_(t, __VA_ARGS__)
#define EACH_11_(t, a, ...) F_(t, a) EACH_10_(t, __VA_ARGS__)
#define EACH_12_(t, a, ...) F_(t, a) EACH_11_(t, __VA_ARGS__)
#define EACH_13_(t, a, ...) F_(t, a) EACH_12_(t, __VA_ARGS__)
#define EACH_14_(t, a, ...) F_(t, a) EACH_13_(t, __VA_ARGS__)
#define EACH_15_(t, a, ...) F_(t, a) EACH_14_(t, __VA_ARGS__)
#define EACH_16_(t, a, ...) F_(t, a) EACH_15_(t, __VA_ARGS__)
#define EACH_17_(t, a, ...) F_(t, a) EACH_16_(t, __VA_ARGS__)
#define EACH_18_(t, a, ...) F_(t, a) EACH_17_(t, __VA_ARGS__)
#define EACH_19_(t, a, ...) F_(t, a) EACH_18_(t, __VA_ARGS__)
#define EACH_20_(t, a, ...) F_(t, a) EACH_19_(t, __VA_ARGS__)
#define COUNT_(...)                                                                                \
  COUNT_N_(__VA_ARGS__, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define COUNT_N_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, _17, _18,  \
                 _19, _20, n, ...)                                                                 \
  n
#define CAT_(a, b)       a##b
#define EACH_N_(n)       CAT_(EACH_, n##_)
#define EACH_(n, t, ...) EACH_N_(n)(t, __VA_ARGS__)

/* A struct's row: its name, size and alignment, and its members, every one
 * of them in declaration order: the struct's one field list here. */
#define S_(type, ...)                                                                              \
  {                                                                                                \
#type, sizeof(type), _Alignof(type),                                                           \
        (const hr_abi_field_t[]){EACH_(COUNT_(__VA_ARGS__), type, __VA_ARGS__) },                  \
                                 COUNT_(__VA_ARGS__)                                               \
  }

#define STAT_NAME_(name) name,
static const hr_abi_struct_t abi_structs[] = {
    S_(hr_abi_field_t, name, offset, size, align),
    S_(hr_abi_struct_t, name, size, align, fields, n_fields),
    S_(hr_option_info_t, name, env, type, deflt, min, max, choices, help),
    S_(hr_probe_options_t, root, what, nvml_path, err, errlen, cgroup, cgroup_pid, filter, top),
    S_(hr_stat_t, current, peak, total),
    S_(hr_pool_stats_t, size, version, HR_POOL_STATS(STAT_NAME_) num_alloc_retries, num_ooms,
       num_device_alloc, num_device_free, reserved_),
    S_(hr_leak_config_t, window_s, min_samples, min_rate, alpha, max_points),
    S_(hr_leak_result_t, suspected, n, span_s, slope_per_min, z, p, confidence, raised),
    S_(hr_residency_options_t, budget_bytes, reserve_bytes, patience_s, poll_interval_s, policy,
       mem_info, mem_info_arg, backend, pool),
    S_(hr_asset_desc_t, name, variant, device_bytes, host_bytes, parent, pinned, partial, priority,
       resident_bytes, load, offload, drop, arg),
    S_(hr_asset_info_t, id, parent, group, name, variant, device_bytes, host_bytes, resident_bytes,
       pinned, partial, priority, uses, last_use),
    S_(hr_action_t, kind, id, bytes, resident_after),
    S_(hr_suggestion_t, kind, id, alt, bytes, text),
    S_(hr_plan_t, policy, actions, n_actions, cap_actions, bytes_loaded, bytes_offloaded, loads,
       partial_loads, offloads, partial_offloads, capacity_bytes, used_bytes, short_bytes, waited_s,
       suggestions, n_suggestions, message),
    S_(hr_lookahead_t, ids, steps, n, working),
    S_(hr_residency_stats_t, capacity_bytes, resident_bytes, bytes_loaded, bytes_offloaded, loads,
       offloads, refusals, timeouts, reclaims, assets),
    S_(hr_cleanup_mode_t, name, summary, caches, collect, idle_modules, models, hooks, drop_caches,
       max_passes, min_pass_bytes),
};

const hr_abi_struct_t *hr_abi_structs(size_t *n) {
  if (n) *n = sizeof abi_structs / sizeof *abi_structs;
  return abi_structs;
}

const hr_abi_struct_t *hr_abi_struct(const char *name) {
  if (!name) return NULL;
  for (size_t i = 0; i < sizeof abi_structs / sizeof *abi_structs; i++)
    if (!strcmp(abi_structs[i].name, name)) return &abi_structs[i];
  return NULL;
}

#define STAT_TEXT_(name) #name,
static const char *const pool_stat_names[] = {HR_POOL_STATS(STAT_TEXT_) NULL};
#undef STAT_TEXT_

const char *const *hr_abi_pool_stat_names(size_t *n) {
  if (n) *n = sizeof pool_stat_names / sizeof *pool_stat_names - 1;
  return pool_stat_names;
}
