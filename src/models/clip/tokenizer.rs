//! CLIP's byte-level BPE tokenizer from a transformers tokenizer folder (`vocab.json` +
//! `merges.txt` + `tokenizer_config.json` [+ `special_tokens_map.json`]), built with the
//! `tokenizers` crate into the same pipeline as transformers 5's `CLIPTokenizer`
//! (transformers/models/clip/tokenization_clip.py):
//!
//! - normalizer: NFC, every whitespace run → one space, lowercase;
//! - pre-tokenizer: CLIP's split regex (specials, contractions, letter runs, single digits,
//!   punctuation runs; whitespace removed), then GPT-2 byte-level mapping;
//! - model: BPE with the `</w>` end-of-word suffix, unknown token `<|endoftext|>`;
//! - post-processor: `<|startoftext|> … <|endoftext|>`;
//! - truncation to `model_max_length` (77) keeping the end token, padding to it with the
//!   folder's pad token (SD 1.x: `<|endoftext|>`, SD 2.x: `!`), as diffusers' pipelines call it
//!   (`padding="max_length", truncation=True`).
//!
//! The original OpenAI tokenizer (and transformers < 5's slow `CLIPTokenizer` when ftfy was
//! installed) first ran `ftfy.fix_text` and HTML unescaping; transformers 5 does neither, and
//! neither does this (so `&amp;` stays five characters).
use crate::{BenchError, Result};
use serde_json::Value;
use std::path::Path;
use tch::Tensor;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, SplitDelimiterBehavior, Tokenizer,
    TruncationDirection, TruncationParams, TruncationStrategy,
};

/// CLIP's pre-tokenizer pattern (transformers `CLIPTokenizer`; OpenAI CLIP `simple_tokenizer.py`).
const CLIP_SPLIT: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The special-token attributes transformers reads, in the order it registers them (the last
/// definition of a token's flags wins, as in `tokenizers`' `AddedVocabulary::add_tokens`).
const SPECIAL_KEYS: [&str; 7] = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

pub struct ClipTokenizer {
    inner: Tokenizer,
    max_length: usize,
    bos_id: i64,
    eos_id: i64,
    pad_id: i64,
    source: String,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::file(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| BenchError::file(path, format!("not valid JSON: {e}")))
}

/// A token entry of a tokenizer config: a plain string, or an `AddedToken` dict
/// (`{"content": …, "lstrip": …, "normalized": …, …}`), read as Python's `AddedToken` reads it:
/// `special` defaults to `special_default`, `normalized` to `not special`.
fn added_token(v: &Value, special_default: bool) -> Option<AddedToken> {
    match v {
        Value::String(s) => Some(AddedToken::from(s.clone(), true).normalized(false)),
        Value::Object(m) => {
            let content = m.get("content")?.as_str()?.to_string();
            let flag = |k: &str, d: bool| m.get(k).and_then(Value::as_bool).unwrap_or(d);
            let special = flag("special", special_default);
            Some(
                AddedToken::from(content, special)
                    .normalized(flag("normalized", !special))
                    .lstrip(flag("lstrip", false))
                    .rstrip(flag("rstrip", false))
                    .single_word(flag("single_word", false)),
            )
        }
        _ => None,
    }
}

impl ClipTokenizer {
    /// Loads a `CLIPTokenizer` folder: a diffusers pipeline's `tokenizer/`, or a transformers
    /// CLIP model folder (which holds the same files at its root).
    pub fn load(dir: &Path) -> Result<Self> {
        let source = dir.display().to_string();
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        for f in [&vocab, &merges] {
            if !f.is_file() {
                return Err(BenchError::file(f, "missing: a CLIP tokenizer folder needs vocab.json and merges.txt"));
            }
        }
        let config_path = dir.join("tokenizer_config.json");
        let config = read_json(&config_path)?;
        let err = |m: String| BenchError::file(&config_path, m);
        if let Some(class) = config.get("tokenizer_class").and_then(Value::as_str) {
            if !matches!(class, "CLIPTokenizer" | "CLIPTokenizerFast") {
                return Err(err(format!("tokenizer_class = {class:?} is not supported (supported: \"CLIPTokenizer\")")));
            }
        }
        let max_length = config
            .get("model_max_length")
            .and_then(Value::as_u64)
            .filter(|&n| (2..=4096).contains(&n))
            .ok_or_else(|| err("model_max_length must be an integer between 2 and 4096 (CLIP: 77)".into()))?
            as usize;

        // transformers' resolution of special tokens (`PreTrainedTokenizerBase.from_pretrained`):
        // named specials refer to the entries of the config's `added_tokens_decoder` (or of
        // tokenizer.json's `added_tokens`) with the same content; without a decoder in the config
        // (the older layout of the SD folders), `special_tokens_map.json` overrides the config's
        // entries. Config dicts are read as `AddedToken(**obj)` (normalized unless
        // said otherwise), special_tokens_map dicts as `AddedToken(**obj, special=True)` (not
        // normalized unless said), plain strings as special, not normalized. Which of these
        // flags a token ends with decides e.g. whether "<|ENDOFTEXT|>" in a prompt (lowercased by
        // the normalizer) becomes the end token.
        let decoder: Vec<AddedToken> = match config.get("added_tokens_decoder") {
            Some(Value::Object(m)) => {
                let mut entries: Vec<(u64, AddedToken)> = vec![];
                for (id, tok) in m {
                    let id = id.parse::<u64>().map_err(|_| err(format!("added_tokens_decoder key {id:?} is not a token id")))?;
                    let tok = added_token(tok, false)
                        .ok_or_else(|| err(format!("added_tokens_decoder entry {id} is not a token")))?;
                    entries.push((id, tok));
                }
                entries.sort_by_key(|(id, _)| *id);
                entries.into_iter().map(|(_, t)| t).collect()
            }
            // A folder saved by transformers 5 keeps the token flags in tokenizer.json, which
            // transformers then builds the tokenizer from.
            _ => match dir.join("tokenizer.json") {
                p if p.is_file() => match read_json(&p)?.get("added_tokens") {
                    Some(Value::Array(list)) => list
                        .iter()
                        .map(|t| added_token(t, false).ok_or_else(|| BenchError::file(&p, format!("added_tokens entry {t} is not a token"))))
                        .collect::<Result<_>>()?,
                    _ => vec![],
                },
                _ => vec![],
            },
        };
        let map_path = dir.join("special_tokens_map.json");
        let legacy = !matches!(config.get("added_tokens_decoder"), Some(Value::Object(_)));
        let special_map = if legacy && map_path.is_file() { Some(read_json(&map_path)?) } else { None };
        let clip_default = |key: &str| match key {
            "bos_token" => Some("<|startoftext|>"),
            "eos_token" | "unk_token" | "pad_token" => Some("<|endoftext|>"),
            _ => None,
        };
        let mut specials: Vec<(&str, AddedToken)> = vec![];
        for key in SPECIAL_KEYS {
            let token = match special_map.as_ref().and_then(|m| m.get(key)).filter(|v| !v.is_null()) {
                Some(v) => added_token(v, true),
                None => match config.get(key).filter(|v| !v.is_null()) {
                    Some(v) => added_token(v, false),
                    None => clip_default(key).map(|s| AddedToken::from(s, true).normalized(false)),
                },
            };
            let Some(token) = token else { continue };
            let token = decoder.iter().find(|d| d.content == token.content).cloned().unwrap_or(token);
            specials.push((key, AddedToken { special: true, ..token }));
        }
        let content = |key: &str| specials.iter().find(|(k, _)| *k == key).map(|(_, t)| t.content.clone());
        let (bos, eos, unk, pad) = match (content("bos_token"), content("eos_token"), content("unk_token"), content("pad_token")) {
            (Some(b), Some(e), Some(u), Some(p)) => (b, e, u, p),
            _ => return Err(err("bos_token, eos_token, unk_token and pad_token must be strings or AddedToken entries".into())),
        };

        let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".into())
            .unk_token(unk)
            .fuse_unk(false)
            .build()
            .map_err(|e| BenchError::file(dir, format!("reading vocab.json + merges.txt: {e}")))?;
        let internal = |e: tokenizers::Error| BenchError::Internal(format!("building the CLIP tokenizer: {e}"));
        let mut inner = Tokenizer::new(bpe);
        let normalizer = NormalizerSequence::new(vec![
            NFC.into(),
            Replace::new(tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()), " ")
                .map_err(internal)?
                .into(),
            Lowercase.into(),
        ]);
        inner.with_normalizer(Some(normalizer)).map_err(internal)?;
        let split = Split::new(SplitPattern::Regex(CLIP_SPLIT.into()), SplitDelimiterBehavior::Removed, true).map_err(internal)?;
        inner.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![split.into(), ByteLevel::new(false, true, true).into()])));
        inner.add_tokens(decoder.into_iter().chain(specials.into_iter().map(|(_, t)| t))).map_err(internal)?;
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .map(i64::from)
                .ok_or_else(|| BenchError::file(dir, format!("special token {t:?} is not in vocab.json")))
        };
        let (bos_id, eos_id, pad_id) = (id(&bos)?, id(&eos)?, id(&pad)?);
        inner.with_post_processor(Some(
            RobertaProcessing::new((eos.clone(), eos_id as u32), (bos.clone(), bos_id as u32))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(internal)?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: pad_id as u32,
            pad_type_id: 0,
            pad_token: pad,
        }));
        Ok(ClipTokenizer { inner, max_length, bos_id, eos_id, pad_id, source })
    }

    /// Token ids of one prompt: exactly `max_length()` of them, `<|startoftext|>` first, the end
    /// token after the (possibly truncated) text, then padding. Second value: whether the
    /// prompt was truncated.
    pub fn encode(&self, prompt: &str) -> Result<(Vec<i64>, bool)> {
        let enc = self
            .inner
            .encode(prompt, true)
            .map_err(|e| BenchError::user(format!("tokenizing {prompt:?} with {}: {e}", self.source)))?;
        let ids: Vec<i64> = enc.get_ids().iter().map(|&i| i64::from(i)).collect();
        if ids.len() != self.max_length {
            return Err(BenchError::Internal(format!("tokenizer returned {} ids, expected {}", ids.len(), self.max_length)));
        }
        Ok((ids, !enc.get_overflowing().is_empty()))
    }

    /// Token ids of a batch of prompts as an int64 CPU tensor `[B, max_length]`, the input of
    /// `ClipTextModel::forward`. Truncated prompts are logged (as diffusers warns).
    pub fn encode_batch<S: AsRef<str>>(&self, prompts: &[S]) -> Result<Tensor> {
        let mut all = Vec::with_capacity(prompts.len() * self.max_length);
        for (i, p) in prompts.iter().enumerate() {
            let (ids, truncated) = self.encode(p.as_ref())?;
            if truncated {
                tracing::warn!(
                    "prompt {i} is longer than CLIP's {} tokens and was truncated: {:?}",
                    self.max_length,
                    p.as_ref()
                );
            }
            all.extend(ids);
        }
        Ok(Tensor::from_slice(&all).view([prompts.len() as i64, self.max_length as i64]))
    }

    /// Sequence length every encoding has (`model_max_length`, 77 for CLIP).
    pub fn max_length(&self) -> usize {
        self.max_length
    }
    pub fn bos_id(&self) -> i64 {
        self.bos_id
    }
    pub fn eos_id(&self) -> i64 {
        self.eos_id
    }
    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }
}
