//! Images → CLIP pixel values, as transformers' `CLIPImageProcessor` prepares them: resize the
//! shortest side to `size` (bicubic, antialiased), center-crop to `crop_size`, scale to [0,1],
//! normalise with CLIP's mean and std. Settings come from the folder's
//! `preprocessor_config.json` (CLIP's defaults if it has none).
//!
//! The resize is where implementations differ. transformers 5's `CLIPImageProcessor` (what
//! `CLIPProcessor.from_pretrained` and so torchmetrics get) resizes uint8 tensors with torchvision,
//! i.e. libtorch's antialiased bicubic on the CPU (`F.interpolate(..., antialias=True)`, uint8 in
//! and out); its `CLIPImageProcessorPil` (and every transformers < 5) uses Pillow's
//! `Image.resize(BICUBIC)` on the 8-bit RGB image. Both round the result to uint8; they differ
//! by a unit on a small fraction of pixels (PIL's 22-bit fixed-point weights vs libtorch's int16
//! weights). [`ClipResize`] picks one; each is reproduced exactly.
use crate::metrics::preprocess::{quantize, resize_bicubic_pil_u8};
use crate::{BenchError, Result};
use serde_json::Value;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Which reference resize to reproduce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClipResize {
    /// transformers ≥ 5 `CLIPImageProcessor` (torchvision backend): libtorch's uint8 antialiased
    /// bicubic on the CPU, called directly; bit-identical to it.
    #[default]
    Torchvision,
    /// `CLIPImageProcessorPil`, transformers < 5, OpenAI CLIP's `preprocess`: Pillow's bicubic
    /// resize of the 8-bit image; bit-identical to Pillow.
    Pil,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ResizeTarget {
    /// Shortest side to this many pixels, aspect ratio kept (`{"shortest_edge": n}`).
    ShortestEdge(i64),
    /// Exactly (height, width).
    Exact(i64, i64),
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClipImageProcessor {
    pub resize_to: Option<ResizeTarget>,
    /// (height, width) of the center crop, if any.
    pub crop: Option<(i64, i64)>,
    pub rescale_factor: Option<f64>,
    /// Per-channel (mean, std), if normalising.
    pub normalize: Option<([f64; 3], [f64; 3])>,
    pub resize: ClipResize,
}

/// transformers `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`.
pub const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

impl ClipImageProcessor {
    /// CLIP's defaults for a vision tower of input side `image_size`.
    pub fn clip_default(image_size: i64, resize: ClipResize) -> Self {
        ClipImageProcessor {
            resize_to: Some(ResizeTarget::ShortestEdge(image_size)),
            crop: Some((image_size, image_size)),
            rescale_factor: Some(1.0 / 255.0),
            normalize: Some((OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)),
            resize,
        }
    }

    /// Reads `preprocessor_config.json` from a CLIP folder, or CLIP's defaults if the folder has
    /// none. Options this does not implement (another resample filter, padding, longest-edge
    /// sizes) are refused by name.
    pub fn load(dir: &Path, image_size: i64, resize: ClipResize) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        if !path.is_file() {
            return Ok(Self::clip_default(image_size, resize));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| BenchError::file(&path, format!("cannot read: {e}")))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| BenchError::file(&path, format!("not valid JSON: {e}")))?;
        Self::parse(&path, &v, image_size, resize)
    }

    pub fn parse(path: &Path, v: &Value, image_size: i64, resize: ClipResize) -> Result<Self> {
        let err = |m: String| BenchError::file(path, m);
        let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(true);
        let positive = |x: &Value, k: &str| -> Result<i64> {
            x.as_i64().filter(|&n| n > 0).ok_or_else(|| err(format!("{k} must hold positive integers, found {x}")))
        };
        if let Some(r) = v.get("resample").filter(|r| !r.is_null()) {
            if r.as_i64() != Some(3) {
                return Err(err(format!("resample = {r} is not supported (supported: 3, bicubic)")));
            }
        }
        if v.get("do_pad").and_then(Value::as_bool) == Some(true) {
            return Err(err("do_pad = true is not supported".into()));
        }
        let resize_to = match v.get("size") {
            _ if !flag("do_resize") => None,
            None | Some(Value::Null) => Some(ResizeTarget::ShortestEdge(image_size)),
            // An integer size means the shortest edge for CLIP (`default_to_square = False`).
            Some(x @ Value::Number(_)) => Some(ResizeTarget::ShortestEdge(positive(x, "size")?)),
            Some(Value::Object(m)) => match (m.get("shortest_edge"), m.get("height"), m.get("width"), m.get("longest_edge")) {
                (Some(s), None, None, None) => Some(ResizeTarget::ShortestEdge(positive(s, "size")?)),
                (None, Some(h), Some(w), None) => Some(ResizeTarget::Exact(positive(h, "size")?, positive(w, "size")?)),
                _ => return Err(err(format!("size = {} is not supported (supported: an integer, {{\"shortest_edge\": n}}, {{\"height\": h, \"width\": w}})", v["size"]))),
            },
            Some(other) => return Err(err(format!("size = {other} is not supported"))),
        };
        let crop = match v.get("crop_size") {
            _ if !flag("do_center_crop") => None,
            None | Some(Value::Null) => Some((image_size, image_size)),
            Some(x @ Value::Number(_)) => {
                let n = positive(x, "crop_size")?;
                Some((n, n))
            }
            Some(Value::Object(m)) => match (m.get("height"), m.get("width")) {
                (Some(h), Some(w)) => Some((positive(h, "crop_size")?, positive(w, "crop_size")?)),
                _ => return Err(err(format!("crop_size = {} must give height and width", v["crop_size"]))),
            },
            Some(other) => return Err(err(format!("crop_size = {other} is not supported"))),
        };
        if let (Some(ResizeTarget::ShortestEdge(s)), Some((ch, cw))) = (resize_to, crop) {
            if s < ch.max(cw) {
                return Err(err(format!("crop_size {ch}×{cw} larger than the resized shortest edge {s} (padding) is not supported")));
            }
        }
        let rescale_factor = if flag("do_rescale") {
            Some(match v.get("rescale_factor") {
                None | Some(Value::Null) => 1.0 / 255.0,
                Some(x) => x.as_f64().filter(|f| *f > 0.0).ok_or_else(|| err(format!("rescale_factor must be a positive number, found {x}")))?,
            })
        } else {
            None
        };
        let triple = |k: &str, default: [f64; 3]| -> Result<[f64; 3]> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Array(a)) if a.len() == 3 && a.iter().all(Value::is_number) => {
                    Ok([0, 1, 2].map(|i| a[i].as_f64().unwrap_or(f64::NAN)))
                }
                Some(x) => Err(err(format!("{k} must list three numbers, found {x}"))),
            }
        };
        let normalize = if flag("do_normalize") {
            let (mean, std) = (triple("image_mean", OPENAI_CLIP_MEAN)?, triple("image_std", OPENAI_CLIP_STD)?);
            if std.contains(&0.0) {
                return Err(err("image_std must not contain 0".into()));
            }
            Some((mean, std))
        } else {
            None
        };
        Ok(ClipImageProcessor { resize_to, crop, rescale_factor, normalize, resize })
    }

    /// The (height, width) the resize produces (transformers `get_resize_output_image_size`:
    /// the long side is `int(size · long / short)`).
    pub fn resized_size(&self, h: i64, w: i64) -> (i64, i64) {
        match self.resize_to {
            None => (h, w),
            Some(ResizeTarget::Exact(rh, rw)) => (rh, rw),
            Some(ResizeTarget::ShortestEdge(s)) => {
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                let new_long = ((s * long) as f64 / short as f64) as i64;
                if w <= h {
                    (new_long, s)
                } else {
                    (s, new_long)
                }
            }
        }
    }

    /// Resize (and center-crop) only: uint8 [B,3,H,W] → uint8 on the CPU, the image the model
    /// will see before scaling.
    pub fn resize_and_crop(&self, images: &Tensor) -> Result<Tensor> {
        let size = images.size();
        if images.kind() != Kind::Uint8 || size.len() != 4 || size[0] < 1 || size[1] != 3 || size[2] < 1 || size[3] < 1 {
            return Err(BenchError::Internal(format!(
                "the CLIP image processor expects uint8 images [B,3,H,W], got {:?} {size:?}",
                images.kind()
            )));
        }
        let (h, w) = (size[2], size[3]);
        let (oh, ow) = self.resized_size(h, w);
        let x = images.to_device(Device::Cpu).contiguous();
        let x = if (oh, ow) == (h, w) {
            // Both references return the image untouched when the size does not change.
            x
        } else {
            match self.resize {
                // torchvision `resize_image`: uint8 on the CPU goes straight to the antialiased kernel.
                ClipResize::Torchvision => x.f_internal_upsample_bicubic2d_aa([oh, ow], false, None, None)?,
                ClipResize::Pil => resize_bicubic_pil_u8(&x, oh as usize, ow as usize)?,
            }
        };
        Ok(match self.crop {
            None => x,
            Some((ch, cw)) => {
                if ch > oh || cw > ow {
                    return Err(BenchError::user(format!(
                        "image of {h}×{w} resizes to {oh}×{ow}, smaller than CLIP's {ch}×{cw} crop"
                    )));
                }
                // top = (H − ch) // 2, left = (W − cw) // 2 (transformers `center_crop`).
                x.narrow(2, (oh - ch) / 2, ch).narrow(3, (ow - cw) / 2, cw)
            }
        })
    }

    /// Images → pixel values float32 [B,3,crop_h,crop_w] on the CPU. uint8 images are taken as
    /// they are; floating-point images are generated samples in [-1,1], first quantised to the
    /// uint8 image they would be saved as (`metrics::preprocess::quantize`).
    pub fn preprocess(&self, images: &Tensor) -> Result<Tensor> {
        let images = match images.kind() {
            Kind::Uint8 => images.shallow_clone(),
            Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16 => quantize(images),
            k => return Err(BenchError::Internal(format!("CLIP images must be uint8 or float samples in [-1,1], got {k:?}"))),
        };
        let x = self.resize_and_crop(&images)?;
        let t = |v: [f64; 3]| Tensor::from_slice(&v.map(|x| x as f32)).view([1, 3, 1, 1]);
        let torchvision = self.resize == ClipResize::Torchvision;
        Ok(match (self.rescale_factor, self.normalize) {
            // torchvision backend: the rescale folded into the normalisation,
            // (x − mean/r) / (std/r) in float32 (`_fuse_mean_std_and_rescale_factor`).
            (Some(r), Some((m, s))) if torchvision => (x.to_kind(Kind::Float) - t(m) * (1.0 / r)) / (t(s) * (1.0 / r)),
            // PIL backend: x·r in float64 stored as float32, then (x − mean) / std in float32.
            (Some(r), Some((m, s))) => ((x.to_kind(Kind::Double) * r).to_kind(Kind::Float) - t(m)) / t(s),
            (Some(r), None) if torchvision => x.to_kind(Kind::Float) * r,
            (Some(r), None) => (x.to_kind(Kind::Double) * r).to_kind(Kind::Float),
            (None, Some((m, s))) => (x.to_kind(Kind::Float) - t(m)) / t(s),
            (None, None) => x.to_kind(Kind::Float),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ClipImageProcessor> {
        ClipImageProcessor::parse(Path::new("preprocessor_config.json"), &v, 224, ClipResize::Torchvision)
    }

    #[test]
    fn openai_preprocessor_config_is_clip_default() {
        // openai/clip-vit-large-patch14 preprocessor_config.json: integer size = shortest edge.
        let p = parse(json!({"crop_size": 224, "do_center_crop": true, "do_normalize": true, "do_resize": true,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD,
            "resample": 3, "size": 224}))
        .unwrap();
        assert_eq!(p, ClipImageProcessor::clip_default(224, ClipResize::Torchvision));
        let q = parse(json!({"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}})).unwrap();
        assert_eq!(q, p);
    }

    #[test]
    fn resized_size_follows_transformers() {
        let p = ClipImageProcessor::clip_default(224, ClipResize::Pil);
        // Long side int(224 · long / short), truncated.
        assert_eq!(p.resized_size(300, 200), (336, 224));
        assert_eq!(p.resized_size(180, 400), (224, 497));
        assert_eq!(p.resized_size(512, 512), (224, 224));
        assert_eq!(p.resized_size(225, 1000), (224, 995));
    }

    #[test]
    fn unsupported_options_are_refused() {
        let e = |v: Value| parse(v).err().unwrap().to_string();
        assert_eq!(e(json!({"resample": 2})), "preprocessor_config.json: resample = 2 is not supported (supported: 3, bicubic)");
        assert_eq!(e(json!({"do_pad": true})), "preprocessor_config.json: do_pad = true is not supported");
        assert!(e(json!({"size": {"longest_edge": 300}})).contains("size = {\"longest_edge\":300} is not supported"));
        assert!(e(json!({"size": 200, "crop_size": 224})).contains("larger than the resized shortest edge 200"));
    }
}
