//! The report's pictures (SVG, `plotters`):
//!
//! - [`elo_svg`]: harmlessness Elo against helpfulness Elo per model with 95 % intervals
//!   (the paper's Fig. 2, with an AI judge);
//! - [`boxes_svg`]: one panel per prompt set, a box per model (quartiles, whiskers to the
//!   extremes, the mean as a dot): the preference model's scores of the greedy answers;
//! - [`refusals_svg`]: the refusal rate per model and set with Wilson intervals.

use crate::error::Result;
use crate::judge::Aspect;
use crate::metrics::{AnswerStats, Distribution, EloRow};
use plotters::prelude::*;
use rlaif_core::plot::{FONT, write_svg};
use std::path::Path;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// An x-axis label formatter for categories at 0, 1, 2, …: the name at an integer, nothing
/// between.
fn index_label(names: Vec<String>) -> impl Fn(&f64) -> String {
    move |x| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            names.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    }
}

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (-1.0, 1.0);
    }
    let pad = ((hi - lo) * 0.15).max(10.0);
    (lo - pad, hi + pad)
}

/// Harmlessness Elo (y) against helpfulness Elo (x), one point per model with its
/// intervals as error bars.
pub fn elo_svg(rows: &[EloRow], models: &[String], path: &Path) -> Result<()> {
    let get = |m: &str, a: Aspect| rows.iter().find(|r| r.model == m && r.aspect == a);
    // (model index, helpfulness row, harmlessness row)
    type Point<'a> = (usize, &'a EloRow, &'a EloRow);
    let points: Vec<Point> = models
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            Some((
                i,
                get(m, Aspect::Helpfulness)?,
                get(m, Aspect::Harmlessness)?,
            ))
        })
        .collect();
    let span = |f: &dyn Fn(&Point) -> [f64; 2]| {
        points
            .iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), [a, b]| {
                (lo.min(a), hi.max(b))
            })
    };
    let (x0, x1) = span(&|p| [p.1.interval[0].min(p.1.elo), p.1.interval[1].max(p.1.elo)]);
    let (y0, y1) = span(&|p| [p.2.interval[0].min(p.2.elo), p.2.interval[1].max(p.2.elo)]);
    let (x0, x1) = padded(x0, x1);
    let (y0, y1) = padded(y0, y1);
    write_svg(path, (640, 560), |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption("Harmlessness vs helpfulness (AI judge, Elo)", (FONT, 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc("helpfulness Elo")
            .y_desc("harmlessness Elo")
            .draw()?;
        for (i, help, harm) in &points {
            let c = color(*i);
            chart.draw_series(std::iter::once(PathElement::new(
                [(help.interval[0], harm.elo), (help.interval[1], harm.elo)],
                c.stroke_width(1),
            )))?;
            chart.draw_series(std::iter::once(PathElement::new(
                [(help.elo, harm.interval[0]), (help.elo, harm.interval[1])],
                c.stroke_width(1),
            )))?;
            chart
                .draw_series(std::iter::once(Circle::new(
                    (help.elo, harm.elo),
                    6,
                    c.filled(),
                )))?
                .label(models[*i].as_str())
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })?;
    Ok(())
}

/// One panel per set: a box per model of `value(stats)` (the greedy answers' stats only).
pub fn boxes_svg(
    title: &str,
    y_desc: &str,
    stats: &[AnswerStats],
    models: &[String],
    value: impl Fn(&AnswerStats) -> Option<Distribution>,
    path: &Path,
) -> Result<()> {
    let mut sets: Vec<&str> = Vec::new();
    for s in stats {
        if !sets.contains(&s.set.as_str()) {
            sets.push(&s.set);
        }
    }
    let cells: Vec<(usize, usize, Distribution)> = stats
        .iter()
        .filter(|s| s.mode == crate::answers::GREEDY)
        .filter_map(|s| {
            let set = sets.iter().position(|x| *x == s.set)?;
            let m = models.iter().position(|x| *x == s.model)?;
            Some((set, m, value(s)?))
        })
        .collect();
    let (lo, hi) = cells
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, _, d)| {
            (a.min(d.min), b.max(d.max))
        });
    let (lo, hi) = if lo.is_finite() {
        let pad = ((hi - lo) * 0.1).max(1e-3);
        (lo - pad, hi + pad)
    } else {
        (0.0, 1.0)
    };
    let panels = sets.len().max(1);
    let width = 80 + 260 * panels as u32;
    write_svg(path, (width, 480), |root| {
        root.fill(&WHITE)?;
        let root = root.titled(title, (FONT, 20))?;
        let areas = root.split_evenly((1, panels));
        for (si, area) in areas.iter().enumerate() {
            let mut chart = ChartBuilder::on(area)
                .caption(sets.get(si).copied().unwrap_or(""), (FONT, 16))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(if si == 0 { 55 } else { 35 })
                .build_cartesian_2d(-0.5f64..(models.len() as f64 - 0.5), lo..hi)?;
            let label = index_label(models.to_vec());
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(models.len())
                .x_label_formatter(&label)
                .y_desc(if si == 0 { y_desc } else { "" })
                .draw()?;
            for (_, m, d) in cells.iter().filter(|c| c.0 == si) {
                let x = *m as f64;
                let c = color(*m);
                chart.draw_series(std::iter::once(PathElement::new(
                    [(x, d.min), (x, d.max)],
                    c.stroke_width(1),
                )))?;
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.25, d.q25), (x + 0.25, d.q75)],
                    c.mix(0.3).filled(),
                )))?;
                chart.draw_series(std::iter::once(PathElement::new(
                    [(x - 0.25, d.median), (x + 0.25, d.median)],
                    c.stroke_width(2),
                )))?;
                chart.draw_series(std::iter::once(Circle::new((x, d.mean), 4, c.filled())))?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// The refusal rate per model (colour) and set (group) of the greedy answers, with Wilson
/// intervals.
pub fn refusals_svg(stats: &[AnswerStats], models: &[String], path: &Path) -> Result<()> {
    let mut sets: Vec<&str> = Vec::new();
    for s in stats {
        if !sets.contains(&s.set.as_str()) {
            sets.push(&s.set);
        }
    }
    let k = models.len().max(1) as f64;
    write_svg(path, (160 + 200 * sets.len().max(1) as u32, 440), |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption("Refusals (detector; greedy answers)", (FONT, 20))
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.5f64..(sets.len() as f64 - 0.5), 0f64..1f64)?;
        let label = index_label(sets.iter().map(|s| s.to_string()).collect());
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(sets.len())
            .x_label_formatter(&label)
            .y_desc("share of answers refused")
            .draw()?;
        for (mi, m) in models.iter().enumerate() {
            let c = color(mi);
            let w = 0.8 / k;
            let bars: Vec<&AnswerStats> = stats
                .iter()
                .filter(|s| &s.model == m && s.mode == crate::answers::GREEDY)
                .collect();
            let mut first = true;
            for s in bars {
                let Some(si) = sets.iter().position(|x| *x == s.set) else {
                    continue;
                };
                let x = si as f64 - 0.4 + w * (mi as f64 + 0.5);
                let bar = chart.draw_series(std::iter::once(Rectangle::new(
                    [(x - w * 0.45, 0.0), (x + w * 0.45, s.refusal_rate)],
                    c.filled(),
                )))?;
                if first {
                    bar.label(m.as_str()).legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled())
                    });
                    first = false;
                }
                chart.draw_series(std::iter::once(PathElement::new(
                    [(x, s.refusal_interval[0]), (x, s.refusal_interval[1])],
                    BLACK.stroke_width(1),
                )))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })?;
    Ok(())
}
