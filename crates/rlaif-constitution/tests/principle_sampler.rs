//! Principle sampling: determinism, streams, errors, and goodness of fit to the weights.

use rlaif_constitution::{Constitution, ConstitutionError, Draw, PrincipleSampler, Replacement};
use std::collections::{HashMap, HashSet};

fn weighted() -> PrincipleSampler {
    let items = [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0), ("e", 10.0)];
    PrincipleSampler::new(items.map(|(id, w)| (id.to_string(), w)), 7).unwrap()
}

/// Pearson's χ² statistic of `draws` against the sampler's probabilities.
fn chi_square(sampler: &PrincipleSampler, draws: &[Draw]) -> f64 {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for d in draws {
        *counts.entry(d.principle_id.as_str()).or_default() += 1;
    }
    let n = draws.len() as f64;
    sampler
        .ids()
        .iter()
        .zip(sampler.probabilities())
        .map(|(id, p)| {
            let observed = *counts.get(id.as_str()).unwrap_or(&0) as f64;
            let expected = n * p;
            (observed - expected).powi(2) / expected
        })
        .sum()
}

// Critical values of χ² at p = 0.001.
const CHI2_CRIT_DF4: f64 = 18.467;
const CHI2_CRIT_DF15: f64 = 37.697;

#[test]
fn same_seed_same_draws() {
    let s = weighted();
    for mode in [Replacement::With, Replacement::Without] {
        assert_eq!(
            s.draw_chain(3, 5, mode).unwrap(),
            weighted().draw_chain(3, 5, mode).unwrap()
        );
    }
    assert_eq!(s.draw_one(11), weighted().draw_one(11));
    // A chain's draws do not depend on other chains being drawn first.
    let _ = s.draw_chain(0, 50, Replacement::With).unwrap();
    assert_eq!(
        s.draw_chain(3, 5, Replacement::With).unwrap(),
        weighted().draw_chain(3, 5, Replacement::With).unwrap()
    );
}

#[test]
fn different_seeds_and_chains_differ() {
    let c = Constitution::default_constitution();
    let a = PrincipleSampler::for_critiques(&c, 1).unwrap();
    let b = PrincipleSampler::for_critiques(&c, 2).unwrap();
    let ids = |d: Vec<Draw>| d.into_iter().map(|d| d.principle_id).collect::<Vec<_>>();
    let chain_a = ids(a.draw_chain(0, 32, Replacement::With).unwrap());
    assert_ne!(
        chain_a,
        ids(b.draw_chain(0, 32, Replacement::With).unwrap())
    );
    assert_ne!(
        chain_a,
        ids(a.draw_chain(1, 32, Replacement::With).unwrap())
    );
}

#[test]
fn draws_record_round_and_id() {
    let c = Constitution::default_constitution();
    let s = PrincipleSampler::for_critiques(&c, 5).unwrap();
    let draws = s.draw_chain(9, 4, Replacement::With).unwrap();
    assert_eq!(
        draws.iter().map(|d| d.round).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert!(draws.iter().all(|d| c.principle(&d.principle_id).is_some()));
    assert_eq!(s.draw_one(9), draws[0]);
    assert!(s.draw_chain(0, 0, Replacement::Without).unwrap().is_empty());
}

#[test]
fn with_replacement_matches_the_weights_across_chains() {
    let s = weighted();
    let draws: Vec<Draw> = (0..20_000).map(|i| s.draw_one(i)).collect();
    let chi2 = chi_square(&s, &draws);
    assert!(chi2 < CHI2_CRIT_DF4, "χ² = {chi2}");
}

#[test]
fn with_replacement_matches_the_weights_within_a_chain() {
    let s = weighted();
    let draws = s.draw_chain(0, 20_000, Replacement::With).unwrap();
    let chi2 = chi_square(&s, &draws);
    assert!(chi2 < CHI2_CRIT_DF4, "χ² = {chi2}");
}

#[test]
fn default_constitution_draws_are_uniform() {
    let c = Constitution::default_constitution();
    for s in [
        PrincipleSampler::for_critiques(&c, 123).unwrap(),
        PrincipleSampler::for_comparisons(&c, 123).unwrap(),
    ] {
        assert_eq!(s.ids().len(), 16);
        let draws: Vec<Draw> = (0..20_000).map(|i| s.draw_one(i)).collect();
        let chi2 = chi_square(&s, &draws);
        assert!(chi2 < CHI2_CRIT_DF15, "χ² = {chi2}");
    }
}

#[test]
fn the_statistic_rejects_a_wrong_distribution() {
    // Sanity check of the test itself: uniform draws against the weighted sampler fail.
    let s = weighted();
    let uniform = PrincipleSampler::new(s.ids().iter().map(|id| (id.clone(), 1.0)), 7).unwrap();
    let draws: Vec<Draw> = (0..20_000).map(|i| uniform.draw_one(i)).collect();
    assert!(chi_square(&s, &draws) > CHI2_CRIT_DF4);
}

#[test]
fn without_replacement_never_repeats() {
    let s = weighted();
    for chain in 0..500 {
        let draws = s.draw_chain(chain, 5, Replacement::Without).unwrap();
        let ids: HashSet<&str> = draws.iter().map(|d| d.principle_id.as_str()).collect();
        assert_eq!(ids.len(), 5, "chain {chain}: {draws:?}");
    }
}

#[test]
fn without_replacement_first_draw_follows_the_weights() {
    let s = weighted();
    let draws: Vec<Draw> = (0..20_000)
        .map(|i| s.draw_chain(i, 3, Replacement::Without).unwrap().remove(0))
        .collect();
    let chi2 = chi_square(&s, &draws);
    assert!(chi2 < CHI2_CRIT_DF4, "χ² = {chi2}");
}

#[test]
fn too_many_rounds_without_replacement() {
    let err = weighted()
        .draw_chain(0, 6, Replacement::Without)
        .unwrap_err();
    assert!(matches!(
        err,
        ConstitutionError::TooManyRounds {
            rounds: 6,
            available: 5
        }
    ));
    assert_eq!(
        weighted()
            .draw_chain(0, 6, Replacement::With)
            .unwrap()
            .len(),
        6
    );
}

#[test]
fn sampler_errors() {
    assert!(matches!(
        PrincipleSampler::new(Vec::<(String, f64)>::new(), 0),
        Err(ConstitutionError::NoPrinciples)
    ));
    for w in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let err =
            PrincipleSampler::new([("x".to_string(), 1.0), ("y".to_string(), w)], 0).unwrap_err();
        assert!(matches!(err, ConstitutionError::BadWeight { ref id, .. } if id == "y"));
    }
    assert!(matches!(
        PrincipleSampler::for_comparisons(&Constitution::default(), 0),
        Err(ConstitutionError::NoPrinciples)
    ));
}
