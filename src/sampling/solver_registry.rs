//! Registry entries (info and constructor) of the solver families: DPM-Solver(++), UniPC,
//! DEIS and the Karras family, for `bench samplers`, spec validation and the runner.
use super::params::ParamMap;
use super::{deis, dpm_solver, karras, unipc, Sampler, SamplerInfo, Schedule};
use crate::Result;

/// (params, steps, schedule) → configured sampler; bad params are `BenchError::User`.
pub type Constructor = fn(&ParamMap, usize, &Schedule) -> Result<Box<dyn Sampler>>;

pub fn infos() -> Vec<SamplerInfo> {
    let mut v = vec![dpm_solver::DPM_SOLVER_INFO, dpm_solver::DPM_SOLVER_PP_INFO, unipc::UNIPC_INFO];
    v.extend_from_slice(karras::KARRAS_INFOS);
    v.push(deis::DEIS_INFO);
    v
}

pub fn constructor(name: &str) -> Option<Constructor> {
    Some(match name {
        "dpm_solver" => dpm_solver::dpm_solver,
        "dpm_solver++" => dpm_solver::dpm_solver_pp,
        "unipc" => unipc::unipc,
        "euler" => karras::euler,
        "euler_ancestral" => karras::euler_ancestral,
        "heun" => karras::heun,
        "kdpm2" => karras::kdpm2,
        "kdpm2_ancestral" => karras::kdpm2_ancestral,
        "lms" => karras::lms,
        "karras_ve" => karras::karras_ve,
        "deis" => deis::deis,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_info_has_a_constructor_that_builds_with_defaults() {
        let s = crate::schedule::NoiseSchedule::ddpm_linear();
        for info in infos() {
            let c = constructor(info.name).unwrap_or_else(|| panic!("{}", info.name));
            let sampler = c(&ParamMap::new(), 10, &s).unwrap();
            assert_eq!(sampler.name(), info.name);
            assert!(sampler.nfe() >= 10);
        }
        assert_eq!(infos().len(), 11);
        assert!(constructor("ddim_b").is_none());
    }
}
