/* libFuzzer harness: headroom's trace reader and replay (src/trace) on
 * arbitrary bytes. The input is written to a memory file and replayed on the
 * sim backend with a 1 GiB capacity, so huge sizes fail as OOMs quickly;
 * the sanitizers decide what counts as a crash. See README.md. */
#include <headroom/headroom.h>
#include <headroom/trace.h>

#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int fd = memfd_create("trace", MFD_CLOEXEC);
  if (fd < 0) return 0;
  if (write(fd, data, size) != (ssize_t)size) {
    close(fd);
    return 0;
  }
  char path[64], err[512];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  hr_replay_opts_t o = {0};
  o.capacity = 1ull << 30;
  hr_replay_result_t res[4];
  size_t n = 0;
  (void)hr_replay_file(path, &o, res, 4, &n, err, sizeof err);
  close(fd);
  return 0;
}
