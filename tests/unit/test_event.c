/* The event writers made from the field lists: each event's JSON line and
 * terminal line against what the writers wrote before the lists
 * (tests/fixtures/events/written.txt), every template naming fields its
 * kind has, unknown kinds and short buffers. */
#include "hr_test.h"

#include "event/event.h"
#include "fake_events.h"

#include <cjson/cJSON.h>

/* The old terminal line of a broker answer or grant that released nothing
 * said " released 0 B"; a [ ... ] segment of the template leaves out what is
 * not set, so the line now ends without it. */
static void drop_released_zero(char *line) {
  char *p = strstr(line, " released 0 B");
  if (p) memmove(p, p + 13, strlen(p + 13) + 1);
}

static void test_as_before(void) {
  setenv("TZ", "UTC", 1);
  tzset();
  char path[1024];
  size_t n_lines = 0;
  char **lines =
      fake_lines(hr_test_src(path, sizeof path, "tests/fixtures/events/written.txt"), &n_lines);
  CHECK(lines != NULL);
  hr_watch_event_t es[FAKE_EVENTS_MAX];
  size_t n = fake_events(es);
  CHECK_EQ_U64(n_lines, 2 * n);
  for (size_t i = 0; lines && i < n && 2 * i + 1 < n_lines; i++) {
    char *json = NULL, text[1024];
    CHECK_OK(hr_event_json(&es[i], &json));
    CHECK_STR(json, lines[2 * i]);
    cJSON *j = cJSON_Parse(json);
    CHECK_MSG(j != NULL, "event %zu: not JSON: %s", i, json);
    cJSON_Delete(j);
    free(json);
    hr_event_text(&es[i], text, sizeof text);
    if (es[i].kind == HR_EVENT_BROKER && es[i].broker.released_bytes == 0)
      drop_released_zero(lines[2 * i + 1]);
    CHECK_STR(text, lines[2 * i + 1]);
  }
  fake_lines_free(lines, n_lines);
}

/* Every {placeholder} of every template is pid, name or a field of its
 * kind, and every bracket closes. */
static void test_templates_name_fields(void) {
  for (int k = 0; k < HR_EVENT_KINDS_; k++) {
    const hr__event_kind_info_t *info = hr__event_kind_info((hr_event_kind_t)k);
    CHECK(info != NULL);
    if (!info || !info->text) continue;
    int depth = 0;
    for (const char *p = info->text; *p; p++) {
      depth += *p == '[' ? 1 : *p == ']' ? -1 : 0;
      CHECK_MSG(depth == 0 || depth == 1, "%s: brackets: %s", info->name, info->text);
      if (*p != '{') continue;
      char name[64];
      snprintf(name, sizeof name, "%.*s", (int)strcspn(p + 1, ":}"), p + 1);
      bool found = !strcmp(name, "pid") || !strcmp(name, "name");
      for (size_t i = 0; i < info->n_fields; i++)
        found = found || !strcmp(info->fields[i].name, name);
      CHECK_MSG(found, "%s: the template names '%s', which is no field of it", info->name, name);
    }
    CHECK_EQ_INT(depth, 0);
  }
  CHECK(hr__event_kind_info(HR_EVENT_KINDS_) == NULL);
}

static void test_unknown_and_short(void) {
  hr_watch_event_t e = fake_event((hr_event_kind_t)99, 1700000000, 7, "x");
  char *json = NULL, text[64];
  CHECK_OK(hr_event_json(&e, &json));
  CHECK_STR(json, "{\"event\":\"unknown\",\"time\":1700000000.000,\"pid\":7,\"name\":\"x\"}");
  free(json);
  CHECK_CONTAINS(hr_event_text(&e, text, sizeof text), "  unknown");
  CHECK_STR(hr_event_kind_name((hr_event_kind_t)99), "unknown");
  CHECK_EQ_INT(hr_event_kind_from_name("idle_hog"), HR_EVENT_IDLE_HOG);
  CHECK_EQ_INT(hr_event_kind_from_name("nope"), HR_EVENT_KINDS_);
  CHECK_STR(hr_broker_event_name(HR_BROKER_EV_COUNT), "?");
  CHECK_EQ_INT(hr__broker_event_from_name("lease_end"), HR_BROKER_EV_LEASE_END);
  CHECK_EQ_INT(hr__broker_event_from_name(NULL), HR_BROKER_EV_COUNT);
  /* A line longer than the buffer is cut and terminated. */
  hr_watch_event_t es[FAKE_EVENTS_MAX];
  fake_events(es);
  char small[24];
  memset(small, 'x', sizeof small);
  hr_event_text(&es[2], small, sizeof small);
  CHECK_EQ_U64(strlen(small), sizeof small - 1);
  CHECK(hr_event_text(&es[2], small, 0) == small);
  CHECK_RC(hr_event_json(NULL, &json), HR_EINVAL);
}

int main(void) {
  HR_RUN(test_as_before);
  HR_RUN(test_templates_name_fields);
  HR_RUN(test_unknown_and_short);
  return hr_test_finish("test_event");
}
