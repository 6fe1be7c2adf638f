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

/// The chart of `series` as an `<svg>` element, or `None` when there is nothing to draw
/// (no points, or only zeros: issue 16, the page says so in words instead of drawing an
/// empty plot under a made-up scale). `today` (`YYYY-MM-DD`) marks the bar of the day
/// that is not over yet; `value` writes a figure with its unit.
pub fn bar_chart(
    series: &DailySeries,
    today: &str,
    value: &dyn Fn(u64) -> String,
) -> Option<String> {
    let skip = series.points.len().saturating_sub(MAX_BARS);
    let points = &series.points[skip..];
    let max = points.iter().map(|(_, v)| *v).max().unwrap_or(0);
    if max == 0 {
        return None;
    }
    let n = points.len() as u64;
    let slot = (WIDTH / n.max(1)).min(MAX_SLOT);
    let bar = slot.saturating_sub(1).max(1);
    let plot = HEIGHT - LABELS;
    let tallest = plot - TOP;
    let last_x = (n * slot).max(WIDTH / 2);
    let day_label = |day: &str| {
        if day == today {
            String::from("today")
        } else {
            escape(day)
        }
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        escape(&series.title)
    );
    for (i, (day, v)) in points.iter().enumerate() {
        // u128 keeps value × height from overflowing on huge values.
        let h = ((u128::from(*v) * u128::from(tallest)) / u128::from(max)) as u64;
        let h = if *v > 0 { h.max(1) } else { 0 };
        let x = i as u64 * slot;
        let so_far = if day == today { " so far" } else { "" };
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{h}\">\
             <title>{}: {}{so_far}</title></rect>",
            plot - h,
            day_label(day),
            escape(&value(*v)),
        );
    }
    let _ = write!(
        svg,
        "<line class=\"axis\" x1=\"0\" y1=\"{plot}\" x2=\"{WIDTH}\" y2=\"{plot}\"/>\
         <text class=\"label\" x=\"0\" y=\"{HEIGHT}\">{}</text>",
        day_label(&points[0].0),
    );
    // One day has one label, not the same date at both ends.
    if points.len() > 1 {
        let _ = write!(
            svg,
            "<text class=\"label\" x=\"{last_x}\" y=\"{HEIGHT}\" text-anchor=\"end\">{}</text>",
            day_label(&points[points.len() - 1].0),
        );
    }
    let _ = write!(
        svg,
        "<text class=\"label\" x=\"0\" y=\"9\">max {}</text></svg>",
        escape(&value(max)),
    );
    Some(svg)
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

    fn plain(v: u64) -> String {
        format!("{v} \"x\"")
    }

    #[test]
    fn empty_and_escaped_and_huge() {
        assert_eq!(bar_chart(&series(vec![]), "2026-01-02", &plain), None);
        let svg = bar_chart(
            &series(vec![
                ("<script>".into(), u64::MAX),
                ("2026-01-02".into(), 0),
            ]),
            "2026-01-03",
            &plain,
        )
        .unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(!svg.contains("<script>") && !svg.contains("<b>"));
        assert!(svg.contains("&lt;script&gt;") && svg.contains("&quot;x&quot;"));
        assert_eq!(svg.matches("<rect").count(), 2);
        let many: Vec<_> = (0..500).map(|i| (format!("d{i}"), i)).collect();
        let svg = bar_chart(&series(many), "d499", &plain).unwrap();
        assert_eq!(svg.matches("<rect").count(), MAX_BARS);
    }

    /// Issue 16: no plot under a made-up scale ("max 1") when nothing was counted; one
    /// day has one label; today's bar says it is today so far; figures in their unit.
    #[test]
    fn zeros_draw_nothing_and_today_is_marked() {
        let zeros = series(vec![("2026-01-01".into(), 0), ("2026-01-02".into(), 0)]);
        assert_eq!(bar_chart(&zeros, "2026-01-02", &plain), None);
        let one = bar_chart(
            &series(vec![("2026-01-02".into(), 1500)]),
            "2026-01-02",
            &|v| format!("{v} B"),
        )
        .unwrap();
        assert_eq!(
            one.matches("<text").count(),
            2,
            "one day label and the maximum: {one}"
        );
        assert!(one.contains(">today</text>"), "{one}");
        assert!(one.contains("<title>today: 1500 B so far</title>"), "{one}");
        assert!(one.contains(">max 1500 B</text>"), "{one}");
        let two = bar_chart(
            &series(vec![("2026-01-01".into(), 3), ("2026-01-02".into(), 0)]),
            "2026-01-02",
            &plain,
        )
        .unwrap();
        assert!(
            two.contains(">2026-01-01</text>") && two.contains(">today</text>"),
            "{two}"
        );
        assert!(
            two.contains("<title>2026-01-01: 3 &quot;x&quot;</title>"),
            "{two}"
        );
    }
}
