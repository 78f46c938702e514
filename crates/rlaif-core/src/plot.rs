//! SVG pictures drawn with `plotters` and written atomically: the one helper every stage's
//! pictures go through (the PM's calibration and curves, PPO's curves, the evaluation's
//! Elo and score plots). Behind the `plot` feature.

use crate::fs::{FileError, write_atomic};
use plotters::coord::Shift;
use plotters::prelude::{DrawingArea, IntoDrawingArea, SVGBackend};
use std::path::{Path, PathBuf};

/// The font family of every picture.
pub const FONT: &str = "sans-serif";

/// A picture that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Drawing failed (plotters' error, as text).
    #[error("{}: drawing failed: {message}", path.display())]
    Draw {
        /// The SVG file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The file could not be written.
    #[error(transparent)]
    File(#[from] FileError),
}

/// What a drawing function returns.
pub type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Draws into an SVG string of `size` pixels with `draw`, then writes it to `path`
/// atomically.
pub fn write_svg(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult,
) -> Result<(), PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(&root)
            .and_then(|()| root.present().map_err(Into::into))
            .map_err(|e| PlotError::Draw {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
    }
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}
