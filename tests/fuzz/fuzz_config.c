/* libFuzzer harness: the config file reader (src/util/config_file.c) on
 * arbitrary bytes, written to a memory file and loaded into fresh options.
 * See README.md. */
#include <headroom/headroom.h>

#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int fd = memfd_create("conf", MFD_CLOEXEC);
  if (fd < 0) return 0;
  if (write(fd, data, size) != (ssize_t)size) {
    close(fd);
    return 0;
  }
  char path[64], err[512];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  hr_options_t *o = NULL;
  if (hr_options_create(&o) == 0) {
    (void)hr_options_load_file(o, path, err, sizeof err);
    hr_options_destroy(o);
  }
  close(fd);
  return 0;
}
