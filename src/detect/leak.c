/* Leak detector: is a process's memory growing steadily over a window?
 *
 * Each series (a process, keyed by pid and start time, and which memory:
 * RssAnon or GPU) keeps at most max_points points over the window; samples
 * closer together than window / max_points are averaged into one point, so
 * the cost per test is bounded whatever the interval. A trend alarms when
 * every test in hr_leak_evaluate() holds. The Mann-Kendall test alone would
 * call a step followed by a plateau a trend (every pair across the step
 * rises), and a sawtooth over a few periods too; the checks on the later
 * half of the window and on the halves' medians tell those apart from a
 * leak, which keeps rising all through the window. */
#include "util/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_ALPHA  0.0001
#define DEFAULT_POINTS 120
#define MIN_POINTS     6

/* ---- statistics --------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int hr_mann_kendall(const double *y, size_t n, double *s_out, double *z_out, double *p_out) {
  if (!y || n < 3) return HR_EINVAL;
  double s = 0;
  for (size_t i = 0; i + 1 < n; i++)
    for (size_t j = i + 1; j < n; j++) s += (y[j] > y[i]) - (y[j] < y[i]);
  /* Ties shrink the variance: sort a copy and count the groups. */
  double *c = malloc(n * sizeof *c);
  if (!c) return HR_ENOMEM;
  memcpy(c, y, n * sizeof *c);
  qsort(c, n, sizeof *c, cmp_double);
  double dn = (double)n, ties = 0;
  for (size_t i = 0; i < n;) {
    size_t k = i + 1;
    while (k < n && c[k] == c[i]) k++;
    double t = (double)(k - i);
    if (t > 1) ties += t * (t - 1) * (2 * t + 5);
    i = k;
  }
  free(c);
  double var = (dn * (dn - 1) * (2 * dn + 5) - ties) / 18.0;
  double z = 0;
  if (var > 0) z = s > 0 ? (s - 1) / sqrt(var) : s < 0 ? (s + 1) / sqrt(var) : 0;
  if (s_out) *s_out = s;
  if (z_out) *z_out = z;
  if (p_out) *p_out = 0.5 * erfc(z / sqrt(2.0));
  return 0;
}

/* Returns the k-th smallest of a[0..n) (0-based), reordering a. Hoare's
 * selection: linear on average, and the slopes are not adversarial. */
static double select_kth(double *a, size_t n, size_t k) {
  size_t lo = 0, hi = n - 1;
  while (lo < hi) {
    double pivot = a[lo + (hi - lo) / 2];
    size_t i = lo, j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        double tmp = a[i];
        a[i] = a[j], a[j] = tmp;
        i++;
        if (j == 0) break;
        j--;
      }
    }
    if (k <= j)
      hi = j;
    else if (k >= i)
      lo = i;
    else
      return a[k];
  }
  return a[k];
}

static double median_inplace(double *a, size_t m) {
  double hi = select_kth(a, m, m / 2);
  if (m % 2) return hi;
  /* After selection every element before m/2 is <= hi: the other middle is
   * their maximum. */
  double lo = a[0];
  for (size_t i = 1; i < m / 2; i++)
    if (a[i] > lo) lo = a[i];
  return (lo + hi) / 2;
}

int hr_theil_sen(const double *t, const double *y, size_t n, double *scratch, double *slope) {
  if (!t || !y || !slope || n < 2) return HR_EINVAL;
  double *buf = scratch ? scratch : malloc(n * (n - 1) / 2 * sizeof *buf);
  if (!buf) return HR_ENOMEM;
  size_t m = 0;
  for (size_t i = 0; i + 1 < n; i++)
    for (size_t j = i + 1; j < n; j++)
      if (t[j] > t[i]) buf[m++] = (y[j] - y[i]) / (t[j] - t[i]);
  int rc = 0;
  if (m == 0)
    rc = HR_EINVAL;
  else
    *slope = median_inplace(buf, m);
  if (!scratch) free(buf);
  return rc;
}

static double median_copy(const double *y, size_t n, double *scratch) {
  memcpy(scratch, y, n * sizeof *scratch);
  return median_inplace(scratch, n);
}

/* The halves test: both halves of the window must be rising, each at a
 * third of the whole window's slope at least (a load ramp inside a flat
 * window is not a leak, nor is a plateau after it), and the later half's
 * level must stand above the earlier half's by a good share of what the
 * slope predicts (a sawtooth's halves sit at one level). */
static bool halves_rise(const hr_leak_config_t *cfg, const double *t, const double *y, size_t n,
                        double slope, double span, double *scratch) {
  double tmid = t[0] + span / 2;
  size_t h = 0;
  while (h < n && t[h] < tmid) h++;
  if (h < 2 || n - h < 3) return false;
  double early, late;
  if (hr_theil_sen(t, y, h, scratch, &early) != 0) return false;
  if (hr_theil_sen(t + h, y + h, n - h, scratch, &late) != 0) return false;
  double bar = HR_MAX(cfg->min_rate / 2 / 60, slope / 3);
  if (early < bar || late < bar) return false;
  double m1 = median_copy(y, h, scratch), m2 = median_copy(y + h, n - h, scratch);
  double tm1 = (t[0] + t[h - 1]) / 2, tm2 = (t[h] + t[n - 1]) / 2;
  return m2 - m1 >= 0.5 * slope * (tm2 - tm1);
}

/* The growth over the window must stand out of the noise: four times the
 * median absolute deviation of the residuals around the fitted line. */
static bool above_noise(const double *t, const double *y, size_t n, double slope, double span,
                        double *scratch) {
  for (size_t i = 0; i < n; i++) scratch[i] = y[i] - slope * (t[i] - t[0]);
  double mid = median_copy(scratch, n, scratch + n);
  for (size_t i = 0; i < n; i++) scratch[i] = fabs(y[i] - slope * (t[i] - t[0]) - mid);
  double mad = median_copy(scratch, n, scratch + n);
  return slope * span >= 4 * mad;
}

/* hr_leak_evaluate() with the raw sample count apart from the point count
 * (points may average several samples) and caller-owned scratch room for
 * n*(n-1)/2 + n doubles. */
static int evaluate(const hr_leak_config_t *cfg, const double *t, const double *y, size_t n,
                    size_t samples, double *scratch, hr_leak_result_t *out) {
  memset(out, 0, sizeof *out);
  out->n = n;
  out->p = 1;
  if (n < 3) return 0;
  out->span_s = t[n - 1] - t[0];
  double slope = 0, s, z, p;
  int rc = hr_theil_sen(t, y, n, scratch, &slope);
  if (rc) return rc == HR_EINVAL ? 0 : rc;
  out->slope_per_min = slope * 60;
  if ((rc = hr_mann_kendall(y, n, &s, &z, &p)) != 0) return rc;
  out->z = z, out->p = p, out->confidence = 1 - p;
  double alpha = cfg->alpha > 0 ? cfg->alpha : DEFAULT_ALPHA;
  if (n < MIN_POINTS || samples < cfg->min_samples) return 0;
  if (p >= alpha || out->slope_per_min < cfg->min_rate) return 0;
  out->suspected = halves_rise(cfg, t, y, n, slope, out->span_s, scratch) &&
                   above_noise(t, y, n, slope, out->span_s, scratch);
  return 0;
}

int hr_leak_evaluate(const hr_leak_config_t *cfg, const double *t, const double *y, size_t n,
                     hr_leak_result_t *out) {
  if (!cfg || !t || !y || !out) return HR_EINVAL;
  double *scratch = malloc((n * (n > 0 ? n - 1 : 0) / 2 + n + 1) * sizeof *scratch);
  if (!scratch) return HR_ENOMEM;
  int rc = evaluate(cfg, t, y, n, n, scratch, out);
  free(scratch);
  return rc;
}

/* ---- per-process series ------------------------------------------------- */

typedef struct point {
  double t_first, t_sum, y_sum;
  uint32_t count;
} point_t;

typedef struct series {
  int pid, which;
  uint64_t start;
  double last_t;
  bool flagged;
  size_t head, len; /* ring of points, oldest at head */
  point_t *pts;
} series_t;

struct hr_leak {
  hr_leak_config_t cfg;
  size_t max_points;
  size_t cap, count; /* open-addressing table of series pointers */
  series_t **slots;
  double *t, *y;   /* unpacked points of one series */
  double *scratch; /* room for the tests on max_points points */
};

static uint64_t key_hash(int pid, uint64_t start, int which) {
  uint64_t h = (uint64_t)(uint32_t)pid * 0x9E3779B97F4A7C15ULL;
  h ^= start + 0x632BE59BD9B4E019ULL + (h << 6) + (h >> 2);
  h ^= (uint64_t)(uint32_t)which * 0xC2B2AE3D27D4EB4FULL;
  return h ^ (h >> 29);
}

int hr_leak_create(const hr_leak_config_t *cfg, hr_leak_t **out) {
  if (!cfg || !out || !(cfg->window_s > 0)) return HR_EINVAL;
  hr_leak_t *d = calloc(1, sizeof *d);
  if (!d) return HR_ENOMEM;
  d->cfg = *cfg;
  d->max_points = cfg->max_points ? cfg->max_points : DEFAULT_POINTS;
  if (d->max_points < MIN_POINTS) d->max_points = MIN_POINTS;
  d->cap = 256;
  d->slots = calloc(d->cap, sizeof *d->slots);
  d->t = malloc(d->max_points * sizeof *d->t);
  d->y = malloc(d->max_points * sizeof *d->y);
  d->scratch =
      malloc((d->max_points * (d->max_points - 1) / 2 + d->max_points) * sizeof *d->scratch);
  if (!d->slots || !d->t || !d->y || !d->scratch) {
    hr_leak_destroy(d);
    return HR_ENOMEM;
  }
  *out = d;
  return 0;
}

static void series_free(series_t *s) {
  if (s) free(s->pts), free(s);
}

void hr_leak_destroy(hr_leak_t *d) {
  if (!d) return;
  for (size_t i = 0; i < d->cap; i++) series_free(d->slots ? d->slots[i] : NULL);
  free(d->slots), free(d->t), free(d->y), free(d->scratch), free(d);
}

size_t hr_leak_count(const hr_leak_t *d) {
  return d ? d->count : 0;
}

/* Finds the slot of (pid, which), or the empty slot where it would go. The
 * start time is not part of the slot key: a reused pid finds the old
 * process's series, and hr_leak_add() sees the start time differ and starts
 * that series afresh, so a table never holds a dead process beside its
 * successor. */
static size_t find_slot(const hr_leak_t *d, int pid, int which) {
  size_t mask = d->cap - 1, i = key_hash(pid, 0, which) & mask;
  while (d->slots[i] && !(d->slots[i]->pid == pid && d->slots[i]->which == which))
    i = (i + 1) & mask;
  return i;
}

static int grow(hr_leak_t *d) {
  size_t old_cap = d->cap;
  series_t **old = d->slots;
  d->cap *= 2;
  d->slots = calloc(d->cap, sizeof *d->slots);
  if (!d->slots) {
    d->slots = old, d->cap = old_cap;
    return HR_ENOMEM;
  }
  for (size_t i = 0; i < old_cap; i++)
    if (old[i]) d->slots[find_slot(d, old[i]->pid, old[i]->which)] = old[i];
  free(old);
  return 0;
}

static size_t series_unpack(const hr_leak_t *d, const series_t *s, size_t *samples) {
  size_t raw = 0;
  for (size_t k = 0; k < s->len; k++) {
    const point_t *p = &s->pts[(s->head + k) % d->max_points];
    d->t[k] = p->t_sum / p->count;
    d->y[k] = p->y_sum / p->count;
    raw += p->count;
  }
  if (samples) *samples = raw;
  return s->len;
}

/* Appends a sample: merges it into the newest point when that point is
 * younger than one bucket, drops points that left the window. */
static void series_push(hr_leak_t *d, series_t *s, double t, double y) {
  double bucket = d->cfg.window_s / (double)d->max_points;
  while (s->len > 0 && t - s->pts[s->head].t_sum / s->pts[s->head].count > d->cfg.window_s) {
    s->head = (s->head + 1) % d->max_points;
    s->len--;
  }
  if (s->len > 0) {
    point_t *last = &s->pts[(s->head + s->len - 1) % d->max_points];
    if (t - last->t_first < bucket) {
      last->t_sum += t, last->y_sum += y, last->count++;
      return;
    }
  }
  if (s->len == d->max_points) {
    s->head = (s->head + 1) % d->max_points;
    s->len--;
  }
  point_t *p = &s->pts[(s->head + s->len) % d->max_points];
  p->t_first = p->t_sum = t, p->y_sum = y, p->count = 1;
  s->len++;
}

/* The series of (pid, which) for the process started at `start`, made when
 * new and started afresh when the pid was reused by a new process (its
 * history is not this one's); NULL when out of memory. */
static series_t *series_get(hr_leak_t *d, int pid, uint64_t start, int which) {
  if ((d->count + 1) * 2 > d->cap && grow(d) != 0) return NULL;
  size_t i = find_slot(d, pid, which);
  series_t *s = d->slots[i];
  if (s && s->start != start) {
    s->len = s->head = 0;
    s->flagged = false;
    s->start = start;
  }
  if (s) return s;
  s = calloc(1, sizeof *s);
  if (!s || !(s->pts = malloc(d->max_points * sizeof *s->pts))) {
    series_free(s);
    return NULL;
  }
  s->pid = pid, s->which = which, s->start = start;
  d->slots[i] = s;
  d->count++;
  return s;
}

int hr_leak_add(hr_leak_t *d, int pid, uint64_t start, int which, double t, uint64_t bytes,
                hr_leak_result_t *out) {
  if (out) memset(out, 0, sizeof *out), out->p = 1;
  if (!d) return HR_EINVAL;
  if (bytes == HR_UNKNOWN) return 0;
  series_t *s = series_get(d, pid, start, which);
  if (!s) return HR_ENOMEM;
  s->last_t = t;
  series_push(d, s, t, (double)bytes);

  size_t samples, n = series_unpack(d, s, &samples);
  hr_leak_result_t r = {.n = n, .p = 1};
  /* Cheap gate: a series whose last point is not above its first cannot be
   * a leak, and most processes are flat. */
  if ((n >= 3 && d->y[n - 1] > d->y[0]) || s->flagged) {
    int rc = evaluate(&d->cfg, d->t, d->y, n, samples, d->scratch, &r);
    if (rc) return rc;
  }
  if (s->flagged && r.slope_per_min < d->cfg.min_rate / 2)
    s->flagged = false;
  else if (r.suspected && !s->flagged)
    s->flagged = r.raised = true;
  r.suspected = s->flagged;
  if (out) *out = r;
  return 0;
}

int hr_leak_slope(hr_leak_t *d, int pid, uint64_t start, int which, double *per_min) {
  if (!d || !per_min) return HR_EINVAL;
  series_t *s = d->slots[find_slot(d, pid, which)];
  if (!s || s->start != start || s->len < 3) return HR_ENOENT;
  size_t n = series_unpack(d, s, NULL);
  double slope;
  int rc = hr_theil_sen(d->t, d->y, n, d->scratch, &slope);
  if (rc) return rc == HR_EINVAL ? HR_ENOENT : rc;
  *per_min = slope * 60;
  return 0;
}

void hr_leak_prune(hr_leak_t *d, double before) {
  if (!d) return;
  size_t cap = d->cap;
  series_t **old = d->slots;
  series_t **fresh = calloc(cap, sizeof *fresh);
  if (!fresh) return; /* keep the stale series; the next prune retries */
  d->slots = fresh;
  d->count = 0;
  for (size_t i = 0; i < cap; i++) {
    if (!old[i]) continue;
    if (old[i]->last_t < before) {
      series_free(old[i]);
      continue;
    }
    d->slots[find_slot(d, old[i]->pid, old[i]->which)] = old[i];
    d->count++;
  }
  free(old);
}

int hr_leak_evaluate_samples(const hr_leak_config_t *cfg, const double *t, const double *y,
                             size_t n, hr_leak_result_t *out) {
  if (!cfg || !t || !y || !out) return HR_EINVAL;
  memset(out, 0, sizeof *out);
  out->p = 1;
  hr_leak_t *d = NULL;
  series_t s = {0};
  int rc = hr_leak_create(cfg, &d);
  if (rc) return rc;
  if (!(s.pts = malloc(d->max_points * sizeof *s.pts))) {
    rc = HR_ENOMEM;
    goto out;
  }
  for (size_t i = 0; i < n; i++)
    if (isfinite(t[i]) && isfinite(y[i])) series_push(d, &s, t[i], y[i]);
  size_t samples, m = series_unpack(d, &s, &samples);
  rc = evaluate(&d->cfg, d->t, d->y, m, samples, d->scratch, out);
out:
  free(s.pts);
  hr_leak_destroy(d);
  return rc;
}
