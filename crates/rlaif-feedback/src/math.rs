//! The arithmetic of soft labels: two-way softmax, calibration, clamping, the pointwise
//! combinations, word counts.

/// `P(first)` of the two-way softmax of `logprobs` (`e^l0 / (e^l0 + e^l1)`), computed
/// without overflow.
pub fn softmax_first(logprobs: [f64; 2]) -> f64 {
    sigmoid(logprobs[0] - logprobs[1])
}

/// The logistic function `1 / (1 + e^-x)`, without overflow.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `ln(p / (1 − p))`.
pub fn logit(p: f64) -> f64 {
    p.ln() - (1.0 - p).ln()
}

/// `P(first)` after calibration (Zhao et al. 2021): the raw probabilities of `logprobs`
/// divided by the prior of the content-free input `prior` (both two-way softmaxes),
/// renormalised: `p ∝ p_raw / p_prior`. In log space this is the softmax of
/// `logprobs − log_softmax(prior)`, whose first entry is
/// `σ((l0 − l1) − (π0 − π1))`.
pub fn calibrated_first(logprobs: [f64; 2], prior: [f64; 2]) -> f64 {
    sigmoid((logprobs[0] - logprobs[1]) - (prior[0] - prior[1]))
}

/// `p` clamped into `[lo, hi]`.
pub fn clamp(p: f64, range: Option<[f64; 2]>) -> f64 {
    match range {
        Some([lo, hi]) => p.clamp(lo, hi),
        None => p,
    }
}

/// The mean of `xs` (`None` when empty).
pub fn mean(xs: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (mut n, mut s) = (0usize, 0.0);
    for x in xs {
        n += 1;
        s += x;
    }
    (n > 0).then(|| s / n as f64)
}

/// The Pearson correlation of the pairs `(x, y)` (`None` with fewer than two pairs or when
/// either variable is constant).
pub fn pearson(xy: &[(f64, f64)]) -> Option<f64> {
    if xy.len() < 2 {
        return None;
    }
    let mx = mean(xy.iter().map(|p| p.0))?;
    let my = mean(xy.iter().map(|p| p.1))?;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for &(x, y) in xy {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// The number of words of `text` (runs of non-whitespace).
pub fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// `text` up to the end of its `n`-th word (all of it when it has at most `n` words),
/// without leading or trailing whitespace.
pub fn truncate_words(text: &str, n: usize) -> &str {
    let text = text.trim();
    if n == 0 {
        return "";
    }
    let mut seen = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                in_word = false;
                if seen == n {
                    return &text[..i];
                }
            }
        } else if !in_word {
            in_word = true;
            seen += 1;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_the_direct_formula_and_does_not_overflow() {
        for (a, b) in [(-1.0, -2.0), (-0.3, -0.1), (-50.0, -3.0), (0.0, 0.0)] {
            let want = f64::exp(a) / (f64::exp(a) + f64::exp(b));
            assert!((softmax_first([a, b]) - want).abs() < 1e-15);
        }
        assert_eq!(softmax_first([-1e6, 0.0]), 0.0);
        assert_eq!(softmax_first([0.0, -1e6]), 1.0);
    }

    #[test]
    fn calibration_divides_by_the_prior() {
        let (l, pr) = ([-0.2, -1.9], [-0.4, -1.1]);
        let p = f64::exp(l[0]) / (f64::exp(l[0]) + f64::exp(l[1]));
        let q = f64::exp(pr[0]) / (f64::exp(pr[0]) + f64::exp(pr[1]));
        let want = (p / q) / (p / q + (1.0 - p) / (1.0 - q));
        assert!((calibrated_first(l, pr) - want).abs() < 1e-14);
        assert!((calibrated_first(l, [-3.0, -3.0]) - softmax_first(l)).abs() < 1e-15);
    }

    #[test]
    fn words_are_counted_and_cut() {
        assert_eq!(word_count("  one two\n three  "), 3);
        assert_eq!(word_count(""), 0);
        assert_eq!(truncate_words("  one two\n three  ", 2), "one two");
        assert_eq!(truncate_words("one two", 5), "one two");
        assert_eq!(truncate_words("one  two", 1), "one");
        assert_eq!(truncate_words("héllo wörld", 1), "héllo");
        assert_eq!(truncate_words("a b", 0), "");
    }

    #[test]
    fn pearson_of_a_line_is_one() {
        let xy: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, 2.0 * i as f64 + 1.0)).collect();
        assert!((pearson(&xy).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(pearson(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }
}
