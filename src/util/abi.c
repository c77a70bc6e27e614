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

#define F_(type, member)                                                                           \
  {                                                                                                \
#member, offsetof(type, member), sizeof(((type *)0)->member),                                  \
        _Alignof(__typeof__(((type *)0)->member))                                                  \
  }
#define S_(type, fields)                                                                           \
  { #type, sizeof(type), _Alignof(type), fields, sizeof fields / sizeof *fields }

static const hr_abi_field_t abi_field_fields[] = {
    F_(hr_abi_field_t, name),
    F_(hr_abi_field_t, offset),
    F_(hr_abi_field_t, size),
    F_(hr_abi_field_t, align),
};

static const hr_abi_field_t abi_struct_fields[] = {
    F_(hr_abi_struct_t, name),   F_(hr_abi_struct_t, size),     F_(hr_abi_struct_t, align),
    F_(hr_abi_struct_t, fields), F_(hr_abi_struct_t, n_fields),
};

static const hr_abi_field_t option_info_fields[] = {
    F_(hr_option_info_t, name),    F_(hr_option_info_t, env),  F_(hr_option_info_t, type),
    F_(hr_option_info_t, deflt),   F_(hr_option_info_t, min),  F_(hr_option_info_t, max),
    F_(hr_option_info_t, choices), F_(hr_option_info_t, help),
};

static const hr_abi_field_t probe_options_fields[] = {
    F_(hr_probe_options_t, root),       F_(hr_probe_options_t, what),
    F_(hr_probe_options_t, nvml_path),  F_(hr_probe_options_t, err),
    F_(hr_probe_options_t, errlen),     F_(hr_probe_options_t, cgroup),
    F_(hr_probe_options_t, cgroup_pid),
};

static const hr_abi_field_t stat_fields[] = {
    F_(hr_stat_t, current),
    F_(hr_stat_t, peak),
    F_(hr_stat_t, total),
};

#define STAT_ROW_(name) F_(hr_pool_stats_t, name),
static const hr_abi_field_t pool_stats_fields[] = {
    F_(hr_pool_stats_t, size),
    F_(hr_pool_stats_t, version),
    HR_POOL_STATS(STAT_ROW_) F_(hr_pool_stats_t, num_alloc_retries),
    F_(hr_pool_stats_t, num_ooms),
    F_(hr_pool_stats_t, num_device_alloc),
    F_(hr_pool_stats_t, num_device_free),
    F_(hr_pool_stats_t, reserved_),
};
#undef STAT_ROW_

static const hr_abi_field_t leak_config_fields[] = {
    F_(hr_leak_config_t, window_s),   F_(hr_leak_config_t, min_samples),
    F_(hr_leak_config_t, min_rate),   F_(hr_leak_config_t, alpha),
    F_(hr_leak_config_t, max_points),
};

static const hr_abi_field_t leak_result_fields[] = {
    F_(hr_leak_result_t, suspected),     F_(hr_leak_result_t, n),      F_(hr_leak_result_t, span_s),
    F_(hr_leak_result_t, slope_per_min), F_(hr_leak_result_t, z),      F_(hr_leak_result_t, p),
    F_(hr_leak_result_t, confidence),    F_(hr_leak_result_t, raised),
};

static const hr_abi_field_t residency_options_fields[] = {
    F_(hr_residency_options_t, budget_bytes), F_(hr_residency_options_t, reserve_bytes),
    F_(hr_residency_options_t, patience_s),   F_(hr_residency_options_t, poll_interval_s),
    F_(hr_residency_options_t, policy),       F_(hr_residency_options_t, mem_info),
    F_(hr_residency_options_t, mem_info_arg), F_(hr_residency_options_t, backend),
    F_(hr_residency_options_t, pool),
};

static const hr_abi_field_t asset_desc_fields[] = {
    F_(hr_asset_desc_t, name),
    F_(hr_asset_desc_t, variant),
    F_(hr_asset_desc_t, device_bytes),
    F_(hr_asset_desc_t, host_bytes),
    F_(hr_asset_desc_t, parent),
    F_(hr_asset_desc_t, pinned),
    F_(hr_asset_desc_t, partial),
    F_(hr_asset_desc_t, priority),
    F_(hr_asset_desc_t, resident_bytes),
    F_(hr_asset_desc_t, load),
    F_(hr_asset_desc_t, offload),
    F_(hr_asset_desc_t, drop),
    F_(hr_asset_desc_t, arg),
};

static const hr_abi_field_t asset_info_fields[] = {
    F_(hr_asset_info_t, id),         F_(hr_asset_info_t, parent),
    F_(hr_asset_info_t, group),      F_(hr_asset_info_t, name),
    F_(hr_asset_info_t, variant),    F_(hr_asset_info_t, device_bytes),
    F_(hr_asset_info_t, host_bytes), F_(hr_asset_info_t, resident_bytes),
    F_(hr_asset_info_t, pinned),     F_(hr_asset_info_t, partial),
    F_(hr_asset_info_t, priority),   F_(hr_asset_info_t, uses),
    F_(hr_asset_info_t, last_use),
};

static const hr_abi_field_t action_fields[] = {
    F_(hr_action_t, kind),
    F_(hr_action_t, id),
    F_(hr_action_t, bytes),
    F_(hr_action_t, resident_after),
};

static const hr_abi_field_t suggestion_fields[] = {
    F_(hr_suggestion_t, kind),  F_(hr_suggestion_t, id),   F_(hr_suggestion_t, alt),
    F_(hr_suggestion_t, bytes), F_(hr_suggestion_t, text),
};

static const hr_abi_field_t plan_fields[] = {
    F_(hr_plan_t, policy),         F_(hr_plan_t, actions),
    F_(hr_plan_t, n_actions),      F_(hr_plan_t, cap_actions),
    F_(hr_plan_t, bytes_loaded),   F_(hr_plan_t, bytes_offloaded),
    F_(hr_plan_t, loads),          F_(hr_plan_t, partial_loads),
    F_(hr_plan_t, offloads),       F_(hr_plan_t, partial_offloads),
    F_(hr_plan_t, capacity_bytes), F_(hr_plan_t, used_bytes),
    F_(hr_plan_t, short_bytes),    F_(hr_plan_t, waited_s),
    F_(hr_plan_t, suggestions),    F_(hr_plan_t, n_suggestions),
    F_(hr_plan_t, message),
};

static const hr_abi_field_t lookahead_fields[] = {
    F_(hr_lookahead_t, ids),
    F_(hr_lookahead_t, steps),
    F_(hr_lookahead_t, n),
    F_(hr_lookahead_t, working),
};

static const hr_abi_field_t residency_stats_fields[] = {
    F_(hr_residency_stats_t, capacity_bytes), F_(hr_residency_stats_t, resident_bytes),
    F_(hr_residency_stats_t, bytes_loaded),   F_(hr_residency_stats_t, bytes_offloaded),
    F_(hr_residency_stats_t, loads),          F_(hr_residency_stats_t, offloads),
    F_(hr_residency_stats_t, refusals),       F_(hr_residency_stats_t, timeouts),
    F_(hr_residency_stats_t, reclaims),       F_(hr_residency_stats_t, assets),
};

static const hr_abi_field_t cleanup_mode_fields[] = {
    F_(hr_cleanup_mode_t, name),         F_(hr_cleanup_mode_t, summary),
    F_(hr_cleanup_mode_t, caches),       F_(hr_cleanup_mode_t, collect),
    F_(hr_cleanup_mode_t, idle_modules), F_(hr_cleanup_mode_t, models),
    F_(hr_cleanup_mode_t, hooks),        F_(hr_cleanup_mode_t, drop_caches),
    F_(hr_cleanup_mode_t, max_passes),   F_(hr_cleanup_mode_t, min_pass_bytes),
};

static const hr_abi_struct_t abi_structs[] = {
    S_(hr_abi_field_t, abi_field_fields),
    S_(hr_abi_struct_t, abi_struct_fields),
    S_(hr_option_info_t, option_info_fields),
    S_(hr_probe_options_t, probe_options_fields),
    S_(hr_stat_t, stat_fields),
    S_(hr_pool_stats_t, pool_stats_fields),
    S_(hr_leak_config_t, leak_config_fields),
    S_(hr_leak_result_t, leak_result_fields),
    S_(hr_residency_options_t, residency_options_fields),
    S_(hr_asset_desc_t, asset_desc_fields),
    S_(hr_asset_info_t, asset_info_fields),
    S_(hr_action_t, action_fields),
    S_(hr_suggestion_t, suggestion_fields),
    S_(hr_plan_t, plan_fields),
    S_(hr_lookahead_t, lookahead_fields),
    S_(hr_residency_stats_t, residency_stats_fields),
    S_(hr_cleanup_mode_t, cleanup_mode_fields),
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

#define STAT_NAME_(name) #name,
static const char *const pool_stat_names[] = {HR_POOL_STATS(STAT_NAME_) NULL};
#undef STAT_NAME_

const char *const *hr_abi_pool_stat_names(size_t *n) {
  if (n) *n = sizeof pool_stat_names / sizeof *pool_stat_names - 1;
  return pool_stat_names;
}
