//! Charts drawn on the server as inline SVG: no script and no chart library to ship, and the
//! page reads the same with scripts off. Each chart is an image with a text label for screen
//! readers (its latest value and its peak); the line is styled by the stylesheet, so it follows
//! the light or dark theme.

use crate::metrics::history::MINUTES;
use maud::{Markup, html};
use std::fmt::Write as _;

/// Height of the drawing in its own units; the width is one unit per minute.
const HEIGHT: f64 = 100.0;

/// The `points` of each unbroken run of `values` (a `None` breaks the line), right-aligned on a
/// window of [`MINUTES`] and scaled so `peak` touches the top. A lone value is drawn as a short
/// level stroke ending at its minute, so the first minute after a start shows too.
fn runs(values: &[Option<f64>], peak: f64) -> Vec<String> {
    let offset = MINUTES.saturating_sub(values.len());
    let mut runs = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    let mut finish = |run: &mut Vec<(f64, f64)>| {
        if let [(x, y)] = run[..] {
            run.insert(0, (x - 1.0, y));
        }
        let mut points = String::new();
        for (x, y) in run.drain(..) {
            let _ = write!(points, "{x:.1},{y:.1} ");
        }
        runs.push(points);
    };
    for (i, value) in values.iter().enumerate() {
        match value {
            Some(value) => {
                let y = HEIGHT - value / peak * (HEIGHT - 4.0) - 2.0;
                current.push(((offset + i) as f64, y));
            }
            None if !current.is_empty() => finish(&mut current),
            None => {}
        }
    }
    if !current.is_empty() {
        finish(&mut current);
    }
    runs
}

/// A value as a label shows it: whole numbers plainly, others to two significant places.
pub(super) fn number(value: f64) -> String {
    if value.fract() == 0.0 || value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// The drawing of `values` (oldest first, one a minute), `class` naming its size.
fn drawing(class: &str, label: &str, values: &[Option<f64>]) -> Markup {
    let peak = values
        .iter()
        .flatten()
        .copied()
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let width = (MINUTES - 1) as f64;
    html! {
        svg class=(class) viewBox={ "0 0 " (width) " " (HEIGHT) } preserveAspectRatio="none" role="img" aria-label=(label) {
            line.baseline x1="0" y1=(HEIGHT - 1.0) x2=(width) y2=(HEIGHT - 1.0) vector-effect="non-scaling-stroke" {}
            @for points in runs(values, peak) {
                polyline.line points=(points) vector-effect="non-scaling-stroke" {}
            }
        }
    }
}

/// A chart of the last hour: its title, latest value and peak above the drawing.
pub(super) fn chart(
    title: &str,
    unit: &str,
    values: &[Option<f64>],
    show: fn(f64) -> String,
) -> Markup {
    let latest = values.last().copied().flatten();
    let peak = values
        .iter()
        .flatten()
        .copied()
        .fold(None, |peak: Option<f64>, v| {
            Some(peak.map_or(v, |p| p.max(v)))
        });
    let said = |value: Option<f64>| {
        value.map_or_else(|| "none".to_string(), |v| format!("{}{unit}", show(v)))
    };
    let label = format!(
        "{title} over the last hour: now {}, peak {}",
        said(latest),
        said(peak)
    );
    html! {
        figure.chart {
            figcaption {
                span.title { (title) }
                " "
                span.latest { (said(latest)) }
                " "
                span.muted { "peak " (said(peak)) }
            }
            (drawing("chart", &label, values))
            div.axis aria-hidden="true" { span { "an hour ago" } span { "now" } }
        }
    }
}

/// A small line with no axes, for a table cell.
pub(super) fn sparkline(label: &str, values: &[Option<f64>]) -> Markup {
    drawing("spark", label, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_breaks_the_line_and_the_peak_touches_the_top() {
        let runs = runs(&[Some(1.0), Some(2.0), None, Some(2.0)], 2.0);
        assert_eq!(runs, ["56.0,50.0 57.0,2.0 ", "58.0,2.0 59.0,2.0 "]);
    }

    #[test]
    fn labels_read_as_numbers() {
        assert_eq!(number(12.0), "12");
        assert_eq!(number(0.85), "0.85");
        assert_eq!(number(37.25), "37.2");
        assert_eq!(number(1234.5), "1234");
    }

    #[test]
    fn a_chart_says_its_latest_value_and_peak() {
        let markup = chart(
            "Requests per minute",
            "",
            &[Some(3.0), Some(7.0), Some(5.0)],
            number,
        )
        .into_string();
        assert!(markup.contains("now 5, peak 7"), "{markup}");
        let empty = chart("p95 latency", " ms", &[None], number).into_string();
        assert!(empty.contains("now none, peak none"), "{empty}");
    }
}
