//! Constructor arguments (`_init_kwargs`) of the pickled EDM classes, read with EDM's defaults;
//! an argument the class does not take is an error, as it would be in Python.
use crate::checkpoint::Value;
use crate::{BenchError, Result};

pub(super) struct Kwargs<'a> {
    what: String,
    items: &'a [(Value, Value)],
    used: Vec<&'a str>,
}

impl<'a> Kwargs<'a> {
    /// `what` names the file and object in errors, e.g. "x.pkl: SongUNet arguments".
    pub(super) fn new(what: String, v: &'a Value) -> Result<Self> {
        match v {
            Value::Dict(items) => Ok(Kwargs { what, items, used: vec![] }),
            other => Err(BenchError::user(format!("{what} are a {}, not a dict (was the network pickled without init args?)", other.kind()))),
        }
    }
    pub(super) fn what(&self) -> &str {
        &self.what
    }
    fn get(&mut self, key: &'a str) -> Option<&'a Value> {
        self.used.push(key);
        self.items.iter().find(|(k, _)| matches!(k, Value::Str(s) if s == key)).map(|(_, v)| v)
    }
    fn bad(&self, key: &str, v: &Value, want: &str) -> BenchError {
        BenchError::user(format!("{}: `{key}` is {}, expected {want}", self.what, show(v)))
    }
    fn missing(&self, key: &str) -> BenchError {
        BenchError::user(format!("{}: required argument `{key}` is missing", self.what))
    }
    /// A non-negative integer.
    pub(super) fn int(&mut self, key: &'a str, default: Option<i64>) -> Result<i64> {
        match self.get(key) {
            Some(Value::Int(i)) if *i >= 0 => Ok(*i),
            Some(v) => Err(self.bad(key, v, "a non-negative integer")),
            None => default.ok_or_else(|| self.missing(key)),
        }
    }
    pub(super) fn float(&mut self, key: &'a str, default: Option<f64>) -> Result<f64> {
        match self.get(key) {
            Some(Value::Float(f)) => Ok(*f),
            Some(Value::Int(i)) => Ok(*i as f64),
            Some(v) => Err(self.bad(key, v, "a number")),
            None => default.ok_or_else(|| self.missing(key)),
        }
    }
    /// A list (or tuple) of non-negative integers.
    pub(super) fn ints(&mut self, key: &'a str, default: Option<&[i64]>) -> Result<Vec<i64>> {
        match self.get(key) {
            Some(v @ (Value::List(items) | Value::Tuple(items))) => items
                .iter()
                .map(|x| match x {
                    Value::Int(i) if *i >= 0 => Ok(*i),
                    _ => Err(self.bad(key, v, "a list of non-negative integers")),
                })
                .collect(),
            Some(v) => Err(self.bad(key, v, "a list of integers")),
            None => default.map(<[i64]>::to_vec).ok_or_else(|| self.missing(key)),
        }
    }
    pub(super) fn choice(&mut self, key: &'a str, default: &str, allowed: &[&str]) -> Result<String> {
        match self.get(key) {
            Some(Value::Str(s)) if allowed.contains(&s.as_str()) => Ok(s.clone()),
            Some(v) => Err(self.bad(key, v, &format!("one of {allowed:?}"))),
            None => Ok(default.to_string()),
        }
    }
    /// Every argument must have been read: the class would reject any other.
    pub(super) fn finish(&self) -> Result<()> {
        let unknown: Vec<String> = self
            .items
            .iter()
            .filter_map(|(k, _)| match k {
                Value::Str(s) if !self.used.contains(&s.as_str()) => Some(format!("`{s}`")),
                Value::Str(_) => None,
                other => Some(show(other)),
            })
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(BenchError::user(format!("{}: unsupported argument(s) {}", self.what, unknown.join(", "))))
        }
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => format!("{s:?}"),
        Value::Bool(b) => if *b { "True".into() } else { "False".into() },
        Value::List(items) | Value::Tuple(items) if items.len() <= 8 => {
            format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(", "))
        }
        other => format!("a {}", other.kind()),
    }
}

/// Checks that make every later shape agree: each level halves the resolution exactly, the
/// resampling filter has an even number of taps (so ×2 up/down are exact), channels are positive.
pub(super) fn check_levels(what: &str, resolution: i64, channel_mult: &[i64], filter: &[i64]) -> Result<()> {
    let err = |m: String| Err(BenchError::user(format!("{what}: {m}")));
    if channel_mult.is_empty() || channel_mult.contains(&0) {
        return err(format!("channel_mult {channel_mult:?} must be non-empty and positive"));
    }
    if channel_mult.len() > 16 || resolution < 1 || resolution % (1 << (channel_mult.len() - 1)) != 0 {
        return err(format!(
            "img_resolution {resolution} is not divisible by 2^{} (one halving per channel_mult level)",
            channel_mult.len() - 1
        ));
    }
    if filter.is_empty() || filter.len() % 2 != 0 {
        return err(format!("resample_filter {filter:?} must have an even number of taps"));
    }
    Ok(())
}

/// Arguments that must be at least 1 (channel counts and multipliers).
pub(super) fn check_positive(what: &str, values: &[(&str, i64)]) -> Result<()> {
    match values.iter().find(|(_, v)| *v < 1) {
        Some((k, v)) => Err(BenchError::user(format!("{what}: `{k}` = {v} must be at least 1"))),
        None => Ok(()),
    }
}

/// The noise embedding splits its channels into cos and sin halves.
pub(super) fn check_even(what: &str, name: &str, channels: i64) -> Result<()> {
    if channels % 2 != 0 {
        return Err(BenchError::user(format!("{what}: the noise embedding's {name} = {channels} channels must be even")));
    }
    Ok(())
}
