//! Small bar charts for the status page, drawn on the server as inline SVG (no
//! JavaScript, no inline styles: colours come from the stylesheet through classes).
//! Only numbers and escaped day labels go into the markup.

use std::fmt::Write;

use crate::DailySeries;

/// Most bars drawn (the newest are kept).
pub const MAX_BARS: usize = 62;
const WIDTH: u64 = 300;
const HEIGHT: u64 = 100;
/// Room under the bars for the first/last day labels.
const LABELS: u64 = 14;
/// Room above the bars for the maximum's label.
const TOP: u64 = 13;
/// Widest slot of one bar (few points do not make huge blocks).
const MAX_SLOT: u64 = 25;

/// Escape text for SVG/HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
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

/// The chart of `series` as an `<svg>` element; a short text when it has no points.
pub fn bar_chart(series: &DailySeries) -> String {
    let skip = series.points.len().saturating_sub(MAX_BARS);
    let points = &series.points[skip..];
    if points.is_empty() {
        return String::from("<p class=\"muted\">No data yet.</p>");
    }
    let max = points.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let n = points.len() as u64;
    let slot = (WIDTH / n.max(1)).min(MAX_SLOT);
    let bar = slot.saturating_sub(1).max(1);
    let plot = HEIGHT - LABELS;
    let tallest = plot - TOP;
    let unit = escape(&series.unit);
    let last_x = (n * slot).max(WIDTH / 2);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        escape(&series.title)
    );
    for (i, (day, value)) in points.iter().enumerate() {
        // u128 keeps value × height from overflowing on huge values.
        let h = ((u128::from(*value) * u128::from(tallest)) / u128::from(max)) as u64;
        let h = if *value > 0 { h.max(1) } else { 0 };
        let x = i as u64 * slot;
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{h}\">\
             <title>{}: {value} {unit}</title></rect>",
            plot - h,
            escape(day)
        );
    }
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"0\" y1=\"{plot}\" x2=\"{WIDTH}\" y2=\"{plot}\"/>\
         <text class=\"label\" x=\"0\" y=\"{HEIGHT}\">{}</text>\
         <text class=\"label\" x=\"{last_x}\" y=\"{HEIGHT}\" text-anchor=\"end\">{}</text>\
         <text class=\"label\" x=\"0\" y=\"9\">max {max} {unit}</text>\
         </svg>",
        escape(&points[0].0),
        escape(&points[points.len() - 1].0),
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: Vec<(String, u64)>) -> DailySeries {
        DailySeries {
            title: "<b>msgs</b>".into(),
            unit: "\"x\"".into(),
            points,
        }
    }

    #[test]
    fn empty_and_escaped_and_huge() {
        assert!(!bar_chart(&series(vec![])).contains("<svg"));
        let svg = bar_chart(&series(vec![
            ("<script>".into(), u64::MAX),
            ("2026-01-02".into(), 0),
        ]));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(!svg.contains("<script>") && !svg.contains("<b>"));
        assert!(svg.contains("&lt;script&gt;"));
        assert_eq!(svg.matches("<rect").count(), 2);
        let many: Vec<_> = (0..500).map(|i| (format!("d{i}"), i)).collect();
        assert_eq!(bar_chart(&series(many)).matches("<rect").count(), MAX_BARS);
    }
}
