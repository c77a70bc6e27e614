/* headroom's daemon library: what the `headroom` CLI adds to libheadroom.
 *
 * watch (the monitoring loop, its events and actions), history (SQLite), the
 * exporter (Prometheus and JSON over HTTP), trace reading and replay,
 * workflow planning and the exact optimum, and the chart writer. These need
 * SQLite, libmicrohttpd and cJSON, which an inference process should not map,
 * so they live in a library of their own (libheadroom-daemon, static) that a
 * program links beside libheadroom. This header includes headroom/headroom.h:
 * a program that uses the daemon includes this one alone. */
#ifndef HEADROOM_DAEMON_H
#define HEADROOM_DAEMON_H

#include "headroom/headroom.h"

#include "headroom/watch.h"
#include "headroom/trace.h"
#include "headroom/workflow.h"
#include "headroom/chart.h"
#include "headroom/broker.h"

#endif /* HEADROOM_DAEMON_H */
