/* Internal: the event JSON writer appending to a buffer, for the watch
 * (hook environment) and anything that writes events among other text. */
#ifndef HR_EVENT_INT_H
#define HR_EVENT_INT_H

#include "util/buf.h"

/* Appends the event as one JSON object (no newline). */
HR_INTERNAL void hr__event_json(hr__buf_t *b, const hr_watch_event_t *e);

#endif /* HR_EVENT_INT_H */
