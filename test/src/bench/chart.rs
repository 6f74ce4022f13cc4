//! The chart of `docs/performance.md`: median cold start (with min–p95
//! whiskers) and memory per running container, every kind side by side.

use std::path::Path;

use plotters::prelude::*;

use super::report::Report;
use super::stats::Summary;

const COLORS: [RGBColor; 4] = [
    RGBColor(120, 120, 120), // the runc baseline
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

/// Draws the chart of `report` as an SVG file at `path`.
pub fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(480);

    let starts: Vec<(String, Summary)> = report
        .cold_start
        .iter()
        .filter_map(|s| Some((s.kind.clone(), Summary::of(&s.ms)?)))
        .collect();
    let top = starts.iter().map(|(_, s)| s.p95).fold(1.0, f64::max) * 1.15;
    bars(
        &left,
        "Cold start, ctr run --rm (median, min-p95)",
        "ms",
        &starts
            .iter()
            .map(|(k, s)| (k.clone(), s.median, Some((s.min, s.p95))))
            .collect::<Vec<_>>(),
        top,
    )?;

    let memory: Vec<Bar> = report
        .memory
        .iter()
        .map(|m| (m.kind.clone(), m.mib_per_container(), None))
        .collect();
    let top = memory.iter().map(|m| m.1).fold(1.0, f64::max) * 1.15;
    bars(
        &right,
        "Memory per running container (PSS)",
        "MiB",
        &memory,
        top,
    )?;
    root.present().map_err(err)?;
    Ok(())
}

type Bar = (String, f64, Option<(f64, f64)>);

fn bars(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    data: &[Bar],
    top: f64,
) -> anyhow::Result<()> {
    let n = data.len().max(1) as i32;
    let labels: Vec<String> = data.iter().map(|d| d.0.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(unit)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(err)?;
    for (i, (_, value, range)) in data.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(
                Histogram::vertical(&chart)
                    .style(color.filled())
                    .margin(30)
                    .data([(i as i32, *value)]),
            )
            .map_err(err)?;
        if let Some((lo, hi)) = range {
            chart
                .draw_series([ErrorBar::new_vertical(
                    SegmentValue::CenterOf(i as i32),
                    *lo,
                    *value,
                    *hi,
                    BLACK.stroke_width(2),
                    12,
                )])
                .map_err(err)?;
        }
        chart
            .draw_series([Text::new(
                format!("{value:.1}"),
                (
                    SegmentValue::CenterOf(i as i32),
                    range.map_or(*value, |r| r.1) + top * 0.06,
                ),
                ("sans-serif", 14),
            )])
            .map_err(err)?;
    }
    Ok(())
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}
