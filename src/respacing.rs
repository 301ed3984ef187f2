//! Timestep rules of two more code bases, as pure functions returning the integer model labels in
//! the order the sampler calls the model (descending), like [`crate::timesteps::discrete_labels`]:
//!
//! - guided-diffusion's `space_timesteps` (guided_diffusion/respace.py), which improved-diffusion,
//!   guided-diffusion and the code bases built on them (LDM's `ddim` spacing excepted) use to pick
//!   the kept steps of a respaced process: "ddimN" (the integer stride giving exactly N steps) or
//!   section counts "10,10,20" (the T steps cut into equal sections, each strided to its count with
//!   Python's round-half-to-even);
//! - Diffusion-TS's fast sampling (gaussian_diffusion.py `fast_sample`, from lucidrains'
//!   denoising-diffusion-pytorch): `torch.linspace(-1, T-1, S+1)` in float32, truncated by
//!   `.int()`, reversed; the model is called at every value but the final −1 (the step to x₀).
use crate::{BenchError, Result};
use tch::{Device, Kind, Tensor};

/// guided-diffusion `space_timesteps(num_timesteps, section_counts)` for a string argument:
/// "ddimN" or comma-separated section counts. The kept steps, descending.
pub fn space_timesteps(num_timesteps: usize, section_counts: &str) -> Result<Vec<usize>> {
    let t = num_timesteps;
    let bad = |why: String| BenchError::user(format!("timestep spacing {section_counts:?} with T={t}: {why}"));
    if t == 0 {
        return Err(bad("T must be positive".into()));
    }
    let mut steps: Vec<usize> = if let Some(n) = section_counts.strip_prefix("ddim") {
        let desired: usize = n.trim().parse().map_err(|_| bad(format!("{n:?} is not a step count")))?;
        // `for i in range(1, T): if len(range(0, T, i)) == desired: return set(range(0, T, i))`.
        let stride = (1..t)
            .find(|&i| t.div_ceil(i) == desired)
            .ok_or_else(|| bad(format!("cannot create exactly {desired} steps with an integer stride")))?;
        (0..t).step_by(stride).collect()
    } else {
        let counts: Vec<usize> = section_counts
            .split(',')
            .map(|c| c.trim().parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad("expected \"ddimN\" or comma-separated section counts such as \"10,10,20\"".into()))?;
        let size_per = t / counts.len();
        let extra = t % counts.len();
        let mut start = 0usize;
        let mut all = Vec::new();
        for (i, &count) in counts.iter().enumerate() {
            let size = size_per + usize::from(i < extra);
            if size < count {
                return Err(bad(format!("cannot divide section of {size} steps into {count}")));
            }
            let frac_stride = if count <= 1 { 1.0 } else { (size - 1) as f64 / (count - 1) as f64 };
            let mut cur = 0.0f64;
            for _ in 0..count {
                all.push(start + cur.round_ties_even() as usize);
                cur += frac_stride;
            }
            start += size;
        }
        all
    };
    // A Python set: duplicates collapse (a count of 0 or 1 per section can repeat a start).
    steps.sort_unstable();
    steps.dedup();
    steps.reverse();
    Ok(steps)
}

/// Diffusion-TS `fast_sample` with T = `total_timesteps` and S = `sampling_timesteps`: the labels
/// the model is called at (descending; the last call steps to x₀, "time_next = −1"). torch's
/// float32 linspace is used itself, so its rounding, and the truncation after it, are the source's.
pub fn diffusion_ts_fast_sampling(total_timesteps: usize, sampling_timesteps: usize) -> Result<Vec<usize>> {
    let (t, s) = (total_timesteps, sampling_timesteps);
    if s == 0 || s > t {
        return Err(BenchError::user(format!(
            "sampling_timesteps {s} is out of range (Diffusion-TS asserts 1 ≤ sampling_timesteps ≤ timesteps = {t})"
        )));
    }
    let times = Tensor::f_linspace(-1.0, (t - 1) as f64, (s + 1) as i64, (Kind::Float, Device::Cpu))?.f_to_kind(Kind::Int)?;
    let times = Vec::<i32>::try_from(times)?;
    // reversed(times)[:-1]: every value but the leading −1, descending.
    Ok(times[1..].iter().rev().map(|&v| v.max(0) as usize).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docstring_example_and_ddim_strides() {
        // respace.py's docstring: 300 steps, [10, 15, 20] → sections of 100 strided to 10, 15, 20.
        let s = space_timesteps(300, "10,15,20").unwrap();
        assert_eq!(s.len(), 45);
        assert_eq!(s.last(), Some(&0));
        assert_eq!(s[0], 299);
        assert_eq!(space_timesteps(1000, "ddim50").unwrap(), (0..1000).step_by(20).rev().collect::<Vec<_>>());
        assert!(space_timesteps(1000, "ddim3000").is_err());
        assert!(space_timesteps(100, "60,60").is_err());
        assert_eq!(diffusion_ts_fast_sampling(500, 500).unwrap(), (0..500).rev().collect::<Vec<_>>());
    }
}
