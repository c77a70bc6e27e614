/* The chart renderer: typed panels in, one SVG document out (chart.h).
 *
 * Each panel is a plot area with its title over it, tick labels on the left
 * (and on the right when a series uses the second axis), tick labels and a
 * title under it, and a legend at its right or under it. Ticks fall on 1, 2,
 * 2.5 or 5 times a power of ten; for bytes on such a multiple of the binary
 * unit that fits the largest value, so labels read "2.00 GiB", "4.00 GiB".
 * Every y axis starts at zero: the charts show memory, and a shifted zero
 * would make a small change look large. Drawing goes through the SVG
 * primitives of util/svg.h, which escape every text. */
#include "util/svg.h"

#include <math.h>
#include <string.h>
#include <time.h>

#define DEFAULT_WIDTH   960
#define DEFAULT_PLOT_H  240
#define MARGIN_LEFT     96
#define MARGIN_RIGHT    20
#define LEGEND_RIGHT_W  210
#define AXIS2_W         80
#define MAX_MARKER_TEXT 40

static const char *const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};

/* One axis's range and ticks. */
typedef struct axis {
  hr_chart_scale_t scale;
  double lo, hi, step;
} axis_t;

/* A step of 1, 2, 2.5 or 5 times a power of ten that cuts `range` into at
 * most `max` parts. */
static double nice_step(double range, int max) {
  static const double m[] = {1, 2, 2.5, 5};
  for (double p = 1e-3; p < 1e18; p *= 10)
    for (size_t i = 0; i < HR_ARRAY_LEN(m); i++)
      if (range / (m[i] * p) <= max) return m[i] * p;
  return range;
}

/* A y axis from 0 to a tick at or over `max`, about `n` ticks. */
static void axis_y(axis_t *a, hr_chart_scale_t scale, double max, int n) {
  a->scale = scale, a->lo = 0;
  if (!(max > 0)) max = 1;
  double unit = 1;
  if (scale == HR_CHART_BYTES)
    while (unit < 1125899906842624.0 && max >= unit * 1024) unit *= 1024;
  a->step = nice_step(max / unit, n) * unit;
  a->hi = a->step * ceil(max * 1.02 / a->step);
}

static const char *tick_text(char *buf, size_t n, hr_chart_scale_t scale, double v) {
  if (scale == HR_CHART_BYTES) return hr__size_text(buf, n, v > 0 ? (uint64_t)llround(v) : 0);
  if (scale == HR_CHART_CLOCK) {
    time_t s = (time_t)v;
    struct tm tm;
    localtime_r(&s, &tm);
    strftime(buf, n, "%H:%M:%S", &tm);
    return buf;
  }
  snprintf(buf, n, "%g", fabs(v) < 1e-12 ? 0 : v);
  return buf;
}

static bool panel_has_points(const hr_chart_panel_t *p) {
  for (size_t i = 0; i < p->n_series; i++)
    for (size_t j = 0; j < p->series[i].n; j++)
      if (isfinite(p->series[i].y[j]) && isfinite(p->series[i].x[j])) return true;
  return false;
}

static bool panel_has_right(const hr_chart_panel_t *p) {
  for (size_t i = 0; i < p->n_series; i++)
    if (p->series[i].right) return true;
  return false;
}

/* Where a panel draws and how its values map to pixels. */
typedef struct frame {
  double x0, y0, w, h;
  axis_t x, y, y2;
} frame_t;

static double px(const frame_t *f, double x) {
  return f->x0 + f->w * (x - f->x.lo) / (f->x.hi - f->x.lo);
}

static double py(const frame_t *f, bool right, double y) {
  const axis_t *a = right ? &f->y2 : &f->y;
  return f->y0 + f->h - f->h * (y - a->lo) / (a->hi - a->lo);
}

static void frame_ranges(frame_t *f, const hr_chart_panel_t *p) {
  double xlo = INFINITY, xhi = -INFINITY, ymax[2] = {0, 0};
  for (size_t i = 0; i < p->n_series; i++) {
    const hr_chart_series_t *s = &p->series[i];
    for (size_t j = 0; j < s->n; j++) {
      if (!isfinite(s->y[j]) || !isfinite(s->x[j])) continue;
      xlo = fmin(xlo, s->x[j]), xhi = fmax(xhi, s->x[j]);
      ymax[s->right] = fmax(ymax[s->right], s->y[j]);
    }
  }
  for (size_t i = 0; i < p->n_hlines; i++)
    if (isfinite(p->hlines[i].y))
      ymax[p->hlines[i].right] = fmax(ymax[p->hlines[i].right], p->hlines[i].y);
  if (p->x_max > p->x_min) xlo = p->x_min, xhi = p->x_max;
  if (!(xhi > xlo)) xhi = xlo + 1;
  f->x.scale = p->x_scale, f->x.lo = xlo, f->x.hi = xhi;
  f->x.step = p->x_scale == HR_CHART_CLOCK ? (xhi - xlo) / 5 : nice_step(xhi - xlo, 8);
  axis_y(&f->y, p->y_scale, ymax[0], 6);
  axis_y(&f->y2, p->y2_scale, ymax[1], 6);
}

static void draw_axes(hr__buf_t *b, const frame_t *f, const hr_chart_panel_t *p, bool right) {
  char t[48];
  hr__svg_rect(b, f->x0, f->y0, f->w, f->h, "#fafafa", "#999");
  hr__svg_font_t end = {.anchor = HR__SVG_END}, mid = {.anchor = HR__SVG_MIDDLE};
  for (double v = f->y.lo; v <= f->y.hi + f->y.step / 2; v += f->y.step) {
    double y = py(f, false, v);
    hr__svg_line(b, f->x0, y, f->x0 + f->w, y, "#e3e3e3", 1, NULL);
    hr__svg_text(b, f->x0 - 6, y + 4, &end, tick_text(t, sizeof t, f->y.scale, v));
  }
  if (right)
    for (double v = f->y2.lo; v <= f->y2.hi + f->y2.step / 2; v += f->y2.step) {
      double y = py(f, true, v);
      hr__svg_line(b, f->x0 + f->w, y, f->x0 + f->w + 4, y, "#888", 1, NULL);
      hr__svg_text(b, f->x0 + f->w + 7, y + 4, NULL, tick_text(t, sizeof t, f->y2.scale, v));
    }
  /* x ticks on multiples of the step (from the start for clock times). */
  double first =
      f->x.scale == HR_CHART_CLOCK ? f->x.lo : ceil(f->x.lo / f->x.step - 1e-9) * f->x.step;
  for (double v = first; v <= f->x.hi + f->x.step * 1e-6; v += f->x.step) {
    double x = px(f, v);
    hr__svg_line(b, x, f->y0 + f->h, x, f->y0 + f->h + 4, "#888", 1, NULL);
    hr__svg_text(b, x, f->y0 + f->h + 16, &mid, tick_text(t, sizeof t, f->x.scale, v));
  }
  if (p->x_title) hr__svg_text(b, f->x0 + f->w / 2, f->y0 + f->h + 34, &mid, p->x_title);
  hr__svg_font_t rot = {.anchor = HR__SVG_MIDDLE, .rotate = true};
  if (p->y_title) hr__svg_text(b, f->x0 - 82, f->y0 + f->h / 2, &rot, p->y_title);
  if (right && p->y2_title) hr__svg_text(b, f->x0 + f->w + 74, f->y0 + f->h / 2, &rot, p->y2_title);
}

static const char *series_color(const hr_chart_series_t *s, size_t i) {
  if (s->color) return s->color;
  if (s->style == HR_CHART_AREA) return "#d9d9d9";
  return palette[i % HR_ARRAY_LEN(palette)];
}

static void draw_series(hr__buf_t *b, const frame_t *f, const hr_chart_series_t *s,
                        const char *color) {
  bool area = s->style == HR_CHART_AREA, dashed = s->style == HR_CHART_DASHED;
  double width = s->width > 0 ? s->width : dashed ? 1.2 : 2;
  hr__svg_poly_begin(b, area ? NULL : color, width, dashed ? "6,4" : NULL, area ? color : NULL);
  double x_first = NAN, x_last = NAN, y_last = NAN;
  size_t n = 0;
  for (size_t j = 0; j < s->n; j++) {
    if (!isfinite(s->y[j]) || !isfinite(s->x[j])) continue;
    hr__svg_point(b, px(f, s->x[j]), py(f, s->right, s->y[j]));
    if (isnan(x_first)) x_first = s->x[j];
    x_last = s->x[j], y_last = s->y[j], n++;
  }
  if (area && !isnan(x_first)) {
    hr__svg_point(b, px(f, x_last), py(f, s->right, 0));
    hr__svg_point(b, px(f, x_first), py(f, s->right, 0));
  }
  hr__svg_poly_end(b);
  /* A line of one point draws nothing: a dot shows the value. */
  if (n == 1 && !area) hr__svg_circle(b, px(f, x_last), py(f, s->right, y_last), 3, color);
}

static void draw_marks(hr__buf_t *b, const frame_t *f, const hr_chart_panel_t *p) {
  hr__svg_font_t small = {.size = 10};
  for (size_t i = 0; i < p->n_markers; i++) {
    const hr_chart_marker_t *m = &p->markers[i];
    if (!(m->x >= f->x.lo && m->x <= f->x.hi)) continue;
    const char *color = m->color ? m->color : "#888";
    double x = px(f, m->x);
    hr__svg_line(b, x, f->y0, x, f->y0 + f->h, color, 1.5, "4,3");
    if (p->marker_labels && m->label && i < MAX_MARKER_TEXT) {
      small.fill = color;
      hr__svg_text(b, x + 3, f->y0 + 12 + (double)(i % 3) * 12, &small, m->label);
    }
  }
  hr__svg_font_t tag = {.size = 10, .anchor = HR__SVG_END};
  for (size_t i = 0; i < p->n_hlines; i++) {
    const hr_chart_hline_t *l = &p->hlines[i];
    if (!isfinite(l->y)) continue;
    const char *color = l->color ? l->color : "#888";
    double y = py(f, l->right, l->y);
    hr__svg_line(b, f->x0, y, f->x0 + f->w, y, color, 1.2, "8,3,2,3");
    tag.fill = color;
    if (l->label) hr__svg_text(b, f->x0 + f->w - 4, y - 4, &tag, l->label);
  }
}

static void legend_swatch(hr__buf_t *b, const hr_chart_series_t *s, const char *color, double x,
                          double y) {
  if (s->style == HR_CHART_AREA)
    hr__svg_rect(b, x, y - 9, 24, 10, color, NULL);
  else
    hr__svg_line(b, x, y - 4, x + 24, y - 4, color, 2, s->style == HR_CHART_DASHED ? "6,4" : NULL);
}

static void draw_legend(hr__buf_t *b, const frame_t *f, const hr_chart_panel_t *p, bool below,
                        bool right_axis) {
  double lx = below ? f->x0 : f->x0 + f->w + 12 + (right_axis ? AXIS2_W : 0);
  double ly = below ? f->y0 + f->h + (p->x_title ? 58 : 40) : f->y0 + 14;
  for (size_t i = 0; i < p->n_series; i++) {
    const hr_chart_series_t *s = &p->series[i];
    if (!s->label) continue;
    legend_swatch(b, s, series_color(s, i), lx, ly);
    hr__svg_text(b, lx + 30, ly, NULL, s->label);
    if (below)
      lx += 50 + 7.0 * (double)strlen(s->label);
    else
      ly += 18;
  }
}

static bool panel_has_legend(const hr_chart_panel_t *p) {
  for (size_t i = 0; i < p->n_series; i++)
    if (p->series[i].label) return true;
  return false;
}

/* The height one panel takes, its title included. */
static double panel_height(const hr_chart_t *c, const hr_chart_panel_t *p, double plot_h) {
  if (!panel_has_points(p)) return 30;
  double h = 30 + plot_h + (p->x_title ? 44 : 26);
  if (c->legend_below && panel_has_legend(p)) h += 26;
  return h + 20;
}

static void draw_panel(hr__buf_t *b, const hr_chart_t *c, const hr_chart_panel_t *p, double top,
                       double width, double plot_h, bool any_right) {
  hr__svg_font_t head = {.size = 14, .bold = true};
  if (!panel_has_points(p)) {
    hr__svg_font_t grey = {.size = 13, .fill = "#777"};
    char line[512];
    snprintf(line, sizeof line, "%s: %s", p->title ? p->title : "",
             c->no_data ? c->no_data : "no samples");
    hr__svg_text(b, MARGIN_LEFT, top + 14, &grey, line);
    return;
  }
  bool right = panel_has_right(p);
  frame_t f = {.x0 = MARGIN_LEFT, .y0 = top + 30, .h = plot_h};
  f.w = width - MARGIN_LEFT - MARGIN_RIGHT - (c->legend_below ? 0 : LEGEND_RIGHT_W) -
        (any_right ? AXIS2_W : 0);
  frame_ranges(&f, p);
  if (p->title) hr__svg_text(b, f.x0, f.y0 - 10, &head, p->title);
  draw_axes(b, &f, p, right);
  draw_marks(b, &f, p);
  /* Areas first, so that lines lie on them. */
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < p->n_series; i++)
      if ((p->series[i].style == HR_CHART_AREA) == (pass == 0))
        draw_series(b, &f, &p->series[i], series_color(&p->series[i], i));
  draw_legend(b, &f, p, c->legend_below, any_right);
}

int hr_chart_svg(const hr_chart_t *c, char **out) {
  if (!c || !out || (c->n_panels && !c->panels)) return HR_EINVAL;
  *out = NULL;
  for (size_t i = 0; i < c->n_panels; i++) {
    const hr_chart_panel_t *p = &c->panels[i];
    if ((p->n_series && !p->series) || (p->n_hlines && !p->hlines) || (p->n_markers && !p->markers))
      return HR_EINVAL;
    for (size_t j = 0; j < p->n_series; j++)
      if (p->series[j].n && (!p->series[j].x || !p->series[j].y)) return HR_EINVAL;
  }
  double width = c->width > 0 ? c->width : DEFAULT_WIDTH;
  double plot_h = c->plot_height > 0 ? c->plot_height : DEFAULT_PLOT_H;
  bool any_right = false;
  for (size_t i = 0; i < c->n_panels; i++)
    any_right |= panel_has_right(&c->panels[i]) && panel_has_points(&c->panels[i]);
  double head = 10 + (c->title ? 30 : 0) + (c->n_keys ? 25 : 0), height = head + 10;
  for (size_t i = 0; i < c->n_panels; i++) height += panel_height(c, &c->panels[i], plot_h);

  hr__buf_t b = {0};
  hr__svg_begin(&b, width, ceil(height));
  if (c->title)
    hr__svg_text(&b, MARGIN_LEFT, 28, &(hr__svg_font_t){.size = 18, .bold = true}, c->title);
  double kx = MARGIN_LEFT, ky = (c->title ? 40 : 10);
  for (size_t k = 0; k < c->n_keys; k++) {
    hr__svg_line(&b, kx, ky + 2, kx, ky + 12, c->keys[k].color ? c->keys[k].color : "#888", 2,
                 NULL);
    hr__svg_text(&b, kx + 5, ky + 11, &(hr__svg_font_t){.size = 11}, c->keys[k].label);
    kx += 40 + 6.5 * (double)strlen(c->keys[k].label ? c->keys[k].label : "");
  }
  double top = head;
  for (size_t i = 0; i < c->n_panels; i++) {
    draw_panel(&b, c, &c->panels[i], top, width, plot_h, any_right);
    top += panel_height(c, &c->panels[i], plot_h);
  }
  hr__svg_end(&b);
  return hr__buf_finish(&b, out);
}
