//! The sampler registry seen by the spec validator (`plan::SamplerCatalog`): parameter names,
//! types, ranges and defaults, derived from each sampler's `SamplerInfo` so the two cannot drift.
//! Values are checked again, exactly, when the runner constructs each cell's sampler.
use super::{sampler_info, SamplerInfo};
use crate::plan::{ParamKind, ParamSpec, SamplerCatalog};
use crate::timesteps::Skip;

/// Parameters that are real numbers (everything else numeric is an integer).
const FLOAT_PARAMS: &[&str] = &["eta", "s_churn", "s_tmin", "s_tmax", "s_noise"];

pub struct Registry {
    infos: Vec<SamplerInfo>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry { infos: sampler_info() }
    }
}

/// Leaks a choice list: the catalog is built once per process and lives as long as it.
fn leak(v: Vec<&'static str>) -> &'static [&'static str] {
    Box::leak(v.into_boxed_slice())
}

/// The allowed words of a choice parameter from its help text: "a | b (why) | c", "a or b",
/// or "a: meaning; b: meaning"; a leading "... only:" qualifier is ignored.
fn choices(help: &'static str) -> Vec<&'static str> {
    let text = help.rsplit_once("only:").map_or(help, |(_, rest)| rest);
    let first_word = |s: &'static str| {
        let s = s.trim_start();
        let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
        &s[..end]
    };
    let words: Vec<&str> = if text.contains('|') || text.contains(" or ") {
        text.split(['|']).flat_map(|p| p.split(" or ")).map(first_word).collect()
    } else if text.contains(':') {
        text.split(';').filter_map(|p| p.split_once(':')).map(|(w, _)| first_word(w)).collect()
    } else {
        vec![first_word(text)]
    };
    words.into_iter().filter(|w| !w.is_empty()).collect()
}

fn int_range(help: &str) -> (i64, i64) {
    let nums: Vec<i64> = help
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    if help.contains("..") || help.contains('|') {
        (*nums.iter().min().unwrap_or(&0), *nums.iter().max().unwrap_or(&i64::MAX))
    } else {
        (0, i64::MAX)
    }
}

/// The typed parameter of one `SamplerInfo` entry; None for `skip` (handled by the plan) and for
/// parameters whose default depends on the schedule (`t_end = 1/T`), which specs cannot set.
pub fn param_spec(name: &'static str, default: &'static str, help: &'static str) -> Option<ParamSpec> {
    let kind = match default {
        _ if name == "skip" || default.contains('/') => return None,
        "true" | "false" => ParamKind::Bool { default: default == "true" },
        _ if FLOAT_PARAMS.contains(&name) => ParamKind::Float { min: 0.0, max: f64::INFINITY, default: default.parse().ok()? },
        _ if default.parse::<i64>().is_ok() => {
            let (min, max) = int_range(help);
            ParamKind::Int { min, max, default: default.parse().ok()? }
        }
        _ => {
            let mut allowed = choices(help);
            if !allowed.contains(&default) {
                allowed.insert(0, default);
            }
            ParamKind::Choice { allowed: leak(allowed), default }
        }
    };
    Some(ParamSpec { name, kind })
}

impl SamplerCatalog for Registry {
    fn names(&self) -> Vec<&'static str> {
        self.infos.iter().map(|i| i.name).collect()
    }
    fn params(&self, sampler: &str) -> Option<Vec<ParamSpec>> {
        let info = self.infos.iter().find(|i| i.name == sampler)?;
        Some(info.params.iter().filter_map(|(n, d, h)| param_spec(n, d, h)).collect())
    }
    fn default_skip(&self, sampler: &str) -> Skip {
        self.infos
            .iter()
            .find(|i| i.name == sampler)
            .and_then(|i| Skip::parse(i.default_skip).ok())
            .unwrap_or(Skip::Uniform)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::NoiseSchedule;

    #[test]
    fn choice_words_are_read_from_help_texts() {
        assert_eq!(choices("multistep | singlestep | singlestep_fixed"), ["multistep", "singlestep", "singlestep_fixed"]);
        assert_eq!(choices("next_label (DDIM repo, DDPMScheduler) or stride (DDIMScheduler: t − T//S)"), ["next_label", "stride"]);
        assert_eq!(choices("diffusers: ᾱ[t] (PNDMScheduler); repo: ᾱ[t+1], ends at ᾱ_0"), ["diffusers", "repo"]);
        assert_eq!(choices("diffusers grids only: zero (last step lands on x̂0) | sigma_min"), ["zero", "sigma_min"]);
        assert_eq!(int_range("1 | 2 | 3 (predictor order; UniC adds one)"), (1, 3));
        assert_eq!(int_range("1..4 (linear multistep order)"), (1, 4));
    }

    /// Every sampler builds with every value the catalog allows for each parameter.
    #[test]
    fn every_catalog_value_builds_its_sampler() {
        let reg = Registry::default();
        let schedule = NoiseSchedule::ddpm_linear();
        let mut built = 0;
        for name in reg.names() {
            let skip = reg.default_skip(name).name().to_string();
            for p in reg.params(name).unwrap() {
                let values: Vec<String> = match &p.kind {
                    ParamKind::Choice { allowed, .. } => allowed.iter().map(|s| s.to_string()).collect(),
                    ParamKind::Bool { .. } => vec!["true".into(), "false".into()],
                    k => vec![k.default_value().to_string()],
                };
                for v in values {
                    let params = [("skip".to_string(), skip.clone()), (p.name.to_string(), v.clone())].into_iter().collect();
                    match super::super::build_sampler(name, &params, 20, &schedule) {
                        Ok(_) => built += 1,
                        // Some combinations are refused on purpose, with a user error naming why.
                        Err(e) => assert_eq!(e.exit_code(), 2, "{name} {}={v}: {e}", p.name),
                    }
                }
            }
        }
        assert!(built > 40, "{built}");
    }
}
