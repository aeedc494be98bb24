//! SVG line charts of sweep results (plotters' SVG backend).
//!
//! Built without plotters' font features: text goes into the SVG as
//! `<text>` elements for the viewer to render, so no system fonts are
//! needed at run time (and with `ab_glyph` on but no font registered,
//! plotters would refuse to draw text at all).

use anyhow::anyhow;
use plotters::prelude::*;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (x, y) points in data units, in x order.
    pub points: Vec<(f64, f64)>,
}

/// A horizontal reference line (a floor such as a bare memcpy).
#[derive(Debug, Clone)]
pub struct Reference {
    /// Legend text.
    pub label: String,
    /// Its y value in data units.
    pub y: f64,
}

/// How an axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Linear from zero (y) or from the smallest value (x).
    Linear,
    /// Base-2 logarithmic: for quantities that double from point to point.
    Log2,
}

/// What to draw.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Caption above the plot.
    pub title: String,
    /// x axis description with its unit.
    pub x_label: String,
    /// y axis description with its unit.
    pub y_label: String,
    /// x axis scale.
    pub x_scale: Scale,
    /// y axis scale.
    pub y_scale: Scale,
    /// The lines, one per write path.
    pub series: Vec<Series>,
    /// An optional horizontal reference line.
    pub reference: Option<Reference>,
    /// Put the legend at the bottom right (for data that sits high).
    pub legend_low: bool,
}

const SIZE: (u32, u32) = (800, 500);

/// Line colours by series index (colour-blind-safe Okabe–Ito hues).
const COLOURS: &[RGBColor] = &[
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

impl Scale {
    fn to_axis(self, v: f64) -> f64 {
        match self {
            Self::Linear => v,
            Self::Log2 => v.max(f64::MIN_POSITIVE).log2(),
        }
    }

    fn label(self, v: f64) -> String {
        let v = match self {
            Self::Linear => v,
            Self::Log2 => v.exp2(),
        };
        if v.abs() >= 100.0 || v == v.round() {
            format!("{v:.0}")
        } else {
            // Three decimals at most, no trailing zeros: 0.5, 0.125, 2.
            let s = format!("{v:.3}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    }
}

/// The axis range covering `values` (already on the axis scale), with a
/// little room; a linear y axis starts at zero so heights compare.
fn range(values: impl Iterator<Item = f64>, from_zero: bool) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let lo = if from_zero { lo.min(0.0) } else { lo };
    let pad = ((hi - lo) * 0.05).max(1e-9);
    if from_zero {
        lo..hi + pad
    } else {
        lo - pad..hi + pad
    }
}

/// Renders `chart` as an SVG document.
pub fn svg(chart: &Chart) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        draw(&root, chart).map_err(|e| anyhow!("cannot draw the chart {:?}: {e}", chart.title))?;
        root.present()
            .map_err(|e| anyhow!("cannot finish the chart {:?}: {e}", chart.title))?;
    }
    Ok(out)
}

type DrawResult =
    Result<(), DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;

fn draw(root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>, chart: &Chart) -> DrawResult {
    root.fill(&WHITE)?;
    let (xs, ys) = (chart.x_scale, chart.y_scale);
    let points = || chart.series.iter().flat_map(|s| s.points.iter());
    let x_range = range(points().map(|p| xs.to_axis(p.0)), false);
    let y_values = points()
        .map(|p| p.1)
        .chain(chart.reference.iter().map(|r| r.y))
        .map(|y| ys.to_axis(y));
    let y_range = range(y_values, ys == Scale::Linear);
    let mut c = ChartBuilder::on(root)
        .caption(&chart.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.clone(), y_range)?;
    let x_fmt = |v: &f64| xs.label(*v);
    let y_fmt = |v: &f64| ys.label(*v);
    c.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    for (i, s) in chart.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let data: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|&(x, y)| (xs.to_axis(x), ys.to_axis(y)))
            .collect();
        c.draw_series(LineSeries::new(
            data.iter().copied(),
            colour.stroke_width(2),
        ))?
        .label(s.label.as_str())
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        c.draw_series(data.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
    }
    if let Some(r) = &chart.reference {
        let y = ys.to_axis(r.y);
        let grey = RGBColor(110, 110, 110);
        c.draw_series(DashedLineSeries::new(
            [(x_range.start, y), (x_range.end, y)],
            6,
            4,
            grey.stroke_width(1),
        ))?
        .label(r.label.as_str())
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], grey.stroke_width(1)));
    }
    c.configure_series_labels()
        .position(if chart.legend_low {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperLeft
        })
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(y_scale: Scale) -> Chart {
        Chart {
            title: "order sweep".into(),
            x_label: "folio order (4 KiB << order)".into(),
            y_label: "usecs/call (median)".into(),
            x_scale: Scale::Linear,
            y_scale,
            series: vec![
                Series {
                    label: "iomap".into(),
                    points: vec![(0.0, 0.1), (9.0, 0.12)],
                },
                Series {
                    label: "bh-legacy".into(),
                    points: vec![(0.0, 0.2), (9.0, 4.0)],
                },
            ],
            reference: Some(Reference {
                label: "memcpy 1 KiB".into(),
                y: 0.05,
            }),
            legend_low: y_scale == Scale::Log2,
        }
    }

    #[test]
    fn svg_has_axis_labels_legend_and_lines_without_fonts() {
        for scale in [Scale::Linear, Scale::Log2] {
            let s = svg(&chart(scale)).unwrap();
            assert!(s.starts_with("<svg"), "{}", &s[..50]);
            for text in [
                "folio order (4 KiB &lt;&lt; order)",
                "usecs/call (median)",
                "bh-legacy",
                "memcpy 1 KiB",
            ] {
                assert!(s.contains(text), "{text} missing");
            }
            assert!(s.contains("<polyline"), "no lines drawn");
        }
    }

    #[test]
    fn log_axis_labels_are_the_data_values() {
        assert_eq!(Scale::Log2.label(10.0), "1024");
        assert_eq!(Scale::Linear.label(0.25), "0.25");
        assert_eq!(Scale::Linear.label(2.5), "2.5");
    }
}
