/* statm_floor: the floor that `headroom status` is measured against. It
 * lists /proc and opens, reads and closes /proc/PID/statm of every process:
 * the least a tool can do to rank every process by resident memory. Linked
 * with libc alone, so its CPU time is that work plus the smallest exec.
 * Prints how many processes it read and their summed resident pages, so
 * the reads cannot be left out.
 *
 *   statm_floor [ROOT]   (ROOT defaults to /) */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
  char dir[4096], path[300], buf[256];
  snprintf(dir, sizeof dir, "%s/proc", argc > 1 ? argv[1] : "");
  DIR *d = opendir(dir);
  if (!d) {
    perror(dir);
    return 1;
  }
  unsigned long long resident = 0;
  unsigned n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "%s/statm", e->d_name);
    int fd = openat(dirfd(d), path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0) continue;
    buf[len] = '\0';
    char *sp = strchr(buf, ' ');
    if (sp) resident += strtoull(sp + 1, NULL, 10);
    n++;
  }
  closedir(d);
  printf("%u processes, %llu resident pages\n", n, resident);
  return 0;
}
