//! CLIP's text transformer (transformers `CLIPTextModel`; OpenAI CLIP `encode_text`): token plus
//! learned position embeddings, causal pre-LN blocks, a final LayerNorm. Stable Diffusion
//! conditions its UNet on `last_hidden_state` [B,77,D]; CLIP score uses the state at the
//! end-of-text token, projected.
use super::{ClipConfig, ClipTextConfig, Encoder, POSITION_IDS};
use crate::models::layers::LayerNorm;
use crate::models::weights::WeightTaker;
use crate::{BenchError, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub struct ClipTextModel {
    pub config: ClipTextConfig,
    token_embedding: Tensor,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    /// `text_projection.weight` [P,D] of a `CLIPModel` / `CLIPTextModelWithProjection`.
    projection: Option<Tensor>,
    device: Device,
    kind: Kind,
    source: String,
}

/// The text tower's outputs, in the model's precision on its device.
pub struct ClipTextOutput {
    /// [B,T,D] after `final_layer_norm`: the UNet's `encoder_hidden_states`.
    pub last_hidden_state: Tensor,
    /// [B,D] `last_hidden_state` at each sequence's end-of-text token (transformers `pooler_output`).
    pub pooled: Tensor,
}

impl ClipTextModel {
    /// Loads the text tower of a transformers folder: a diffusers pipeline's `text_encoder/`
    /// (`CLIPTextModel`, keys `text_model.*` as transformers 4 saved them or unprefixed as
    /// transformers 5 does), a `CLIPTextModelWithProjection`, or the text side of a `CLIPModel`
    /// (its vision tower is left unread). Tensors are converted to `kind` as they are read.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let config = ClipConfig::load(dir)?;
        let source = super::folder_weights(dir, kind)?;
        let origin = source.origin.clone();
        // transformers 4 saved `text_model.`-prefixed keys; transformers 5 saves them bare.
        let prefixed = source.names().any(|k| k.starts_with("text_model."));
        let mut wt = WeightTaker::new(source, device, kind);
        let mut ignored = POSITION_IDS.to_vec();
        let model = match config {
            ClipConfig::Text { text, projection_dim } => {
                let prefix = if prefixed { "text_model." } else { "" };
                Self::build(&mut wt, prefix, text, projection_dim.map(|p| ("text_projection.weight", p)), &origin)
            }
            ClipConfig::Full { text, projection_dim, .. } => {
                // A CLIPModel's vision side is left unread.
                ignored.extend(["vision_model.", "visual_projection.", "logit_scale"]);
                Self::build(&mut wt, "text_model.", text, Some(("text_projection.weight", projection_dim)), &origin)
            }
        };
        wt.finish("CLIP text model config", &ignored)?;
        Ok(model)
    }

    /// Takes the tower's weights under `prefix` (and the projection, if any) from `wt`.
    pub(super) fn build(
        wt: &mut WeightTaker,
        prefix: &str,
        config: ClipTextConfig,
        projection: Option<(&str, i64)>,
        source: &str,
    ) -> Self {
        let d = config.encoder.hidden_size;
        let token_embedding = wt.take(&format!("{prefix}embeddings.token_embedding.weight"), &[config.vocab_size, d]);
        let position_embedding =
            wt.take(&format!("{prefix}embeddings.position_embedding.weight"), &[config.max_position_embeddings, d]);
        let encoder = Encoder::new(wt, prefix, &config.encoder);
        let final_layer_norm = LayerNorm::new(wt, &format!("{prefix}final_layer_norm"), d, config.encoder.layer_norm_eps);
        let projection = projection.map(|(name, p)| wt.take(name, &[p, d]));
        ClipTextModel {
            config,
            token_embedding,
            position_embedding,
            encoder,
            final_layer_norm,
            projection,
            device: wt.device,
            kind: wt.kind,
            source: source.to_string(),
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }
    pub fn kind(&self) -> Kind {
        self.kind
    }
    pub fn describe(&self) -> String {
        format!("clip-text:{}", self.source)
    }

    /// Token ids [B,T] (any integer type, any device; 1 ≤ T ≤ max_position_embeddings, every id
    /// below vocab_size) → `last_hidden_state` and pooled states.
    pub fn forward(&self, ids: &Tensor) -> Result<ClipTextOutput> {
        self.forward_to_depth(ids, self.config.encoder.num_hidden_layers)
    }

    /// diffusers' `clip_skip`: the hidden states `clip_skip` blocks before the last, passed
    /// through `final_layer_norm` (`hidden_states[-(clip_skip + 1)]` in `encode_prompt`).
    /// `clip_skip = 0` is `forward`.
    pub fn forward_clip_skip(&self, ids: &Tensor, clip_skip: usize) -> Result<ClipTextOutput> {
        let layers = self.config.encoder.num_hidden_layers;
        if clip_skip >= layers {
            return Err(BenchError::user(format!("clip_skip = {clip_skip} must be below the text encoder's {layers} layers")));
        }
        self.forward_to_depth(ids, layers - clip_skip)
    }

    /// The projected pooled states [B,P] (transformers `get_text_features`).
    pub fn text_embeds(&self, ids: &Tensor) -> Result<Tensor> {
        let Some(w) = &self.projection else {
            return Err(BenchError::user(format!("{}: this CLIP text model has no text_projection", self.source)));
        };
        let out = self.forward(ids)?;
        let _guard = tch::no_grad_guard();
        Ok(out.pooled.linear(w, None::<Tensor>))
    }

    fn check_ids(&self, ids: &Tensor) -> Result<Tensor> {
        let size = ids.size();
        let integer = matches!(ids.kind(), Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8);
        if !integer || size.len() != 2 || size[0] < 1 || size[1] < 1 || size[1] > self.config.max_position_embeddings {
            return Err(BenchError::Internal(format!(
                "CLIP text model expects integer token ids [B,T] with 1 ≤ T ≤ {}, got {:?} {:?}",
                self.config.max_position_embeddings,
                ids.kind(),
                size
            )));
        }
        let ids = ids.to_device(self.device).to_kind(Kind::Int64);
        let (lo, hi) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
        if lo < 0 || hi >= self.config.vocab_size {
            return Err(BenchError::Internal(format!(
                "token ids must lie in [0, {}), found [{lo}, {hi}]",
                self.config.vocab_size
            )));
        }
        Ok(ids)
    }

    /// Where each sequence is pooled, as transformers 5's `CLIPTextModel.forward` chooses it:
    /// configs with `eos_token_id == 2` (written before transformers fixed CLIP's token ids, as in
    /// the SD 1.x/2.x `text_encoder/config.json`) take the largest id (`<|endoftext|>` is the last
    /// entry of CLIP's vocabulary), the others the first occurrence of `eos_token_id`.
    fn pooled_positions(&self, ids: &Tensor) -> Tensor {
        if self.config.eos_token_id == 2 {
            ids.argmax(-1, false)
        } else {
            ids.eq(self.config.eos_token_id).to_kind(Kind::Int).argmax(-1, false)
        }
    }

    fn forward_to_depth(&self, ids: &Tensor, depth: usize) -> Result<ClipTextOutput> {
        let ids = self.check_ids(ids)?;
        let _guard = tch::no_grad_guard();
        let (b, t) = (ids.size()[0], ids.size()[1]);
        let x = Tensor::embedding(&self.token_embedding, &ids, -1, false, false)
            + self.position_embedding.narrow(0, 0, t).unsqueeze(0);
        let h = self.encoder.forward(&x, true, depth);
        let last_hidden_state = self.final_layer_norm.forward(&h);
        let rows = Tensor::arange(b, (Kind::Int64, self.device));
        let pooled = last_hidden_state.index(&[Some(rows), Some(self.pooled_positions(&ids))]);
        Ok(ClipTextOutput { last_hidden_state, pooled })
    }
}
