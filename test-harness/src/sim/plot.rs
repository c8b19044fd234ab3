//! Plots as standalone SVG: line charts with axes, ticks and a legend.

use std::fmt::Write as _;

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// One named line.
#[derive(Debug)]
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if v <= step * magnitude {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// A line chart; `step` draws each series as steps (for histograms).
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>], step: bool) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max) = (0f64, 0f64);
    let mut x_min = f64::INFINITY;
    for &(x, y) in all {
        x_max = x_max.max(x);
        x_min = x_min.min(x);
        y_max = y_max.max(y);
    }
    if !x_min.is_finite() {
        x_min = 0.0;
    }
    let x_min = x_min.min(0.0);
    let x_max = nice_max(x_max.max(x_min + 1e-9));
    let y_max = nice_max(y_max);
    let px = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - y / y_max * (H - TOP - BOTTOM);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    for i in 0..=5 {
        let fx = x_min + (x_max - x_min) * f64::from(i) / 5.0;
        let fy = y_max * f64::from(i) / 5.0;
        let _ = write!(
            svg,
            r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{bottom}" stroke="#eee"/><text x="{x}" y="{ty}" text-anchor="middle">{fx}</text><line x1="{LEFT}" y1="{y}" x2="{right}" y2="{y}" stroke="#eee"/><text x="{tx}" y="{y2}" text-anchor="end">{fy}</text>"##,
            x = px(fx),
            top = TOP,
            bottom = H - BOTTOM,
            ty = H - BOTTOM + 16.0,
            fx = format_tick(fx),
            y = py(fy),
            right = W - RIGHT,
            tx = LEFT - 6.0,
            y2 = py(fy) + 4.0,
            fy = format_tick(fy)
        );
    }
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}" stroke="black"/><text x="{cx}" y="{xl}" text-anchor="middle">{xlab}</text><text x="16" y="{cy}" text-anchor="middle" transform="rotate(-90 16 {cy})">{ylab}</text>"##,
        b = H - BOTTOM,
        r = W - RIGHT,
        cx = (LEFT + W - RIGHT) / 2.0,
        xl = H - 10.0,
        xlab = escape(x_label),
        cy = (TOP + H - BOTTOM) / 2.0,
        ylab = escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut path = String::new();
        let mut last_y = None;
        for &(x, y) in &s.points {
            if step {
                if let Some(ly) = last_y {
                    let _ = write!(path, "{:.1},{:.1} ", px(x), py(ly));
                }
            }
            let _ = write!(path, "{:.1},{:.1} ", px(x), py(y));
            last_y = Some(y);
        }
        let _ = write!(svg, r#"<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{path}"/>"#);
        let ly = TOP + 14.0 + 16.0 * i as f64;
        let _ = write!(
            svg,
            r#"<rect x="{lx}" y="{ry}" width="12" height="4" fill="{colour}"/><text x="{tx}" y="{ty}">{name}</text>"#,
            lx = W - RIGHT - 170.0,
            ry = ly - 4.0,
            tx = W - RIGHT - 152.0,
            ty = ly + 2.0,
            name = escape(s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn format_tick(v: f64) -> String {
    if v.abs() >= 1000.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_well_formed_svg_with_every_series() {
        let svg = line_chart(
            "t <1>",
            "x",
            "y",
            &[Series { name: "a", points: vec![(0.0, 0.0), (1.0, 2.0)] }, Series { name: "b", points: vec![] }],
            true,
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("t &lt;1&gt;"));
    }
}
