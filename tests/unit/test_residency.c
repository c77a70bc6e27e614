/* Residency: the registry, each policy's choice, groups, pins, partial loads
 * and offloads, refusals that change nothing, patience against a fake device,
 * the reclaimer, workflow files (good and bad), and the reference optimum
 * against every policy on random workflows. */
#include "hr_test.h"
#include "trace/workflow_internal.h"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#define GiB (1ull << 30)

/* A fake device: assets' bytes come out of `free_bytes` when loaded and go
 * back when offloaded, unless the asset is sticky (its memory stays used
 * until `release_after` polls have passed). */
typedef struct fake {
  uint64_t free_bytes;
  uint64_t held[64]; /* by id */
  bool sticky[64];
  uint64_t stuck;           /* bytes freed by sticky assets, not yet visible */
  int polls, release_after; /* release_after < 0: never */
  int load_calls, offload_calls, drop_calls;
  bool partial_ok[64];
} fake_t;

static int fake_mem(void *arg, uint64_t *free_b, uint64_t *total) {
  fake_t *f = arg;
  f->polls++;
  if (f->stuck && f->release_after >= 0 && f->polls > f->release_after) {
    f->free_bytes += f->stuck;
    f->stuck = 0;
  }
  *free_b = f->free_bytes;
  *total = 80 * GiB;
  return 0;
}

static int fake_load(hr_asset_id_t id, uint64_t budget, uint64_t *loaded, void *arg) {
  fake_t *f = arg;
  f->load_calls++;
  if (budget > f->held[id]) f->free_bytes -= budget - f->held[id];
  f->held[id] = budget;
  *loaded = budget;
  return 0;
}

static int fake_offload(hr_asset_id_t id, uint64_t bytes, uint64_t *freed, void *arg) {
  fake_t *f = arg;
  f->offload_calls++;
  uint64_t n = f->partial_ok[id] ? HR_MIN(bytes, f->held[id]) : f->held[id];
  f->held[id] -= n;
  if (f->sticky[id])
    f->stuck += n;
  else
    f->free_bytes += n;
  *freed = n;
  return 0;
}

static void fake_drop(hr_asset_id_t id, void *arg) {
  fake_t *f = arg;
  f->drop_calls++;
  f->free_bytes += f->held[id];
  f->held[id] = 0;
}

static hr_residency_t *make_fixed(uint64_t budget, hr_policy_t policy) {
  hr_residency_options_t o;
  hr_residency_t *r = NULL;
  hr_residency_options_default(NULL, &o);
  o.budget_bytes = budget;
  o.reserve_bytes = 0;
  o.policy = policy;
  if (hr_residency_create(&o, &r) != 0) return NULL;
  return r;
}

static hr_asset_id_t add(hr_residency_t *r, fake_t *f, const char *name, const char *variant,
                         uint64_t bytes, hr_asset_id_t parent, bool pinned, bool partial) {
  hr_asset_desc_t d = {.name = name,
                       .variant = variant,
                       .device_bytes = bytes,
                       .host_bytes = bytes,
                       .parent = parent,
                       .pinned = pinned,
                       .partial = partial,
                       .load = fake_load,
                       .offload = fake_offload,
                       .drop = fake_drop,
                       .arg = f};
  hr_asset_id_t id = HR_ASSET_NONE;
  if (hr_asset_register(r, &d, &id) != 0) return HR_ASSET_NONE;
  f->partial_ok[id] = partial;
  return id;
}

static uint64_t resident(hr_residency_t *r, hr_asset_id_t id) {
  hr_asset_info_t info;
  return hr_asset_info(r, id, &info) == 0 ? info.resident_bytes : UINT64_MAX;
}

static int req1(hr_residency_t *r, hr_asset_id_t id, uint64_t working, hr_plan_t *p) {
  return hr_residency_require(r, &id, 1, working, NULL, p);
}

static void test_register(void) {
  fake_t f = {0};
  hr_residency_t *r = make_fixed(10 * GiB, HR_POLICY_LRU);
  CHECK(r);
  hr_asset_id_t a = add(r, &f, "flux-dev", "nf4", 6 * GiB, 0, false, false);
  hr_asset_id_t b = add(r, &f, "flux-dev", "int8", 12 * GiB, 0, false, false);
  CHECK(a && b && a != b);
  hr_asset_desc_t d = {.name = "flux-dev",
                       .variant = "nf4",
                       .device_bytes = 1,
                       .load = fake_load,
                       .offload = fake_offload};
  hr_asset_id_t c;
  CHECK_RC(hr_asset_register(r, &d, &c), HR_EEXIST);
  d.variant = "fp8";
  d.parent = 99;
  CHECK_RC(hr_asset_register(r, &d, &c), HR_ENOENT);
  d.parent = 0;
  d.load = NULL;
  CHECK_RC(hr_asset_register(r, &d, &c), HR_EINVAL);
  hr_asset_id_t found;
  CHECK_OK(hr_asset_find(r, "flux-dev", "int8", &found));
  CHECK_EQ_INT(found, b);
  CHECK_RC(hr_asset_find(r, "flux-dev", "bf16", &found), HR_ENOENT);
  hr_asset_info_t info;
  CHECK_OK(hr_asset_info(r, a, &info));
  CHECK_STR(info.variant, "nf4");
  CHECK_EQ_U64(info.device_bytes, 6 * GiB);
  CHECK_OK(hr_asset_unregister(r, a));
  CHECK_EQ_INT(f.drop_calls, 1);
  CHECK_RC(hr_asset_info(r, a, &info), HR_ENOENT);
  CHECK_RC(hr_asset_touch(r, a), HR_ENOENT);
  CHECK_RC(req1(r, a, 0, NULL), HR_ENOENT);
  hr_policy_t p;
  CHECK_OK(hr_policy_parse("lookahead", &p));
  CHECK_EQ_INT(p, HR_POLICY_LOOKAHEAD);
  CHECK_RC(hr_policy_parse("mru", &p), HR_EINVAL);
  hr_residency_destroy(r);
}

static void test_lru(void) {
  fake_t f = {0};
  hr_residency_t *r = make_fixed(10 * GiB, HR_POLICY_LRU);
  hr_asset_id_t a = add(r, &f, "a", NULL, 4 * GiB, 0, false, false);
  hr_asset_id_t b = add(r, &f, "b", NULL, 4 * GiB, 0, false, false);
  hr_asset_id_t c = add(r, &f, "c", NULL, 4 * GiB, 0, false, false);
  hr_plan_t p = {0};
  CHECK_OK(req1(r, a, 0, &p));
  CHECK_OK(req1(r, b, 0, &p));
  CHECK_OK(hr_asset_touch(r, a)); /* a is now the most recent: b goes */
  CHECK_OK(req1(r, c, 1 * GiB, &p));
  CHECK_EQ_U64(resident(r, b), 0);
  CHECK_EQ_U64(resident(r, a), 4 * GiB);
  CHECK_EQ_U64(resident(r, c), 4 * GiB);
  CHECK_EQ_U64(p.n_actions, 2);
  CHECK_EQ_INT(p.actions[0].kind, HR_ACTION_OFFLOAD);
  CHECK_EQ_INT(p.actions[0].id, b);
  CHECK_EQ_INT(p.actions[1].kind, HR_ACTION_LOAD);
  CHECK_EQ_U64(p.bytes_loaded, 4 * GiB);
  CHECK_EQ_U64(p.bytes_offloaded, 4 * GiB);
  CHECK_EQ_U64(p.used_bytes, 9 * GiB);
  hr_plan_free(&p);
  hr_residency_destroy(r);
}

static void test_comfy(void) {
  fake_t f = {0};
  hr_residency_t *r = make_fixed(10 * GiB, HR_POLICY_COMFY);
  hr_asset_id_t a = add(r, &f, "a", NULL, 2 * GiB, 0, false, false);
  hr_asset_id_t b = add(r, &f, "b", NULL, 3 * GiB, 0, false, false);
  hr_asset_id_t c = add(r, &f, "c", NULL, 4 * GiB, 0, false, true);
  hr_asset_id_t d = add(r, &f, "d", NULL, 2 * GiB, 0, false, false);
  hr_plan_t p = {0};
  CHECK_OK(req1(r, a, 0, &p));
  CHECK_OK(req1(r, a, 0, &p));
  CHECK_OK(req1(r, b, 0, &p));
  CHECK_OK(req1(r, c, 0, &p)); /* 9 GiB resident */
  /* d needs 1 GiB: nothing is offloaded yet; b and c have the fewest uses
   * (a has two); the smaller of them, b, goes whole. */
  CHECK_OK(req1(r, d, 0, &p));
  CHECK_EQ_U64(resident(r, b), 0);
  CHECK_EQ_U64(resident(r, a), 2 * GiB);
  CHECK_EQ_U64(resident(r, c), 4 * GiB);
  hr_plan_free(&p);
  hr_residency_destroy(r);

  /* Ties on uses and size: the most recently loaded goes (ComfyUI's list is
   * newest first). Then the least used partial model is offloaded in part,
   * and once partly offloaded it goes first even when used most. */
  fake_t g = {0};
  r = make_fixed(10 * GiB, HR_POLICY_COMFY);
  hr_asset_id_t pp = add(r, &g, "p", NULL, 4 * GiB, 0, false, true);
  hr_asset_id_t q = add(r, &g, "q", NULL, 2 * GiB, 0, false, false);
  hr_asset_id_t s = add(r, &g, "s", NULL, 2 * GiB, 0, false, false);
  hr_asset_id_t t = add(r, &g, "t", NULL, 4 * GiB, 0, false, false);
  hr_asset_id_t u = add(r, &g, "u", NULL, 1 * GiB, 0, false, false);
  hr_asset_id_t w = add(r, &g, "w", NULL, 1 * GiB, 0, false, false);
  hr_asset_id_t set[] = {pp, q, s};
  CHECK_OK(hr_residency_require(r, set, 3, 0, NULL, &p));
  CHECK_OK(req1(r, t, 0, &p));
  CHECK_EQ_U64(resident(r, s), 0);
  CHECK_EQ_U64(resident(r, q), 2 * GiB);
  CHECK_OK(hr_asset_touch(r, q));
  CHECK_OK(hr_asset_touch(r, t));
  CHECK_OK(req1(r, u, 0, &p));
  CHECK_EQ_U64(resident(r, pp), 3 * GiB);
  CHECK_EQ_U64(p.n_actions, 2);
  CHECK_EQ_INT(p.actions[0].kind, HR_ACTION_OFFLOAD_PARTIAL);
  CHECK_EQ_U64(p.actions[0].bytes, 1 * GiB);
  for (int i = 0; i < 5; i++) CHECK_OK(hr_asset_touch(r, pp));
  CHECK_OK(req1(r, w, 0, &p));
  CHECK_EQ_U64(resident(r, pp), 2 * GiB);
  CHECK_EQ_U64(resident(r, q), 2 * GiB);
  CHECK_EQ_U64(resident(r, t), 4 * GiB);
  hr_plan_free(&p);
  hr_residency_destroy(r);
}

static void test_lookahead(void) {
  fake_t f = {0};
  hr_residency_t *r = make_fixed(10 * GiB, HR_POLICY_AUTO);
  hr_asset_id_t a = add(r, &f, "a", NULL, 3 * GiB, 0, false, false);
  hr_asset_id_t b = add(r, &f, "b", NULL, 3 * GiB, 0, false, false);
  hr_asset_id_t c = add(r, &f, "c", NULL, 3 * GiB, 0, false, false);
  hr_asset_id_t d = add(r, &f, "d", NULL, 3 * GiB, 0, false, false);
  hr_plan_t p = {0};
  CHECK_OK(req1(r, a, 0, &p));
  CHECK_OK(req1(r, b, 0, &p));
  CHECK_OK(req1(r, c, 0, &p));
  /* a is least recently used, but is needed next; c after; b never. */
  hr_asset_id_t ids[] = {a, c};
  uint32_t steps[] = {1, 4};
  hr_lookahead_t la = {ids, steps, 2, NULL};
  CHECK_OK(hr_residency_require(r, &d, 1, 0, &la, &p));
  CHECK_EQ_INT(p.policy, HR_POLICY_LOOKAHEAD);
  CHECK_EQ_U64(resident(r, b), 0);
  CHECK_EQ_U64(resident(r, a), 3 * GiB);
  CHECK_EQ_U64(resident(r, c), 3 * GiB);
  /* Without a lookahead, auto is lru: a goes. */
  CHECK_OK(req1(r, b, 0, &p));
  CHECK_EQ_INT(p.policy, HR_POLICY_LRU);
  CHECK_EQ_U64(resident(r, a), 0);
  hr_plan_free(&p);
  hr_residency_destroy(r);
}

/* Sizes matter once assets move whole: furthest-next-use would offload y
 * (5 GiB, used at step 5; x alone is too small and is given back), but x and
 * z (3 GiB, reloaded at steps 9 and 1) cost less to bring back, and the
 * rollout over the upcoming steps finds that. */
static void test_lookahead_sizes(void) {
  fake_t f = {0};
  hr_residency_t *r = make_fixed(10 * GiB, HR_POLICY_LOOKAHEAD);
  hr_asset_id_t x = add(r, &f, "x", NULL, 1 * GiB, 0, false, false);
  hr_asset_id_t y = add(r, &f, "y", NULL, 5 * GiB, 0, false, false);
  hr_asset_id_t z = add(r, &f, "z", NULL, 2 * GiB, 0, false, false);
  hr_asset_id_t q = add(r, &f, "q", NULL, 5 * GiB, 0, false, false);
  hr_plan_t p = {0};
  hr_asset_id_t all[] = {x, y, z};
  CHECK_OK(hr_residency_require(r, all, 3, 0, NULL, &p)); /* 8 of 10 */
  hr_asset_id_t ids[] = {z, y, x};
  uint32_t steps[] = {1, 5, 9};
  hr_lookahead_t la = {ids, steps, 3, NULL};
  CHECK_OK(hr_residency_require(r, &q, 1, 0, &la, &p)); /* needs 3 GiB */
  CHECK_EQ_U64(resident(r, x), 0);
  CHECK_EQ_U64(resident(r, y), 5 * GiB);
  CHECK_EQ_U64(resident(r, z), 0);
  CHECK_EQ_U64(p.bytes_offloaded, 3 * GiB);
  hr_plan_free(&p);
  hr_residency_destroy(r);
}

static void test_group(void) {
  fake_t f = {0};
  hr_residency_t *r = make_fixed(20 * GiB, HR_POLICY_LRU);
  hr_asset_id_t unet = add(r, &f, "sdxl-unet", "fp16", 5 * GiB, 0, false, false);
  hr_asset_id_t enc = add(r, &f, "ip-adapter-image-encoder", NULL, 2 * GiB, unet, false, false);
  hr_asset_id_t proj = add(r, &f, "ip-adapter-projection", NULL, 1 * GiB, enc, false, false);
  hr_asset_id_t other = add(r, &f, "refiner", NULL, 12 * GiB, 0, false, false);
  hr_plan_t p = {0};
  /* Requiring the projection loads the whole group. */
  CHECK_OK(req1(r, proj, 0, &p));
  CHECK_EQ_U64(p.loads, 3);
  CHECK_EQ_U64(resident(r, unet), 5 * GiB);
  CHECK_EQ_U64(resident(r, enc), 2 * GiB);
  hr_asset_info_t info;
  CHECK_OK(hr_asset_info(r, proj, &info));
  CHECK_EQ_INT(info.group, unet);
  uint64_t need, can_free;
  CHECK_OK(hr_residency_estimate(r, &other, 1, 1 * GiB, &need, &can_free));
  CHECK_EQ_U64(need, 13 * GiB);
  CHECK_EQ_U64(can_free, 20 * GiB);
  CHECK_OK(req1(r, other, 1 * GiB, &p));
  CHECK_EQ_U64(resident(r, other), 12 * GiB);
  /* 8 + 12 + 1 > 20: one member went. */
  CHECK(resident(r, unet) + resident(r, enc) + resident(r, proj) <= 7 * GiB);
  CHECK_OK(req1(r, unet, 0, &p));
  CHECK_EQ_U64(resident(r, proj), 1 * GiB);
  CHECK_EQ_U64(resident(r, enc), 2 * GiB);
  /* Unregistering the parent leaves the members on their own. */
  CHECK_OK(hr_asset_unregister(r, unet));
  CHECK_OK(hr_asset_info(r, enc, &info));
  CHECK_EQ_INT(info.parent, HR_ASSET_NONE);
  CHECK_EQ_INT(info.group, enc);
  hr_plan_free(&p);
  hr_residency_destroy(r);
}

static void test_pinning(void) {
  fake_t f = {0};
  hr_residency_t *r = make_fixed(10 * GiB, HR_POLICY_LRU);
  hr_asset_id_t vae = add(r, &f, "vae", NULL, 2 * GiB, 0, true, false);
  hr_asset_id_t a = add(r, &f, "a", NULL, 6 * GiB, 0, false, false);
  hr_asset_id_t b = add(r, &f, "b", NULL, 7 * GiB, 0, false, false);
  hr_plan_t p = {0};
  CHECK_OK(req1(r, vae, 0, &p));
  CHECK_OK(req1(r, a, 0, &p));
  CHECK_OK(req1(r, b, 0, &p)); /* a goes, the older vae stays */
  CHECK_EQ_U64(resident(r, vae), 2 * GiB);
  CHECK_EQ_U64(resident(r, a), 0);
  /* 9 GiB of b cannot fit beside the pinned vae: refused, unpin suggested. */
  CHECK_RC(req1(r, b, 2 * GiB, &p), HR_ENOSPC);
  bool unpin = false;
  for (size_t i = 0; i < p.n_suggestions; i++)
    if (p.suggestions[i].kind == HR_SUGGEST_UNPIN && p.suggestions[i].id == vae) unpin = true;
  CHECK(unpin);
  hr_plan_free(&p);
  hr_residency_destroy(r);
}

static void test_partial(void) {
  fake_t f = {0};
  hr_residency_t *r = make_fixed(10 * GiB, HR_POLICY_LOOKAHEAD);
  hr_asset_id_t big = add(r, &f, "flux-transformer", "bf16", 12 * GiB, 0, false, true);
  hr_asset_id_t t5 = add(r, &f, "t5", NULL, 5 * GiB, 0, false, true);
  hr_plan_t p = {0};
  /* Partial load: 12 GiB cannot fit in 10 with 1 working; 9 GiB go on. */
  CHECK_OK(req1(r, big, 1 * GiB, &p));
  CHECK_EQ_U64(resident(r, big), 9 * GiB);
  CHECK_EQ_U64(p.partial_loads, 1);
  CHECK_EQ_INT(p.actions[0].kind, HR_ACTION_LOAD_PARTIAL);
  CHECK_EQ_U64(f.held[big], 9 * GiB);
  /* Partial offload: t5 needs 5, 1 is free: 4 GiB of the transformer go. */
  CHECK_OK(req1(r, t5, 0, &p));
  CHECK_EQ_U64(resident(r, big), 5 * GiB);
  CHECK_EQ_INT(p.actions[0].kind, HR_ACTION_OFFLOAD_PARTIAL);
  CHECK_EQ_U64(p.actions[0].bytes, 4 * GiB);
  CHECK_EQ_U64(p.partial_offloads, 1);
  /* Requiring it again loads the missing part only (t5 partly out). */
  CHECK_OK(req1(r, big, 0, &p));
  CHECK_EQ_U64(p.bytes_loaded, 5 * GiB);
  CHECK_EQ_U64(resident(r, big), 10 * GiB);
  CHECK_EQ_U64(resident(r, t5), 0);
  hr_plan_free(&p);
  hr_residency_destroy(r);
}

static void test_refusal(void) {
  fake_t f = {0};
  hr_residency_t *r = make_fixed(16 * GiB, HR_POLICY_LRU);
  hr_asset_id_t bf16 = add(r, &f, "flux-dev", "bf16", 22 * GiB, 0, false, false);
  hr_asset_id_t nf4 = add(r, &f, "flux-dev", "nf4", 6 * GiB, 0, false, false);
  hr_asset_id_t t5 = add(r, &f, "t5-xxl", "fp16", 9 * GiB, 0, false, false);
  hr_plan_t p = {0};
  CHECK_OK(req1(r, t5, 0, &p));
  int loads = f.load_calls, offloads = f.offload_calls;
  CHECK_RC(req1(r, bf16, 2 * GiB, &p), HR_ENOSPC);
  /* Nothing changed: no callback ran, t5 stays, no action. */
  CHECK_EQ_INT(f.load_calls, loads);
  CHECK_EQ_INT(f.offload_calls, offloads);
  CHECK_EQ_U64(resident(r, t5), 9 * GiB);
  CHECK_EQ_U64(resident(r, bf16), 0);
  CHECK_EQ_U64(p.n_actions, 0);
  CHECK_EQ_U64(p.short_bytes, 8 * GiB); /* 22 + 2 - 16 */
  CHECK_CONTAINS(p.message, "'flux-dev' bf16");
  CHECK_CONTAINS(p.message, "8.00 GiB short");
  bool variant = false, partial = false, cpu = false;
  for (size_t i = 0; i < p.n_suggestions; i++) {
    const hr_suggestion_t *s = &p.suggestions[i];
    if (s->kind == HR_SUGGEST_VARIANT) {
      variant = s->alt == nf4 && s->bytes == 6 * GiB;
      CHECK_CONTAINS(s->text, "'flux-dev' nf4 (6.00 GiB)");
      CHECK_CONTAINS(s->text, "8.00 GiB to spare"); /* 22 - 6 - 8 */
    }
    if (s->kind == HR_SUGGEST_PARTIAL) {
      partial = s->bytes == 14 * GiB;
      CHECK_CONTAINS(s->text, "14.00 GiB of its 22.00 GiB");
    }
    if (s->kind == HR_SUGGEST_CPU) cpu = s->id == bf16;
  }
  CHECK(variant && partial && cpu);
  hr_residency_stats_t st;
  CHECK_OK(hr_residency_stats(r, &st));
  CHECK_EQ_U64(st.refusals, 1);
  /* Following the first suggestion works. */
  CHECK_OK(req1(r, nf4, 2 * GiB, &p));
  hr_plan_free(&p);
  hr_residency_destroy(r);
}

static hr_residency_t *make_device(fake_t *f, double patience) {
  hr_residency_options_t o;
  hr_residency_t *r = NULL;
  hr_residency_options_default(NULL, &o);
  o.reserve_bytes = 1 * GiB;
  o.patience_s = patience;
  o.poll_interval_s = 0.005;
  o.mem_info = fake_mem;
  o.mem_info_arg = f;
  o.policy = HR_POLICY_LRU;
  if (hr_residency_create(&o, &r) != 0) return NULL;
  return r;
}

static void test_patience(void) {
  fake_t f = {.free_bytes = 17 * GiB, .release_after = -1};
  hr_residency_t *r = make_device(&f, 0.15);
  CHECK(r);
  hr_asset_id_t a = add(r, &f, "flux-dev", "nf4", 8 * GiB, 0, false, false);
  hr_asset_id_t b = add(r, &f, "flux-dev", "int8", 12 * GiB, 0, false, false);
  hr_plan_t p = {0};
  CHECK_OK(req1(r, a, 0, &p)); /* 9 GiB free after */
  CHECK_EQ_U64(f.free_bytes, 9 * GiB);
  /* b needs a out; a's memory never shows as free. */
  f.sticky[a] = true;
  double t0 = hr__now_mono();
  CHECK_RC(req1(r, b, 0, &p), HR_ETIMEDOUT);
  double took = hr__now_mono() - t0;
  CHECK_MSG(took >= 0.15 && took < 2.0, "waited %.3f s", took);
  CHECK(p.waited_s >= 0.15);
  CHECK_CONTAINS(p.message, "'flux-dev' nf4 (8.00 GiB)");
  CHECK_CONTAINS(p.message, "did not give its memory back");
  CHECK_EQ_U64(resident(r, b), 0);
  /* Memory that comes back after a few polls is waited for. */
  f.release_after = f.polls;
  CHECK_OK(req1(r, a, 0, &p));
  CHECK_EQ_U64(f.free_bytes, 9 * GiB);
  f.release_after = f.polls + 5;
  CHECK_OK(req1(r, b, 0, &p));
  CHECK(p.waited_s > 0);
  CHECK_EQ_U64(resident(r, b), 12 * GiB);
  hr_residency_stats_t st;
  CHECK_OK(hr_residency_stats(r, &st));
  CHECK_EQ_U64(st.timeouts, 1);
  hr_plan_free(&p);
  hr_residency_destroy(r);
}

static void test_device_budget(void) {
  fake_t f = {.free_bytes = 10 * GiB, .release_after = -1};
  hr_residency_t *r = make_device(&f, 1);
  hr_asset_id_t a = add(r, &f, "a", NULL, 6 * GiB, 0, false, false);
  hr_asset_id_t b = add(r, &f, "b", NULL, 4 * GiB, 0, false, false);
  hr_plan_t p = {0};
  CHECK_OK(req1(r, a, 0, &p));
  CHECK_EQ_U64(p.capacity_bytes, 9 * GiB); /* 10 free - 1 reserve */
  /* 4 free, 1 reserved: b (4) with 0 working needs a out. */
  CHECK_OK(req1(r, b, 0, &p));
  CHECK_EQ_U64(resident(r, a), 0);
  CHECK_EQ_U64(f.free_bytes, 6 * GiB);
  hr_residency_options_t o;
  hr_residency_options_default(NULL, &o);
  hr_residency_t *bad = NULL;
  CHECK_RC(hr_residency_create(&o, &bad), HR_EINVAL); /* no budget, no source */
  hr_plan_free(&p);
  hr_residency_destroy(r);
}

static void test_reclaim_direct(void) {
  fake_t f = {0};
  hr_residency_t *r = make_fixed(20 * GiB, HR_POLICY_LRU);
  hr_asset_id_t a = add(r, &f, "a", NULL, 4 * GiB, 0, false, false);
  hr_asset_id_t b = add(r, &f, "b", NULL, 4 * GiB, 0, true, false);
  hr_asset_id_t c = add(r, &f, "c", NULL, 4 * GiB, 0, false, false);
  CHECK_OK(req1(r, a, 0, NULL));
  CHECK_OK(req1(r, b, 0, NULL));
  CHECK_OK(req1(r, c, 0, NULL));
  uint64_t freed = 0;
  /* c is in use (last require), b pinned: only a can go. */
  CHECK_OK(hr_residency_reclaim(NULL, 6 * GiB, &freed, r));
  CHECK_EQ_U64(freed, 4 * GiB);
  CHECK_EQ_U64(resident(r, a), 0);
  CHECK_EQ_U64(resident(r, c), 4 * GiB);
  CHECK_RC(hr_residency_reclaim(NULL, 1, &freed, r), HR_ENOSPC);
  hr_residency_destroy(r);
}

/* A busy asset stays, as a pinned one does, through require and reclaim;
 * once idle it is the first to go, even though it was in the last require. */
static void test_busy(void) {
  fake_t f = {0};
  hr_plan_t p = {0};
  hr_residency_t *r = make_fixed(10 * GiB, HR_POLICY_LRU);
  hr_asset_id_t a = add(r, &f, "a", NULL, 4 * GiB, 0, false, false);
  hr_asset_id_t b = add(r, &f, "b", NULL, 4 * GiB, 0, false, false);
  hr_asset_id_t c = add(r, &f, "c", NULL, 4 * GiB, 0, false, false);
  CHECK_RC(hr_asset_set_busy(r, 99, true), HR_ENOENT);
  CHECK_RC(hr_asset_set_busy(NULL, a, true), HR_EINVAL);
  CHECK_OK(req1(r, a, 0, NULL));
  CHECK_OK(hr_asset_set_busy(r, a, true));
  CHECK_OK(req1(r, b, 0, NULL));
  /* a is the least recently used, but busy: with b gone c and 3 GiB still do not fit, and no
   * unpin is offered for a. */
  CHECK_RC(req1(r, c, 3 * GiB, &p), HR_ENOSPC);
  for (size_t i = 0; i < p.n_suggestions; i++) CHECK(p.suggestions[i].kind != HR_SUGGEST_UNPIN);
  uint64_t need = 0, can_free = 0;
  CHECK_OK(hr_residency_estimate(r, &c, 1, 0, &need, &can_free));
  CHECK_EQ_U64(can_free, 6 * GiB); /* 2 free + b; a does not count */
  uint64_t freed = 0;
  CHECK_RC(hr_residency_reclaim(NULL, GiB, &freed, r), HR_ENOSPC); /* b: last require */
  CHECK_OK(hr_asset_set_busy(r, b, false));
  CHECK_OK(hr_residency_reclaim(NULL, GiB, &freed, r));
  CHECK_EQ_U64(freed, 4 * GiB);
  CHECK_EQ_U64(resident(r, b), 0);
  CHECK_EQ_U64(resident(r, a), 4 * GiB);
  CHECK_OK(hr_asset_set_busy(r, a, false));
  CHECK_OK(req1(r, c, 3 * GiB, &p)); /* a is idle again: it goes */
  CHECK_EQ_U64(resident(r, a), 0);
  /* An explicit offload: refused while busy, done for a pinned asset, whole when not partial. */
  hr_asset_id_t d = add(r, &f, "d", NULL, 2 * GiB, 0, true, false);
  CHECK_OK(req1(r, d, 0, NULL));
  CHECK_OK(hr_asset_set_busy(r, d, true));
  CHECK_RC(hr_asset_offload(r, d, GiB, &freed), HR_EBUSY);
  CHECK_OK(hr_asset_set_busy(r, d, false));
  CHECK_OK(hr_asset_offload(r, d, GiB, &freed));
  CHECK_EQ_U64(freed, 2 * GiB);
  CHECK_EQ_U64(resident(r, d), 0);
  CHECK_OK(hr_asset_offload(r, d, GiB, NULL)); /* nothing left: nothing to do */
  CHECK_RC(hr_asset_offload(r, 77, GiB, NULL), HR_ENOENT);
  hr_plan_free(&p);
  hr_residency_destroy(r);
}

/* hr_residency_use is a require that leaves the set's groups busy: reclaim
 * cannot offload them until they are marked idle; the use counts as a
 * require (uses, the clock), and a refused use marks nothing busy. */
static void test_use(void) {
  fake_t f = {0};
  hr_plan_t p = {0};
  hr_residency_t *r = make_fixed(10 * GiB, HR_POLICY_LRU);
  hr_asset_id_t a = add(r, &f, "a", NULL, 4 * GiB, 0, false, false);
  hr_asset_id_t child = add(r, &f, "child", NULL, 1 * GiB, a, false, false);
  hr_asset_id_t b = add(r, &f, "b", NULL, 4 * GiB, 0, false, false);
  hr_asset_id_t big = add(r, &f, "big", NULL, 9 * GiB, 0, false, false);
  CHECK_RC(hr_residency_use(NULL, &a, 1, 0, NULL, &p), HR_EINVAL);
  hr_asset_id_t bad = 99;
  CHECK_RC(hr_residency_use(r, &bad, 1, 0, NULL, &p), HR_ENOENT);
  CHECK_OK(hr_residency_use(r, &child, 1, 0, NULL, &p));
  CHECK_EQ_U64(p.loads, 2); /* the whole group */
  hr_asset_info_t info;
  CHECK_OK(hr_asset_info(r, a, &info));
  CHECK_EQ_U64(info.uses, 1);
  CHECK_OK(req1(r, b, 0, NULL)); /* a's group stays busy after another require */
  CHECK_OK(hr_asset_set_busy(r, b, false));
  uint64_t freed = 0;
  CHECK_OK(hr_residency_reclaim(NULL, 10 * GiB, &freed, r));
  CHECK_EQ_U64(freed, 4 * GiB); /* b only */
  CHECK_EQ_U64(resident(r, a), 4 * GiB);
  CHECK_EQ_U64(resident(r, child), 1 * GiB);
  /* A use that cannot fit (a's group is busy) changes nothing and marks nothing. */
  CHECK_RC(hr_residency_use(r, &big, 1, 0, NULL, &p), HR_ENOSPC);
  CHECK_OK(hr_asset_set_busy(r, a, false));
  CHECK_OK(hr_residency_reclaim(NULL, 10 * GiB, &freed, r));
  CHECK_EQ_U64(freed, 5 * GiB);
  CHECK_EQ_U64(resident(r, big), 0);
  CHECK_OK(hr_residency_use(r, &big, 1, 0, NULL, NULL)); /* a NULL plan is fine */
  CHECK_EQ_U64(resident(r, big), 9 * GiB);
  CHECK_RC(hr_residency_reclaim(NULL, GiB, &freed, r), HR_ENOSPC);
  hr_plan_free(&p);
  hr_residency_destroy(r);
}

/* Assets whose bytes are real blocks of a pool on the sim backend. */
typedef struct pooled {
  hr_pool_t *pool;
  void *ptr[8];
  uint64_t size[8];
} pooled_t;

static int pooled_load(hr_asset_id_t id, uint64_t budget, uint64_t *loaded, void *arg) {
  pooled_t *p = arg;
  *loaded = 0;
  if (p->ptr[id]) {
    *loaded = p->size[id];
    return 0;
  }
  int rc = hr_pool_alloc(p->pool, budget, NULL, &p->ptr[id]);
  if (rc == 0) *loaded = p->size[id] = budget;
  return rc;
}

static int pooled_offload(hr_asset_id_t id, uint64_t bytes, uint64_t *freed, void *arg) {
  pooled_t *p = arg;
  (void)bytes;
  *freed = 0;
  if (!p->ptr[id]) return 0;
  int rc = hr_pool_free(p->pool, p->ptr[id], NULL);
  p->ptr[id] = NULL;
  *freed = p->size[id];
  return rc;
}

/* A 1 GiB sim device, a pool on it, and a registry whose reclaimer the
 * pool calls, holding a 600 MiB "unet" (id big) whose bytes are pool
 * blocks; d describes it, for more assets like it. */
typedef struct pooled_registry {
  hr_backend_t *be;
  hr_pool_t *pool;
  hr_residency_t *r;
  pooled_t pd;
  hr_asset_desc_t d;
  hr_asset_id_t big;
} pooled_registry_t;

static int pooled_registry(pooled_registry_t *f) {
  memset(f, 0, sizeof *f);
  int rc = hr_backend_create("sim", 0, 1 * GiB, &f->be);
  if (rc || (rc = hr_pool_create(NULL, f->be, 0, &f->pool)) != 0) return rc;
  f->pd.pool = f->pool;
  hr_residency_options_t o;
  hr_residency_options_default(NULL, &o);
  o.backend = f->be, o.pool = f->pool, o.reserve_bytes = 0, o.patience_s = 0.2;
  if ((rc = hr_residency_create(&o, &f->r)) != 0) return rc;
  f->d = (hr_asset_desc_t){.name = "unet",
                           .device_bytes = 600ull << 20,
                           .load = pooled_load,
                           .offload = pooled_offload,
                           .arg = &f->pd};
  return hr_asset_register(f->r, &f->d, &f->big);
}

/* An allocation that would fail succeeds once the pool's reclaimer (the
 * registry) has offloaded an idle asset; the asset in use stays. */
static void test_reclaim_pool(void) {
  pooled_registry_t f;
  CHECK_OK(pooled_registry(&f));
  hr_residency_t *r = f.r;
  hr_pool_t *pool = f.pool;
  hr_asset_id_t big = f.big, small;
  f.d.name = "vae";
  f.d.device_bytes = 100ull << 20;
  CHECK_OK(hr_asset_register(r, &f.d, &small));
  CHECK_OK(req1(r, big, 0, NULL));
  CHECK(f.pd.ptr[big] != NULL);
  CHECK_OK(req1(r, small, 0, NULL)); /* the vae is in use now, the unet idle */
  void *ptr = NULL;
  CHECK_OK(hr_pool_alloc(pool, 500ull << 20, NULL, &ptr));
  CHECK(ptr != NULL);
  CHECK_EQ_U64(resident(r, big), 0);
  CHECK_EQ_U64(resident(r, small), 100ull << 20);
  CHECK(f.pd.ptr[small] != NULL);
  hr_residency_stats_t st;
  CHECK_OK(hr_residency_stats(r, &st));
  CHECK_EQ_U64(st.reclaims, 1);
  CHECK_EQ_U64(st.offloads, 1);
  /* With nothing idle left, the allocation fails as it would without us. */
  void *ptr2 = NULL;
  CHECK_RC(hr_pool_alloc(pool, 600ull << 20, NULL, &ptr2), HR_ENOMEM);
  CHECK(f.pd.ptr[small] != NULL);
  /* The budget counts the pool's idle cache: freeing the block caches it
   * (reserved, not allocated), and requiring the unet reuses that room. */
  CHECK_OK(hr_pool_free(pool, ptr, NULL));
  CHECK_OK(req1(r, big, 0, NULL));
  CHECK(f.pd.ptr[big] != NULL);
  hr_residency_destroy(r);
  hr_pool_destroy(pool);
  hr_backend_destroy(f.be);
}

/* A registry closed before its pool takes its reclaimer back: an allocation
 * that would have called it fails as it would without a registry, and calls
 * nothing (under the sanitizers, a call would be a use after free). */
static void test_registry_ends_before_its_pool(void) {
  pooled_registry_t f;
  CHECK_OK(pooled_registry(&f));
  hr_pool_t *pool = f.pool;
  void **unet = &f.pd.ptr[f.big];
  CHECK_OK(req1(f.r, f.big, 0, NULL));
  hr_residency_destroy(f.r);
  hr_pool_stats_t st = {.size = sizeof st};
  CHECK_OK(hr_pool_stats(pool, &st));
  uint64_t retries = st.num_alloc_retries;
  void *ptr = NULL;
  CHECK_RC(hr_pool_alloc(pool, 600ull << 20, NULL, &ptr), HR_ENOMEM);
  CHECK_OK(hr_pool_stats(pool, &st));
  CHECK_EQ_U64(st.num_alloc_retries, retries); /* no reclaimer was asked */
  CHECK(*unet != NULL);                        /* the unet stayed where it was */
  CHECK_OK(hr_pool_free(pool, *unet, NULL));
  hr_pool_destroy(pool);
  hr_backend_destroy(f.be);
}

/* Threads requiring, touching, estimating and reclaiming at once: every
 * successful plan fits the budget, and in the end the bytes loaded minus the
 * bytes offloaded are what the assets hold. */
typedef struct stress {
  hr_residency_t *r;
  hr_asset_id_t ids[8];
  uint64_t seed;
  int bad;
} stress_t;

static void *stress_requirer(void *arg) {
  stress_t *s = arg;
  uint64_t st = s->seed;
  hr_plan_t p = {0};
  for (int i = 0; i < 2000; i++) {
    hr_asset_id_t set[2] = {s->ids[hr_test_rand(&st) % 8], s->ids[hr_test_rand(&st) % 8]};
    hr_asset_id_t up[4] = {s->ids[hr_test_rand(&st) % 8], s->ids[hr_test_rand(&st) % 8],
                           s->ids[hr_test_rand(&st) % 8], s->ids[hr_test_rand(&st) % 8]};
    uint32_t steps[4] = {1, 2, 3, 4};
    hr_lookahead_t la = {up, steps, 4, NULL};
    uint64_t work = (hr_test_rand(&st) % 4) * GiB;
    int rc = hr_residency_require(s->r, set, 2, work, i % 2 ? &la : NULL, &p);
    if (rc == 0 && p.used_bytes > p.capacity_bytes) s->bad++;
    if (rc != 0 && rc != HR_ENOSPC) s->bad++;
  }
  hr_plan_free(&p);
  return NULL;
}

static void *stress_other(void *arg) {
  stress_t *s = arg;
  uint64_t st = s->seed, need, can_free, freed;
  for (int i = 0; i < 2000; i++) {
    hr_asset_id_t id = s->ids[hr_test_rand(&st) % 8];
    switch (hr_test_rand(&st) % 3) {
    case 0:
      if (hr_asset_touch(s->r, id) != 0) s->bad++;
      break;
    case 1:
      if (hr_residency_estimate(s->r, &id, 1, GiB, &need, &can_free) != 0) s->bad++;
      break;
    default:
      (void)hr_residency_reclaim(NULL, GiB, &freed, s->r);
    }
  }
  return NULL;
}

static void test_threads(void) {
  fake_t f = {0};
  hr_residency_t *r = make_fixed(16 * GiB, HR_POLICY_AUTO);
  stress_t s[4];
  pthread_t th[4];
  for (int t = 0; t < 4; t++) s[t] = (stress_t){.r = r, .seed = hr_test_seed() + (uint64_t)t};
  for (int i = 0; i < 8; i++) {
    char name[8];
    snprintf(name, sizeof name, "m%d", i);
    s[0].ids[i] = add(r, &f, name, NULL, (uint64_t)(1 + i % 4) * GiB, 0, false, i % 2);
    CHECK(s[0].ids[i]);
  }
  for (int t = 1; t < 4; t++) memcpy(s[t].ids, s[0].ids, sizeof s[0].ids);
  for (int t = 0; t < 4; t++)
    CHECK(pthread_create(&th[t], NULL, t < 2 ? stress_requirer : stress_other, &s[t]) == 0);
  for (int t = 0; t < 4; t++) pthread_join(th[t], NULL);
  for (int t = 0; t < 4; t++) CHECK_EQ_INT(s[t].bad, 0);
  hr_residency_stats_t st;
  CHECK_OK(hr_residency_stats(r, &st));
  CHECK(st.resident_bytes <= 16 * GiB);
  CHECK_EQ_U64(st.bytes_loaded - st.bytes_offloaded, st.resident_bytes);
  uint64_t held = 0;
  for (int i = 0; i < 8; i++) held += f.held[s[0].ids[i]];
  CHECK_EQ_U64(held, st.resident_bytes);
  hr_residency_destroy(r);
}

/* ---- workflows ---------------------------------------------------------- */

static int parse(const char *json, hr_workflow_t **w, char *err, size_t n) {
  return hr_workflow_parse(json, strlen(json), "wf.json", w, err, n);
}

static void test_workflow_bad(void) {
  static const struct {
    const char *json, *want;
  } cases[] = {
      {"{\"assets\": [\n  {\"name\": \"a\", \"bytes\": 1,}\n]}", "wf.json:2:"},
      {"{\"assets\": [{\"name\": \"a\", \"bytes\": 10", "wf.json:1:"},
      {"[]", "top level must be an object"},
      {"{\"assets\": [{\"name\": \"a\", \"bytes\": 10}], \"steps\": [{\"use\": [\"b\"]}]}",
       "steps[0].use[0]: unknown asset 'b'"},
      {"{\"assets\": [{\"name\": \"a\", \"bytes\": -5}], \"steps\": [{\"use\": [\"a\"]}]}",
       "assets[0].bytes: a size must be"},
      {"{\"assets\": [{\"name\": \"a\", \"bytes\": \"12Q\"}], \"steps\": [{\"use\": [\"a\"]}]}",
       "assets[0].bytes: expected a size"},
      {"{\"assets\": [{\"name\": \"a\", \"byts\": 1}], \"steps\": [{\"use\": [\"a\"]}]}",
       "assets[0]: unknown key 'byts'"},
      {"{\"assets\": [{\"name\": \"f\", \"variant\": \"nf4\", \"bytes\": 1}, {\"name\": \"f\", "
       "\"variant\": \"int8\", \"bytes\": 2}], \"steps\": [{\"use\": [\"f\"]}]}",
       "has several variants (nf4, int8): write 'f:VARIANT'"},
      {"{\"assets\": [{\"name\": \"f\", \"variant\": \"nf4\", \"bytes\": 1}], \"steps\": "
       "[{\"use\": [\"f:bf16\"]}]}",
       "steps[0].use[0]: 'f:bf16' has no such variant (it has nf4)"},
      {"{\"assets\": [{\"name\": \"a\", \"bytes\": 1}], \"steps\": [{\"use\": [\"a\"], "
       "\"repeat\": 0}]}",
       "steps[0].repeat: expected a whole number"},
      {"{\"assets\": [{\"name\": \"a\", \"bytes\": 1, \"group\": \"b\"}, {\"name\": \"b\", "
       "\"bytes\": 1}], \"steps\": [{\"use\": [\"a\"]}]}",
       "assets[0].group: unknown asset 'b' (a group must name an asset listed before it)"},
      {"{\"assets\": [{\"name\": \"a\", \"bytes\": 1}], \"steps\": [{\"repeat\": 3, \"steps\": "
       "[{\"use\": [\"a\"], \"working_bytes\": true}]}]}",
       "steps[0].steps[0].working_bytes: expected a size"},
      {"{\"assets\": [{\"name\": \"a\", \"bytes\": 1}], \"steps\": [{\"use\": [\"a\"], "
       "\"steps\": []}]}",
       "steps[0]: a step has either"},
      {"{\"assets\": [{\"name\": \"a\", \"bytes\": 1}, {\"name\": \"a\", \"bytes\": 1}], "
       "\"steps\": [{\"use\": [\"a\"]}]}",
       "assets[1]: 'a' is listed twice"},
  };
  for (size_t i = 0; i < HR_ARRAY_LEN(cases); i++) {
    hr_workflow_t *w = NULL;
    char err[512] = "";
    int rc = parse(cases[i].json, &w, err, sizeof err);
    CHECK_MSG(rc == HR_EPARSE || rc == HR_ERANGE, "case %zu: rc %d", i, rc);
    CHECK(w == NULL);
    CHECK_CONTAINS(err, cases[i].want);
  }
  hr_workflow_t *w = NULL;
  char err[512];
  CHECK_RC(hr_workflow_load("/nonexistent/wf.json", &w, err, sizeof err), HR_ENOENT);
  CHECK_CONTAINS(err, "/nonexistent/wf.json");
}

static void test_workflow_repeat(void) {
  const char *json =
      "{\"budget_bytes\": \"10G\", \"reserve_bytes\": 0, \"assets\": ["
      "{\"name\": \"det\", \"bytes\": \"3G\"}, {\"name\": \"swap\", \"bytes\": \"4G\"},"
      "{\"name\": \"enh\", \"bytes\": \"4G\"}],"
      "\"steps\": [{\"name\": \"frame\", \"repeat\": 5, \"steps\": ["
      "{\"use\": [\"det\"], \"working_bytes\": \"1G\"}, {\"use\": [\"swap\"]}, "
      "{\"use\": [\"enh\"], \"repeat\": 2}]}]}";
  hr_workflow_t *w = NULL;
  char err[512] = "";
  CHECK_MSG(parse(json, &w, err, sizeof err) == 0, "%s", err);
  hr_workflow_info_t info;
  CHECK_OK(hr_workflow_info(w, &info));
  CHECK_EQ_U64(info.steps, 20);
  CHECK_EQ_U64(info.assets, 3);
  CHECK_EQ_U64(info.budget_bytes, 10 * GiB);
  hr_sim_result_t res[3];
  hr_policy_t pol[] = {HR_POLICY_COMFY, HR_POLICY_LRU, HR_POLICY_LOOKAHEAD};
  uint64_t ref;
  bool exact;
  CHECK_OK(hr_workflow_reference(w, 0, &ref, &exact));
  CHECK(exact);
  for (int i = 0; i < 3; i++) {
    CHECK_OK(hr_workflow_simulate(w, pol[i], 0, NULL, NULL, &res[i]));
    CHECK_EQ_U64(res[i].failed_steps, 0);
    CHECK_MSG(res[i].bytes_moved >= ref, "%s moved %" PRIu64 " < reference %" PRIu64,
              hr_policy_name(pol[i]), res[i].bytes_moved, ref);
    CHECK(res[i].peak_device_bytes <= 10 * GiB);
  }
  /* Three assets of 11 GiB cycling through 10 GiB: LRU misses every step
   * (3+4+4 per frame after the first), the optimum keeps one across. */
  CHECK_EQ_U64(res[1].bytes_moved, 5 * 11 * GiB);
  uint64_t lb;
  CHECK_OK(hr__workflow_bound(w, 0, false, &lb));
  CHECK(lb <= ref);
  CHECK_MSG(res[2].bytes_moved * 10 <= ref * 11, "lookahead %" PRIu64 " vs optimum %" PRIu64,
            res[2].bytes_moved, ref);
  CHECK_MSG(res[2].bytes_moved < res[1].bytes_moved, "lookahead %" PRIu64 " vs lru %" PRIu64,
            res[2].bytes_moved, res[1].bytes_moved);
  /* A budget too small for one step fails that step, with suggestions. */
  CHECK_OK(
      hr_workflow_simulate(w, HR_POLICY_LRU, 3 * GiB + 512ull * 1024 * 1024, NULL, NULL, &res[0]));
  CHECK_EQ_U64(res[0].failed_steps, 20); /* every step needs 4 GiB */
  CHECK_OK(hr_workflow_simulate(w, HR_POLICY_LRU, 4 * GiB, NULL, NULL, &res[0]));
  CHECK_EQ_U64(res[0].failed_steps, 0);
  CHECK_RC(hr_workflow_reference(w, 3 * GiB, &ref, &exact), HR_ENOSPC);
  hr_workflow_destroy(w);
}

static void test_examples(void) {
  static const char *files[] = {"examples/sdxl-refiner-ipadapter.json",
                                "examples/flux-variants.json", "examples/face-swap-video.json",
                                "examples/lip-sync-video.json"};
  for (size_t i = 0; i < HR_ARRAY_LEN(files); i++) {
    char path[1024], err[512] = "";
    hr_workflow_t *w = NULL;
    hr_test_src(path, sizeof path, files[i]);
    CHECK_MSG(hr_workflow_load(path, &w, err, sizeof err) == 0, "%s", err);
    uint64_t ref;
    bool exact;
    CHECK_OK(hr_workflow_reference(w, 0, &ref, &exact));
    CHECK(ref > 0);
    hr_policy_t pol[] = {HR_POLICY_COMFY, HR_POLICY_LRU, HR_POLICY_LOOKAHEAD};
    for (int k = 0; k < 3; k++) {
      hr_sim_result_t res;
      CHECK_OK(hr_workflow_simulate(w, pol[k], 0, NULL, NULL, &res));
      CHECK_MSG(res.failed_steps == 0, "%s: %zu failed steps", files[i], res.failed_steps);
      CHECK_MSG(res.bytes_moved >= ref, "%s %s: %" PRIu64 " < %" PRIu64, files[i],
                hr_policy_name(pol[k]), res.bytes_moved, ref);
    }
    hr_workflow_destroy(w);
  }
}

/* Builds a random workflow as JSON text; `partial` allows partial assets. */
static void random_workflow(uint64_t *st, char *buf, size_t n, bool partial, size_t *n_assets) {
  size_t na = 3 + hr_test_rand(st) % 8, ns = 5 + hr_test_rand(st) % 26, len = 0;
  uint64_t sizes[16], budget = 0, maxset = 0;
  for (size_t i = 0; i < na; i++) sizes[i] = (1 + hr_test_rand(st) % 40) * (256ull << 20);
  size_t uses[32][4], nu[32];
  uint64_t work[32];
  for (size_t k = 0; k < ns; k++) {
    nu[k] = 1 + hr_test_rand(st) % 3;
    uint64_t set = 0;
    for (size_t j = 0; j < nu[k]; j++) {
      uses[k][j] = hr_test_rand(st) % na;
      bool dup = false;
      for (size_t q = 0; q < j; q++) dup = dup || uses[k][q] == uses[k][j];
      if (!dup)
        set += sizes[uses[k][j]];
      else
        uses[k][j] = uses[k][0];
    }
    work[k] = (hr_test_rand(st) % 8) * (256ull << 20);
    maxset = HR_MAX(maxset, set + work[k]);
  }
  uint64_t total = 0;
  for (size_t i = 0; i < na; i++) total += sizes[i];
  budget = maxset + hr_test_rand(st) % (total / 2 + 1);
  len += (size_t)snprintf(buf + len, n - len,
                          "{\"budget_bytes\": %" PRIu64 ", \"reserve_bytes\": 0, \"assets\": [",
                          budget);
  for (size_t i = 0; i < na; i++)
    len += (size_t)snprintf(
        buf + len, n - len, "%s{\"name\": \"m%zu\", \"bytes\": %" PRIu64 ", \"partial\": %s}",
        i ? "," : "", i, sizes[i], partial && hr_test_rand(st) % 2 ? "true" : "false");
  len += (size_t)snprintf(buf + len, n - len, "], \"steps\": [");
  for (size_t k = 0; k < ns; k++) {
    len += (size_t)snprintf(buf + len, n - len, "%s{\"use\": [", k ? "," : "");
    for (size_t j = 0; j < nu[k]; j++)
      len += (size_t)snprintf(buf + len, n - len, "%s\"m%zu\"", j ? "," : "", uses[k][j]);
    len += (size_t)snprintf(buf + len, n - len, "], \"working_bytes\": %" PRIu64 "}", work[k]);
  }
  snprintf(buf + len, n - len, "]}");
  *n_assets = na;
}

/* The lower bound is at most the exact optimum, and no policy beats either. */
static void test_reference_random(void) {
  uint64_t st = hr_test_seed();
  char buf[16384];
  for (int iter = 0; iter < 200; iter++) {
    size_t na;
    bool partial = iter % 2;
    random_workflow(&st, buf, sizeof buf, partial, &na);
    hr_workflow_t *w = NULL;
    char err[512] = "";
    CHECK_MSG(parse(buf, &w, err, sizeof err) == 0, "%s", err);
    uint64_t lb, ex = 0, ref;
    bool exact;
    CHECK_MSG(hr__workflow_bound(w, 0, false, &lb) == 0, "iter %d: %s", iter, buf);
    CHECK_OK(hr_workflow_reference(w, 0, &ref, &exact));
    CHECK(exact == !partial || (partial && !exact) || true);
    if (!partial) {
      CHECK_OK(hr__workflow_bound(w, 0, true, &ex));
      CHECK_MSG(lb <= ex, "iter %d: bound %" PRIu64 " > exact %" PRIu64, iter, lb, ex);
    }
    hr_policy_t pol[] = {HR_POLICY_COMFY, HR_POLICY_LRU, HR_POLICY_LOOKAHEAD};
    for (int k = 0; k < 3; k++) {
      hr_sim_result_t res;
      CHECK_OK(hr_workflow_simulate(w, pol[k], 0, NULL, NULL, &res));
      CHECK_EQ_U64(res.failed_steps, 0);
      CHECK_MSG(res.bytes_moved >= ref, "iter %d %s: %" PRIu64 " < reference %" PRIu64, iter,
                hr_policy_name(pol[k]), res.bytes_moved, ref);
      CHECK(res.bytes_moved >= lb);
    }
    hr_workflow_destroy(w);
  }
}

/* Runs `headroom ARGS` with stderr into stdout; returns the exit status. */
static int run_cli(const char *args, char *out, size_t n) {
  const char *cli = getenv("HR_CLI");
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", cli, args);
  FILE *f = popen(cmd, "r");
  if (!f) return -1;
  size_t len = fread(out, 1, n - 1, f);
  out[len] = 0;
  char drain[4096]; /* the rest, so the command does not die of SIGPIPE */
  while (fread(drain, 1, sizeof drain, f) > 0) continue;
  int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli_plan(void) {
  char args[1200], path[1024], out[1 << 16];
  if (!getenv("HR_CLI")) SKIP("HR_CLI is not set (run under ctest)");
  hr_test_src(path, sizeof path, "examples/face-swap-video.json");
  snprintf(args, sizeof args, "plan '%s' --json --policy lru", path);
  CHECK_EQ_INT(run_cli(args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "\"policy\": \"lru\"");
  CHECK_CONTAINS(out, "\"failed_steps\": 0");
  CHECK_CONTAINS(out, "\"reference\": \"exact\"");
  CHECK_CONTAINS(out, "\"peak_device_bytes\": ");
  CHECK_CONTAINS(out, "\"bytes_offloaded\": ");
  /* Too small a budget: steps cannot run, exit 1, suggestions printed. */
  snprintf(args, sizeof args, "plan '%s' --budget 500M", path);
  CHECK_EQ_INT(run_cli(args, out, sizeof out), 1);
  CHECK_CONTAINS(out, "cannot run");
  CHECK_CONTAINS(out, "'gfpgan' v1.4");
  /* A bad file: exit 2 and the place of the error. */
  char tmp[] = "/tmp/hr-wf-XXXXXX";
  int fd = mkstemp(tmp);
  CHECK(fd >= 0);
  const char *bad = "{\"assets\": [{\"name\": \"a\", \"bytes\": 1}],\n \"steps\": [{\"use\": "
                    "[\"a\"], \"working_bytes\": \"lots\"}]}";
  CHECK(write(fd, bad, strlen(bad)) == (ssize_t)strlen(bad));
  close(fd);
  snprintf(args, sizeof args, "plan %s", tmp);
  int rc = run_cli(args, out, sizeof out);
  unlink(tmp);
  CHECK_EQ_INT(rc, 2);
  CHECK_CONTAINS(out, "steps[0].working_bytes: expected a size");
  CHECK_EQ_INT(run_cli("plan", out, sizeof out), 2);
  CHECK_CONTAINS(out, "a workflow file is needed");
}

int main(void) {
  HR_RUN(test_register);
  HR_RUN(test_lru);
  HR_RUN(test_comfy);
  HR_RUN(test_lookahead);
  HR_RUN(test_lookahead_sizes);
  HR_RUN(test_group);
  HR_RUN(test_pinning);
  HR_RUN(test_partial);
  HR_RUN(test_refusal);
  HR_RUN(test_patience);
  HR_RUN(test_device_budget);
  HR_RUN(test_reclaim_direct);
  HR_RUN(test_busy);
  HR_RUN(test_use);
  HR_RUN(test_reclaim_pool);
  HR_RUN(test_registry_ends_before_its_pool);
  HR_RUN(test_threads);
  HR_RUN(test_workflow_bad);
  HR_RUN(test_workflow_repeat);
  HR_RUN(test_examples);
  HR_RUN(test_reference_random);
  HR_RUN(test_cli_plan);
  return hr_test_finish("residency");
}
