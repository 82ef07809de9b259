//! Small dependency-free SVG charts for the reports `ail measure` and `ail interpolate` write: a
//! radar chart (one polygon per series), a heat map with a colour bar, and a line chart. Each
//! function returns the whole document as a `String`; callers write it with
//! `ail_core::io::write_atomic`.
//!
//! Non-finite values are skipped (radar, line) or drawn as grey cells (heat map), never as `NaN`
//! coordinates, so every document is valid SVG.

use std::fmt::Write;

/// Ten distinguishable colours (Tableau 10), cycled by series index.
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
];

/// The colour of series `k`.
pub fn colour(k: usize) -> &'static str {
    PALETTE[k % PALETTE.len()]
}

/// One named series of values, one per radar axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

/// One named curve of `(x, y)` points, drawn in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Escapes text for use in SVG content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn open(width: f64, height: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    )
}

fn text(svg: &mut String, x: f64, y: f64, anchor: &str, extra: &str, content: &str) {
    let _ = writeln!(svg, "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\"{extra}>{}</text>", escape(content));
}

/// About `target` round tick values (steps of 1, 2 or 5 times a power of ten) covering `[lo, hi]`.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) {
        return Vec::new();
    }
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    if hi - lo < 1e-12 {
        return vec![lo];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A tick label with as many decimals as the step between ticks needs, and more (up to six) when
/// the value itself has them (0.25 on a 0.25 grid).
fn tick_label(value: f64, ticks: &[f64]) -> String {
    let step = if ticks.len() > 1 { (ticks[1] - ticks[0]).abs() } else { value.abs().max(1.0) };
    let mut decimals = (-(step.log10().floor())).max(0.0) as usize;
    let exact = |d: usize| {
        let scaled = value * 10f64.powi(d as i32);
        (scaled - scaled.round()).abs() <= 1e-6 * scaled.abs().max(1.0)
    };
    while decimals < 6 && !exact(decimals) {
        decimals += 1;
    }
    let s = format!("{value:.decimals$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') { s[1..].to_string() } else { s }
}

/// The range `[lo, hi]` of the finite values, widened when it is a single point.
fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    if lo > hi {
        return None;
    }
    Some(if hi - lo < 1e-9 { (lo - 0.5, hi + 0.5) } else { (lo, hi) })
}

fn legend(svg: &mut String, x: f64, y: f64, names: &[&str]) {
    for (k, name) in names.iter().enumerate() {
        let row = y + 18.0 * k as f64;
        let _ = writeln!(svg, "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>", row - 10.0, colour(k));
        text(svg, x + 18.0, row, "start", "", name);
    }
}

/// A radar chart: one spoke per axis (clockwise from the top), one closed polygon per series.
/// `range = [centre, rim]` maps values onto the spokes (values outside are clamped); rings mark
/// round values in between. A legend names the series.
pub fn radar(title: &str, axes: &[String], series: &[Series], range: [f64; 2]) -> String {
    let (width, height) = (720.0, 560.0);
    let (cx, cy, radius) = (300.0, 295.0, 200.0);
    let [inner, outer] = range;
    let span = if (outer - inner).abs() < 1e-12 { 1.0 } else { outer - inner };
    let frac = |v: f64| ((v - inner) / span).clamp(0.0, 1.0);
    let n = axes.len().max(1);
    let angle = |k: usize| -std::f64::consts::FRAC_PI_2 + std::f64::consts::TAU * k as f64 / n as f64;
    let point = |k: usize, r: f64| (cx + r * angle(k).cos(), cy + r * angle(k).sin());

    let mut svg = open(width, height);
    text(&mut svg, width / 2.0, 28.0, "middle", " font-size=\"16\"", title);
    // Rings at round values, labelled along the first spoke.
    let ticks = nice_ticks(inner, outer, 4);
    for &tick in &ticks {
        let r = frac(tick) * radius;
        if r <= 0.0 {
            continue;
        }
        let ring: Vec<String> = (0..n).map(|k| point(k, r)).map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(svg, "<polygon points=\"{}\" fill=\"none\" stroke=\"#dddddd\"/>", ring.join(" "));
        text(&mut svg, cx + 4.0, cy - r + 12.0, "start", " fill=\"#888888\" font-size=\"10\"", &tick_label(tick, &ticks));
    }
    for (k, name) in axes.iter().enumerate() {
        let (x, y) = point(k, radius);
        let _ = writeln!(svg, "<line x1=\"{cx}\" y1=\"{cy}\" x2=\"{x:.1}\" y2=\"{y:.1}\" stroke=\"#bbbbbb\"/>");
        let (lx, ly) = point(k, radius + 16.0);
        let anchor = match angle(k).cos() {
            c if c > 0.2 => "start",
            c if c < -0.2 => "end",
            _ => "middle",
        };
        text(&mut svg, lx, ly + 4.0, anchor, "", name);
    }
    for (s, one) in series.iter().enumerate() {
        let points: Vec<String> = one
            .values
            .iter()
            .enumerate()
            .take(n)
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| point(k, frac(*v) * radius))
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let c = colour(s);
        let _ = writeln!(
            svg,
            "<polygon points=\"{}\" fill=\"{c}\" fill-opacity=\"0.12\" stroke=\"{c}\" stroke-width=\"2\"><title>{}</title></polygon>",
            points.join(" "),
            escape(&one.name)
        );
    }
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    legend(&mut svg, 560.0, 70.0, &names);
    svg.push_str("</svg>\n");
    svg
}

/// A colour for `t` in `[0, 1]` on a perceptually ordered dark-blue -> green -> yellow scale
/// (anchors of matplotlib's viridis, interpolated linearly).
pub fn scale_colour(t: f64) -> String {
    const ANCHORS: [[f64; 3]; 5] =
        [[68.0, 1.0, 84.0], [59.0, 82.0, 139.0], [33.0, 145.0, 140.0], [94.0, 201.0, 98.0], [253.0, 231.0, 37.0]];
    if !t.is_finite() {
        return "#cccccc".into();
    }
    let x = t.clamp(0.0, 1.0) * (ANCHORS.len() - 1) as f64;
    let k = (x.floor() as usize).min(ANCHORS.len() - 2);
    let f = x - k as f64;
    let c: Vec<u8> = (0..3).map(|j| (ANCHORS[k][j] + f * (ANCHORS[k + 1][j] - ANCHORS[k][j])).round() as u8).collect();
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// A heat map of `values` (row-major: one row per entry of `y_values`, one column per entry of
/// `x_values`; the first row at the bottom), cells labelled with their value when the grid is
/// small, and a colour bar spanning the finite values' range, labelled `colour_label`.
pub fn heat_map(
    title: &str,
    x_label: &str,
    y_label: &str,
    x_values: &[f64],
    y_values: &[f64],
    values: &[f64],
    colour_label: &str,
) -> String {
    let (nx, ny) = (x_values.len().max(1), y_values.len().max(1));
    let (left, top, side) = (90.0, 50.0, 440.0);
    let (cw, ch) = (side / nx as f64, side / ny as f64);
    let (width, height) = (left + side + 150.0, top + side + 70.0);
    let (lo, hi) = finite_range(values.iter().copied()).unwrap_or((0.0, 1.0));
    let t = |v: f64| (v - lo) / (hi - lo);

    let mut svg = open(width, height);
    text(&mut svg, left + side / 2.0, 28.0, "middle", " font-size=\"16\"", title);
    for r in 0..ny {
        for c in 0..nx {
            let v = values.get(r * nx + c).copied().unwrap_or(f64::NAN);
            let (x, y) = (left + c as f64 * cw, top + side - (r + 1) as f64 * ch);
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.2}\" y=\"{y:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"{}\"><title>{v:.4}</title></rect>",
                cw + 0.3,
                ch + 0.3,
                scale_colour(t(v))
            );
            if nx <= 12 && ny <= 12 && v.is_finite() {
                let ink = if t(v) > 0.6 { "black" } else { "white" };
                let size = (cw.min(ch) / 3.2).clamp(7.0, 12.0);
                let decimals = if nx <= 8 { 3 } else { 2 };
                text(&mut svg, x + cw / 2.0, y + ch / 2.0 + size / 3.0, "middle", &format!(" fill=\"{ink}\" font-size=\"{size:.0}\""), &format!("{v:.decimals$}"));
            }
        }
    }
    let _ = writeln!(svg, "<rect x=\"{left}\" y=\"{top}\" width=\"{side}\" height=\"{side}\" fill=\"none\" stroke=\"black\"/>");
    // Axis ticks at the cell centres (every other one when crowded).
    let every = |n: usize| if n > 12 { n.div_ceil(11) } else { 1 };
    for (c, x) in x_values.iter().enumerate().step_by(every(nx)) {
        let px = left + (c as f64 + 0.5) * cw;
        let _ = writeln!(svg, "<line x1=\"{px:.1}\" y1=\"{}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"black\"/>", top + side, top + side + 5.0);
        text(&mut svg, px, top + side + 18.0, "middle", "", &tick_label(*x, x_values));
    }
    for (r, y) in y_values.iter().enumerate().step_by(every(ny)) {
        let py = top + side - (r as f64 + 0.5) * ch;
        let _ = writeln!(svg, "<line x1=\"{}\" y1=\"{py:.1}\" x2=\"{left}\" y2=\"{py:.1}\" stroke=\"black\"/>", left - 5.0);
        text(&mut svg, left - 8.0, py + 4.0, "end", "", &tick_label(*y, y_values));
    }
    text(&mut svg, left + side / 2.0, top + side + 45.0, "middle", "", x_label);
    let (yx, yy) = (left - 55.0, top + side / 2.0);
    text(&mut svg, yx, yy, "middle", &format!(" transform=\"rotate(-90 {yx} {yy})\""), y_label);
    // Colour bar: 50 bands from lo (bottom) to hi (top), ticked at round values.
    let (bx, bw, steps) = (left + side + 30.0, 20.0, 50);
    for k in 0..steps {
        let y = top + side - (k + 1) as f64 * side / steps as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{bx}\" y=\"{y:.2}\" width=\"{bw}\" height=\"{:.2}\" fill=\"{}\"/>",
            side / steps as f64 + 0.3,
            scale_colour((k as f64 + 0.5) / steps as f64)
        );
    }
    let _ = writeln!(svg, "<rect x=\"{bx}\" y=\"{top}\" width=\"{bw}\" height=\"{side}\" fill=\"none\" stroke=\"black\"/>");
    let ticks = nice_ticks(lo, hi, 5);
    for v in &ticks {
        let y = top + side - t(*v) * side;
        let _ = writeln!(svg, "<line x1=\"{}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"black\"/>", bx + bw, bx + bw + 4.0);
        text(&mut svg, bx + bw + 7.0, y + 4.0, "start", "", &tick_label(*v, &ticks));
    }
    let (lx, ly) = (bx + bw + 60.0, top + side / 2.0);
    text(&mut svg, lx, ly, "middle", &format!(" transform=\"rotate(90 {lx} {ly})\""), colour_label);
    svg.push_str("</svg>\n");
    svg
}

/// A line chart of `curves` with x and y axes ticked at round values, point markers, and a legend.
/// The ranges cover every finite point.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, curves: &[Curve]) -> String {
    let (left, top, plot_w, plot_h) = (80.0, 50.0, 480.0, 340.0);
    // Room for the longest legend entry (about 7 px a character at 12 px).
    let legend_w = curves.iter().map(|c| c.name.chars().count()).max().map_or(0.0, |n| 7.0 * n as f64 + 40.0).max(190.0);
    let (width, height) = (left + plot_w + legend_w, top + plot_h + 70.0);
    let all = || curves.iter().flat_map(|c| c.points.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (x0, x1) = finite_range(all().map(|p| p.0)).unwrap_or((0.0, 1.0));
    let (y0, y1) = finite_range(all().map(|p| p.1)).unwrap_or((0.0, 1.0));
    // Pad the y range a little so curves do not run along the frame.
    let pad = 0.05 * (y1 - y0);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let px = |x: f64| left + (x - x0) / (x1 - x0) * plot_w;
    let py = |y: f64| top + plot_h - (y - y0) / (y1 - y0) * plot_h;

    let mut svg = open(width, height);
    text(&mut svg, left + plot_w / 2.0, 28.0, "middle", " font-size=\"16\"", title);
    let x_ticks = nice_ticks(x0, x1, 6);
    for v in &x_ticks {
        let x = px(*v);
        let _ = writeln!(svg, "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#eeeeee\"/>", top + plot_h);
        let _ = writeln!(svg, "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"black\"/>", top + plot_h, top + plot_h + 5.0);
        text(&mut svg, x, top + plot_h + 18.0, "middle", "", &tick_label(*v, &x_ticks));
    }
    let y_ticks = nice_ticks(y0, y1, 6);
    for v in &y_ticks {
        let y = py(*v);
        let _ = writeln!(svg, "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#eeeeee\"/>", left + plot_w);
        let _ = writeln!(svg, "<line x1=\"{}\" y1=\"{y:.1}\" x2=\"{left}\" y2=\"{y:.1}\" stroke=\"black\"/>", left - 5.0);
        text(&mut svg, left - 8.0, y + 4.0, "end", "", &tick_label(*v, &y_ticks));
    }
    let _ = writeln!(svg, "<rect x=\"{left}\" y=\"{top}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"black\"/>");
    text(&mut svg, left + plot_w / 2.0, top + plot_h + 45.0, "middle", "", x_label);
    let (yx, yy) = (left - 55.0, top + plot_h / 2.0);
    text(&mut svg, yx, yy, "middle", &format!(" transform=\"rotate(-90 {yx} {yy})\""), y_label);
    for (k, curve) in curves.iter().enumerate() {
        let c = colour(k);
        let points: Vec<(f64, f64)> =
            curve.points.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).map(|&(x, y)| (px(x), py(y))).collect();
        let path: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(svg, "<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"/>", path.join(" "));
        for (x, y) in points {
            let _ = writeln!(svg, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{c}\"/>");
        }
    }
    let names: Vec<&str> = curves.iter().map(|c| c.name.as_str()).collect();
    legend(&mut svg, left + plot_w + 20.0, top + 10.0, &names);
    svg.push_str("</svg>\n");
    svg
}

/// One bar: a value and the half-width of its interval (drawn as a whisker; NaN draws none).
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub name: String,
    pub value: f64,
    pub interval: f64,
}

/// Horizontal bars, one per row with its name on the left, the value axis ticked at round values
/// and covering every bar with its interval.
pub fn bar_chart(title: &str, value_label: &str, bars: &[Bar]) -> String {
    let label_w = bars.iter().map(|b| b.name.chars().count()).max().map_or(0.0, |n| 7.0 * n as f64 + 20.0).max(120.0);
    let (left, top, plot_w, row_h) = (label_w, 50.0, 420.0, 28.0);
    let plot_h = row_h * bars.len().max(1) as f64;
    // Wide enough for the title (16 px type, about 8.5 px a character), which is centred on the page.
    let title_w = 8.5 * title.chars().count() as f64 + 40.0;
    let (width, height) = ((left + plot_w + 40.0).max(title_w), top + plot_h + 60.0);
    let ends = bars.iter().flat_map(|b| {
        let w = if b.interval.is_finite() { b.interval } else { 0.0 };
        [b.value - w, b.value + w]
    });
    // The axis includes 0, where the bars start.
    let (lo, hi) = finite_range(ends.chain([0.0])).unwrap_or((0.0, 1.0));
    let pad = 0.05 * (hi - lo);
    let (v0, v1) = (if lo < 0.0 { lo - pad } else { 0.0 }, hi + pad);
    let px = |v: f64| left + (v - v0) / (v1 - v0) * plot_w;

    let mut svg = open(width, height);
    text(&mut svg, width / 2.0, 28.0, "middle", " font-size=\"16\"", title);
    let ticks = nice_ticks(v0, v1, 6);
    for v in &ticks {
        let x = px(*v);
        let _ = writeln!(svg, "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#eeeeee\"/>", top + plot_h);
        text(&mut svg, x, top + plot_h + 18.0, "middle", "", &tick_label(*v, &ticks));
    }
    for (k, bar) in bars.iter().enumerate() {
        let y = top + row_h * k as f64;
        text(&mut svg, left - 8.0, y + row_h / 2.0 + 4.0, "end", "", &bar.name);
        if !bar.value.is_finite() {
            continue;
        }
        let (a, b) = (px(bar.value.min(0.0)), px(bar.value.max(0.0)));
        let _ = writeln!(svg, "<rect x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>", y + 5.0, (b - a).max(1.0), row_h - 10.0, colour(k));
        if bar.interval.is_finite() {
            let (l, r, m) = (px(bar.value - bar.interval), px(bar.value + bar.interval), y + row_h / 2.0);
            let _ = writeln!(svg, "<line x1=\"{l:.1}\" y1=\"{m:.1}\" x2=\"{r:.1}\" y2=\"{m:.1}\" stroke=\"black\"/>");
            for e in [l, r] {
                let _ = writeln!(svg, "<line x1=\"{e:.1}\" y1=\"{:.1}\" x2=\"{e:.1}\" y2=\"{:.1}\" stroke=\"black\"/>", m - 5.0, m + 5.0);
            }
        }
    }
    let _ = writeln!(svg, "<rect x=\"{left}\" y=\"{top}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"black\"/>");
    text(&mut svg, left + plot_w / 2.0, top + plot_h + 45.0, "middle", "", value_label);
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every opened element is closed, in order (a cheap well-formedness check without a parser).
    fn balanced(svg: &str) -> bool {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = start + rest[start..].find('>').expect("tag closes");
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name) {
                    return false;
                }
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap_or("").to_string());
            }
        }
        stack.is_empty()
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(nice_ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(nice_ticks(-1.0, 1.0, 4), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        assert_eq!(nice_ticks(3.0, 3.0, 5), vec![3.0]);
        assert!(nice_ticks(f64::NAN, 1.0, 5).is_empty());
        assert_eq!(tick_label(0.6000000000000001, &[0.4, 0.6]), "0.6");
        assert_eq!(tick_label(-0.0, &[0.0, 0.5]), "0.0");
        assert_eq!(tick_label(0.25, &[0.0, 0.25]), "0.25");
        assert_eq!(tick_label(0.1, &[0.0, 0.1]), "0.1");
    }

    #[test]
    fn charts_are_well_formed_and_escape_text() {
        let axes: Vec<String> = ["h-flip", "a<b"].iter().map(|s| s.to_string()).collect();
        let series = [Series { name: "i = [1,0] & more".into(), values: vec![0.9, f64::NAN] }];
        let svg = radar("t", &axes, &series, [0.0, 1.0]);
        assert!(svg.starts_with("<svg") && balanced(&svg), "{svg}");
        assert!(svg.contains("a&lt;b") && svg.contains("&amp; more") && !svg.contains("NaN"));

        let heat = heat_map("h", "i[0] spatial", "i[1] appearance", &[0.0, 0.5, 1.0], &[0.0, 1.0], &[0.1, 0.2, 0.3, 0.4, 0.5, f64::NAN], "similarity");
        assert!(heat.starts_with("<svg") && balanced(&heat), "{heat}");
        assert!(heat.contains("i[0] spatial") && heat.contains("#cccccc"));

        let line = line_chart("l", "t", "similarity", &[Curve { name: "grayscale".into(), points: vec![(0.0, 0.5), (1.0, 0.7)] }]);
        assert!(line.starts_with("<svg") && balanced(&line), "{line}");
        assert_eq!(line.matches("<circle").count(), 2);

        let bars = [
            Bar { name: "learned i <0.5>".into(), value: 52.0, interval: 2.0 },
            Bar { name: "fixed".into(), value: 48.0, interval: f64::NAN },
            Bar { name: "broken".into(), value: f64::NAN, interval: f64::NAN },
        ];
        let chart = bar_chart("b", "test accuracy (%)", &bars);
        assert!(chart.starts_with("<svg") && balanced(&chart) && !chart.contains("NaN"), "{chart}");
        assert!(chart.contains("learned i &lt;0.5&gt;"));
        // Two bars drawn (plus the background and the frame), one whisker with its two end caps.
        assert_eq!(chart.matches("<rect").count(), 4, "{chart}");
        assert_eq!(chart.matches("stroke=\"black\"/>").count(), 3 + 1, "{chart}");
        // A title longer than the plot widens the picture and is centred on it, not cut at its edge.
        let title = "Few-shot accuracy per run (the same episodes when the seed is the same)";
        let wide = bar_chart(title, "accuracy (%)", &bars[..1]);
        let width: f64 = wide.split("width=\"").nth(1).and_then(|w| w.split('"').next()).unwrap().parse().unwrap();
        assert!(width >= 8.5 * title.chars().count() as f64, "{width}");
        assert!(wide.contains(&format!("<text x=\"{:.1}\" y=\"28.0\" text-anchor=\"middle\"", width / 2.0)), "{wide}");
    }

    #[test]
    fn colour_scale_runs_from_dark_to_yellow() {
        assert_eq!(scale_colour(0.0), "#440154");
        assert_eq!(scale_colour(1.0), "#fde725");
        assert_eq!(scale_colour(2.0), "#fde725");
        assert_eq!(scale_colour(f64::NAN), "#cccccc");
    }
}
