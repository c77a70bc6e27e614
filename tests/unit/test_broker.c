/* The broker in-process: its thread serves while this thread speaks the
 * protocol on real Unix sockets. Covers the options' errors, the event JSON,
 * a release asked and answered before a grant, a client that never answers,
 * garbage, and a lease that ends when its connection closes. The processes
 * and /proc side is tests/python/test_broker.py. Labelled "threads". */
#include "hr_test.h"

#include <headroom/broker.h>

#include <cjson/cJSON.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static pthread_mutex_t ev_lock = PTHREAD_MUTEX_INITIALIZER;
static int ev_count[HR_BROKER_EV_COUNT];

static void on_event(const hr_watch_event_t *e, void *arg) {
  (void)arg;
  pthread_mutex_lock(&ev_lock);
  if (e->kind == HR_EVENT_BROKER && e->broker.what < HR_BROKER_EV_COUNT) ev_count[e->broker.what]++;
  pthread_mutex_unlock(&ev_lock);
}

static int events(hr_broker_event_kind_t k) {
  pthread_mutex_lock(&ev_lock);
  int n = ev_count[k];
  pthread_mutex_unlock(&ev_lock);
  return n;
}

static char sock_path[96];

static hr_broker_t *start(const char *budget, const char *timeout) {
  hr_options_t *o = NULL;
  hr_broker_t *b = NULL;
  char err[300];
  snprintf(sock_path, sizeof sock_path, "/tmp/hr-test-broker-%d.sock", (int)getpid());
  memset(ev_count, 0, sizeof ev_count);
  if (hr_options_create(&o) != 0) return NULL;
  hr_options_set(o, "broker_socket", sock_path, HR_SRC_CLI, err, sizeof err);
  hr_options_set(o, "budget", budget, HR_SRC_CLI, err, sizeof err);
  hr_options_set(o, "broker_timeout", timeout, HR_SRC_CLI, err, sizeof err);
  hr_options_set(o, "patience", "0.3s", HR_SRC_CLI, err, sizeof err);
  hr_options_set(o, "ram_warn", "100", HR_SRC_CLI, err, sizeof err);
  hr_options_set(o, "ram_critical", "100", HR_SRC_CLI, err, sizeof err);
  if (hr_broker_start(o, on_event, NULL, &b, err, sizeof err) != 0)
    fprintf(stderr, "  broker: %s\n", err);
  hr_options_destroy(o);
  return b;
}

static int dial(void) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock_path);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void say(int fd, const char *fmt, ...) HR_PRINTF(2, 3);
static void say(int fd, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  line[n++] = '\n';
  if (write(fd, line, (size_t)n) != n) fprintf(stderr, "  short write\n");
}

/* The next line as JSON (the caller deletes), or NULL after 5 s or on EOF. */
static cJSON *hear(int fd) {
  char line[65536];
  size_t n = 0;
  while (n + 1 < sizeof line) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 5000) != 1 || read(fd, line + n, 1) != 1) return NULL;
    if (line[n] == '\n') break;
    n++;
  }
  line[n] = '\0';
  return cJSON_Parse(line);
}

static const char *op_of(const cJSON *j) {
  const cJSON *op = cJSON_GetObjectItem(j, "op");
  return cJSON_IsString(op) ? op->valuestring : "";
}

static double num(const cJSON *j, const char *k) {
  const cJSON *v = cJSON_GetObjectItem(j, k);
  return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static void test_bad_options(void) {
  hr_options_t *o = NULL;
  hr_broker_t *b = NULL;
  char err[300];
  CHECK_OK(hr_options_create(&o));
  hr_options_set(o, "broker_socket", "/tmp/hr-test-broker-bad.sock", HR_SRC_CLI, err, sizeof err);
  const char *budgets[] = {"gpu9=1G", "host=lots", "host", "host=0"};
  for (size_t i = 0; i < 4; i++) {
    hr_options_set(o, "budget", budgets[i], HR_SRC_CLI, err, sizeof err);
    CHECK_RC(hr_broker_start(o, NULL, NULL, &b, err, sizeof err), HR_EINVAL);
    CHECK(b == NULL);
    CHECK_CONTAINS(err, "budget");
  }
  hr_options_set(o, "budget", "", HR_SRC_CLI, err, sizeof err);
  hr_options_set(o, "broker_adapters", "ollama=ftp://x:1", HR_SRC_CLI, err, sizeof err);
  CHECK_RC(hr_broker_start(o, NULL, NULL, &b, err, sizeof err), HR_EINVAL);
  CHECK_CONTAINS(err, "http://HOST:PORT");
  char longp[200];
  memset(longp, 'a', sizeof longp - 1);
  longp[0] = '/', longp[sizeof longp - 1] = '\0';
  hr_options_set(o, "broker_adapters", "", HR_SRC_CLI, err, sizeof err);
  hr_options_set(o, "broker_socket", longp, HR_SRC_CLI, err, sizeof err);
  CHECK_RC(hr_broker_start(o, NULL, NULL, &b, err, sizeof err), HR_ERANGE);
  hr_options_destroy(o);
}

static void test_event_json(void) {
  hr_watch_event_t e = {.kind = HR_EVENT_BROKER,
                        .pid = 7,
                        .broker = {.what = HR_BROKER_EV_ANSWER, .bytes = 3, .released_bytes = 2}};
  snprintf(e.name, sizeof e.name, "a\"b\xff");
  char *s = NULL;
  CHECK_OK(hr_event_json(&e, &s));
  cJSON *j = cJSON_Parse(s);
  CHECK(j != NULL);
  CHECK_STR(cJSON_GetObjectItem(j, "event")->valuestring, "broker_answer");
  CHECK_STR(cJSON_GetObjectItem(j, "name")->valuestring, "a\"b\xef\xbf\xbd");
  CHECK_EQ_INT(num(j, "released_bytes"), 2);
  cJSON_Delete(j);
  free(s);
  CHECK_STR(hr_broker_event_name(HR_BROKER_EV_COUNT), "?");
}

/* A registered client is asked to release for another connection's
 * reservation; it answers by giving back a lease of its own (what it held),
 * and the reservation is granted with what came back. */
static void test_release_then_grant(void) {
  hr_broker_t *b = start("host=4G", "2s");
  CHECK(b != NULL);
  int c1 = dial(), c2 = dial();
  cJSON *j = NULL;
  CHECK(c1 >= 0 && c2 >= 0);
  say(c1, "{\"v\":1,\"op\":\"hello\",\"pid\":%d,\"name\":\"holder\",\"priority\":0}", getpid());
  j = hear(c1);
  CHECK_STR(op_of(j), "welcome");
  cJSON_Delete(j);
  say(c1, "{\"v\":1,\"op\":\"offer\",\"items\":[{\"kind\":\"cache\",\"bytes\":1073741824}]}");
  say(c1, "{\"v\":1,\"op\":\"status\"}");
  j = hear(c1);
  double free0 = num(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "resources"), 0), "free_bytes");
  cJSON_Delete(j);
  CHECK(free0 > 100e6);
  say(c1, "{\"v\":1,\"op\":\"reserve\",\"id\":1,\"bytes\":%.0f,\"device\":\"host\"}", free0 - 16e6);
  j = hear(c1);
  CHECK_STR(op_of(j), "granted");
  double lease = num(j, "lease");
  cJSON_Delete(j);
  say(c2, "{\"v\":1,\"op\":\"reserve\",\"id\":9,\"bytes\":64000000,\"device\":\"host\"}");
  j = hear(c1);
  CHECK_STR(op_of(j), "release");
  double id = num(j, "id"), asked = num(j, "bytes");
  cJSON_Delete(j);
  CHECK(asked >= 48e6 && asked <= 64e6); /* its share of the need, not the whole cache */
  say(c1, "{\"v\":1,\"op\":\"released\",\"id\":%.0f,\"bytes\":%.0f}", id, free0 - 16e6);
  say(c1, "{\"v\":1,\"op\":\"unreserve\",\"lease\":%.0f}", lease);
  j = hear(c1);
  CHECK_STR(op_of(j), "unreserved");
  cJSON_Delete(j);
  j = hear(c2);
  CHECK_STR(op_of(j), "granted");
  CHECK_EQ_INT(num(j, "id"), 9);
  CHECK(num(j, "released_bytes") == free0 - 16e6);
  cJSON_Delete(j);
  hr_broker_counters_t k;
  hr_broker_get_counters(b, &k);
  CHECK_EQ_U64(k.granted, 2);
  CHECK_EQ_U64(k.asks, 1);
  CHECK_EQ_U64(k.answers, 1);
  /* The lease of c2 ends when c2 closes. */
  close(c2);
  for (int i = 0; i < 500 && events(HR_BROKER_EV_LEASE_END) < 2; i++) usleep(10000);
  CHECK_EQ_INT(events(HR_BROKER_EV_LEASE_END), 2);
  close(c1);
  hr_broker_stop(b);
  CHECK(access(sock_path, F_OK) != 0); /* the socket is removed */
}

/* A client that is asked and never answers costs the request deadline; the
 * reservation is then refused, naming it; garbage closes only its sender. */
static void test_silent_and_garbage(void) {
  hr_broker_t *b = start("host=4G", "0.2s");
  CHECK(b != NULL);
  int c1 = dial(), c2 = dial(), c3 = dial();
  cJSON *j;
  say(c1, "{\"v\":1,\"op\":\"hello\",\"pid\":%d,\"name\":\"mute\"}", getpid());
  cJSON_Delete(hear(c1));
  say(c1, "{\"v\":1,\"op\":\"offer\",\"items\":[{\"kind\":\"model\",\"bytes\":8589934592}]}");
  say(c3, "{\"v\":1,\"op\":\"reserve\",\"id\":1,\"bytes\":4294967296,\"device\":\"host\","
          "\"timeout\":3}");
  say(c2, "\x01\x02 not json");
  j = hear(c2);
  CHECK_STR(op_of(j), "error");
  cJSON_Delete(j);
  CHECK(hear(c2) == NULL); /* closed */
  j = hear(c3);
  if (strcmp(op_of(j), "refused") != 0) {
    char *t = cJSON_PrintUnformatted(j);
    fprintf(stderr, "  got %s\n", t);
    free(t);
  }
  CHECK_STR(op_of(j), "refused");
  char *holders = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "holders"));
  cJSON_Delete(j);
  bool named = holders && strstr(holders, "\"mute\"");
  free(holders);
  CHECK(named);
  CHECK(events(HR_BROKER_EV_NO_ANSWER) >= 1);
  CHECK_EQ_INT(events(HR_BROKER_EV_PROTOCOL_ERROR), 1);
  close(c1), close(c2), close(c3);
  hr_broker_stop(b);
}

int main(void) {
  HR_RUN(test_bad_options);
  HR_RUN(test_event_json);
  HR_RUN(test_release_then_grant);
  HR_RUN(test_silent_and_garbage);
  return hr_test_finish("broker");
}
