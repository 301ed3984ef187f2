//! The one integration-test binary (one link against libtorch): CLI behaviour, parity with the
//! Python reference implementations, resume and bad input.
mod common;
mod cli;
mod runner;
mod check;
mod unet;
mod sd_unet;
mod samplers_b;
mod spec;
mod fid_net;
mod samplers_a;
mod fid_stats;
mod report;
mod slurm_cluster;
mod slurm;
mod prediction;
mod clip;
mod edm;
mod consistency;
mod flow;
mod metrics_more;
mod output_files;
mod timeseries;
mod diffusers_config;
mod k_diffusion;
mod ipndm;
mod pipelines;
