/* The residency registry: assets, their groups, uses, and the numbers the
 * planner works from. Planning and carrying out a require is in plan.c, the
 * victim order of each policy in policy.c, the device budget in device.c. */
#include "residency/residency_internal.h"

#include <stdlib.h>
#include <string.h>

const char *hr_policy_name(hr_policy_t policy) {
  static const char *const names[] = {[HR_POLICY_AUTO] = "auto",
                                      [HR_POLICY_COMFY] = "comfy",
                                      [HR_POLICY_LRU] = "lru",
                                      [HR_POLICY_LOOKAHEAD] = "lookahead"};
  return hr__enum_name(names, HR_ARRAY_LEN(names), (int)policy, "?");
}

int hr_policy_parse(const char *s, hr_policy_t *out) {
  static const hr_policy_t all[] = {HR_POLICY_AUTO, HR_POLICY_COMFY, HR_POLICY_LRU,
                                    HR_POLICY_LOOKAHEAD};
  if (!s || !out) return HR_EINVAL;
  for (size_t i = 0; i < HR_ARRAY_LEN(all); i++) {
    if (strcmp(s, hr_policy_name(all[i])) == 0) {
      *out = all[i];
      return 0;
    }
  }
  return HR_EINVAL;
}

void hr_residency_options_default(const hr_options_t *table, hr_residency_options_t *out) {
  memset(out, 0, sizeof *out);
  hr_options_t *defaults = NULL;
  if (!table && hr_options_create(&defaults) == 0) table = defaults;
  out->poll_interval_s = 0.01;
  out->policy = HR_POLICY_AUTO;
  if (table) {
    out->reserve_bytes = hr_options_get_size(table, HR_OPTION_reserve);
    out->patience_s = hr_options_get_double(table, HR_OPTION_patience);
    /* The table only holds valid choices, so the parse cannot fail. */
    (void)hr_policy_parse(hr_options_get_str(table, HR_OPTION_residency_policy), &out->policy);
  }
  hr_options_destroy(defaults);
}

int hr_residency_create(const hr_residency_options_t *options, hr_residency_t **out) {
  int rc = 0;
  hr_residency_t *r = NULL;
  pthread_mutexattr_t attr;
  if (!options || !out) return HR_EINVAL;
  *out = NULL;
  if (options->budget_bytes == 0 && !options->mem_info && !options->backend) return HR_EINVAL;
  if (options->pool && !options->budget_bytes && !options->mem_info && !options->backend)
    return HR_EINVAL;
  if (options->patience_s < 0 || options->poll_interval_s < 0) return HR_EINVAL;
  if ((unsigned)options->policy > HR_POLICY_LOOKAHEAD) return HR_EINVAL;
  r = calloc(1, sizeof *r);
  if (!r) return HR_ENOMEM;
  r->o = *options;
  if (r->o.poll_interval_s == 0) r->o.poll_interval_s = 0.01;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
  if (pthread_mutex_init(&r->mu, &attr) != 0) rc = HR_ENOMEM;
  pthread_mutexattr_destroy(&attr);
  /* The registry answers its pool's failures (hr_residency_reclaim, in
   * plan.c) by offloading assets. */
  if (rc == 0 && r->o.pool && (rc = hr_pool_add_reclaimer(r->o.pool, hr_residency_reclaim, r)) != 0)
    pthread_mutex_destroy(&r->mu);
  if (rc) {
    free(r);
    return rc;
  }
  *out = r;
  return 0;
}

void hr_residency_destroy(hr_residency_t *r) {
  if (!r) return;
  /* First, and without the registry's lock (the reclaimer takes it): once
   * the pool has taken its reclaimer back, no allocation reaches r. */
  if (r->o.pool) hr_pool_remove_reclaimer(r->o.pool, hr_residency_reclaim, r);
  pthread_mutex_destroy(&r->mu);
  free(r->a);
  free(r);
}

static const char *variant_or_empty(const char *v) {
  return v ? v : "";
}

/* The members an asset keeps as its description gives them and its info
 * shows them back, named alike in hr_asset_desc_t, hr__asset_t and
 * hr_asset_info_t: a member added to the three is added here, and copied
 * both ways. */
#define DESCRIBED(X) X(device_bytes) X(host_bytes) X(parent) X(pinned) X(partial) X(priority)

/* The new asset a as d describes it. */
static void asset_init_locked(hr_residency_t *r, hr__asset_t *a, const hr_asset_desc_t *d) {
  memset(a, 0, sizeof *a);
  a->live = true;
  hr__strlcpy(a->name, d->name, sizeof a->name);
  hr__strlcpy(a->variant, variant_or_empty(d->variant), sizeof a->variant);
#define FROM_DESC_(m) a->m = d->m;
  DESCRIBED(FROM_DESC_)
#undef FROM_DESC_
  a->resident = HR_MIN(d->resident_bytes, d->device_bytes);
  a->load = d->load;
  a->offload = d->offload;
  a->drop = d->drop;
  a->arg = d->arg;
  a->loaded_at = a->resident ? ++r->clock : 0;
}

int hr_asset_register(hr_residency_t *r, const hr_asset_desc_t *d, hr_asset_id_t *id) {
  if (!r || !d || !id || !d->name || !d->name[0] || d->device_bytes == 0 || !d->load || !d->offload)
    return HR_EINVAL;
  if (strlen(d->name) >= sizeof r->a->name ||
      strlen(variant_or_empty(d->variant)) >= sizeof r->a->variant)
    return HR_ERANGE;
  pthread_mutex_lock(&r->mu);
  hr_asset_id_t found;
  int rc = 0;
  if (hr_asset_find(r, d->name, d->variant, &found) == 0)
    rc = HR_EEXIST;
  else if (d->parent != HR_ASSET_NONE && !hr__asset_get_locked(r, d->parent))
    rc = HR_ENOENT;
  else
    rc = hr__grow(&r->a, &r->cap, r->n, sizeof *r->a, 16);
  if (rc == 0) {
    asset_init_locked(r, &r->a[r->n], d);
    *id = (hr_asset_id_t)++r->n;
    r->st.assets++;
  }
  pthread_mutex_unlock(&r->mu);
  return rc;
}

/* Runs fn on asset id under the registry's lock: the one way the calls on
 * one asset find it. HR_EINVAL without a registry, HR_ENOENT for an id
 * that names no live asset. */
typedef void (*asset_fn)(hr_residency_t *r, hr_asset_id_t id, hr__asset_t *a, void *arg);
static int with_asset(hr_residency_t *r, hr_asset_id_t id, asset_fn fn, void *arg) {
  if (!r) return HR_EINVAL;
  pthread_mutex_lock(&r->mu);
  hr__asset_t *a = hr__asset_get_locked(r, id);
  if (a) fn(r, id, a, arg);
  pthread_mutex_unlock(&r->mu);
  return a ? 0 : HR_ENOENT;
}

static void unregister_locked(hr_residency_t *r, hr_asset_id_t id, hr__asset_t *a, void *arg) {
  (void)arg;
  if (a->drop) a->drop(id, a->arg);
  a->live = false;
  a->resident = 0;
  for (size_t i = 0; i < r->n; i++)
    if (r->a[i].live && r->a[i].parent == id) r->a[i].parent = HR_ASSET_NONE;
  r->st.assets--;
}

int hr_asset_unregister(hr_residency_t *r, hr_asset_id_t id) {
  return with_asset(r, id, unregister_locked, NULL);
}

/* Counts a use of every live asset of id's group, now. */
static void touch_locked(hr_residency_t *r, hr_asset_id_t id, hr__asset_t *a, void *arg) {
  (void)a, (void)arg;
  hr_asset_id_t root = hr__group_root_locked(r, id);
  uint64_t now = ++r->clock;
  for (size_t i = 0; i < r->n; i++) {
    if (r->a[i].live && hr__group_root_locked(r, (hr_asset_id_t)(i + 1)) == root) {
      r->a[i].uses++;
      r->a[i].last_use = now;
    }
  }
}

int hr_asset_touch(hr_residency_t *r, hr_asset_id_t id) {
  return with_asset(r, id, touch_locked, NULL);
}

/* Marks every live asset of id's group busy or not (*arg, a bool). */
static void busy_locked(hr_residency_t *r, hr_asset_id_t id, hr__asset_t *a, void *arg) {
  (void)a;
  bool busy = *(const bool *)arg;
  hr_asset_id_t root = hr__group_root_locked(r, id);
  for (size_t i = 0; i < r->n; i++) {
    hr__asset_t *g = &r->a[i];
    if (!g->live || hr__group_root_locked(r, (hr_asset_id_t)(i + 1)) != root) continue;
    g->busy = busy;
    if (!busy) g->active = false;
  }
}

int hr_asset_set_busy(hr_residency_t *r, hr_asset_id_t id, bool busy) {
  return with_asset(r, id, busy_locked, &busy);
}

int hr_asset_find(hr_residency_t *r, const char *name, const char *variant, hr_asset_id_t *id) {
  int rc = HR_ENOENT;
  if (!r || !name || !id) return HR_EINVAL;
  variant = variant_or_empty(variant);
  pthread_mutex_lock(&r->mu);
  for (size_t i = 0; i < r->n; i++) {
    if (r->a[i].live && strcmp(r->a[i].name, name) == 0 && strcmp(r->a[i].variant, variant) == 0) {
      *id = (hr_asset_id_t)(i + 1);
      rc = 0;
      break;
    }
  }
  pthread_mutex_unlock(&r->mu);
  return rc;
}

/* Fills the hr_asset_info_t at arg from asset a. */
static void info_locked(hr_residency_t *r, hr_asset_id_t id, hr__asset_t *a, void *arg) {
  hr_asset_info_t *out = arg;
  memset(out, 0, sizeof *out);
  out->id = id;
  out->group = hr__group_root_locked(r, id);
  hr__strlcpy(out->name, a->name, sizeof out->name);
  hr__strlcpy(out->variant, a->variant, sizeof out->variant);
#define TO_INFO_(m) out->m = a->m;
  DESCRIBED(TO_INFO_)
#undef TO_INFO_
  out->resident_bytes = a->resident;
  out->uses = a->uses;
  out->last_use = a->last_use;
}

int hr_asset_info(hr_residency_t *r, hr_asset_id_t id, hr_asset_info_t *out) {
  return out ? with_asset(r, id, info_locked, out) : HR_EINVAL;
}

int hr_residency_stats(hr_residency_t *r, hr_residency_stats_t *out) {
  if (!r || !out) return HR_EINVAL;
  pthread_mutex_lock(&r->mu);
  *out = r->st;
  out->resident_bytes = hr__resident_total_locked(r);
  uint64_t cap = 0;
  int rc = hr__capacity_locked(r, &cap);
  out->capacity_bytes = rc == 0 ? cap : 0;
  pthread_mutex_unlock(&r->mu);
  return rc;
}
