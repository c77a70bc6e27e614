/* Cleanup modes: the table agrees with the `mode` option's choices, each mode
 * does what the gentler ones do and more, and a name finds its row. */
#include "hr_test.h"

#include <string.h>

static const hr_option_info_t *mode_option(void) {
  size_t n = 0;
  const hr_option_info_t *t = hr_options_table(&n);
  for (size_t i = 0; i < n; i++)
    if (strcmp(t[i].name, "mode") == 0) return &t[i];
  return NULL;
}

static void test_rows_are_the_mode_choices(void) {
  const hr_option_info_t *opt = mode_option();
  CHECK(opt != NULL);
  size_t n = 0;
  const hr_cleanup_mode_t *m = hr_cleanup_modes(&n);
  char names[256] = "";
  for (size_t i = 0; i < n; i++) {
    if (i) strcat(names, "|");
    strcat(names, m[i].name);
  }
  CHECK_STR(names, opt->choices);
  CHECK(hr_cleanup_mode(opt->deflt) != NULL);
}

/* Each row has every action of the row before it; the passes do not fall. */
static void test_modes_grow(void) {
  size_t n = 0;
  const hr_cleanup_mode_t *m = hr_cleanup_modes(&n);
  CHECK(n == 3);
  for (size_t i = 0; i < n; i++) {
    CHECK_MSG(m[i].caches, "%s releases no caches", m[i].name);
    CHECK_MSG(m[i].max_passes >= 1, "%s has no pass", m[i].name);
    CHECK(m[i].summary && *m[i].summary);
    if (i == 0) continue;
    const hr_cleanup_mode_t *a = &m[i - 1], *b = &m[i];
    CHECK_MSG((!a->collect || b->collect) && (!a->idle_modules || b->idle_modules) &&
                  (!a->models || b->models) && (!a->hooks || b->hooks) &&
                  (!a->drop_caches || b->drop_caches) && a->max_passes <= b->max_passes,
              "%s does less than %s", b->name, a->name);
  }
  /* The gentlest mode runs nothing outside the process and unloads nothing. */
  CHECK(!m[0].hooks && !m[0].drop_caches && !m[0].idle_modules && !m[0].models);
}

static void test_lookup(void) {
  size_t n = 0;
  const hr_cleanup_mode_t *m = hr_cleanup_modes(&n);
  for (size_t i = 0; i < n; i++) CHECK(hr_cleanup_mode(m[i].name) == &m[i]);
  CHECK(hr_cleanup_mode("fast") == NULL);
  CHECK(hr_cleanup_mode("") == NULL);
  CHECK(hr_cleanup_mode(NULL) == NULL);
  CHECK(hr_cleanup_modes(NULL) == m);
  CHECK(hr_cleanup_mode("aggressive")->drop_caches);
  CHECK(!hr_cleanup_mode("balanced")->models);
}

int main(void) {
  HR_RUN(test_rows_are_the_mode_choices);
  HR_RUN(test_modes_grow);
  HR_RUN(test_lookup);
  return hr_test_finish("test_cleanup");
}
