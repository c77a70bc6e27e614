/* A child process with a known memory pattern, for the watch tests:
 *
 *   mem_pattern leak BYTES_PER_S        grows by BYTES_PER_S, never frees
 *   mem_pattern sawtooth BYTES PERIOD_S grows to BYTES over PERIOD_S, frees
 *                                       it all, again and again
 *   mem_pattern step BYTES DELAY_S      takes BYTES after DELAY_S, then holds
 *   mem_pattern stable BYTES            takes BYTES at once and holds them
 *
 * Memory is anonymous mmap, touched page by page so it is resident
 * (RssAnon), and munmap'd to free so the kernel really gets it back. The
 * child dies with its parent (PR_SET_PDEATHSIG) and after 10 minutes at
 * most, so a failed test leaves nothing behind. */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define TICK_S     0.05
#define MAX_CHUNKS 100000

static void *chunks[MAX_CHUNKS];
static size_t sizes[MAX_CHUNKS], n_chunks;

static void take(size_t bytes) {
  if (bytes == 0 || n_chunks == MAX_CHUNKS) return;
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return;
  memset(p, 0x5a, bytes);
  chunks[n_chunks] = p, sizes[n_chunks++] = bytes;
}

static void free_all(void) {
  for (size_t i = 0; i < n_chunks; i++) munmap(chunks[i], sizes[i]);
  n_chunks = 0;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nap(void) {
  struct timespec ts = {0, (long)(TICK_S * 1e9)};
  nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) return 1;
  if (argc < 3) {
    fprintf(stderr, "usage: mem_pattern leak|sawtooth|step|stable BYTES [SECONDS]\n");
    return 2;
  }
  const char *mode = argv[1];
  double a = strtod(argv[2], NULL), b = argc > 3 ? strtod(argv[3], NULL) : 0;
  double t0 = now(), taken = 0;
  long tooth = 0;
  size_t held = 0;
  if (strcmp(mode, "stable") == 0) take((size_t)a);
  for (bool stepped = false; now() - t0 < 600;) {
    double t = now() - t0;
    if (strcmp(mode, "leak") == 0) {
      /* What the elapsed time owes, whole pages: the rate holds in wall
       * time even when a loaded machine runs this process late. */
      size_t page = (size_t)sysconf(_SC_PAGESIZE), n = (size_t)(a * t - taken) / page * page;
      take(n);
      taken += (double)n;
    } else if (strcmp(mode, "sawtooth") == 0) {
      /* Each period starts from nothing and holds what its elapsed part
       * owes: the teeth keep their height and period in wall time even
       * when a loaded machine runs this process late. */
      long period = (long)(t / b);
      if (period != tooth) free_all(), held = 0, tooth = period;
      size_t page = (size_t)sysconf(_SC_PAGESIZE);
      size_t want = (size_t)(a * (t - b * (double)period) / b) / page * page;
      if (want > held) take(want - held), held = want;
    } else if (strcmp(mode, "step") == 0) {
      if (!stepped && t >= b) take((size_t)a), stepped = true;
    } else if (strcmp(mode, "stable") != 0) {
      fprintf(stderr, "mem_pattern: unknown mode '%s'\n", mode);
      return 2;
    }
    nap();
  }
  return 0;
}
