//! CLIP's vision transformer (transformers `CLIPVisionModel` + `visual_projection`; OpenAI CLIP
//! `VisionTransformer`): non-overlapping patches by a strided convolution, a learned class token
//! and position embeddings, LayerNorm before the blocks (`pre_layrnorm`, transformers' spelling),
//! the class token's final state through `post_layernorm`, then the projection.
use super::{ClipVisionConfig, Encoder};
use crate::models::layers::LayerNorm;
use crate::models::weights::WeightTaker;
use crate::{BenchError, Result};
use tch::{Device, Kind, Tensor};

pub struct ClipVisionModel {
    pub config: ClipVisionConfig,
    class_embedding: Tensor,
    patch_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    /// `visual_projection.weight` [P,D].
    projection: Option<Tensor>,
    device: Device,
    kind: Kind,
}

impl ClipVisionModel {
    /// Takes the tower's weights under `prefix` (and the projection, if any) from `wt`.
    pub(super) fn build(wt: &mut WeightTaker, prefix: &str, config: ClipVisionConfig, projection: Option<(&str, i64)>) -> Self {
        let d = config.encoder.hidden_size;
        let (p, c) = (config.patch_size, config.num_channels);
        let positions = (config.image_size / p) * (config.image_size / p) + 1;
        let eps = config.encoder.layer_norm_eps;
        let class_embedding = wt.take(&format!("{prefix}embeddings.class_embedding"), &[d]);
        let patch_embedding = wt.take(&format!("{prefix}embeddings.patch_embedding.weight"), &[d, c, p, p]);
        let position_embedding = wt.take(&format!("{prefix}embeddings.position_embedding.weight"), &[positions, d]);
        let pre_layrnorm = LayerNorm::new(wt, &format!("{prefix}pre_layrnorm"), d, eps);
        let encoder = Encoder::new(wt, prefix, &config.encoder);
        let post_layernorm = LayerNorm::new(wt, &format!("{prefix}post_layernorm"), d, eps);
        let projection = projection.map(|(name, p)| wt.take(name, &[p, d]));
        ClipVisionModel {
            config,
            class_embedding,
            patch_embedding,
            position_embedding,
            pre_layrnorm,
            encoder,
            post_layernorm,
            projection,
            device: wt.device,
            kind: wt.kind,
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Preprocessed pixels [B,C,S,S] (float, any device; S = image_size, see
    /// `ClipImageProcessor`) → the pooled class-token state [B,D] (transformers `pooler_output`).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let size = pixel_values.size();
        let (c, s) = (self.config.num_channels, self.config.image_size);
        let float = matches!(pixel_values.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16);
        if !float || size.len() != 4 || size[0] < 1 || size[1] != c || size[2] != s || size[3] != s {
            return Err(BenchError::Internal(format!(
                "CLIP vision model expects float pixels [B,{c},{s},{s}], got {:?} {size:?}",
                pixel_values.kind()
            )));
        }
        let _guard = tch::no_grad_guard();
        let b = size[0];
        let d = self.config.encoder.hidden_size;
        let x = pixel_values.to_device(self.device).to_kind(self.kind);
        let p = self.config.patch_size;
        // [B,D,S/p,S/p] → [B,(S/p)²,D], row-major over the patch grid.
        let patches = x.conv2d(&self.patch_embedding, None::<Tensor>, [p, p], [0, 0], [1, 1], 1).flatten(2, -1).transpose(1, 2);
        let cls = self.class_embedding.view([1, 1, d]).expand([b, 1, d], false);
        let h = Tensor::cat(&[cls, patches], 1) + self.position_embedding.unsqueeze(0);
        let h = self.encoder.forward(&self.pre_layrnorm.forward(&h), false, self.config.encoder.num_hidden_layers);
        Ok(self.post_layernorm.forward(&h.select(1, 0)))
    }

    /// The projected pooled states [B,P] (transformers `get_image_features`).
    pub fn image_embeds(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let Some(w) = &self.projection else {
            return Err(BenchError::Internal("this CLIP vision model has no visual_projection".into()));
        };
        let pooled = self.forward(pixel_values)?;
        let _guard = tch::no_grad_guard();
        Ok(pooled.linear(w, None::<Tensor>))
    }
}
