//! Pictures of a run, as SVG files (drawn with `plotters`, written atomically):
//!
//! - [`calibration_svg`]: the reliability diagram of an evaluation: mean predicted
//!   `P(a ≻ b)` against the mean label per bin, the diagonal of perfect calibration, the
//!   expected calibration error in the title;
//! - [`curves_svg`]: the training loss per step and the held-out loss over the run (left),
//!   the held-out accuracy on decisive pairs (right).

use crate::error::{PmError, Result};
use crate::eval::EvalResult;
use plotters::prelude::*;
use std::path::Path;

/// The file name of the reliability diagram in a run's directory.
pub const CALIBRATION_SVG: &str = "calibration.svg";
/// The file name of the loss and accuracy curves in a run's directory.
pub const CURVES_SVG: &str = "curves.svg";

pub use rlaif_core::plot::FONT;

/// [`rlaif_core::plot::write_svg`] with this crate's error.
pub fn write_svg(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(
        &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    ) -> rlaif_core::plot::DrawResult,
) -> Result<()> {
    rlaif_core::plot::write_svg(path, size, draw).map_err(|e| match e {
        rlaif_core::plot::PlotError::File(f) => f.into(),
        rlaif_core::plot::PlotError::Draw { path, message } => PmError::Plot { path, message },
    })
}

/// Writes the reliability diagram of `eval` to `path`.
pub fn calibration_svg(eval: &EvalResult, path: &Path) -> Result<()> {
    write_svg(path, (640, 560), |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "Calibration at step {} (ECE {:.3}, {} pairs)",
                    eval.step, eval.ece, eval.pairs
                ),
                (FONT, 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("predicted P(a better) = σ(r_a − r_b)")
            .y_desc("mean label")
            .draw()?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.5)))?
            .label("perfect calibration")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.5)));
        let points: Vec<(f64, f64, usize)> = eval
            .bins
            .iter()
            .filter_map(|b| Some((b.mean_predicted?, b.mean_label?, b.count)))
            .collect();
        let max_count = points.iter().map(|p| p.2).max().unwrap_or(1).max(1);
        chart
            .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), BLUE))?
            .label("model (dot size: predictions in the bin)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
        chart.draw_series(points.iter().map(|&(x, y, n)| {
            let r = 3 + (9 * n / max_count) as i32;
            Circle::new((x, y), r, BLUE.filled())
        }))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// Writes the loss and accuracy curves: `steps` are `(step, training loss)`, `evals` the
/// held-out evaluations in step order.
pub fn curves_svg(steps: &[(usize, f64)], evals: &[EvalResult], path: &Path) -> Result<()> {
    write_svg(path, (1100, 460), |root| {
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(550);
        let last_step = steps
            .iter()
            .map(|s| s.0)
            .chain(evals.iter().map(|e| e.step))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let losses = steps
            .iter()
            .map(|s| s.1)
            .chain(evals.iter().map(|e| e.loss))
            .filter(|x| x.is_finite());
        let top = losses.fold(0.0f64, f64::max).max(1e-3) * 1.1;
        let mut chart = ChartBuilder::on(&left)
            .caption("Loss", (FONT, 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..last_step, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("optimizer step")
            .y_desc("nats per pair")
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                steps.iter().map(|&(s, l)| (s as f64, l)),
                BLUE.mix(0.6),
            ))?
            .label("training (per step)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.mix(0.6)));
        chart
            .draw_series(LineSeries::new(
                evals.iter().map(|e| (e.step as f64, e.loss)),
                RED,
            ))?
            .label("held out")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
        chart.draw_series(
            evals
                .iter()
                .map(|e| Circle::new((e.step as f64, e.loss), 3, RED.filled())),
        )?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;

        let mut chart = ChartBuilder::on(&right)
            .caption("Held-out accuracy (decisive pairs)", (FONT, 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..last_step, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("optimizer step")
            .y_desc("accuracy")
            .draw()?;
        chart.draw_series(LineSeries::new(
            [(0.0, 0.5), (last_step, 0.5)],
            BLACK.mix(0.3),
        ))?;
        let acc: Vec<(f64, f64)> = evals
            .iter()
            .filter_map(|e| Some((e.step as f64, e.accuracy?)))
            .collect();
        chart.draw_series(LineSeries::new(acc.iter().copied(), GREEN))?;
        chart.draw_series(acc.iter().map(|&p| Circle::new(p, 3, GREEN.filled())))?;
        Ok(())
    })
}
