//! The KL coefficient β: fixed, or adapted to a target KL (Ziegler et al. 2019, §2.2).

use crate::config::AdaptiveKl;
use serde::{Deserialize, Serialize};

/// β and how it moves; saved in every checkpoint (a resumed run continues with the β it
/// had reached).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KlController {
    /// The current β.
    pub value: f64,
    /// The controller's settings (`None`: β stays fixed).
    pub adaptive: Option<AdaptiveKl>,
}

impl KlController {
    /// A controller starting at `beta`.
    pub fn new(beta: f64, adaptive: Option<AdaptiveKl>) -> Self {
        Self {
            value: beta,
            adaptive,
        }
    }

    /// After an iteration of `episodes` responses whose KL to the reference (nats per
    /// response) was `kl`: Ziegler et al. 2019, §2.2 (and TRL's former
    /// `AdaptiveKLController`): `e = clip(kl / target − 1, −0.2, 0.2)`,
    /// `β ← β · (1 + e · episodes / horizon)`. A fixed β does not move; a non-finite `kl`
    /// leaves β as it is.
    pub fn update(&mut self, kl: f64, episodes: usize) {
        if let Some(a) = self.adaptive
            && kl.is_finite()
        {
            let error = (kl / a.target - 1.0).clamp(-0.2, 0.2);
            self.value *= 1.0 + error * episodes as f64 / a.horizon;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adaptive_controller_follows_its_formula_and_a_fixed_one_does_not_move() {
        let a = AdaptiveKl {
            target: 6.0,
            horizon: 10_000.0,
        };
        let mut c = KlController::new(0.1, Some(a));
        // KL 3 = half the target: error −0.5, clipped to −0.2; 512 episodes.
        c.update(3.0, 512);
        let want = 0.1 * (1.0 - 0.2 * 512.0 / 10_000.0);
        assert!((c.value - want).abs() < 1e-15, "{} vs {want}", c.value);
        // KL 6.6: error +0.1, inside the clip.
        let before = c.value;
        c.update(6.6, 100);
        let want = before * (1.0 + (6.6 / 6.0 - 1.0) * 100.0 / 10_000.0);
        assert!((c.value - want).abs() < 1e-15);
        assert!(c.value > before, "KL above target raises β");
        let mut fixed = KlController::new(0.05, None);
        fixed.update(100.0, 512);
        assert_eq!(fixed.value, 0.05);
        c.update(f64::NAN, 10);
        assert!(c.value.is_finite());
    }
}
