/* Internal parts of the history store that the watch loop and the tests
 * share. Not public API. */
#ifndef HR_STORE_H
#define HR_STORE_H

#include "util/util.h"

/* The version-1 schema, for tests that migrate from it. */
HR_INTERNAL extern const char hr__history_schema_v1[];

/* Runs SQL on the history's connection (tests: PRAGMA max_page_count to
 * fill the "disk"). */
HR_INTERNAL int hr__history_exec(hr_history_t *h, const char *sql, char *err, size_t errlen);

#endif /* HR_STORE_H */
