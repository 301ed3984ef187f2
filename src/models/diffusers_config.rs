//! Typed reading of a diffusers `config.json`: defaults as the diffusers class defines them, and
//! errors that name the file, the key, the value and what is allowed. Options a network here
//! does not implement are refused by name (never silently ignored); keys diffusers itself does
//! not know are ignored as diffusers ignores them, with a warning.
use crate::{BenchError, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub(crate) struct ConfigReader<'a> {
    pub(crate) path: PathBuf,
    v: &'a Value,
}

impl<'a> ConfigReader<'a> {
    /// Checks `_class_name` (when present) against the class this loader builds.
    pub(crate) fn new(path: &Path, v: &'a Value, class: &str, hint: &str) -> Result<Self> {
        if !v.is_object() {
            return Err(BenchError::file(path, "the config is not a JSON object"));
        }
        let r = ConfigReader { path: path.to_path_buf(), v };
        if let Some(c) = v.get("_class_name").and_then(|c| c.as_str()) {
            if c != class {
                return Err(r.err(format!("_class_name is {c:?}; this loader reads {class:?}{hint}")));
            }
        }
        Ok(r)
    }

    pub(crate) fn err(&self, msg: impl Into<String>) -> BenchError {
        BenchError::file(&self.path, msg.into())
    }

    /// The value of `k`, treating an explicit `null` like an absent key.
    fn get(&self, k: &str) -> Option<&'a Value> {
        self.v.get(k).filter(|x| !x.is_null())
    }

    pub(crate) fn is_set(&self, k: &str) -> bool {
        self.get(k).is_some()
    }

    pub(crate) fn opt_int(&self, k: &str) -> Result<Option<i64>> {
        match self.get(k) {
            None => Ok(None),
            Some(x) => x
                .as_i64()
                .or_else(|| x.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| self.err(format!("{k} = {x} must be an integer"))),
        }
    }

    pub(crate) fn int(&self, k: &str, default: i64) -> Result<i64> {
        Ok(self.opt_int(k)?.unwrap_or(default))
    }

    /// A positive integer (channel counts, layer counts, group counts).
    pub(crate) fn positive(&self, k: &str, default: i64) -> Result<i64> {
        let n = self.int(k, default)?;
        if n <= 0 {
            return Err(self.err(format!("{k} = {n} must be positive")));
        }
        Ok(n)
    }

    pub(crate) fn opt_float(&self, k: &str) -> Result<Option<f64>> {
        match self.get(k) {
            None => Ok(None),
            Some(x) => x.as_f64().map(Some).ok_or_else(|| self.err(format!("{k} = {x} must be a number"))),
        }
    }

    pub(crate) fn float(&self, k: &str, default: f64) -> Result<f64> {
        Ok(self.opt_float(k)?.unwrap_or(default))
    }

    pub(crate) fn boolean(&self, k: &str, default: bool) -> Result<bool> {
        match self.get(k) {
            None => Ok(default),
            Some(x) => x.as_bool().ok_or_else(|| self.err(format!("{k} = {x} must be true or false"))),
        }
    }

    pub(crate) fn opt_str(&self, k: &str) -> Result<Option<&'a str>> {
        match self.get(k) {
            None => Ok(None),
            Some(x) => x.as_str().map(Some).ok_or_else(|| self.err(format!("{k} = {x} must be a string"))),
        }
    }

    /// A string option restricted to `allowed` (`default` when absent or null).
    pub(crate) fn choice(&self, k: &str, allowed: &[&str], default: &str) -> Result<String> {
        let got = self.opt_str(k)?.unwrap_or(default);
        if allowed.contains(&got) {
            Ok(got.to_string())
        } else {
            Err(self.err(format!("{k} = {got:?} is not supported (supported: {})", quoted(allowed))))
        }
    }

    pub(crate) fn strings(&self, k: &str) -> Result<Vec<String>> {
        let list = self.get(k).and_then(|x| x.as_array()).ok_or_else(|| self.err(format!("missing list {k:?}")))?;
        list.iter()
            .map(|s| s.as_str().map(str::to_string).ok_or_else(|| self.err(format!("{k} must list strings"))))
            .collect()
    }

    pub(crate) fn ints(&self, k: &str) -> Result<Vec<i64>> {
        let list = self.get(k).and_then(|x| x.as_array()).ok_or_else(|| self.err(format!("missing list {k:?}")))?;
        list.iter()
            .map(|c| c.as_i64().filter(|c| *c > 0).ok_or_else(|| self.err(format!("{k} must list positive integers"))))
            .collect()
    }

    /// An option given either once for all `n` blocks or as a list of `n` entries, diffusers'
    /// `int | tuple[int]` parameters. `entry` parses one element.
    pub(crate) fn per_block<T: Clone>(
        &self,
        k: &str,
        n: usize,
        default: T,
        entry: impl Fn(&Value) -> Option<T>,
        what: &str,
    ) -> Result<Vec<T>> {
        match self.get(k) {
            None => Ok(vec![default; n]),
            Some(Value::Array(list)) => {
                if list.len() != n {
                    return Err(self.err(format!("{k} lists {} entries; one per block ({n}) is required", list.len())));
                }
                list.iter()
                    .map(|x| entry(x).ok_or_else(|| self.err(format!("{k} = {} must list {what}", self.v[k]))))
                    .collect()
            }
            Some(x) => entry(x).map(|e| vec![e; n]).ok_or_else(|| self.err(format!("{k} = {x} must be {what} or a list of them"))),
        }
    }

    /// Fails when `k` is set to anything but its no-op value(s).
    pub(crate) fn refuse_unless(&self, k: &str, noop: &[Value], why: &str) -> Result<()> {
        match self.get(k) {
            Some(x) if !noop.contains(x) => Err(self.err(format!("{k} = {x} is not supported ({why})"))),
            _ => Ok(()),
        }
    }

    /// Warns about keys that are not parameters of the diffusers class (diffusers ignores them).
    pub(crate) fn warn_unknown(&self, known: &[&str]) {
        if let Some(obj) = self.v.as_object() {
            let unknown: Vec<&String> = obj.keys().filter(|k| !k.starts_with('_') && !known.contains(&k.as_str())).collect();
            if !unknown.is_empty() {
                tracing::warn!("{}: ignoring config keys diffusers does not define: {unknown:?}", self.path.display());
            }
        }
    }
}

fn quoted(allowed: &[&str]) -> String {
    allowed.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ")
}

/// `sample_size` may be an int or `[height, width]`; a square size is returned, else None.
pub(crate) fn square_sample_size(r: &ConfigReader) -> Result<Option<i64>> {
    match r.get("sample_size") {
        None => Ok(None),
        Some(Value::Array(hw)) => {
            let hw: Vec<Option<i64>> = hw.iter().map(|x| x.as_i64()).collect();
            match hw.as_slice() {
                [Some(h), Some(w)] if h == w => Ok(Some(*h)),
                _ => Ok(None),
            }
        }
        Some(_) => r.opt_int("sample_size"),
    }
}
