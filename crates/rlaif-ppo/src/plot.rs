//! The picture of a run (`curves.svg`, drawn with `plotters`): the mean score of the
//! rollouts and of the held-out greedy answers against episodes (left), the KL to the
//! reference per response and β (right).

use crate::error::Result;
use crate::train::{IterationLog, SamplesLog};
use plotters::prelude::*;
use rlaif_pm::plot::{FONT, write_svg};
use std::path::Path;

/// The file name of the curves in a run's directory.
pub const CURVES_SVG: &str = "curves.svg";

fn range(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = xs
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.1).max(1e-3);
    (lo - pad, hi + pad)
}

/// Draws the curves of `log` (iterations in order) and `samples` (held-out evaluations;
/// the one at step `s` is placed at the episode count after `s` iterations).
pub fn curves_svg(log: &[IterationLog], samples: &[SamplesLog], path: &Path) -> Result<()> {
    let episodes_at = |step: usize| -> f64 {
        if step == 0 {
            return 0.0;
        }
        log.iter()
            .find(|l| l.step == step)
            .map_or(0.0, |l| l.episode as f64)
    };
    let last = log.iter().map(|l| l.episode as f64).fold(1.0, f64::max);
    write_svg(path, (1100, 460), |root| {
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(550);
        let (lo, hi) = range(
            log.iter()
                .map(|l| l.scores)
                .chain(log.iter().map(|l| l.rlhf_reward))
                .chain(samples.iter().map(|s| s.score_mean)),
        );
        let mut chart = ChartBuilder::on(&left)
            .caption("Reward", (FONT, 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..last, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("episode")
            .y_desc("score")
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                log.iter().map(|l| (l.episode as f64, l.scores)),
                BLUE,
            ))?
            .label("rollouts: objective/scores")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(LineSeries::new(
                log.iter().map(|l| (l.episode as f64, l.rlhf_reward)),
                BLUE.mix(0.4),
            ))?
            .label("objective/rlhf_reward (score − β·KL)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.mix(0.4)));
        chart
            .draw_series(LineSeries::new(
                samples.iter().map(|s| (episodes_at(s.step), s.score_mean)),
                RED,
            ))?
            .label("held-out greedy answers")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
        chart.draw_series(
            samples
                .iter()
                .map(|s| Circle::new((episodes_at(s.step), s.score_mean), 3, RED.filled())),
        )?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        let (lo, hi) = range(log.iter().map(|l| l.kl).chain(std::iter::once(0.0)));
        let mut chart = ChartBuilder::on(&right)
            .caption("KL to the reference", (FONT, 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .right_y_label_area_size(55)
            .build_cartesian_2d(0f64..last, lo..hi)?
            .set_secondary_coord(
                0f64..last,
                0f64..log.iter().map(|l| l.kl_coef).fold(1e-6, f64::max) * 1.2,
            );
        chart
            .configure_mesh()
            .x_desc("episode")
            .y_desc("nats per response")
            .draw()?;
        chart.configure_secondary_axes().y_desc("β").draw()?;
        chart
            .draw_series(LineSeries::new(
                log.iter().map(|l| (l.episode as f64, l.kl)),
                GREEN,
            ))?
            .label("objective/kl")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GREEN));
        chart
            .draw_secondary_series(LineSeries::new(
                log.iter().map(|l| (l.episode as f64, l.kl_coef)),
                BLACK.mix(0.5),
            ))?
            .label("β (right axis)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.5)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })?;
    Ok(())
}
