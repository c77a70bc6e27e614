/* Levels: thresholds, hysteresis on the way down, no flapping at a
 * threshold, unknown values keep the level. */
#include "hr_test.h"

#include <math.h>

static void test_thresholds(void) {
  CHECK_EQ_INT(hr_level_update(HR_LEVEL_OK, 50, 80, 90, 3), HR_LEVEL_OK);
  CHECK_EQ_INT(hr_level_update(HR_LEVEL_OK, 80, 80, 90, 3), HR_LEVEL_WARNING);
  CHECK_EQ_INT(hr_level_update(HR_LEVEL_OK, 90, 80, 90, 3), HR_LEVEL_CRITICAL);
  CHECK_EQ_INT(hr_level_update(HR_LEVEL_CRITICAL, 10, 80, 90, 3), HR_LEVEL_OK);
  CHECK_STR(hr_level_name(HR_LEVEL_WARNING), "warning");
  CHECK_STR(hr_level_name(HR_LEVEL_CRITICAL), "critical");
  CHECK_STR(hr_level_name(HR_LEVEL_OK), "ok");
}

static void test_hysteresis(void) {
  hr_level_t l = HR_LEVEL_OK;
  l = hr_level_update(l, 81, 80, 90, 3);
  CHECK_EQ_INT(l, HR_LEVEL_WARNING);
  /* Under the threshold but within the band: stays. */
  l = hr_level_update(l, 78, 80, 90, 3);
  CHECK_EQ_INT(l, HR_LEVEL_WARNING);
  l = hr_level_update(l, 77, 80, 90, 3);
  CHECK_EQ_INT(l, HR_LEVEL_OK);
  l = hr_level_update(HR_LEVEL_CRITICAL, 88, 80, 90, 3);
  CHECK_EQ_INT(l, HR_LEVEL_CRITICAL);
  l = hr_level_update(l, 86.9, 80, 90, 3);
  CHECK_EQ_INT(l, HR_LEVEL_WARNING);
  /* From critical straight to ok when the use falls far enough. */
  CHECK_EQ_INT(hr_level_update(HR_LEVEL_CRITICAL, 76, 80, 90, 3), HR_LEVEL_OK);
  CHECK_EQ_INT(hr_level_update(HR_LEVEL_CRITICAL, 79, 80, 90, 3), HR_LEVEL_WARNING);
}

static void test_no_flapping(void) {
  /* A value hovering around the threshold changes level once. */
  uint64_t st = hr_test_seed();
  hr_level_t l = HR_LEVEL_OK;
  int changes = 0;
  for (int i = 0; i < 1000; i++) {
    double v = 80 + ((double)(hr_test_rand(&st) % 2000) / 1000.0 - 1) * 2; /* 78..82 */
    hr_level_t n = hr_level_update(l, v, 80, 90, 3);
    changes += n != l;
    l = n;
  }
  CHECK_MSG(changes == 1, "%d level changes", changes);
  /* Without hysteresis the same walk flaps. */
  st = hr_test_seed();
  l = HR_LEVEL_OK;
  changes = 0;
  for (int i = 0; i < 1000; i++) {
    double v = 80 + ((double)(hr_test_rand(&st) % 2000) / 1000.0 - 1) * 2;
    hr_level_t n = hr_level_update(l, v, 80, 90, 0);
    changes += n != l;
    l = n;
  }
  CHECK(changes > 100);
}

static void test_unknown_keeps(void) {
  CHECK_EQ_INT(hr_level_update(HR_LEVEL_WARNING, NAN, 80, 90, 3), HR_LEVEL_WARNING);
  CHECK_EQ_INT(hr_level_update(HR_LEVEL_OK, NAN, 80, 90, 3), HR_LEVEL_OK);
}

int main(void) {
  HR_RUN(test_thresholds);
  HR_RUN(test_hysteresis);
  HR_RUN(test_no_flapping);
  HR_RUN(test_unknown_keeps);
  return hr_test_finish("test_levels");
}
