/* SVG primitives with XML escaping; see svg.h. Numbers are written with one
 * decimal, which is finer than a pixel and keeps the files small. */
#include "util/svg.h"

#include <string.h>

/* The entity of an XML special character, or NULL. */
static const char *entity(unsigned char c) {
  switch (c) {
  case '&':
    return "&amp;";
  case '<':
    return "&lt;";
  case '>':
    return "&gt;";
  case '"':
    return "&quot;";
  case '\'':
    return "&apos;";
  default:
    return NULL;
  }
}

/* Writes the UTF-8 sequence at c, or U+FFFD for a malformed one and for
 * U+FFFE and U+FFFF (valid UTF-8 but not XML characters); returns the bytes
 * taken. */
static size_t put_utf8(hr__buf_t *b, const unsigned char *c) {
  size_t n = hr__utf8_len(c);
  bool nonchar = n == 3 && c[0] == 0xef && c[1] == 0xbf && c[2] >= 0xbe;
  if (n == 0 || nonchar)
    hr__buf_puts(b, "\xef\xbf\xbd");
  else
    hr__buf_put(b, (const char *)c, n);
  return n ? n : 1;
}

void hr__svg_escape(hr__buf_t *b, const char *s) {
  if (!s) return;
  const unsigned char *c = (const unsigned char *)s;
  while (*c) {
    size_t run = 0;
    while (c[run] >= 0x20 && c[run] < 0x80 && !entity(c[run])) run++;
    if (run) {
      hr__buf_put(b, (const char *)c, run);
      c += run;
    } else if (entity(*c)) {
      hr__buf_puts(b, entity(*c++));
    } else if (*c == '\t' || *c == '\n' || *c == '\r') {
      hr__buf_put(b, (const char *)c++, 1);
    } else if (*c >= 0x80) {
      c += put_utf8(b, c);
    } else {
      c++; /* other control characters: XML 1.0 has no way to write them */
    }
  }
}

void hr__svg_begin(hr__buf_t *b, double w, double h) {
  hr__buf_printf(b,
                 "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                 "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
                 "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                 w, h, w, h);
}

void hr__svg_end(hr__buf_t *b) {
  hr__buf_puts(b, "</svg>\n");
}

static void attr(hr__buf_t *b, const char *name, const char *value) {
  hr__buf_printf(b, " %s=\"", name);
  hr__svg_escape(b, value);
  hr__buf_puts(b, "\"");
}

void hr__svg_line(hr__buf_t *b, double x1, double y1, double x2, double y2, const char *stroke,
                  double width, const char *dash) {
  hr__buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"", x1, y1, x2, y2);
  attr(b, "stroke", stroke ? stroke : "black");
  if (width != 1) hr__buf_printf(b, " stroke-width=\"%.1f\"", width);
  if (dash) attr(b, "stroke-dasharray", dash);
  hr__buf_puts(b, "/>\n");
}

void hr__svg_rect(hr__buf_t *b, double x, double y, double w, double h, const char *fill,
                  const char *stroke) {
  hr__buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"", x, y, w, h);
  attr(b, "fill", fill ? fill : "none");
  attr(b, "stroke", stroke ? stroke : "none");
  hr__buf_puts(b, "/>\n");
}

void hr__svg_circle(hr__buf_t *b, double x, double y, double r, const char *fill) {
  hr__buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\"", x, y, r);
  attr(b, "fill", fill ? fill : "black");
  hr__buf_puts(b, "/>\n");
}

void hr__svg_text(hr__buf_t *b, double x, double y, const hr__svg_font_t *font, const char *text) {
  static const char *const anchors[] = {"start", "middle", "end"};
  hr__svg_font_t f = font ? *font : (hr__svg_font_t){0};
  if (f.rotate)
    hr__buf_printf(b, "<text transform=\"translate(%.1f,%.1f) rotate(-90)\"", x, y);
  else
    hr__buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\"", x, y);
  if (f.size > 0 && f.size != 12) hr__buf_printf(b, " font-size=\"%.0f\"", f.size);
  if (f.bold) hr__buf_puts(b, " font-weight=\"bold\"");
  if (f.fill) attr(b, "fill", f.fill);
  if (f.anchor != HR__SVG_START && (unsigned)f.anchor < HR_ARRAY_LEN(anchors))
    attr(b, "text-anchor", anchors[f.anchor]);
  hr__buf_puts(b, ">");
  hr__svg_escape(b, text);
  hr__buf_puts(b, "</text>\n");
}

void hr__svg_poly_begin(hr__buf_t *b, const char *stroke, double width, const char *dash,
                        const char *fill) {
  hr__buf_puts(b, fill ? "<polygon" : "<polyline");
  attr(b, "fill", fill ? fill : "none");
  attr(b, "stroke", stroke ? stroke : "none");
  if (stroke && width != 1) hr__buf_printf(b, " stroke-width=\"%.1f\"", width);
  if (stroke && dash) attr(b, "stroke-dasharray", dash);
  hr__buf_puts(b, " points=\"");
}

void hr__svg_point(hr__buf_t *b, double x, double y) {
  hr__buf_printf(b, "%.1f,%.1f ", x, y);
}

void hr__svg_poly_end(hr__buf_t *b) {
  hr__buf_puts(b, "\"/>\n");
}
