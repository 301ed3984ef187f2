# Oracles for the native CLIP code (tests/it/clip.rs): tokenizer folders written from open_clip's
# BPE vocabulary, seeded random-weight CLIP text encoders shaped like SD 1.x / SD 2.x's and a tiny
# CLIPModel, each saved in the layouts the product reads, with transformers' outputs on them.
#   clip_fixtures.py tokenizer OUT   -> OUT/<variant>/ folders, OUT/prompts.json, OUT/expected.json
#   clip_fixtures.py text OUT        -> OUT/sd1/, OUT/sd2/ text encoders + reference .npy
#   clip_fixtures.py clip OUT        -> OUT/clip/ CLIPModel folder + images + reference .npy
import json, os, shutil, sys

import numpy as np
import torch

from bench_fixtures import perturb_norms
from clip_tokenizer_folder import write_tokenizer

mode, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)


# >= 50 prompts: plain, long (truncated at 77), unicode (accents, decomposed accents, CJK, emoji
# with modifiers and ZWJ, RTL, Indic), unicode whitespace and digits, punctuation, contractions,
# repeated spaces/newlines, the special tokens written out, and SD 2's pad character "!".
LONG = ("a highly detailed photograph of an astronaut riding a horse on the surface of mars, "
        "dramatic lighting, volumetric fog, octane render, trending on artstation, 8k, ") * 3
PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "A Photograph Of An ASTRONAUT Riding A Horse",
    "",
    " ",
    "   leading and trailing spaces   ",
    "multiple    spaces\tand\ttabs",
    "new\nlines\n\nand\r\ncarriage returns",
    "hello world!",
    "wow!!! amazing!!",
    "! ! !",
    "!",
    "don't stop, we'll see; they're here — it's John's dog, I'M sure, you'd've",
    "rock'n'roll 'quoted' \"double quoted\"",
    "numbers 1234567890 and 3.14159 and -42 and 1e-5 and 10,000",
    "café naïve résumé coöperate Ærøskøbing",
    "cafe\u0301 (decomposed accent, NFC composes it)",
    "Straße STRASSE İstanbul ΟΔΟΣ Σίσυφος",
    "日本語のテキスト、東京タワーの写真",
    "中文提示词：一只可爱的猫",
    "한국어 프롬프트 고양이",
    "Привет, мир! Кошка на крыше.",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "emoji 🙂👍🏽🐱‍👤 👩‍👩‍👧 🇫🇷🇯🇵",
    "math ∑∫√∞ ≠ ≤ ≥ ± × ÷ ½ ² ³ Ⅻ ٣ ৩",
    "fullwidth ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "non\u00a0breaking\u2003em\u3000ideographic\u2009thin spaces",
    "zero\u200bwidth\ufeffchars and soft\u00adhyphen",
    "control \x07 bell \x1b escape \x7f del",
    "html &amp; entities &lt;b&gt; &#39;",
    "mojibake: cafÃ© â€œquotesâ€\u009d",
    "url https://example.com/path?q=1&x=y#frag and email a.b@c.de",
    "punctuation ... ,,, ;;; ::: ??? --- ___ *** ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}} <<< >>> /// \\\\\\ ||| ~~~ ```",
    "(masterpiece:1.2), [bad hands], {best quality}, <lora:foo:0.8>",
    "x <|endoftext|> y",
    "x <|ENDOFTEXT|> y",
    "a<|startoftext|>b",
    "<|StartOfText|>",
    "<|endoftext|><|endoftext|>",
    "a" * 300,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "CamelCaseWordsAndsnake_case_words and kebab-case-words",
    "tab\tseparated\tvalues\tand\vvertical\ffeed",
    "the " * 74,
    "the " * 75,
    "the " * 76,
    LONG,
    LONG.upper(),
    "一" * 100,
    "🙂" * 40,
    "mixed 日本 English 한국 русский 123 !!! café",
    "ends with space ",
    "ends with newline\n",
    "a cat, a dog; a bird: a fish. a horse? a cow!",
    "oil painting of a lighthouse in a storm, by Ivan Aivazovsky",
    "photo of a red cube on top of a blue sphere, studio lighting, 85mm",
]


def tokenizer_mode():
    from transformers import CLIPTokenizer
    write_tokenizer(os.path.join(out, "sd1"), "<|endoftext|>")
    write_tokenizer(os.path.join(out, "sd2"), "!")
    # The layout newer transformers writes: named specials refer to `added_tokens_decoder`.
    shutil.copytree(os.path.join(out, "sd1"), os.path.join(out, "decoder"))
    path = os.path.join(out, "decoder", "tokenizer_config.json")
    cfg = json.load(open(path))
    cfg["added_tokens_decoder"] = {
        str(i): {"content": c, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False, "special": True}
        for i, c in [(49406, "<|startoftext|>"), (49407, "<|endoftext|>")]}
    json.dump(cfg, open(path, "w"), indent=2)
    # Folders re-saved by transformers 5 (tokenizer.json + a slimmer tokenizer_config.json).
    for src in ["sd1", "sd2"]:
        CLIPTokenizer.from_pretrained(os.path.join(out, src)).save_pretrained(os.path.join(out, src + "_resaved"))
        # save_pretrained writes no vocab.json/merges.txt; they are the folder's BPE files.
        for f in ["vocab.json", "merges.txt"]:
            shutil.copy(os.path.join(out, src, f), os.path.join(out, src + "_resaved", f))
    expected = {}
    for variant in ["sd1", "sd2", "decoder", "sd1_resaved", "sd2_resaved"]:
        tok = CLIPTokenizer.from_pretrained(os.path.join(out, variant))
        enc = tok(PROMPTS, padding="max_length", max_length=tok.model_max_length, truncation=True)
        full = tok(PROMPTS)
        expected[variant] = {"ids": enc.input_ids, "truncated": [len(x) > tok.model_max_length for x in full.input_ids],
                             "pad_id": tok.pad_token_id, "eos_id": tok.eos_token_id, "bos_id": tok.bos_token_id}
    json.dump(PROMPTS, open(os.path.join(out, "prompts.json"), "w", encoding="utf-8"), ensure_ascii=False)
    json.dump(expected, open(os.path.join(out, "expected.json"), "w"))


def text_mode():
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    write_tokenizer(os.path.join(out, "tok_sd1"), "<|endoftext|>")
    write_tokenizer(os.path.join(out, "tok_sd2"), "!")
    prompts = [PROMPTS[0], PROMPTS[7], PROMPTS[17], LONG, "", PROMPTS[23]]
    # SD 1.x: CLIP ViT-L/14 text tower (quick_gelu, eos_token_id 2 as in its old config) at toy
    # width; SD 2.x: OpenCLIP ViT-H/14's (gelu, 23 layers there) with the current eos id.
    specs = {
        "sd1": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2,
                    hidden_act="quick_gelu", eos_token_id=2, bos_token_id=0, pad_token_id=1),
        "sd2": dict(hidden_size=96, intermediate_size=160, num_attention_heads=3, num_hidden_layers=3,
                    hidden_act="gelu", projection_dim=512),
    }
    for i, (name, spec) in enumerate(specs.items()):
        torch.manual_seed(10 + i)
        model = CLIPTextModel(CLIPTextConfig(**spec)).eval()
        perturb_norms(model)
        st = os.path.join(out, name + "_st")
        model.save_pretrained(st)  # transformers 5: unprefixed keys
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        # The layout of the SD checkpoints (transformers 4): `text_model.`-prefixed keys and the
        # `position_ids` buffer, as a torch.save .bin and as safetensors + fp16 variant.
        old = {"text_model." + k: v for k, v in sd.items()}
        old["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
        for layout in ["bin", "old_st"]:
            d = os.path.join(out, f"{name}_{layout}")
            os.makedirs(d, exist_ok=True)
            shutil.copy(os.path.join(st, "config.json"), d)
            if layout == "bin":
                torch.save(old, os.path.join(d, "pytorch_model.bin"))
            else:
                save_file(old, os.path.join(d, "model.safetensors"))
                save_file({k: (v.half() if v.is_floating_point() else v) for k, v in old.items()},
                          os.path.join(d, "model.fp16.safetensors"))
        reloaded = CLIPTextModel.from_pretrained(os.path.join(out, f"{name}_old_st")).eval()
        tok = CLIPTokenizer.from_pretrained(os.path.join(out, "tok_" + name))
        ids = tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            o = reloaded(ids, output_hidden_states=True)
            skip1 = reloaded.final_layer_norm(o.hidden_states[-2])
            half = CLIPTextModel.from_pretrained(os.path.join(out, f"{name}_old_st"), dtype=torch.float16).eval()(ids)
        np.save(os.path.join(out, f"{name}_ids.npy"), ids.numpy())
        np.save(os.path.join(out, f"{name}_last.npy"), o.last_hidden_state.numpy())
        np.save(os.path.join(out, f"{name}_pooled.npy"), o.pooler_output.numpy())
        np.save(os.path.join(out, f"{name}_skip1.npy"), skip1.numpy())
        np.save(os.path.join(out, f"{name}_last_fp16.npy"), half.last_hidden_state.float().numpy())
        # Where transformers pooled: the test checks the rule picked the end token.
        np.save(os.path.join(out, f"{name}_eos_pos.npy"), (ids == tok.eos_token_id).int().argmax(-1).numpy())
    json.dump(prompts, open(os.path.join(out, "prompts.json"), "w", encoding="utf-8"), ensure_ascii=False)


def clip_mode():
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, CLIPImageProcessorPil, CLIPModel, CLIPProcessor
    from bench_fixtures import tiny_clip_model
    d = os.path.join(out, "clip")
    model = tiny_clip_model(d)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file({k: v.half() for k, v in sd.items()}, os.path.join(d, "model.fp16.safetensors"))
    # A .bin-only copy in the transformers 4 layout (position_ids buffers saved).
    b = os.path.join(out, "clip_bin")
    shutil.copytree(d, b)
    for f in ["model.safetensors", "model.fp16.safetensors"]:
        os.remove(os.path.join(b, f))
    old = dict(sd)
    old["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    old["vision_model.embeddings.position_ids"] = torch.arange(50).unsqueeze(0)
    torch.save(old, os.path.join(b, "pytorch_model.bin"))

    # Images: SD-like 512², non-square both ways, exactly 224² (no resize), an upscale.
    rng = np.random.default_rng(0)
    shapes = [(512, 512), (300, 200), (180, 400), (224, 224), (64, 64)]
    images = []
    for i, (h, w) in enumerate(shapes):
        # Smooth content plus noise, so resampling matters and values touch 0 and 255.
        yy, xx = np.mgrid[0:h, 0:w]
        base = 127.5 + 127.5 * np.sin(xx / (7 + i) + yy / (11 + i))[None] * np.array([1.0, -0.8, 0.6])[:, None, None]
        img = np.clip(base + rng.normal(0, 40, size=(3, h, w)), 0, 255).astype(np.uint8)
        np.save(os.path.join(out, f"image{i}.npy"), img)
        images.append(img)
    prompts = ["a photograph of an astronaut riding a horse", "a red cube", "日本語のテキスト 🙂",
               "wow!!! amazing!!", "x " * 60]
    json.dump(prompts, open(os.path.join(out, "prompts.json"), "w", encoding="utf-8"), ensure_ascii=False)

    proc = CLIPProcessor.from_pretrained(d)
    assert type(proc.image_processor) is CLIPImageProcessor, type(proc.image_processor)
    pil = CLIPImageProcessorPil.from_pretrained(d)
    with torch.no_grad():
        for i, img in enumerate(images):
            t = torch.from_numpy(img)
            pv_tv = proc(images=[t], return_tensors="pt").pixel_values
            pv_pil = pil(images=[img], return_tensors="pt").pixel_values
            np.save(os.path.join(out, f"pixels_tv{i}.npy"), pv_tv.numpy())
            np.save(os.path.join(out, f"pixels_pil{i}.npy"), pv_pil.numpy())
            # Pillow's own resize of the 8-bit image, for the resampler alone.
            h, w = img.shape[1:]
            s = 224 / min(h, w)
            size = (224, int(224 * w / h)) if h <= w else (int(224 * h / w), 224)
            pimg = Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).resize(size[::-1], Image.BICUBIC)
            np.save(os.path.join(out, f"pil_resized{i}.npy"), np.asarray(pimg).transpose(2, 0, 1).copy())
        ids = proc.tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        # torchmetrics' tokenization: padding=True, no truncation (prompts here are < 77 tokens).
        tm = proc.tokenizer(prompts, padding=True, return_tensors="pt")
        text = model.get_text_features(tm.input_ids, tm.attention_mask).pooler_output
        pixels_tv = torch.cat([torch.from_numpy(np.load(os.path.join(out, f"pixels_tv{i}.npy"))) for i in range(5)])
        pixels_pil = torch.cat([torch.from_numpy(np.load(os.path.join(out, f"pixels_pil{i}.npy"))) for i in range(5)])
        img_tv = model.get_image_features(pixels_tv).pooler_output
        img_pil = model.get_image_features(pixels_pil).pooler_output

        # torchmetrics `_clip_score_update`: 100 * <a/|a|, b/|b|>.
        def score(a, b):
            a = a / a.norm(p=2, dim=-1, keepdim=True)
            b = b / b.norm(p=2, dim=-1, keepdim=True)
            return 100 * (a * b).sum(axis=-1)
        np.save(os.path.join(out, "ids.npy"), ids.numpy())
        np.save(os.path.join(out, "text_embeds.npy"), text.numpy())
        np.save(os.path.join(out, "image_embeds_tv.npy"), img_tv.numpy())
        np.save(os.path.join(out, "scores_tv.npy"), score(img_tv, text).numpy())
        np.save(os.path.join(out, "scores_pil.npy"), score(img_pil, text).numpy())
        np.save(os.path.join(out, "logit_scale.npy"), model.logit_scale.exp().numpy())
        half = CLIPModel.from_pretrained(d, dtype=torch.float16).eval()
        np.save(os.path.join(out, "image_embeds_fp16.npy"), half.get_image_features(pixels_tv.half()).pooler_output.float().numpy())


{"tokenizer": tokenizer_mode, "text": text_mode, "clip": clip_mode}[mode]()
