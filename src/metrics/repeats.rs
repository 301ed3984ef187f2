//! `repeats: K`: every cell is sampled K times with independent seeds (`seed`, `seed + 1`, …,
//! `seed + K − 1`), every metric computed per repeat; the row's metric column holds the mean over
//! the repeats and `<column>_ci95` the half-width of the two-sided 95% Student-t interval of that
//! mean, t₀.₉₇₅(K − 1)·s/√K with s the repeats' sample standard deviation (Diffusion-TS reports
//! Context-FID as mean ± this interval over 5 runs).
use crate::{BenchError, Result};
use std::collections::BTreeMap;

/// Suffix of the interval column beside each metric column.
pub const CI_SUFFIX: &str = "_ci95";

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms: ~1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1 − x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularised incomplete beta I_x(a, b) (Numerical Recipes' `betai`, Lentz continued fraction).
fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - incomplete_beta(b, a, 1.0 - x);
    }
    let tiny = 1e-300;
    let (mut c, mut d) = (1.0, 1.0 - (a + b) * x / (a + 1.0));
    d = 1.0 / if d.abs() < tiny { tiny } else { d };
    let mut f = d;
    for m in 1..500 {
        let m = m as f64;
        for num in [m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)), -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0))] {
            d = 1.0 + num * d;
            d = 1.0 / if d.abs() < tiny { tiny } else { d };
            c = 1.0 + num / c;
            c = if c.abs() < tiny { tiny } else { c };
            f *= c * d;
        }
        if (c * d - 1.0).abs() < 1e-16 {
            break;
        }
    }
    front * f / a
}

/// Student-t CDF with `df` degrees of freedom: 1 − ½ I_{ν/(ν+t²)}(ν/2, ½) for t ≥ 0.
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t));
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The quantile t_p(df) for p in (½, 1), by bisection on the CDF to f64 resolution.
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while student_t_cdf(hi, df) < p {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if student_t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Mean and 95% t-interval half-width of K ≥ 2 values.
pub fn mean_ci95(values: &[f64]) -> (f64, f64) {
    let k = values.len() as f64;
    let mean = values.iter().sum::<f64>() / k;
    if values.len() < 2 {
        return (mean, f64::NAN);
    }
    let s = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (k - 1.0)).sqrt();
    (mean, student_t_quantile(0.975, k - 1.0) * s / k.sqrt())
}

/// One row's metrics from the repeats' metrics: for each column every repeat has, the mean under
/// its own name and the interval under `<name>_ci95`.
pub fn combine(per_repeat: &[BTreeMap<String, f64>]) -> Result<BTreeMap<String, f64>> {
    let Some(first) = per_repeat.first() else {
        return Err(BenchError::Internal("no repeats to combine".into()));
    };
    let mut out = BTreeMap::new();
    for name in first.keys() {
        let values: Vec<f64> = per_repeat.iter().filter_map(|m| m.get(name).copied()).collect();
        if values.len() != per_repeat.len() {
            continue;
        }
        let (mean, ci) = mean_ci95(&values);
        out.insert(name.clone(), mean);
        out.insert(format!("{name}{CI_SUFFIX}"), ci);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_tables() {
        // scipy.stats.t.ppf(0.975, df) for df = 1, 2, 4, 9, 29, 1000.
        let want = [
            (1.0, 12.706204736174694),
            (2.0, 4.302652729749462),
            (4.0, 2.7764451051977934),
            (9.0, 2.262157162798205),
            (29.0, 2.045229642132703),
            (1000.0, 1.9623390808264083),
        ];
        for (df, t) in want {
            let ours = student_t_quantile(0.975, df);
            // Bisection to the last bit of a CDF accurate to ~1e-14: 1e-11 relative is ample.
            assert!((ours - t).abs() < 1e-11 * t, "df {df}: {ours} vs {t}");
        }
        assert!((student_t_cdf(0.0, 3.0) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn combine_gives_mean_and_interval() {
        let rows: Vec<BTreeMap<String, f64>> = [1.0, 2.0, 3.0, 4.0, 5.0]
            .iter()
            .map(|&v| BTreeMap::from([("context_fid".to_string(), v), ("only_some".to_string(), v)]))
            .collect();
        let mut rows = rows;
        rows[2].remove("only_some");
        let c = combine(&rows).unwrap();
        assert_eq!(c["context_fid"], 3.0);
        // s = √2.5, t₀.₉₇₅(4) = 2.7764451051977934: half-width = t·s/√5.
        let want = 2.7764451051977934 * 2.5f64.sqrt() / 5f64.sqrt();
        assert!((c["context_fid_ci95"] - want).abs() < 1e-12, "{}", c["context_fid_ci95"]);
        assert!(!c.contains_key("only_some"));
    }
}
