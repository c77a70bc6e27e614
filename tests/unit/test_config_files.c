/* The config files of the option chain (options.c): the system file
 * (/etc/headroom/headroom.conf in a build), then the user's file overriding
 * it line by line, then the environment; an explicit file (--config,
 * HEADROOM_CONFIG) read alone; a system file that cannot be read skipped, a
 * broken one an error. Files are written under /tmp, never /etc. */
#include "hr_test.h"
#include "util/util.h"

#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/hr_test_conf_XXXXXX";
static char sys_path[256], user_dir[256], user_path[300], expl_path[256];

static void write_file(const char *path, const char *text, mode_t mode) {
  FILE *f = fopen(path, "w");
  if (!f) return;
  fputs(text, f);
  fclose(f);
  chmod(path, mode);
}

static void setup(void) {
  if (!mkdtemp(dir)) return;
  snprintf(sys_path, sizeof sys_path, "%s/system.conf", dir);
  snprintf(user_dir, sizeof user_dir, "%s/xdg/headroom", dir);
  snprintf(user_path, sizeof user_path, "%s/headroom.conf", user_dir);
  snprintf(expl_path, sizeof expl_path, "%s/explicit.conf", dir);
  char xdg[256];
  snprintf(xdg, sizeof xdg, "%s/xdg", dir);
  mkdir(xdg, 0700);
  mkdir(user_dir, 0700);
  setenv("XDG_CONFIG_HOME", xdg, 1);
  unsetenv("HEADROOM_CONFIG");
  unsetenv("HEADROOM_TOP");
  unsetenv("HEADROOM_MODE");
  unsetenv("HEADROOM_LISTEN");
}

static void test_system_then_user_then_env(void) {
  write_file(sys_path, "top = 3\nmode = balanced\nlisten = 0.0.0.0:9\n", 0644);
  write_file(user_path, "top = 4\n", 0644);
  setenv("HEADROOM_MODE", "aggressive", 1);
  hr_options_t *o;
  char err[512];
  CHECK_OK(hr_options_create(&o));
  int rc = hr__options_load_files(o, sys_path, NULL, err, sizeof err);
  unsetenv("HEADROOM_MODE");
  CHECK_MSG(rc == 0, "%s", err);
  CHECK_EQ_INT(hr_options_get_int(o, HR_OPTION_top), 4);           /* user over system */
  CHECK_STR(hr_options_get_str(o, HR_OPTION_listen), "0.0.0.0:9"); /* system over default */
  CHECK_EQ_INT(hr_options_source(o, HR_OPTION_listen), HR_SRC_FILE);
  CHECK_STR(hr_options_get_str(o, HR_OPTION_mode), "aggressive");   /* env over both */
  CHECK_NEAR(hr_options_get_double(o, HR_OPTION_interval), 1.0, 0); /* default */
  hr_options_destroy(o);

  /* Either file may be missing. */
  unlink(user_path);
  CHECK_OK(hr_options_create(&o));
  CHECK_OK(hr__options_load_files(o, sys_path, NULL, err, sizeof err));
  CHECK_EQ_INT(hr_options_get_int(o, HR_OPTION_top), 3);
  hr_options_destroy(o);
  char missing[300];
  snprintf(missing, sizeof missing, "%s/none.conf", dir);
  CHECK_OK(hr_options_create(&o));
  CHECK_OK(hr__options_load_files(o, missing, NULL, err, sizeof err));
  CHECK_EQ_INT(hr_options_source(o, HR_OPTION_top), HR_SRC_DEFAULT);
  hr_options_destroy(o);
  unlink(sys_path);
}

/* --config and HEADROOM_CONFIG name the one file read, as ssh -F does. */
static void test_explicit_file_alone(void) {
  write_file(sys_path, "top = 3\nmode = balanced\n", 0644);
  write_file(user_path, "top = 4\n", 0644);
  write_file(expl_path, "top = 5\n", 0644);
  hr_options_t *o;
  char err[512];
  CHECK_OK(hr_options_create(&o));
  CHECK_OK(hr__options_load_files(o, sys_path, expl_path, err, sizeof err));
  CHECK_EQ_INT(hr_options_get_int(o, HR_OPTION_top), 5);
  CHECK_STR(hr_options_get_str(o, HR_OPTION_mode), "conservative"); /* the system file unread */
  hr_options_destroy(o);
  setenv("HEADROOM_CONFIG", expl_path, 1);
  CHECK_OK(hr_options_create(&o));
  int rc = hr__options_load_files(o, sys_path, NULL, err, sizeof err);
  unsetenv("HEADROOM_CONFIG");
  CHECK_OK(rc);
  CHECK_EQ_INT(hr_options_get_int(o, HR_OPTION_top), 5);
  CHECK_STR(hr_options_get_str(o, HR_OPTION_mode), "conservative");
  hr_options_destroy(o);
  unlink(sys_path), unlink(user_path), unlink(expl_path);
}

/* A broken system file is an error naming it; one that cannot be read (a
 * directory here: mode bits do not stop root, who runs the tests) is
 * skipped, and the user's file still applies. */
static void test_system_file_errors(void) {
  hr_options_t *o;
  char err[512];
  write_file(sys_path, "top = 3\ntop = lots\n", 0644);
  CHECK_OK(hr_options_create(&o));
  CHECK_RC(hr__options_load_files(o, sys_path, NULL, err, sizeof err), HR_EINVAL);
  CHECK_CONTAINS(err, "system.conf:2:");
  hr_options_destroy(o);
  unlink(sys_path);
  mkdir(sys_path, 0755);
  write_file(user_path, "top = 4\n", 0644);
  CHECK_OK(hr_options_create(&o));
  CHECK_OK(hr__options_load_files(o, sys_path, NULL, err, sizeof err));
  CHECK_EQ_INT(hr_options_get_int(o, HR_OPTION_top), 4);
  hr_options_destroy(o);
  rmdir(sys_path), unlink(user_path);
}

/* The public chain reads the build's system path; it is the documented one. */
static void test_system_path(void) {
  CHECK_STR(hr__options_system_path(), "/etc/headroom/headroom.conf");
}

int main(void) {
  setup();
  HR_RUN(test_system_then_user_then_env);
  HR_RUN(test_explicit_file_alone);
  HR_RUN(test_system_file_errors);
  HR_RUN(test_system_path);
  rmdir(user_dir);
  char xdg[256];
  snprintf(xdg, sizeof xdg, "%s/xdg", dir);
  rmdir(xdg);
  rmdir(dir);
  return hr_test_finish("test_config_files");
}
