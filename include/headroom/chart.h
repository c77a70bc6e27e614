/* chart: the one chart writer. A chart is typed data (panels of series of
 * points, horizontal threshold lines, vertical event markers, axis titles, a
 * second y axis) that hr_chart_svg() draws as an SVG document. Every text
 * of the input (titles, labels, colours) is escaped, so any name makes a
 * well-formed document. `headroom replay --svg` and `headroom history --svg`
 * both draw through it. Part of the daemon library.
 * Included by headroom/daemon.h; do not include it alone. */
#ifndef HEADROOM_CHART_H
#define HEADROOM_CHART_H

#ifdef __cplusplus
extern "C" {
#endif

/* How an axis reads its values. */
typedef enum hr_chart_scale {
  HR_CHART_NUMBER = 0, /* plain numbers; ticks at 1, 2, 2.5 or 5 times a power of ten */
  HR_CHART_BYTES = 1,  /* bytes; ticks on a binary unit, written by hr_size_text() */
  HR_CHART_CLOCK = 2,  /* x only: seconds since the epoch, written as local HH:MM:SS */
} hr_chart_scale_t;

typedef enum hr_chart_style {
  HR_CHART_LINE = 0,   /* a solid line, 2 px */
  HR_CHART_DASHED = 1, /* a dashed line, 1.2 px */
  HR_CHART_AREA = 2,   /* a shaded area from the x axis up to the points */
} hr_chart_style_t;

typedef struct hr_chart_series {
  const char *label;   /* the legend's text; NULL: left out of the legend */
  const double *x, *y; /* n points in x order; a point whose y is NaN is skipped */
  size_t n;
  const char *color; /* an SVG colour ("#1f77b4"); NULL: the palette's next */
  hr_chart_style_t style;
  double width; /* stroke width in px; 0: the style's */
  bool right;   /* measured on the second (right) y axis */
} hr_chart_series_t;

/* A horizontal line across the plot at value y (a threshold), labelled at
 * its right end. */
typedef struct hr_chart_hline {
  const char *label;
  double y;
  bool right;        /* y is on the second axis */
  const char *color; /* NULL: grey */
} hr_chart_hline_t;

/* A vertical dashed line at x (an event), optionally labelled. */
typedef struct hr_chart_marker {
  double x;
  const char *label; /* NULL: no label */
  const char *color; /* NULL: grey */
} hr_chart_marker_t;

typedef struct hr_chart_panel {
  const char *title;
  const char *x_title, *y_title, *y2_title; /* NULL: none */
  hr_chart_scale_t x_scale, y_scale, y2_scale;
  double x_min, x_max; /* the x range; equal (both 0): from the data */
  const hr_chart_series_t *series;
  size_t n_series;
  const hr_chart_hline_t *hlines;
  size_t n_hlines;
  const hr_chart_marker_t *markers;
  size_t n_markers;
  bool marker_labels; /* write the markers' labels (the first 40) */
} hr_chart_panel_t;

/* An entry of the chart's key: a coloured tick and a text, in one row under
 * the title (what the markers' colours mean). */
typedef struct hr_chart_key {
  const char *label;
  const char *color;
} hr_chart_key_t;

typedef struct hr_chart {
  const char *title; /* the heading over every panel; NULL: none */
  const hr_chart_key_t *keys;
  size_t n_keys;
  const hr_chart_panel_t *panels;
  size_t n_panels;
  bool legend_below;   /* each panel's legend in a row under it; else at its right */
  double width;        /* px; 0: 960 */
  double plot_height;  /* px of each panel's plot area; 0: 240 */
  const char *no_data; /* a panel without points is one line "<title>: <no_data>";
                          NULL: "no samples" */
} hr_chart_t;

/* Draws `chart` as an SVG document into *out (malloc'd, terminated; the
 * caller frees). Returns 0, HR_EINVAL (NULL arguments, a series with n > 0
 * and no points) or HR_ENOMEM. */
HR_API int hr_chart_svg(const hr_chart_t *chart, char **out);

#ifdef __cplusplus
}
#endif

#endif /* HEADROOM_CHART_H */
