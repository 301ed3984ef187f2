//! A plan's `model:` section → the loaded model: its denoiser, output parameterisation, optional
//! decoder and shapes, plus the exact data distribution when it is an oracle.
use super::oracle::{GaussianOracle, GmmOracle};
use super::{Condition, Decoder, Denoiser, Prediction};
use crate::conditioning::{ConditionSource, Conditioner};
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
    /// How per-sample conditions reach the network; None for unconditional models.
    pub conditioner: Option<Conditioner>,
}

impl LoadedModel {
    /// A valid condition for `b` samples (the empty prompt, class 0), for calls made before any
    /// sample is drawn (warm-up, precision probes).
    pub fn probe_condition(&self, b: i64, device: Device) -> Result<Option<Condition>> {
        self.conditioner.as_ref().map(|c| c.probe(b, device)).transpose()
    }

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
        conditioner: None,
    };
    let model = match &plan.model {
        ModelPlan::Diffusers { path } => {
            let unet = super::unet::load(path, device, kind)?;
            let shape = unet_sample_shape(&unet, path)?;
            let classes = classes_of(&unet, plan, path)?;
            LoadedModel { conditioner: classes, ..plain(Box::new(unet), shape) }
        }
        ModelPlan::Ldm { dir } => {
            let unet_dir = dir.join("unet");
            let unet = super::unet::load(&unet_dir, device, kind)?;
            let shape = unet_sample_shape(&unet, &unet_dir)?;
            let classes = classes_of(&unet, plan, &unet_dir)?;
            let decoder = latent_decoder(&dir.join("vqvae"), device, kind, unet.config.in_channels)?;
            LoadedModel { conditioner: classes, ..with_decoder(plain(Box::new(unet), shape), decoder) }
        }
        ModelPlan::StableDiffusion { dir } => {
            let unet = super::unet_cond::load(&dir.join("unet"), device, kind)?;
            let size = unet.config.sample_size.ok_or_else(|| {
                BenchError::file(dir.join("unet").join("config.json"), "no sample_size: the latent resolution is unknown")
            })?;
            let shape = vec![unet.config.in_channels, size, size];
            let decoder = latent_decoder(&dir.join("vae"), device, kind, unet.config.in_channels)?;
            let text = super::clip::PromptEncoder::load(dir, device, kind)?;
            LoadedModel { conditioner: Some(Conditioner::Text(text)), ..with_decoder(plain(Box::new(unet), shape), decoder) }
        }
        ModelPlan::Ddim { path, config, ema } => {
            let unet = super::unet::load_ddim(path, config, *ema, device, kind)?;
            plain(Box::new(unet), vec![config.in_channels, config.resolution, config.resolution])
        }
        ModelPlan::Torchscript { path, shape, decoder, text_encoder } => {
            let m = super::torchscript::TorchScriptModel::load(path, device, kind)?;
            // A conditioned TorchScript model is called (x, t, cond): the spec's class labels, or
            // the prompt embeddings of its `text_encoder`.
            let conditioner = match (text_encoder, plan.conditioning.as_ref().map(|c| &c.source)) {
                (Some(dir), _) => Some(Conditioner::Text(super::clip::PromptEncoder::load(dir, device, kind)?)),
                (None, Some(ConditionSource::Classes { .. })) => Some(Conditioner::Classes),
                _ => None,
            };
            let probe = conditioner.as_ref().map(|c| c.probe(2, device)).transpose()?;
            m.probe(shape, probe.as_ref())?;
            let mut loaded = plain(Box::new(m), shape.clone());
            loaded.conditioner = conditioner;
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
            let shape = vec![net.channels(), net.resolution(), net.resolution()];
            let classes = match (net.label_dim(), plan.conditioning.as_ref().map(|c| &c.source)) {
                (0, _) => None,
                (n, Some(ConditionSource::Classes { num_classes, .. })) if *num_classes == n => Some(Conditioner::Classes),
                (n, Some(ConditionSource::Classes { num_classes, .. })) => {
                    return Err(BenchError::file(path, format!("the network has {n} classes but conditioning.num_classes is {num_classes}")))
                }
                (n, _) => {
                    return Err(BenchError::file(
                        path,
                        format!("a class-conditional EDM network ({n} classes): add `conditioning: {{class_labels: uniform, num_classes: {n}}}` to the spec"),
                    ))
                }
            };
            LoadedModel { conditioner: classes, ..plain(Box::new(net), shape) }
        }
        ModelPlan::Consistency { unet, scheduler } => {
            let config = super::consistency::BoundaryConfig::read(scheduler)?;
            let network = super::unet::load(unet, device, kind)?;
            let shape = unet_sample_shape(&network, unet)?;
            let classes = classes_of(&network, plan, unet)?;
            let model = super::consistency::ConsistencyModel { network: Box::new(network), config };
            LoadedModel { conditioner: classes, ..plain(Box::new(model), shape) }
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
    if plan.conditioning.is_some() && model.conditioner.is_none() {
        return Err(BenchError::user(format!(
            "{}: `conditioning:` is given but the model takes no conditions ({}); remove it",
            plan.spec_path.display(),
            model.denoiser.describe()
        )));
    }
    if kind != Kind::Float && device == Device::Cpu {
        probe_precision(&model, plan.precision)?;
    }
    Ok(model)
}

fn unet_sample_shape(unet: &super::unet::UNet, dir: &std::path::Path) -> Result<Vec<i64>> {
    let size = unet
        .config
        .sample_size
        .ok_or_else(|| BenchError::file(dir.join("config.json"), "no sample_size: the sample resolution is unknown"))?;
    Ok(vec![unet.config.in_channels, size, size])
}

/// A class-conditional UNet takes the spec's class labels: they must exist, fit its class table,
/// and leave the null class (label `num_classes`) for guidance scales ≠ 1.
fn classes_of(unet: &super::unet::UNet, plan: &Plan, dir: &std::path::Path) -> Result<Option<Conditioner>> {
    use super::ClassEmbedding;
    let config = dir.join("config.json");
    let source = plan.conditioning.as_ref().map(|c| (&c.source, &c.guidance_scales));
    match (&unet.config.class_embedding, source) {
        (ClassEmbedding::None, None) => Ok(None),
        (ClassEmbedding::None, Some(_)) => Err(BenchError::file(
            config,
            "the UNet is unconditional (no num_class_embeds): remove `conditioning:` from the spec",
        )),
        (ClassEmbedding::Table(n), Some((ConditionSource::Classes { num_classes, .. }, scales))) => {
            let guided = scales.iter().any(|&w| w != 1.0);
            if *num_classes > *n || (guided && *num_classes >= *n) {
                let why = if guided { format!(": guidance needs the null class {num_classes} as well") } else { String::new() };
                return Err(BenchError::file(config, format!("num_class_embeds = {n} cannot embed conditioning.num_classes = {num_classes}{why}")));
            }
            Ok(Some(Conditioner::Classes))
        }
        (ClassEmbedding::Table(_), Some((ConditionSource::Prompts { .. }, _))) => {
            Err(BenchError::file(config, "the UNet is class-conditional: give `conditioning: {class_labels: ..., num_classes: N}`, not prompts"))
        }
        (ClassEmbedding::Table(n), None) => Err(BenchError::file(
            config,
            format!("the UNet is class-conditional ({n} class embeddings): add `conditioning: {{class_labels: uniform, num_classes: N}}` to the spec"),
        )),
        (other, _) => Err(BenchError::file(
            config,
            format!("class_embed_type {other:?} takes vectors or numbers, not class labels; bench samples class-table UNets (num_class_embeds)"),
        )),
    }
}

/// A pipeline's latent decoder, run in fp32 when its config asks diffusers to upcast it.
fn latent_decoder(dir: &std::path::Path, device: Device, kind: Kind, latent_channels: i64) -> Result<super::vae::LatentDecoder> {
    let mut decoder = super::vae::load(dir, device, kind)?;
    if kind != Kind::Float && decoder.force_upcast() {
        decoder = super::vae::load(dir, device, Kind::Float)?;
    }
    if decoder.latent_channels() != latent_channels {
        return Err(BenchError::file(
            dir.join("config.json"),
            format!("the decoder reads {} latent channels but the UNet makes {latent_channels}", decoder.latent_channels()),
        ));
    }
    Ok(decoder)
}

fn with_decoder(mut model: LoadedModel, decoder: super::vae::LatentDecoder) -> LoadedModel {
    let (f, s) = (decoder.downscale_factor(), &model.sample_shape);
    model.image_shape = vec![decoder.decoder_config().out_channels, s[1] * f, s[2] * f];
    model.decoder = Some(Box::new(decoder));
    model
}

/// Reduced precision on the CPU runs only where libtorch has CPU kernels for every op the model
/// uses: one tiny forward says so before any work, as one clear line.
fn probe_precision(model: &LoadedModel, precision: Precision) -> Result<()> {
    let mut shape = vec![1];
    shape.extend(&model.sample_shape);
    let x = Tensor::zeros(shape.as_slice(), (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[1.0f64]);
    let run = || -> Result<()> {
        let out = model.denoiser.forward(&x, &t, model.probe_condition(1, Device::Cpu)?.as_ref())?;
        if let Some(d) = &model.decoder {
            let _ = d.decode(&out)?;
        }
        Ok(())
    };
    run().map_err(|e| {
        BenchError::user(format!("precision {precision} on cpu: libtorch cannot run this model in {precision} here ({e}); use fp32 or a CUDA device"))
    })
}
