//! The two drift scores, over the shares of matching bins: the population stability index, and the
//! Jensen–Shannon distance.

/// Shares below this count as this in PSI, so an empty bin does not make it infinite (Evidently's floor).
pub const PSI_FLOOR: f64 = 1e-4;

/// PSI = Σ (live − ref) · ln(live / ref), each share floored at `PSI_FLOOR`.
pub fn psi(reference: &[f64], live: &[f64]) -> f64 {
    reference
        .iter()
        .zip(live)
        .map(|(&r, &l)| {
            let (r, l) = (r.max(PSI_FLOOR), l.max(PSI_FLOOR));
            (l - r) * (l / r).ln()
        })
        .sum()
}

/// The Jensen–Shannon distance in base 2 (the square root of the divergence), in [0, 1]; a bin empty on both
/// sides adds nothing.
pub fn js_distance(p: &[f64], q: &[f64]) -> f64 {
    let mut divergence = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        let m = (a + b) / 2.0;
        if a > 0.0 {
            divergence += 0.5 * a * (a / m).log2();
        }
        if b > 0.0 {
            divergence += 0.5 * b * (b / m).log2();
        }
    }
    // Rounding can leave a hair below 0 for identical distributions.
    divergence.max(0.0).sqrt().min(1.0)
}

/// Counts as shares of their total (all zeros for none).
pub fn shares(counts: &[u64], out: &mut Vec<f64>) {
    out.clear();
    let total: u64 = counts.iter().sum();
    out.extend(
        counts
            .iter()
            .map(|&c| if total == 0 { 0.0 } else { c as f64 / total as f64 }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_distributions_score_zero() {
        let p = [0.1; 10];
        assert_eq!(psi(&p, &p), 0.0);
        assert_eq!(js_distance(&p, &p), 0.0);
    }

    #[test]
    fn disjoint_distributions_are_at_js_distance_one() {
        assert!((js_distance(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn psi_floors_empty_bins() {
        let expected = (0.5 - 1.0) * 0.5f64.ln() + (0.5 - 1e-4) * (0.5f64 / 1e-4).ln();
        assert!((psi(&[1.0, 0.0], &[0.5, 0.5]) - expected).abs() < 1e-9);
    }
}
