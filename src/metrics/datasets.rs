//! Image sources for FID: each yields uint8 [B,3,H,W] batches (CPU) in a fixed order.
//!
//! Source specs (the `bench fid` / `bench stats` PATH arguments):
//! - an image folder (its own files, as pytorch-fid lists them; subfolders too with `--recursive`; PNG/JPEG/WebP; sorted by path; converted to RGB like PIL's
//!   `convert('RGB')`, which drops alpha). Sizes may differ, as clean-fid allows: each image is
//!   then resized on its own by the metric's preprocessing (`read_images`);
//! - a `.npz` of uint8 images under `arr_0`, NHWC (OpenAI's samples files);
//! - `cifar10:train:DIR` / `cifar10:test:DIR`: CIFAR-10, binary version (`data_batch_1..5.bin` /
//!   `test_batch.bin` in DIR or DIR/cifar-10-batches-bin) or python version (`data_batch_1..5` /
//!   `test_batch` pickles in DIR or DIR/cifar-10-batches-py);
//! - `celeba:DIR`: `img_align_celeba` (DIR or DIR/img_align_celeba) with the DDIM repo's 64×64
//!   transform: crop 128×128 at top 57, left 25, then torchvision `Resize(64)` on the PIL image;
//! - a statistics `.npz` (`mu`, `sigma`): used as is, no images.
use crate::metrics::stats::{open_npz, FeatureStats, Moments};
use crate::{BenchError, Result};
use ndarray::{Array4, Ix4};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// A finite, ordered set of RGB images, all of one size unless [`ImageSource::uniform_size`] says
/// otherwise (an image folder of mixed sizes).
pub trait ImageSource: Send + Sync {
    /// What the source is, for logs and errors (e.g. `cifar10:train:/data/cifar`).
    fn describe(&self) -> String;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// (height, width) of every image (of the first one when sizes are mixed).
    fn image_size(&self) -> (usize, usize);
    /// Images `start .. start+count` as a uint8 [count,3,H,W] CPU tensor (uniform sizes only).
    fn read_batch(&self, start: usize, count: usize) -> Result<Tensor>;
    /// Whether all images have `image_size()`, so that `read_batch` works.
    fn uniform_size(&self) -> bool {
        true
    }
    /// Images `start .. start+count`, each a uint8 [1,3,H,W] CPU tensor at its own size.
    fn read_images(&self, start: usize, count: usize) -> Result<Vec<Tensor>> {
        Ok(self.read_batch(start, count)?.split(1, 0))
    }
}

/// What a PATH argument names: images to run through the network, or finished statistics.
pub enum Input {
    Images(Box<dyn ImageSource>),
    Stats(Moments),
    /// A `bench stats` file with raw sums: usable as statistics and mergeable.
    Sums(FeatureStats),
}

const SPEC_HELP: &str =
    "expected an image folder, an images .npz (arr_0), a statistics .npz (mu, sigma), cifar10:train:DIR, cifar10:test:DIR or celeba:DIR";

/// Opens a source spec and validates it (exists, has ≥ 2 images, ...); image folders are listed
/// without their subfolders, as pytorch-fid does.
pub fn open_input(spec: &str) -> Result<Input> {
    open_input_with(spec, false)
}

/// [`open_input`], searching image folders recursively when `recursive`.
pub fn open_input_with(spec: &str, recursive: bool) -> Result<Input> {
    let input = if let Some(rest) = spec.strip_prefix("cifar10:") {
        let (split, dir) = rest.split_once(':').ok_or_else(|| {
            BenchError::user(format!("'{spec}': CIFAR-10 sources are cifar10:train:DIR or cifar10:test:DIR"))
        })?;
        let split = match split {
            "train" => Cifar10Split::Train,
            "test" => Cifar10Split::Test,
            other => {
                return Err(BenchError::user(format!(
                    "'{spec}': unknown CIFAR-10 split '{other}'; allowed: train, test"
                )))
            }
        };
        Input::Images(Box::new(Cifar10Binary::open(Path::new(dir), split)?))
    } else if let Some(dir) = spec.strip_prefix("celeba:") {
        let dir = Path::new(dir);
        let nested = dir.join("img_align_celeba");
        let dir = if nested.is_dir() { nested } else { dir.to_path_buf() };
        Input::Images(Box::new(ImageFolder::open_with(&dir, Some(CelebaTransform), false)?))
    } else {
        let path = Path::new(spec);
        if path.is_dir() {
            Input::Images(Box::new(ImageFolder::open_with(path, None, recursive)?))
        } else if path.is_file() && spec.to_ascii_lowercase().ends_with(".npz") {
            open_npz_input(path)?
        } else if path.exists() {
            return Err(BenchError::file(path, format!("not a supported FID input; {SPEC_HELP}")));
        } else {
            return Err(BenchError::file(path, format!("no such file or directory; {SPEC_HELP}")));
        }
    };
    if let Input::Images(src) = &input {
        if src.len() < 2 {
            return Err(BenchError::user(format!(
                "{}: has {} image{}; FID needs at least 2",
                src.describe(),
                src.len(),
                if src.len() == 1 { "" } else { "s" }
            )));
        }
    }
    Ok(input)
}

fn open_npz_input(path: &Path) -> Result<Input> {
    let names = open_npz(path)?
        .names()
        .map_err(|e| BenchError::file(path, format!("not a readable .npz: {e}")))?;
    let has = |k: &str| names.iter().any(|n| n == k);
    if has("arr_0") && !has("mu") {
        return Ok(Input::Images(Box::new(NpzImages::open(path)?)));
    }
    if (has("outer_sum_packed") || has("outer_sum")) && has("mu") {
        // A `bench stats` file: mu/sigma plus mergeable sums; the moments are what FID needs.
        return Ok(Input::Sums(FeatureStats::load_npz(path, Device::Cpu)?));
    }
    if has("mu") || has("sigma") {
        return Ok(Input::Stats(Moments::load_npz(path)?));
    }
    Err(BenchError::file(
        path,
        format!(
            "holds neither images ('arr_0') nor statistics ('mu', 'sigma'); found: {}",
            if names.is_empty() { "nothing".to_string() } else { names.join(", ") }
        ),
    ))
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10. Binary version: records of 1 label byte + 3072 bytes (R, G, B planes of 32×32);
// python version: pickled dicts whose 'data' is a uint8 [N, 3072] array in the same byte order.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cifar10Split {
    Train,
    Test,
}

pub struct Cifar10Binary {
    describe: String,
    /// All images, CHW each, concatenated.
    pixels: Vec<u8>,
    count: usize,
}

const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

impl Cifar10Binary {
    /// Opens the binary version (`data_batch_N.bin`, `test_batch.bin`) in `dir` or
    /// `dir/cifar-10-batches-bin`; failing that, the python version (`data_batch_N`, `test_batch`
    /// pickles, read by the data-only pickle reader) in `dir` or `dir/cifar-10-batches-py`.
    pub fn open(dir: &Path, split: Cifar10Split) -> Result<Self> {
        let stems: Vec<String> = match split {
            Cifar10Split::Train => (1..=5).map(|i| format!("data_batch_{i}")).collect(),
            Cifar10Split::Test => vec!["test_batch".to_string()],
        };
        let find = |sub: &str, suffix: &str| {
            [dir.to_path_buf(), dir.join(sub)].into_iter().find(|d| d.join(format!("{}{suffix}", stems[0])).is_file())
        };
        let split_name = if split == Cifar10Split::Train { "train" } else { "test" };
        let describe = format!("cifar10:{split_name}:{}", dir.display());
        let mut pixels = Vec::new();
        if let Some(base) = find("cifar-10-batches-bin", ".bin") {
            for stem in &stems {
                let file = base.join(format!("{stem}.bin"));
                let bytes = std::fs::read(&file)
                    .map_err(|e| BenchError::file(&file, format!("cannot read CIFAR-10 binary batch ({e})")))?;
                if bytes.is_empty() || bytes.len() % CIFAR_RECORD != 0 {
                    return Err(BenchError::file(
                        &file,
                        format!("{} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records", bytes.len()),
                    ));
                }
                for record in bytes.chunks_exact(CIFAR_RECORD) {
                    pixels.extend_from_slice(&record[1..]);
                }
            }
        } else if let Some(base) = find("cifar-10-batches-py", "") {
            for stem in &stems {
                let file = base.join(stem);
                let batch = crate::checkpoint::load_pickle(&file)?;
                let data = match batch.get("data") {
                    Some(crate::checkpoint::Value::Tensor(t)) if t.kind() == tch::Kind::Uint8 && t.size().len() == 2 && t.size()[1] == 3072 => t,
                    _ => return Err(BenchError::file(&file, "not a CIFAR-10 python batch: no uint8 'data' array of shape [N, 3072]")),
                };
                let n = data.numel();
                let mut buf = vec![0u8; n];
                data.f_contiguous()?.f_copy_data_u8(&mut buf, n)?;
                pixels.extend_from_slice(&buf);
            }
        } else {
            let names = stems.iter().map(|s| format!("{s}.bin")).collect::<Vec<_>>().join(", ");
            return Err(BenchError::file(
                dir,
                format!(
                    "no CIFAR-10 {split_name} batches: expected {names} (binary version) or {} (python version) here or in cifar-10-batches-bin / cifar-10-batches-py",
                    stems.join(", ")
                ),
            ));
        }
        let count = pixels.len() / (CIFAR_RECORD - 1);
        Ok(Cifar10Binary { describe, pixels, count })
    }
}

impl ImageSource for Cifar10Binary {
    fn describe(&self) -> String {
        self.describe.clone()
    }
    fn len(&self) -> usize {
        self.count
    }
    fn image_size(&self) -> (usize, usize) {
        (32, 32)
    }
    fn read_batch(&self, start: usize, count: usize) -> Result<Tensor> {
        let per = CIFAR_RECORD - 1;
        let end = (start + count).min(self.count);
        let slice = &self.pixels[start * per..end * per];
        Ok(Tensor::from_slice(slice).reshape([(end - start) as i64, 3, 32, 32]))
    }
}

// ---------------------------------------------------------------------------------------------
// Image folders.

/// DDIM repo's CelebA 64×64 transform: `Crop(57, 185, 25, 153)` then `Resize(64)` (PIL bilinear,
/// antialiased); datasets/__init__.py of ermongroup/ddim.
#[derive(Clone, Copy, Debug)]
pub struct CelebaTransform;

impl CelebaTransform {
    pub const TOP: usize = 57;
    pub const LEFT: usize = 25;
    pub const CROP: usize = 128;
    pub const OUT: usize = 64;

    /// HWC RGB `width`×`height` → 64×64 HWC RGB.
    pub fn apply(&self, rgb: &[u8], width: usize) -> Vec<u8> {
        let crop: Vec<u8> = (Self::TOP..Self::TOP + Self::CROP)
            .flat_map(|y| {
                let row = (y * width + Self::LEFT) * 3;
                rgb[row..row + Self::CROP * 3].iter().copied()
            })
            .collect();
        pil_resize_bilinear(&crop, Self::CROP, Self::CROP, Self::OUT, Self::OUT)
    }
}

pub struct ImageFolder {
    root: PathBuf,
    files: Vec<PathBuf>,
    /// (height, width) of each stored image (before any transform).
    sizes: Vec<(usize, usize)>,
    /// Size of the first stored image; that of all of them when `uniform`.
    height: usize,
    width: usize,
    uniform: bool,
    transform: Option<CelebaTransform>,
}

fn is_image_file(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg" | "webp"))
        .unwrap_or(false)
}

fn collect_images(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| BenchError::file(dir, format!("cannot list folder: {e}")))?;
    for entry in entries {
        let path = entry.map_err(|e| BenchError::file(dir, format!("cannot list folder: {e}")))?.path();
        if path.is_dir() {
            if recursive {
                collect_images(&path, recursive, out)?;
            }
        } else if is_image_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn image_dimensions(path: &Path) -> Result<(usize, usize)> {
    let reader = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| BenchError::file(path, format!("cannot open image: {e}")))?;
    let (w, h) = reader.into_dimensions().map_err(|e| BenchError::file(path, format!("not a readable image: {e}")))?;
    Ok((h as usize, w as usize))
}

impl ImageFolder {
    /// The images directly in `dir` (pytorch-fid's listing).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, None, false)
    }

    pub fn open_with(dir: &Path, transform: Option<CelebaTransform>, recursive: bool) -> Result<Self> {
        if !dir.is_dir() {
            return Err(BenchError::file(dir, "no such folder"));
        }
        let mut files = Vec::new();
        collect_images(dir, recursive, &mut files)?;
        files.sort();
        if files.is_empty() {
            let how = if recursive { "searched recursively" } else { "subfolders are searched with --recursive" };
            return Err(BenchError::file(dir, format!("no PNG, JPEG or WebP images found ({how})")));
        }
        let sizes: Vec<(usize, usize)> = files.par_iter().map(|f| image_dimensions(f)).collect::<Result<_>>()?;
        let (height, width) = sizes[0];
        let mixed = sizes.iter().position(|&s| s != sizes[0]);
        if let (Some(i), Some(_)) = (mixed, transform) {
            return Err(BenchError::file(
                dir,
                format!(
                    "images have different sizes: {} is {}x{} but {} is {}x{} (width x height); the CelebA crop needs one size",
                    rel(dir, &files[0]),
                    width,
                    height,
                    rel(dir, &files[i]),
                    sizes[i].1,
                    sizes[i].0
                ),
            ));
        }
        if transform.is_some()
            && (height < CelebaTransform::TOP + CelebaTransform::CROP || width < CelebaTransform::LEFT + CelebaTransform::CROP)
        {
            return Err(BenchError::file(
                dir,
                format!("images are {width}x{height}; the CelebA crop needs at least 153x185 (img_align_celeba is 178x218)"),
            ));
        }
        Ok(ImageFolder { root: dir.to_path_buf(), files, sizes, height, width, uniform: mixed.is_none(), transform })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Image `i` as HWC RGB after the transform.
    fn load(&self, i: usize) -> Result<Vec<u8>> {
        let path = &self.files[i];
        let img = image::ImageReader::open(path)
            .and_then(|r| r.with_guessed_format())
            .map_err(|e| BenchError::file(path, format!("cannot open image: {e}")))?
            .decode()
            .map_err(|e| BenchError::file(path, format!("cannot decode image: {e}")))?;
        let rgb = to_rgb8_like_pil(img);
        if (rgb.height() as usize, rgb.width() as usize) != self.sizes[i] {
            return Err(BenchError::file(path, "image size changed while reading"));
        }
        let raw = rgb.into_raw();
        Ok(match &self.transform {
            Some(t) => t.apply(&raw, self.width),
            None => raw,
        })
    }
}

/// RGB as PIL's `Image.open(path).convert('RGB')` gives it (pytorch-fid's loader). PIL opens a
/// 16-bit gray PNG as mode "I;16" and converts it to RGB by clipping at 255 (values ≥ 256 become
/// 255, not scaled); 16-bit RGB(A) and gray+alpha PNGs it opens as 8-bit RGB(A) keeping the high
/// byte of each sample. The `image` crate scales both by 255/65535 instead.
fn to_rgb8_like_pil(img: image::DynamicImage) -> image::RgbImage {
    use image::DynamicImage as D;
    let high = |v: u16| (v >> 8) as u8;
    match img {
        D::ImageLuma16(b) => {
            let (w, h) = b.dimensions();
            image::RgbImage::from_fn(w, h, |x, y| {
                let v = b.get_pixel(x, y)[0].min(255) as u8;
                image::Rgb([v, v, v])
            })
        }
        D::ImageLumaA16(b) => {
            let (w, h) = b.dimensions();
            image::RgbImage::from_fn(w, h, |x, y| {
                let v = high(b.get_pixel(x, y)[0]);
                image::Rgb([v, v, v])
            })
        }
        D::ImageRgb16(b) => {
            let (w, h) = b.dimensions();
            image::RgbImage::from_fn(w, h, |x, y| image::Rgb(b.get_pixel(x, y).0.map(high)))
        }
        D::ImageRgba16(b) => {
            let (w, h) = b.dimensions();
            image::RgbImage::from_fn(w, h, |x, y| {
                let [r, g, bl, _] = b.get_pixel(x, y).0;
                image::Rgb([high(r), high(g), high(bl)])
            })
        }
        other => other.to_rgb8(),
    }
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// HWC images → one NCHW buffer.
fn hwc_to_nchw(images: &[Vec<u8>], h: usize, w: usize) -> Vec<u8> {
    let plane = h * w;
    let mut out = vec![0u8; images.len() * 3 * plane];
    for (img, dst) in images.iter().zip(out.chunks_exact_mut(3 * plane)) {
        for (i, px) in img.chunks_exact(3).enumerate() {
            dst[i] = px[0];
            dst[plane + i] = px[1];
            dst[2 * plane + i] = px[2];
        }
    }
    out
}

impl ImageSource for ImageFolder {
    fn describe(&self) -> String {
        match self.transform {
            Some(_) => format!("celeba:{}", self.root.display()),
            None => self.root.display().to_string(),
        }
    }
    fn len(&self) -> usize {
        self.files.len()
    }
    fn image_size(&self) -> (usize, usize) {
        match self.transform {
            Some(_) => (CelebaTransform::OUT, CelebaTransform::OUT),
            None => (self.height, self.width),
        }
    }
    fn read_batch(&self, start: usize, count: usize) -> Result<Tensor> {
        if !self.uniform {
            return Err(BenchError::Internal(format!(
                "{}: images of mixed sizes are read one by one (read_images)",
                self.root.display()
            )));
        }
        let end = (start + count).min(self.files.len());
        let images: Vec<Vec<u8>> = (start..end).into_par_iter().map(|i| self.load(i)).collect::<Result<_>>()?;
        let (h, w) = self.image_size();
        Ok(Tensor::from_slice(&hwc_to_nchw(&images, h, w)).reshape([(end - start) as i64, 3, h as i64, w as i64]))
    }
    fn uniform_size(&self) -> bool {
        self.uniform
    }
    fn read_images(&self, start: usize, count: usize) -> Result<Vec<Tensor>> {
        let end = (start + count).min(self.files.len());
        (start..end)
            .into_par_iter()
            .map(|i| {
                let (h, w) = match self.transform {
                    Some(_) => (CelebaTransform::OUT, CelebaTransform::OUT),
                    None => self.sizes[i],
                };
                let img = self.load(i)?;
                Ok(Tensor::from_slice(&hwc_to_nchw(&[img], h, w)).reshape([1, 3, h as i64, w as i64]))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// `.npz` of uint8 images, `arr_0` [N,H,W,3].

pub struct NpzImages {
    path: PathBuf,
    images: Array4<u8>,
}

impl NpzImages {
    pub fn open(path: &Path) -> Result<Self> {
        let mut r = open_npz(path)?;
        let images: Array4<u8> = r.by_name::<ndarray::OwnedRepr<u8>, Ix4>("arr_0").map_err(|e| {
            BenchError::file(path, format!("'arr_0' must be uint8 images of shape [N,H,W,3]: {e}"))
        })?;
        if images.shape()[3] != 3 {
            return Err(BenchError::file(
                path,
                format!("'arr_0' has shape {:?}; expected uint8 [N,H,W,3] (NHWC RGB)", images.shape()),
            ));
        }
        Ok(NpzImages { path: path.to_path_buf(), images })
    }
}

impl ImageSource for NpzImages {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
    fn len(&self) -> usize {
        self.images.shape()[0]
    }
    fn image_size(&self) -> (usize, usize) {
        (self.images.shape()[1], self.images.shape()[2])
    }
    fn read_batch(&self, start: usize, count: usize) -> Result<Tensor> {
        let end = (start + count).min(self.len());
        let (h, w) = self.image_size();
        let chunk = self.images.slice(ndarray::s![start..end, .., .., ..]).permuted_axes([0, 3, 1, 2]);
        let nchw: Vec<u8> = chunk.iter().copied().collect();
        Ok(Tensor::from_slice(&nchw).reshape([(end - start) as i64, 3, h as i64, w as i64]))
    }
}

// ---------------------------------------------------------------------------------------------
// PIL's antialiased bilinear resize for 8-bit RGB (Pillow `Image.resize(size, BILINEAR)`,
// libImaging/Resample.c): separable triangle filter whose support grows with the downscale
// factor, coefficients in 22-bit fixed point, horizontal pass first into an 8-bit image.

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: first input index and fixed-point weights (Resample.c `precompute_coeffs`
/// + `normalize_coeffs_8bpc`).
fn pil_bilinear_coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 1.0 * filterscale;
    let triangle = |x: f64| {
        let x = x.abs();
        if x < 1.0 {
            1.0 - x
        } else {
            0.0
        }
    };
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax).map(|x| triangle((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    let v = k * (1u32 << PRECISION_BITS) as f64;
                    (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// HWC RGB `in_w`×`in_h` → `out_w`×`out_h`, bit-identical to Pillow's BILINEAR resize.
pub fn pil_resize_bilinear(rgb: &[u8], in_h: usize, in_w: usize, out_h: usize, out_w: usize) -> Vec<u8> {
    let horizontal = if out_w != in_w {
        let coeffs = pil_bilinear_coeffs(in_w, out_w);
        let mut tmp = vec![0u8; in_h * out_w * 3];
        for y in 0..in_h {
            for (xx, (xmin, k)) in coeffs.iter().enumerate() {
                for c in 0..3 {
                    let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                    for (i, &kk) in k.iter().enumerate() {
                        ss += rgb[(y * in_w + xmin + i) * 3 + c] as i32 * kk;
                    }
                    tmp[(y * out_w + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        tmp
    } else {
        rgb.to_vec()
    };
    if out_h == in_h {
        return horizontal;
    }
    let coeffs = pil_bilinear_coeffs(in_h, out_h);
    let mut out = vec![0u8; out_h * out_w * 3];
    for (yy, (ymin, k)) in coeffs.iter().enumerate() {
        for x in 0..out_w {
            for c in 0..3 {
                let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                for (i, &kk) in k.iter().enumerate() {
                    ss += horizontal[((ymin + i) * out_w + x) * 3 + c] as i32 * kk;
                }
                out[(yy * out_w + x) * 3 + c] = clip8(ss);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pil_bilinear_halving_weights_are_the_scaled_triangle() {
        // 128 → 64: support 2 around centre 2x+1, weights 1/8, 3/8, 3/8, 1/8 (Pillow, scale 2).
        let c = pil_bilinear_coeffs(128, 64);
        assert_eq!(c[0].0, 0);
        let one = (1u32 << PRECISION_BITS) as f64;
        let w: Vec<f64> = c[0].1.iter().map(|&k| k as f64 / one).collect();
        // Left edge: the x=-1 tap is cut, weights 3/7, 3/7, 1/7 renormalised.
        assert_eq!(w.len(), 3);
        assert!((w[0] - 3.0 / 7.0).abs() < 1e-6 && (w[2] - 1.0 / 7.0).abs() < 1e-6, "{w:?}");
        let mid: Vec<f64> = c[10].1.iter().map(|&k| k as f64 / one).collect();
        assert_eq!(c[10].0, 19);
        assert!((mid[0] - 0.125).abs() < 1e-6 && (mid[1] - 0.375).abs() < 1e-6, "{mid:?}");
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = vec![200u8; 128 * 128 * 3];
        assert!(pil_resize_bilinear(&img, 128, 128, 64, 64).iter().all(|&v| v == 200));
    }
}
