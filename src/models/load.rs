//! A plan's `model:` section → the loaded model: its denoiser, output parameterisation, optional
//! decoder and shapes, plus the exact data distribution when it is an oracle.
use super::oracle::{GaussianOracle, GmmOracle};
use super::{Decoder, Denoiser, Prediction};
use crate::metrics::stats::Moments;
use crate::plan::{DataPlan, GmmPlan, ModelPlan, MomentPlan, Plan};
use crate::spec::Precision;
use crate::{BenchError, Result};
use tch::{Device, Kind, Tensor};

pub struct LoadedModel {
    pub denoiser: Box<dyn Denoiser>,
    pub prediction: Prediction,
    /// Latents → images, for latent models; None when samples are images already.
    pub decoder: Option<Box<dyn Decoder>>,
    /// One sample as the sampler sees it (the latent shape of a latent model).
    pub sample_shape: Vec<i64>,
    /// One sample as the metrics see it (after the decoder).
    pub image_shape: Vec<i64>,
    /// The Gaussian oracle again, for the exact FD of affine samplers.
    pub gaussian: Option<GaussianOracle>,
    /// Exact data moments (flattened mean, full covariance) for `fd_pixel` against an oracle.
    pub data_moments: Option<Moments>,
}

impl LoadedModel {
    pub fn describe(&self) -> String {
        match &self.decoder {
            Some(d) => format!("{} + decoder {}", self.denoiser.describe(), d.describe()),
            None => self.denoiser.describe(),
        }
    }
}

/// The tensor dtype a precision runs the network in (sampler arithmetic stays fp32, statistics f64).
pub fn precision_kind(precision: Precision) -> Kind {
    match precision {
        Precision::Bf16 => Kind::BFloat16,
        Precision::Fp16 => Kind::Half,
        Precision::Fp32 | Precision::Tf32 => Kind::Float,
    }
}

fn moment_tensor(m: &MomentPlan, shape: &[i64], what: &str) -> Result<Tensor> {
    let opts = (Kind::Double, Device::Cpu);
    Ok(match m {
        MomentPlan::Scalar(v) => Tensor::full(shape, *v, opts),
        MomentPlan::PerChannel(v) => {
            // One value per channel (dimension 0), broadcast over the rest of any rank.
            let mut view = vec![shape[0]];
            view.extend(std::iter::repeat_n(1, shape.len() - 1));
            Tensor::from_slice(v).view(view.as_slice()).expand(shape, false).contiguous()
        }
        MomentPlan::Npy(p) => {
            let t = Tensor::read_npy(p).map_err(|e| BenchError::file(p, format!("cannot read {what} .npy: {}", super::first_line(&e.to_string()))))?;
            if t.size() != shape {
                return Err(BenchError::file(p, format!("{what} has shape {:?}, expected {shape:?}", t.size())));
            }
            t.to_kind(Kind::Double)
        }
    })
}

fn to_moments(mean: &Tensor, cov: &Tensor) -> Result<Moments> {
    let mu: Vec<f64> = Vec::try_from(mean.flatten(0, -1)).map_err(|e: tch::TchError| BenchError::Internal(e.to_string()))?;
    let d = mu.len();
    let sigma: Vec<f64> = Vec::try_from(cov.flatten(0, -1)).map_err(|e: tch::TchError| BenchError::Internal(e.to_string()))?;
    Ok(Moments {
        mu: ndarray::Array1::from(mu),
        sigma: ndarray::Array2::from_shape_vec((d, d), sigma).map_err(|e| BenchError::Internal(e.to_string()))?,
    })
}

pub fn load_model(plan: &Plan) -> Result<LoadedModel> {
    plan.check_files()?;
    let device = plan.device.to_tch();
    let kind = precision_kind(plan.precision);
    let schedule = plan.schedule.noise_schedule()?;
    let plain = |denoiser: Box<dyn Denoiser>, shape: Vec<i64>| LoadedModel {
        denoiser,
        prediction: plan.prediction,
        decoder: None,
        image_shape: shape.clone(),
        sample_shape: shape,
        gaussian: None,
        data_moments: None,
    };
    let model = match &plan.model {
        ModelPlan::Diffusers { path } => {
            let unet = super::unet::load_diffusers(path, device, kind)?;
            let c = unet.config.in_channels;
            let size = unet.config.sample_size.ok_or_else(|| {
                BenchError::file(path.join("config.json"), "no sample_size: the sample resolution is unknown")
            })?;
            plain(Box::new(unet), vec![c, size, size])
        }
        ModelPlan::Ddim { path, config, ema } => {
            let unet = super::unet::load_ddim(path, config, *ema, device, kind)?;
            plain(Box::new(unet), vec![config.in_channels, config.resolution, config.resolution])
        }
        ModelPlan::Torchscript { path, shape, decoder } => {
            let m = super::torchscript::TorchScriptModel::load(path, device, kind)?;
            m.probe(shape, None)?;
            let mut loaded = plain(Box::new(m), shape.clone());
            if let Some(d) = decoder {
                let dec = super::torchscript::TorchScriptDecoder::load(d, device, kind)?;
                loaded.image_shape = dec.image_shape(shape)?;
                loaded.decoder = Some(Box::new(dec));
            }
            loaded
        }
        ModelPlan::Oracle(DataPlan::Gaussian { shape, mean, std }) => {
            let mean = moment_tensor(mean, shape, "mean")?;
            let std = moment_tensor(std, shape, "std")?;
            let cov = std.flatten(0, -1).square().diag(0);
            let space = plan.model_identity.space;
            let exact = GaussianOracle::new(schedule.clone(), mean.shallow_clone(), std.shallow_clone()).in_space(space);
            let model = GaussianOracle::new(schedule, mean.shallow_clone(), std).with_output(plan.prediction).in_space(space);
            LoadedModel { gaussian: Some(exact), data_moments: Some(to_moments(&mean, &cov)?), ..plain(Box::new(model), shape.to_vec()) }
        }
        ModelPlan::Edm { path } => {
            let net = super::edm::EdmNetwork::load_pickle(path, device, kind)?;
            if net.label_dim() > 0 {
                return Err(BenchError::file(
                    path,
                    format!("a class-conditional EDM network ({} classes); bench samples unconditional EDM networks only", net.label_dim()),
                ));
            }
            let shape = vec![net.channels(), net.resolution(), net.resolution()];
            plain(Box::new(net), shape)
        }
        ModelPlan::Consistency { unet, scheduler } => {
            let config = super::consistency::BoundaryConfig::read(scheduler)?;
            let network = super::unet::load_diffusers(unet, device, kind)?;
            let c = network.config.in_channels;
            let size = network.config.sample_size.ok_or_else(|| {
                BenchError::file(unet.join("config.json"), "no sample_size: the sample resolution is unknown")
            })?;
            plain(Box::new(super::consistency::ConsistencyModel { network: Box::new(network), config }), vec![c, size, size])
        }
        ModelPlan::Oracle(DataPlan::Gmm { shape, mixture }) => {
            let oracle = match mixture {
                GmmPlan::Explicit { weights, means, stds } => {
                    let m: Vec<Tensor> = means.iter().map(|m| moment_tensor(m, shape, "gmm mean")).collect::<Result<_>>()?;
                    let s: Vec<Tensor> = stds.iter().map(|s| moment_tensor(s, shape, "gmm std")).collect::<Result<_>>()?;
                    GmmOracle::new(schedule, Tensor::from_slice(weights), Tensor::stack(&m, 0), Tensor::stack(&s, 0))?
                }
                GmmPlan::Random { components, seed } => GmmOracle::from_seed(schedule, shape, *components, *seed)?,
            };
            let data_moments = Some(to_moments(&oracle.data_mean(), &oracle.data_covariance())?);
            LoadedModel { data_moments, ..plain(Box::new(oracle.with_output(plan.prediction)), shape.to_vec()) }
        }
    };
    if kind != Kind::Float && device == Device::Cpu {
        probe_precision(&model, plan.precision)?;
    }
    Ok(model)
}

/// Reduced precision on the CPU runs only where libtorch has CPU kernels for every op the model
/// uses: one tiny forward says so before any work, as one clear line.
fn probe_precision(model: &LoadedModel, precision: Precision) -> Result<()> {
    let mut shape = vec![1];
    shape.extend(&model.sample_shape);
    let x = Tensor::zeros(shape.as_slice(), (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[1.0f64]);
    let run = || -> Result<()> {
        let out = model.denoiser.forward(&x, &t, None)?;
        if let Some(d) = &model.decoder {
            let _ = d.decode(&out)?;
        }
        Ok(())
    };
    run().map_err(|e| {
        BenchError::user(format!("precision {precision} on cpu: libtorch cannot run this model in {precision} here ({e}); use fp32 or a CUDA device"))
    })
}
