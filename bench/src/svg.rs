//! Hand-written SVG plots (`--svg DIR`): throughput over time and the latency CDF. No plotting
//! crate: a polyline, axes, a few tick labels.

use std::fmt::Write;

use hdrhistogram::Histogram;

const W: f64 = 640.0;
const H: f64 = 360.0;
const MARGIN: f64 = 50.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A line chart of `(x, y)` points. Non-finite points are skipped.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, pts: &[(f64, f64)]) -> String {
    let pts: Vec<(f64, f64)> = pts
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let max_x = pts.iter().map(|p| p.0).fold(0.0f64, f64::max).max(1e-9);
    let max_y = pts.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-9);
    let (pw, ph) = (W - 2.0 * MARGIN, H - 2.0 * MARGIN);
    let sx = |x: f64| MARGIN + x / max_x * pw;
    let sy = |y: f64| H - MARGIN - y / max_y * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    let _ = write!(
        s,
        r#"<path d="M{MARGIN} {MARGIN} V{} H{}" fill="none" stroke="black"/>"#,
        H - MARGIN,
        W - MARGIN
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{:.3}</text><text x="{}" y="{}" text-anchor="middle">{:.3}</text>"#,
            MARGIN - 4.0,
            sy(f * max_y) + 4.0,
            f * max_y,
            sx(f * max_x),
            H - MARGIN + 14.0,
            f * max_x
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        W / 2.0,
        H - 10.0,
        esc(x_label)
    );
    let _ = write!(
        s,
        r#"<text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>"#,
        H / 2.0,
        H / 2.0,
        esc(y_label)
    );
    let mut points = String::new();
    for (x, y) in &pts {
        let _ = write!(points, "{:.1},{:.1} ", sx(*x), sy(*y));
    }
    let _ = write!(
        s,
        r#"<polyline points="{}" fill="none" stroke="steelblue" stroke-width="2"/>"#,
        points.trim_end()
    );
    s.push_str("</svg>\n");
    s
}

/// Throughput (MB/s) per one-second sample.
pub fn throughput(samples: &[(f64, f64)]) -> String {
    line_chart("Throughput", "time (s)", "MB/s", samples)
}

/// The CDF of a latency histogram in µs (x: latency in ms, y: fraction ≤ x).
pub fn latency_cdf(title: &str, h: &Histogram<u64>) -> String {
    let mut pts = vec![(0.0, 0.0)];
    if !h.is_empty() {
        let n = h.len() as f64;
        let mut seen = 0u64;
        for v in h.iter_recorded() {
            seen += v.count_at_value();
            pts.push((v.value_iterated_to() as f64 / 1000.0, seen as f64 / n));
        }
    }
    line_chart(title, "latency (ms)", "fraction of cells", &pts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that tags nest and close and attributes are quoted: enough to catch a broken
    /// hand-written document.
    fn well_formed(doc: &str) -> Result<usize, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = doc;
        let mut elements = 0;
        while let Some(i) = rest.find('<') {
            let j = rest[i..].find('>').ok_or("unclosed tag")? + i;
            let tag = &rest[i + 1..j];
            if !tag.matches('"').count().is_multiple_of(2) {
                return Err(format!("unbalanced quotes in <{tag}>"));
            }
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or("close without open")?;
                if open != name {
                    return Err(format!("</{name}> closes <{open}>"));
                }
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap_or("").to_string());
                elements += 1;
            } else {
                elements += 1;
            }
            let text = &rest[j + 1..rest[j + 1..].find('<').map_or(rest.len(), |k| k + j + 1)];
            if text.contains('&') && !text.contains("&amp;") && !text.contains("&lt;") {
                return Err("raw & in text".into());
            }
            rest = &rest[j + 1..];
        }
        if stack.is_empty() {
            Ok(elements)
        } else {
            Err(format!("unclosed {stack:?}"))
        }
    }

    #[test]
    fn charts_are_well_formed_svg() {
        let t = throughput(&[(1.0, 10.0), (2.0, 12.5), (3.0, f64::NAN)]);
        assert!(t.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(well_formed(&t).unwrap() > 5);
        assert!(t.contains("<polyline points=\""));
        let mut h = crate::stats::new_histogram();
        for v in [100u64, 200, 300, 5000] {
            h.record(v).unwrap();
        }
        let c = latency_cdf("a <b> & c", &h);
        well_formed(&c).unwrap();
        assert!(c.contains("a &lt;b&gt; &amp; c"));
        // Empty inputs still give a valid document.
        well_formed(&throughput(&[])).unwrap();
        well_formed(&latency_cdf("x", &crate::stats::new_histogram())).unwrap();
        assert!(well_formed("<svg><g></svg>").is_err());
    }
}
