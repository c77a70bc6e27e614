/* Levels: ok, warning or critical for a use in percent, with hysteresis.
 *
 * A level rises as soon as the use reaches its threshold (a warning should
 * not wait) and falls only when the use is `hyst` points under the threshold
 * it crossed, so a value that hovers at a threshold gives one event, not one
 * per sample. */
#include "util/util.h"

#include <math.h>

const char *hr_level_name(hr_level_t level) {
  static const char *const names[] = {
      [HR_LEVEL_OK] = "ok", [HR_LEVEL_WARNING] = "warning", [HR_LEVEL_CRITICAL] = "critical"};
  return hr__enum_name(names, HR_ARRAY_LEN(names), (int)level, "unknown");
}

hr_level_t hr_level_update(hr_level_t cur, double pct, double warn, double crit, double hyst) {
  if (isnan(pct)) return cur;
  if (hyst < 0) hyst = 0;
  if (pct >= crit) return HR_LEVEL_CRITICAL;
  if (cur == HR_LEVEL_CRITICAL && pct > crit - hyst) return HR_LEVEL_CRITICAL;
  if (pct >= warn) return HR_LEVEL_WARNING;
  if (cur >= HR_LEVEL_WARNING && pct > warn - hyst) return HR_LEVEL_WARNING;
  return HR_LEVEL_OK;
}
