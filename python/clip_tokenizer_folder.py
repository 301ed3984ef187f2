# write_tokenizer: a CLIPTokenizer folder from open_clip's BPE vocabulary, shared by the CLIP and
# Stable Diffusion oracles and the shipped tiny pipeline (tests/it/common.rs puts python/ on PYTHONPATH).
import gzip, json, os


def added(content):
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
            "rstrip": False, "single_word": False}


def write_tokenizer(d, pad):
    """A CLIPTokenizer folder as the SD 1.x/2.x pipelines ship it (vocab.json, merges.txt,
    tokenizer_config.json, special_tokens_map.json), built from open_clip's BPE file the way
    OpenAI's SimpleTokenizer builds its vocabulary."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    os.makedirs(d, exist_ok=True)
    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    # SD 1.x: pad is the plain string "<|endoftext|>"; SD 2.x: "!".
    cfg = {"add_prefix_space": False, "bos_token": added("<|startoftext|>"), "do_lower_case": True,
           "eos_token": added("<|endoftext|>"), "errors": "replace", "model_max_length": 77,
           "pad_token": pad, "tokenizer_class": "CLIPTokenizer", "unk_token": added("<|endoftext|>")}
    json.dump(cfg, open(os.path.join(d, "tokenizer_config.json"), "w"), indent=2)
    special = {k: cfg[k] for k in ["bos_token", "eos_token", "pad_token", "unk_token"]}
    for v in special.values():
        if isinstance(v, dict):
            v.pop("__type")
    json.dump(special, open(os.path.join(d, "special_tokens_map.json"), "w"), indent=2)
