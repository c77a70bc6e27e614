/* The SVG writer (util/svg.h) and the chart renderer (hr_chart_svg): text
 * is escaped for XML whatever bytes it holds, bad input is refused, and the
 * chart draws what its input says (a second axis, thresholds, markers, one
 * line per series). */
#include "hr_test.h"
#include "util/svg.h"

#include <math.h>

static char *escaped(const char *s) {
  hr__buf_t b = {0};
  char *out = NULL;
  hr__svg_escape(&b, s);
  if (hr__buf_finish(&b, &out) != 0) return strdup("(out of memory)");
  return out;
}

static void test_escape(void) {
  char *q = escaped("a&b<c>\"d'e");
  CHECK_STR(q, "a&amp;b&lt;c&gt;&quot;d&apos;e");
  free(q);
  /* Invalid UTF-8 (a stray byte, a truncated sequence, a surrogate) and the
   * noncharacter U+FFFF become U+FFFD; valid UTF-8 passes; control
   * characters other than tab, newline and return go. */
  q = escaped("x\xff|\xe2\x82|\xed\xa0\x80|\xef\xbf\xbf|\xc3\xa9|\x01\x1f\t\n|");
  CHECK_STR(q, "x\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
               "\xef\xbf\xbd|\xc3\xa9|\t\n|");
  free(q);
  q = escaped(NULL);
  CHECK_STR(q, "");
  free(q);
}

static size_t count(const char *hay, const char *needle) {
  size_t n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
  return n;
}

static void test_chart(void) {
  double x[4] = {0, 1, 2, 3}, y[4] = {1 << 20, 2 << 20, NAN, 3 << 20};
  double g[4] = {1ull << 30, 1ull << 30, 2ull << 30, 2ull << 30};
  hr_chart_series_t s[] = {
      {.label = "rss <&>", .x = x, .y = y, .n = 4},
      {.label = "gpu", .x = x, .y = g, .n = 4, .style = HR_CHART_DASHED, .right = true},
      {.label = "live", .x = x, .y = y, .n = 4, .style = HR_CHART_AREA},
  };
  hr_chart_hline_t h[] = {{.label = "warning 80%", .y = 3 << 20}};
  hr_chart_marker_t m[] = {{.x = 1.5, .label = "leak 42", .color = "#d62728"},
                           {.x = 99, .label = "outside"}};
  hr_chart_panel_t p = {.title = "t\xff",
                        .y_title = "memory",
                        .y2_title = "GPU memory",
                        .y_scale = HR_CHART_BYTES,
                        .y2_scale = HR_CHART_BYTES,
                        .series = s,
                        .n_series = 3,
                        .hlines = h,
                        .n_hlines = 1,
                        .markers = m,
                        .n_markers = 2,
                        .marker_labels = true};
  hr_chart_panel_t empty = {.title = "nothing"};
  hr_chart_panel_t panels[] = {p, empty};
  hr_chart_t c = {.title = "a & b", .panels = panels, .n_panels = 2};
  char *svg = NULL;
  CHECK_OK(hr_chart_svg(&c, &svg));
  CHECK_CONTAINS(svg, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
  CHECK_CONTAINS(svg, ">a &amp; b</text>");
  CHECK_CONTAINS(svg, ">t\xef\xbf\xbd</text>");
  CHECK_CONTAINS(svg, ">rss &lt;&amp;&gt;</text>");
  CHECK_CONTAINS(svg, ">GPU memory</text>");  /* the second axis's title */
  CHECK_CONTAINS(svg, ">2.00 GiB</text>");    /* its ticks, in bytes */
  CHECK_CONTAINS(svg, ">warning 80%</text>"); /* the threshold */
  CHECK_CONTAINS(svg, ">leak 42</text>");     /* a marker in range... */
  CHECK(strstr(svg, ">outside<") == NULL);    /* ...and none outside it */
  CHECK_CONTAINS(svg, ">nothing: no samples</text>");
  CHECK_EQ_U64(count(svg, "<polyline"), 2); /* rss and gpu; live is an area */
  CHECK_EQ_U64(count(svg, "<polygon"), 1);
  CHECK_CONTAINS(svg, "</svg>\n");
  free(svg);
  /* Refused: no chart, no output, a series without points. */
  CHECK_RC(hr_chart_svg(NULL, &svg), HR_EINVAL);
  CHECK_RC(hr_chart_svg(&c, NULL), HR_EINVAL);
  s[0].y = NULL;
  CHECK_RC(hr_chart_svg(&c, &svg), HR_EINVAL);
}

static void test_size_text(void) {
  char b[32];
  CHECK_STR(hr_size_text(b, sizeof b, 0), "0 B");
  CHECK_STR(hr_size_text(b, sizeof b, 1023), "1023 B");
  CHECK_STR(hr_size_text(b, sizeof b, 1536), "1.50 KiB");
  CHECK_STR(hr_size_text(b, sizeof b, 6775000000ull), "6.31 GiB");
  CHECK_STR(hr_size_text(b, sizeof b, UINT64_MAX), "16384.00 PiB");
}

int main(void) {
  HR_RUN(test_escape);
  HR_RUN(test_chart);
  HR_RUN(test_size_text);
  return hr_test_finish("test_chart");
}
