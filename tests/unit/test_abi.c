/* The layout table a binding checks its struct copies against (abi.h): every
 * struct's members tile it, so a member added to a header but left out of
 * src/util/abi.c leaves a hole this test finds; names are unique; the pool's
 * stat names follow its X-macro. */
#include "headroom/abi.h"
#include "hr_test.h"

#include <string.h>

static size_t align_up(size_t x, size_t a) {
  return (x + a - 1) / a * a;
}

/* Members in declaration order must sit where the C layout rules put them:
 * each at the end of the one before, rounded up to its own alignment, and the
 * struct must end at the last one's end rounded up to the struct's alignment.
 * A member missing from the table shows as a member placed past that point. */
static void test_members_tile_every_struct(void) {
  size_t n = 0;
  const hr_abi_struct_t *s = hr_abi_structs(&n);
  CHECK(n >= 16);
  for (size_t i = 0; i < n; i++) {
    size_t end = 0;
    CHECK_MSG(s[i].n_fields > 0, "%s has no members", s[i].name);
    for (size_t j = 0; j < s[i].n_fields; j++) {
      const hr_abi_field_t *f = &s[i].fields[j];
      CHECK_MSG(f->align > 0 && f->size % f->align == 0, "%s.%s: size %zu, align %zu", s[i].name,
                f->name, f->size, f->align);
      CHECK_MSG(f->offset == align_up(end, f->align),
                "%s.%s at %zu, expected %zu: a member before it is missing from the table",
                s[i].name, f->name, f->offset, align_up(end, f->align));
      end = f->offset + f->size;
      for (size_t k = 0; k < j; k++)
        CHECK_MSG(strcmp(s[i].fields[k].name, f->name), "%s.%s twice", s[i].name, f->name);
    }
    CHECK_MSG(align_up(end, s[i].align) == s[i].size,
              "%s ends at %zu but is %zu bytes: a member at its end is missing", s[i].name, end,
              s[i].size);
    CHECK(hr_abi_struct(s[i].name) == &s[i]);
  }
  CHECK(hr_abi_struct("hr_no_such_t") == NULL);
  CHECK(hr_abi_struct(NULL) == NULL);
  CHECK_EQ_U64(hr_abi_struct("hr_plan_t")->size, sizeof(hr_plan_t));
  CHECK_EQ_U64(hr_abi_struct("hr_abi_struct_t")->size, sizeof(hr_abi_struct_t));
}

static void test_pool_stat_names(void) {
  size_t n = 0;
  const char *const *names = hr_abi_pool_stat_names(&n);
  size_t i = 0;
#define ONE_(name) CHECK_STR(names[i++], #name);
  HR_POOL_STATS(ONE_)
#undef ONE_
  CHECK_EQ_U64(n, i);
  CHECK(names[n] == NULL);
  CHECK(hr_abi_pool_stat_names(NULL) == names);
}

int main(void) {
  HR_RUN(test_members_tile_every_struct);
  HR_RUN(test_pool_stat_names);
  return hr_test_finish("test_abi");
}
