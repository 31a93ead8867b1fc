//! The backtest's two charts as SVG: the calibration chart of the BTYD
//! literature (mean holdout purchases by calibration repeat purchases,
//! actual against each predictor) and the decile lift of predicted value.

use std::path::Path;

use anyhow::{Result, anyhow};
use patron_score::{CalibrationRow, PredictionQuality};
use plotters::prelude::*;

const SIZE: (u32, u32) = (760, 440);
const COLOURS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];
const ACTUAL: RGBColor = RGBColor(20, 20, 20);

type Judgement = (String, PredictionQuality, Vec<CalibrationRow>);

fn drawing_error(path: &Path, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("cannot draw {}: {e}", path.display())
}

/// Mean holdout purchases per calibration repeat count: actual (black) and each predictor.
pub(super) fn calibration(path: &Path, judgements: &[Judgement]) -> Result<()> {
    draw_calibration(path, judgements).map_err(|e| drawing_error(path, e))
}

fn draw_calibration(path: &Path, judgements: &[Judgement]) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let Some((_, _, actual_table)) = judgements.first() else { return Ok(()) };
    let last = actual_table.len().saturating_sub(1) as f64;
    let top = judgements
        .iter()
        .flat_map(|(_, _, t)| t.iter().flat_map(|r| [r.expected_orders, r.actual_orders]))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(0.1)
        * 1.1;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Holdout purchases by calibration repeat purchases", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..last, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc(format!("repeat purchases in the calibration period ({} = {} or more)", last as u32, last as u32))
        .y_desc("mean purchases per customer in the holdout")
        .x_labels(actual_table.len())
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    let points = |t: &[CalibrationRow], pick: fn(&CalibrationRow) -> f64| -> Vec<(f64, f64)> {
        t.iter().filter(|r| r.customers > 0).map(|r| (f64::from(r.calibration_repeats), pick(r))).collect()
    };
    chart
        .draw_series(LineSeries::new(points(actual_table, |r| r.actual_orders), ACTUAL.stroke_width(3)))?
        .label("actual")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], ACTUAL.stroke_width(3)));
    for (i, (name, _, table)) in judgements.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(points(table, |r| r.expected_orders), colour.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Lift of each decile of predicted value (1 = random), one line per predictor.
pub(super) fn decile_lift(path: &Path, judgements: &[Judgement]) -> Result<()> {
    draw_decile_lift(path, judgements).map_err(|e| drawing_error(path, e))
}

fn draw_decile_lift(path: &Path, judgements: &[Judgement]) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let top = judgements
        .iter()
        .flat_map(|(_, q, _)| q.decile_lift.iter().map(|d| d.lift))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Holdout revenue lift by decile of predicted value", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(1.0..10.0, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("decile (1 = highest predicted value)")
        .y_desc("share of holdout revenue / share of customers")
        .x_labels(10)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    chart.draw_series(LineSeries::new([(1.0, 1.0), (10.0, 1.0)], BLACK.mix(0.4).stroke_width(1)))?;
    for (i, (name, quality, _)) in judgements.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = quality.decile_lift.iter().map(|d| (f64::from(d.decile), d.lift)).collect();
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
