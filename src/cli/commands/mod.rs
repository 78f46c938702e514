//! The subcommands, one file each.

pub mod chat;
pub mod convert;
pub mod eval;
pub mod label;
pub mod pairs;
pub mod pipeline;
pub mod ppo;
pub mod revise;
pub mod sample;
pub mod score;
pub mod sft;
pub mod train_pm;

use serde::Serialize;
use std::path::PathBuf;

/// The flags every subcommand has.
#[derive(clap::Args, Serialize, Debug, Default)]
pub struct Common {
    /// A TOML file with the same keys as the flags (in a `[<subcommand>]` table or at the
    /// top level); flags given here win.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// A Hugging Face model directory or a .gguf file (default: SmolLM2-135M-Instruct,
    /// fetched on first use).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// Seed of everything random in the stage.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// `FILE` or `FILE:WEIGHT` (a file and its weight, default 1) of a repeated `flag`.
pub fn file_and_weight(flag: &str, spec: &str) -> anyhow::Result<(PathBuf, f64)> {
    if let Some((file, w)) = spec.rsplit_once(':')
        && let Ok(w) = w.parse::<f64>()
    {
        anyhow::ensure!(
            w.is_finite() && w > 0.0,
            "{flag} {spec}: the weight must be finite and positive"
        );
        return Ok((PathBuf::from(file), w));
    }
    Ok((PathBuf::from(spec), 1.0))
}

#[cfg(test)]
mod tests {
    use super::file_and_weight;
    use std::path::PathBuf;

    #[test]
    fn files_take_an_optional_weight() {
        let f = |s| file_and_weight("--comparisons", s);
        assert_eq!(f("ai.jsonl").unwrap(), (PathBuf::from("ai.jsonl"), 1.0));
        assert_eq!(
            f("runs/h.jsonl:2.5").unwrap(),
            (PathBuf::from("runs/h.jsonl"), 2.5)
        );
        // A colon that is not followed by a number belongs to the path.
        assert_eq!(
            f("C:/data/x.jsonl").unwrap(),
            (PathBuf::from("C:/data/x.jsonl"), 1.0)
        );
        for bad in ["a.jsonl:0", "a.jsonl:-1", "a.jsonl:NaN", "a.jsonl:inf"] {
            let e = f(bad).unwrap_err().to_string();
            assert!(
                e.contains("finite and positive") && e.contains("--comparisons"),
                "{bad}: {e}"
            );
        }
    }
}
