/* hr_pool_config_parse: every key, every error, the presets, and
 * HEADROOM_ALLOC_CONF through the option table. */
#include "hr_test.h"

#define MiB (1ull << 20)

static hr_pool_config_t c;
static char err[512];

static int P(const char *s) {
  err[0] = '\0';
  return hr_pool_config_parse(s, &c, err, sizeof err);
}

static void test_defaults_and_presets(void) {
  hr_pool_config_t d;
  hr_pool_config_default(&d);
  CHECK(d.expandable_segments && d.compact_mapping && !d.pytorch_compat);
  CHECK_EQ_U64(d.max_split_size, UINT64_MAX);
  CHECK_OK(P(NULL));
  CHECK(!memcmp(&c, &d, sizeof c));
  CHECK_OK(P(""));
  CHECK(!memcmp(&c, &d, sizeof c));
  CHECK_OK(P("default"));
  CHECK(!memcmp(&c, &d, sizeof c));
  CHECK_OK(P("pytorch"));
  CHECK(c.pytorch_compat && !c.expandable_segments && !c.compact_mapping);
  CHECK_NEAR(c.memory_fraction, 1.0, 0);
  CHECK_OK(P(" pytorch , expandable_segments:True "));
  CHECK(c.pytorch_compat && c.expandable_segments);
  /* A preset only comes first. */
  CHECK_RC(P("max_split_size_mb:64,pytorch"), HR_EINVAL);
  CHECK_CONTAINS(err, "'pytorch' is not key:value");
  CHECK_RC(P("bogus"), HR_EINVAL);
  CHECK_CONTAINS(err, "'bogus'");
}

static void test_max_split_size(void) {
  CHECK_OK(P("max_split_size_mb:64"));
  CHECK_EQ_U64(c.max_split_size, 64 * MiB);
  CHECK_OK(P("max_split_size_mb:21"));
  CHECK_EQ_U64(c.max_split_size, 21 * MiB);
  const char *bad[] = {"max_split_size_mb:20",
                       "max_split_size_mb:0",
                       "max_split_size_mb:-5",
                       "max_split_size_mb:abc",
                       "max_split_size_mb:",
                       "max_split_size_mb:1.5",
                       "max_split_size_mb:99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    CHECK_RC(P(bad[i]), HR_EINVAL);
    CHECK_CONTAINS(err, "max_split_size_mb");
    CHECK_CONTAINS(err, "(20, ");
  }
}

static void test_gc_threshold(void) {
  CHECK_OK(P("garbage_collection_threshold:0.6"));
  CHECK_NEAR(c.gc_threshold, 0.6, 1e-12);
  const char *bad[] = {"garbage_collection_threshold:0",    "garbage_collection_threshold:1",
                       "garbage_collection_threshold:1.5",  "garbage_collection_threshold:x",
                       "garbage_collection_threshold:-0.1", "garbage_collection_threshold:nan"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    CHECK_RC(P(bad[i]), HR_EINVAL);
    CHECK_CONTAINS(err, "garbage_collection_threshold");
    CHECK_CONTAINS(err, "(0.0, 1.0)");
  }
}

static void test_bools(void) {
  const char *keys[] = {"expandable_segments", "pytorch_compat", "compact_mapping"};
  for (int k = 0; k < 3; k++) {
    char s[128];
    snprintf(s, sizeof s, "pytorch,%s:True", keys[k]);
    CHECK_OK(P(s));
    snprintf(s, sizeof s, "%s:False", keys[k]);
    CHECK_OK(P(s));
    snprintf(s, sizeof s, "%s:maybe", keys[k]);
    CHECK_RC(P(s), HR_EINVAL);
    CHECK_CONTAINS(err, keys[k]);
    CHECK_CONTAINS(err, "True or False");
  }
  CHECK_OK(P("expandable_segments:False"));
  CHECK(!c.expandable_segments);
  CHECK_OK(P("pytorch,expandable_segments:true"));
  CHECK(c.expandable_segments);
}

static void test_roundup_divisions(void) {
  CHECK_OK(P("roundup_power2_divisions:4"));
  for (int i = 0; i < HR_ROUNDUP_INTERVALS; i++) CHECK_EQ_INT(c.roundup_divisions[i], 4);
  CHECK_OK(P("roundup_power2_divisions:[256:1,512:2,>:8]"));
  /* 256 MiB is interval 8: it and every one below get 1; 512 MiB (9) 2;
   * then, as in PyTorch, ">" fills from the last boundary's own interval
   * on, so 9 ends with 8 too. */
  for (int i = 0; i <= 8; i++) CHECK_EQ_INT(c.roundup_divisions[i], 1);
  for (int i = 9; i < HR_ROUNDUP_INTERVALS; i++) CHECK_EQ_INT(c.roundup_divisions[i], 8);
  CHECK_OK(P("roundup_power2_divisions:[256:1,512:2]"));
  CHECK_EQ_INT(c.roundup_divisions[9], 2);
  CHECK_EQ_INT(c.roundup_divisions[10], 0);
  /* Inside a longer string, with other keys after the list. */
  CHECK_OK(P("roundup_power2_divisions:[1:4,2:8,>:2],max_split_size_mb:100"));
  CHECK_EQ_INT(c.roundup_divisions[0], 4);
  CHECK_EQ_INT(c.roundup_divisions[5], 2);
  CHECK_EQ_U64(c.max_split_size, 100 * MiB);
  const char *bad[] = {"roundup_power2_divisions:3",       "roundup_power2_divisions:x",
                       "roundup_power2_divisions:2048",    "roundup_power2_divisions:[256:3]",
                       "roundup_power2_divisions:[300:2]", "roundup_power2_divisions:[256]",
                       "roundup_power2_divisions:[256:2",  "roundup_power2_divisions:[]"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    CHECK_MSG(P(bad[i]) == HR_EINVAL, "%s accepted", bad[i]);
    CHECK_CONTAINS(err, "roundup_power2_divisions");
  }
}

static void test_headroom_keys(void) {
  CHECK_OK(P("memory_fraction:0.5,reserve_mb:400"));
  CHECK_NEAR(c.memory_fraction, 0.5, 0);
  CHECK_EQ_U64(c.reserve_bytes, 400 * MiB);
  CHECK_OK(P("memory_fraction:1"));
  const char *badf[] = {"memory_fraction:0", "memory_fraction:1.01", "memory_fraction:abc"};
  for (int i = 0; i < 3; i++) {
    CHECK_RC(P(badf[i]), HR_EINVAL);
    CHECK_CONTAINS(err, "memory_fraction");
    CHECK_CONTAINS(err, "(0.0, 1.0]");
  }
  const char *badr[] = {"reserve_mb:-1", "reserve_mb:1e3", "reserve_mb:2000000000"};
  for (int i = 0; i < 3; i++) {
    CHECK_RC(P(badr[i]), HR_EINVAL);
    CHECK_CONTAINS(err, "reserve_mb");
    CHECK_CONTAINS(err, "[0, 1073741824]");
  }
}

static void test_other_errors(void) {
  CHECK_RC(P("backend:cudaMallocAsync"), HR_EINVAL);
  CHECK_CONTAINS(err, "backend");
  CHECK_CONTAINS(err, "cannot be set");
  CHECK_RC(P("frobnicate:1"), HR_EINVAL);
  CHECK_CONTAINS(err, "unknown key 'frobnicate'");
  CHECK_CONTAINS(err, "max_split_size_mb");
  CHECK_RC(P("max_split_size_mb:64,,expandable_segments:True"), HR_EINVAL);
  CHECK_CONTAINS(err, "empty entry");
  /* PyTorch's pinned-memory keys are accepted and do nothing here. */
  CHECK_OK(P("pinned_use_cuda_host_register:True,pinned_num_register_threads:8"));
  /* On error the output is untouched. */
  CHECK_OK(P("max_split_size_mb:64"));
  CHECK_RC(P("max_split_size_mb:65,memory_fraction:7"), HR_EINVAL);
  CHECK_EQ_U64(c.max_split_size, 64 * MiB);
  CHECK_RC(hr_pool_config_parse("", NULL, err, sizeof err), HR_EINVAL);
  /* A NULL err buffer is fine. */
  CHECK_RC(hr_pool_config_parse("nope:1", &c, NULL, 0), HR_EINVAL);
}

static void test_option_table(void) {
  /* HEADROOM_ALLOC_CONF reaches the option table as alloc_conf. */
  hr_options_t *o;
  char e[256];
  CHECK_OK(hr_options_create(&o));
  setenv("HEADROOM_ALLOC_CONF", "max_split_size_mb:128", 1);
  CHECK_OK(hr_options_load_env(o, e, sizeof e));
  const char *conf = hr_options_get_str(o, HR_OPTION_alloc_conf);
  CHECK_STR(conf, "max_split_size_mb:128");
  CHECK_OK(P(conf));
  CHECK_EQ_U64(c.max_split_size, 128 * MiB);
  unsetenv("HEADROOM_ALLOC_CONF");
  hr_options_destroy(o);
}

int main(void) {
  HR_RUN(test_defaults_and_presets);
  HR_RUN(test_max_split_size);
  HR_RUN(test_gc_threshold);
  HR_RUN(test_bools);
  HR_RUN(test_roundup_divisions);
  HR_RUN(test_headroom_keys);
  HR_RUN(test_other_errors);
  HR_RUN(test_option_table);
  return hr_test_finish("pool_config");
}
