//! Sampler parameters as given by the user (`key: value` strings from the spec or CLI), with
//! one-line errors that name the sampler, key, value and what is allowed.
use crate::{BenchError, Result};
use std::collections::BTreeMap;

pub type ParamMap = BTreeMap<String, String>;

/// Typed access that remembers which keys were read, so unknown keys are reported.
pub struct Params<'a> {
    sampler: &'static str,
    map: &'a ParamMap,
    known: Vec<&'static str>,
}

impl<'a> Params<'a> {
    pub fn new(sampler: &'static str, map: &'a ParamMap) -> Self {
        Params { sampler, map, known: Vec::new() }
    }
    fn raw(&mut self, key: &'static str) -> Option<&'a str> {
        self.known.push(key);
        self.map.get(key).map(|s| s.trim())
    }
    fn bad(&self, key: &str, value: &str, allowed: &str) -> BenchError {
        BenchError::user(format!("sampler {}: {key}={value} is not allowed ({allowed})", self.sampler))
    }
    pub fn choice(&mut self, key: &'static str, default: &'static str, allowed: &[&'static str]) -> Result<&'static str> {
        let v = self.raw(key).unwrap_or(default);
        allowed.iter().copied().find(|a| *a == v).ok_or_else(|| self.bad(key, v, &format!("one of {}", allowed.join(", "))))
    }
    pub fn usize_in(&mut self, key: &'static str, default: usize, lo: usize, hi: usize) -> Result<usize> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (lo..=hi).contains(n))
                .ok_or_else(|| self.bad(key, v, &format!("an integer from {lo} to {hi}"))),
        }
    }
    pub fn f64_min(&mut self, key: &'static str, default: f64, min: f64) -> Result<f64> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= min)
                .ok_or_else(|| self.bad(key, v, &format!("a number ≥ {min}"))),
        }
    }
    pub fn opt_f64(&mut self, key: &'static str) -> Result<Option<f64>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v.parse::<f64>().ok().filter(|x| x.is_finite()).map(Some).ok_or_else(|| self.bad(key, v, "a number")),
        }
    }
    pub fn bool(&mut self, key: &'static str, default: bool) -> Result<bool> {
        match self.raw(key) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(self.bad(key, v, "true or false")),
        }
    }
    /// Call last: every key the user gave must have been read.
    pub fn finish(self) -> Result<()> {
        match self.map.keys().find(|k| !self.known.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => Err(BenchError::user(format!(
                "sampler {}: unknown parameter {k:?} (known: {})",
                self.sampler,
                self.known.join(", ")
            ))),
        }
    }
}

/// Steps must be ≥ 1 for every sampler.
pub fn check_steps(sampler: &str, steps: usize, min: usize) -> Result<()> {
    if steps < min {
        return Err(BenchError::user(format!("sampler {sampler}: steps={steps} is too small (need ≥ {min})")));
    }
    Ok(())
}
