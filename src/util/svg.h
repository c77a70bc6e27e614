/* The one SVG writer: primitives that append to an hr__buf_t, with every
 * piece of text (labels, titles, colours) escaped for XML. Whatever bytes a
 * trace or a process name holds, the document stays well formed: & < > " '
 * become entities, control characters XML forbids are dropped, and bytes
 * that are not valid UTF-8 (and the noncharacters U+FFFE, U+FFFF) become
 * U+FFFD. The chart renderer (src/chart) draws with these alone. */
#ifndef HR_UTIL_SVG_H
#define HR_UTIL_SVG_H

#include "util/buf.h"

/* Appends s escaped for XML text and attribute values (NULL: nothing). */
HR_INTERNAL void hr__svg_escape(hr__buf_t *b, const char *s);

/* Opens a document of w x h pixels on a white background (sans-serif, 12 px
 * text unless a primitive says otherwise); hr__svg_end closes it. */
HR_INTERNAL void hr__svg_begin(hr__buf_t *b, double w, double h);
HR_INTERNAL void hr__svg_end(hr__buf_t *b);

/* A line of `width` px; `dash` is a stroke-dasharray ("6,4") or NULL. */
HR_INTERNAL void hr__svg_line(hr__buf_t *b, double x1, double y1, double x2, double y2,
                              const char *stroke, double width, const char *dash);
/* A rectangle; a NULL fill or stroke is "none". */
HR_INTERNAL void hr__svg_rect(hr__buf_t *b, double x, double y, double w, double h,
                              const char *fill, const char *stroke);

/* A filled circle of radius r. */
HR_INTERNAL void hr__svg_circle(hr__buf_t *b, double x, double y, double r, const char *fill);

typedef enum hr__svg_anchor {
  HR__SVG_START = 0,
  HR__SVG_MIDDLE,
  HR__SVG_END,
} hr__svg_anchor_t;

/* Text at (x, y) of `size` px (0: 12) in `fill` (NULL: black), anchored
 * at its start, middle or end; `bold` for headings; `rotate` turns it by
 * -90 degrees around (x, y) (a y axis title). */
typedef struct hr__svg_font {
  double size;
  const char *fill;
  hr__svg_anchor_t anchor;
  bool bold, rotate;
} hr__svg_font_t;
HR_INTERNAL void hr__svg_text(hr__buf_t *b, double x, double y, const hr__svg_font_t *font,
                              const char *text);

/* A polyline (fill none) or, with `fill`, a closed polygon: begin, one
 * hr__svg_point per vertex, end. `stroke` NULL draws no outline. */
HR_INTERNAL void hr__svg_poly_begin(hr__buf_t *b, const char *stroke, double width,
                                    const char *dash, const char *fill);
HR_INTERNAL void hr__svg_point(hr__buf_t *b, double x, double y);
HR_INTERNAL void hr__svg_poly_end(hr__buf_t *b);

#endif /* HR_UTIL_SVG_H */
