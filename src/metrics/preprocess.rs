//! Image → Inception input: the three resize conventions FID numbers are published with, and the
//! quantisation of generated samples to the uint8 images they would be saved as.
//!
//! Every mode takes uint8 images `[B,3,H,W]` and returns float32 `[B,3,299,299]` in the range
//! the FID Inception expects (≈[-1,1]).
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::error::{BenchError, Result};

/// Inception v3's input side.
pub const INCEPTION_SIZE: i64 = 299;

/// Which reference pipeline's resize and normalisation to reproduce. Recorded with every result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeMode {
    /// pytorch-fid: [0,1] → `F.interpolate(bilinear, align_corners=False)` → 2x−1.
    #[value(name = "pytorch-fid")]
    PytorchFid,
    /// TTUR / torch-fidelity / EDM: TF1 `resize_bilinear(align_corners=False)` on [0,255] → (x−128)/128.
    Tf,
    /// clean-fid: PIL bicubic (antialiased) on float per channel, clipped to [0,255] → (x−128)/128.
    Clean,
}

impl ResizeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ResizeMode::PytorchFid => "pytorch-fid",
            ResizeMode::Tf => "tf",
            ResizeMode::Clean => "clean",
        }
    }
}

impl std::fmt::Display for ResizeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ResizeMode {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "pytorch-fid" => Ok(ResizeMode::PytorchFid),
            "tf" => Ok(ResizeMode::Tf),
            "clean" => Ok(ResizeMode::Clean),
            other => Err(BenchError::user(format!(
                "unknown resize mode `{other}`; allowed: pytorch-fid, tf, clean"
            ))),
        }
    }
}

/// uint8 `[B,3,H,W]` (any device) → float32 `[B,3,299,299]` on the same device, normalised for
/// the FID Inception as `mode` prescribes.
pub fn preprocess(images: &Tensor, mode: ResizeMode) -> Result<Tensor> {
    let size = images.size();
    if images.kind() != Kind::Uint8 || size.len() != 4 || size[1] != 3 || size[2] < 1 || size[3] < 1 {
        return Err(BenchError::Internal(format!(
            "preprocess expects uint8 images [B,3,H,W], got {:?} {:?}",
            images.kind(),
            size
        )));
    }
    Ok(match mode {
        ResizeMode::PytorchFid => {
            // torchvision ToTensor (x/255), F.interpolate, then InceptionV3's `2 * x - 1`.
            let x = images.to_kind(Kind::Float) / 255.0;
            let x = x.upsample_bilinear2d([INCEPTION_SIZE, INCEPTION_SIZE], false, None, None);
            x * 2.0 - 1.0
        }
        ResizeMode::Tf => {
            (resize_bilinear_tf1(&images.to_kind(Kind::Float), INCEPTION_SIZE, INCEPTION_SIZE) - 128.0) / 128.0
        }
        ResizeMode::Clean => {
            let x = resize_bicubic_pil(images, INCEPTION_SIZE as usize, INCEPTION_SIZE as usize)?
                .to_device(images.device());
            (x.clamp(0.0, 255.0) - 128.0) / 128.0
        }
    })
}

/// Generated samples in [-1,1] → the uint8 values a PNG of them holds:
/// `clamp(x*127.5 + 128, 0, 255)` truncated, i.e. round-half-up of (x+1)·127.5. Computed in f64,
/// where x·127.5+128 is exact for f32/f16 inputs, so the result does not depend on x's precision.
pub fn quantize(x: &Tensor) -> Tensor {
    (x.to_kind(Kind::Double) * 127.5 + 128.0)
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
}

/// Source taps and weights of TF1 `resize_bilinear(align_corners=False, half_pixel_centers=False)`
/// (tensorflow/core/kernels/image/resize_bilinear_op.cc `compute_interpolation_weights`): in f32,
/// scale = in/out, src = dst·scale, lower = floor(src), upper = min(ceil(src), in−1), lerp = src−floor(src).
fn tf1_taps(in_size: i64, out_size: i64) -> (Vec<i64>, Vec<i64>, Vec<f32>) {
    let scale = in_size as f32 / out_size as f32;
    let mut lo = Vec::with_capacity(out_size as usize);
    let mut hi = Vec::with_capacity(out_size as usize);
    let mut lerp = Vec::with_capacity(out_size as usize);
    for i in 0..out_size {
        let src = i as f32 * scale;
        let f = src.floor();
        lo.push((f as i64).max(0));
        hi.push((src.ceil() as i64).min(in_size - 1));
        lerp.push(src - f);
    }
    (lo, hi, lerp)
}

/// TF1 bilinear resize of float `[B,C,H,W]`. TF interpolates each output pixel as
/// top = tl + (tr−tl)·xl, bottom = bl + (br−bl)·xl, out = top + (bottom−top)·yl; doing the x pass
/// over whole rows first and then the y pass performs exactly those f32 operations.
pub fn resize_bilinear_tf1(x: &Tensor, out_h: i64, out_w: i64) -> Tensor {
    let size = x.size();
    let (h, w) = (size[2], size[3]);
    let dev = x.device();
    let (x0, x1, xl) = tf1_taps(w, out_w);
    let (y0, y1, yl) = tf1_taps(h, out_h);
    let idx = |v: &[i64]| Tensor::from_slice(v).to_device(dev);
    let left = x.index_select(3, &idx(&x0));
    let right = x.index_select(3, &idx(&x1));
    let xl = Tensor::from_slice(&xl).to_device(dev).view([1, 1, 1, out_w]);
    let rows = &left + (&right - &left) * xl;
    let top = rows.index_select(2, &idx(&y0));
    let bottom = rows.index_select(2, &idx(&y1));
    let yl = Tensor::from_slice(&yl).to_device(dev).view([1, 1, out_h, 1]);
    &top + (&bottom - &top) * yl
}

/// PIL's bicubic kernel (libImaging/Resample.c `bicubic_filter`, a = −0.5), support 2.
fn pil_bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output index: first source index and its normalised f64 weights, as PIL's
/// `precompute_coeffs` computes them (support scaled by the downscale factor = antialiasing).
fn pil_coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero; negative values are clamped to 0 right after.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut k: Vec<f64> = (xmin..xmax)
                .map(|x| pil_bicubic((x as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|w| *w /= ww);
            }
            (xmin, k)
        })
        .collect()
}

/// One PIL resampling pass along the rows of a float32 plane (`ImagingResampleHorizontal_32bpc`):
/// f64 accumulation in tap order, stored as f32 like the intermediate "F" image.
fn pil_pass_horizontal(src: &[f32], h: usize, w: usize, coeffs: &[(usize, Vec<f64>)]) -> Vec<f32> {
    let ow = coeffs.len();
    let mut out = vec![0f32; h * ow];
    for y in 0..h {
        let row = &src[y * w..(y + 1) * w];
        for (xx, (xmin, k)) in coeffs.iter().enumerate() {
            let mut s = 0f64;
            for (i, &kw) in k.iter().enumerate() {
                s += row[xmin + i] as f64 * kw;
            }
            out[y * ow + xx] = s as f32;
        }
    }
    out
}

/// The vertical pass (`ImagingResampleVertical_32bpc`), same arithmetic along columns.
fn pil_pass_vertical(src: &[f32], w: usize, coeffs: &[(usize, Vec<f64>)]) -> Vec<f32> {
    let oh = coeffs.len();
    let mut out = vec![0f32; oh * w];
    for (yy, (ymin, k)) in coeffs.iter().enumerate() {
        for x in 0..w {
            let mut s = 0f64;
            for (i, &kw) in k.iter().enumerate() {
                s += src[(ymin + i) * w + x] as f64 * kw;
            }
            out[yy * w + x] = s as f32;
        }
    }
    out
}

/// clean-fid's resize: each channel as a PIL "F" image, `resize((out_w, out_h), BICUBIC)`.
/// PIL resamples horizontally then vertically (skipping an axis whose size is unchanged), with
/// f64 weights and sums and an f32 intermediate; this reproduces that order of operations.
/// Measured against Pillow (tests/it/fid_net.rs, 32², 64² and 400×333 → 299²): bit-identical
/// (max abs error 0). Returns float32 `[B,3,out_h,out_w]` on the CPU, unclipped.
pub fn resize_bicubic_pil(images: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let size = images.size();
    let (b, c, h, w) = (size[0] as usize, size[1] as usize, size[2] as usize, size[3] as usize);
    let data: Vec<u8> = Vec::<u8>::try_from(images.to_device(Device::Cpu).contiguous().view([-1]))
        .map_err(|e| BenchError::Internal(format!("reading images: {e}")))?;
    let cx = pil_coeffs(w, out_w);
    let cy = pil_coeffs(h, out_h);
    let planes: Vec<Vec<f32>> = data
        .par_chunks(h * w)
        .map(|plane| {
            let f: Vec<f32> = plane.iter().map(|&v| v as f32).collect();
            let f = if out_w != w {
                pil_pass_horizontal(&f, h, w, &cx)
            } else {
                f
            };
            if out_h != h {
                pil_pass_vertical(&f, out_w, &cy)
            } else {
                f
            }
        })
        .collect();
    let flat: Vec<f32> = planes.concat();
    Ok(Tensor::from_slice(&flat).view([b as i64, c as i64, out_h as i64, out_w as i64]))
}

/// Fractional bits of PIL's fixed-point coefficients for 8-bit images
/// (libImaging/Resample.c `PRECISION_BITS = 32 - 8 - 2`).
const PIL_PRECISION_BITS: u32 = 22;

/// PIL's `normalize_coeffs_8bpc`: each f64 weight scaled by 2²² and rounded half away from zero
/// (C's `(int)(±0.5 + w·2²²)`).
fn pil_coeffs_8bpc(coeffs: &[(usize, Vec<f64>)]) -> Vec<(usize, Vec<i64>)> {
    let one = (1i64 << PIL_PRECISION_BITS) as f64;
    coeffs
        .iter()
        .map(|(start, k)| {
            let k = k
                .iter()
                .map(|&w| if w < 0.0 { (-0.5 + w * one) as i64 } else { (0.5 + w * one) as i64 })
                .collect();
            (*start, k)
        })
        .collect()
}

/// One tap sum of PIL's 8-bit passes: rounding bias 2²¹, arithmetic shift, clip to 0..255
/// (`clip8`).
fn pil_tap_8bpc(pixels: impl Iterator<Item = u8>, k: &[i64]) -> u8 {
    let mut ss: i64 = 1 << (PIL_PRECISION_BITS - 1);
    // k first: zip polls its left side first, so the pixel iterator is never advanced past the taps.
    for (&w, p) in k.iter().zip(pixels) {
        ss += p as i64 * w;
    }
    (ss >> PIL_PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `Image.resize((out_w, out_h), BICUBIC)` of 8-bit images, as transformers' PIL image
/// processors run it on each RGB image (`ImagingResampleHorizontal_8bpc` then
/// `ImagingResampleVertical_8bpc`, skipping an axis whose size is unchanged): the same
/// antialiased coefficients as [`resize_bicubic_pil`], in fixed point, with an 8-bit
/// intermediate. uint8 `[B,C,H,W]` (any device) → uint8 `[B,C,out_h,out_w]` on the CPU.
pub fn resize_bicubic_pil_u8(images: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let size = images.size();
    if images.kind() != Kind::Uint8 || size.len() != 4 || size.iter().any(|&d| d < 1) || out_h < 1 || out_w < 1 {
        return Err(BenchError::Internal(format!(
            "resize_bicubic_pil_u8 expects uint8 images [B,C,H,W], got {:?} {size:?}",
            images.kind()
        )));
    }
    let (b, c, h, w) = (size[0] as usize, size[1] as usize, size[2] as usize, size[3] as usize);
    let data: Vec<u8> = Vec::<u8>::try_from(images.to_device(Device::Cpu).contiguous().view([-1]))
        .map_err(|e| BenchError::Internal(format!("reading images: {e}")))?;
    let cx = pil_coeffs_8bpc(&pil_coeffs(w, out_w));
    let cy = pil_coeffs_8bpc(&pil_coeffs(h, out_h));
    let planes: Vec<Vec<u8>> = data
        .par_chunks(h * w)
        .map(|plane| {
            let rows: Vec<u8> = if out_w != w {
                (0..h)
                    .flat_map(|y| {
                        let row = &plane[y * w..(y + 1) * w];
                        cx.iter().map(move |(x0, k)| pil_tap_8bpc(row[*x0..].iter().copied(), k))
                    })
                    .collect()
            } else {
                plane.to_vec()
            };
            if out_h != h {
                cy.iter()
                    .flat_map(|(y0, k)| {
                        let rows = &rows;
                        (0..out_w).map(move |x| pil_tap_8bpc((*y0..).map(|y| rows[y * out_w + x]), k))
                    })
                    .collect()
            } else {
                rows
            }
        })
        .collect();
    Ok(Tensor::from_slice(&planes.concat()).view([b as i64, c as i64, out_h as i64, out_w as i64]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_is_round_half_up_and_clamped() {
        let x = Tensor::from_slice(&[-1.5f32, -1.0, -0.75, -0.5, 0.0, 0.999, 1.0, 2.0]);
        let q = Vec::<u8>::try_from(quantize(&x)).unwrap();
        // (x+1)*127.5 + 0.5 truncated: -1 → 0.5 → 0, -0.75 → 32.375 → 32, -0.5 → 64.25 → 64,
        // 0 → 128, 1 → 255.5 clamped to 255.
        assert_eq!(q, vec![0, 0, 32, 64, 128, 255, 255, 255]);
    }

    #[test]
    fn tf1_taps_follow_the_unshifted_formula() {
        // 2 → 4: src = 0, 0.5, 1, 1.5 ; the last clamps its upper tap to index 1.
        let (lo, hi, l) = tf1_taps(2, 4);
        assert_eq!((lo, hi), (vec![0, 0, 1, 1], vec![0, 1, 1, 1]));
        assert_eq!(l, vec![0.0, 0.5, 0.0, 0.5]);
    }

    #[test]
    fn pil_coeffs_upscale_and_downscale() {
        // Upscaling keeps support 2: 4 taps around the centre, normalised.
        let c = pil_coeffs(32, 299);
        assert!(c
            .iter()
            .all(|(_, k)| (k.iter().sum::<f64>() - 1.0).abs() < 1e-12 && k.len() <= 5));
        // Exact 2× downscale: centre 1.0 for output 0, support 4 → taps (int)(5.5) = 0..5 (clipped at 0).
        let c = pil_coeffs(8, 4);
        assert_eq!(c[0].0, 0);
        assert_eq!(c[0].1.len(), 5);
        let w: Vec<f64> = [-0.5f64, 0.5, 1.5, 2.5, 3.5]
            .iter()
            .map(|&d| pil_bicubic(d / 2.0))
            .collect();
        let s: f64 = w.iter().sum();
        for (a, b) in c[0].1.iter().zip(&w) {
            assert!((a - b / s).abs() < 1e-15);
        }
    }

    #[test]
    fn constant_image_stays_constant_in_every_mode() {
        let img = Tensor::full([1, 3, 17, 23], 200, (Kind::Uint8, Device::Cpu));
        for (mode, want) in [
            (ResizeMode::PytorchFid, 200.0 / 255.0 * 2.0 - 1.0),
            (ResizeMode::Tf, 72.0 / 128.0),
            (ResizeMode::Clean, 72.0 / 128.0),
        ] {
            let y = preprocess(&img, mode).unwrap();
            assert_eq!(y.size(), vec![1, 3, 299, 299]);
            let err = (y - want).abs().max().double_value(&[]);
            assert!(err < 1e-6, "{mode}: {err}");
        }
    }
}
