#!/usr/bin/env python3
"""Hugging Face transformers as the oracle of our Llama models, both ways.

    hf_llama.py save OUT_DIR [ROPE_THETA]
        writes a tiny random LlamaForCausalLM with save_pretrained, four ways
        from the same weights: OUT_DIR/{fp32,fp32-sharded,bf16,bf16-sharded}
        (sharded: several files and model.safetensors.index.json); RoPE base
        ROPE_THETA (default 10000), which transformers 5 writes under
        config.json's "rope_parameters".
    hf_llama.py check ATOL MODEL_DIR OURS.json [MODEL_DIR OURS.json ...]
        loads each MODEL_DIR with LlamaForCausalLM.from_pretrained (fp32) and
        compares it with what our binary computed from the same weights,
        OURS.json = {"tokens": [...], "logits": [[...]], "prompt": [...],
        "greedy": [...]}: the logits of `tokens` within ATOL (absolute), and
        the greedy continuation of `prompt` token for token.
"""
import os
import sys

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from common import check, fail, read_json

# The architecture our tests use for models that come from transformers:
# grouped-query attention, no tied embeddings.
TINY = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=8,
            num_key_value_heads=2, max_position_embeddings=16, rms_norm_eps=1e-5, tie_word_embeddings=False)


def save(out_dir, rope_theta):
    torch.manual_seed(0)
    # A wider init than transformers' 0.02 spreads the logits, so greedy
    # choices are not near-ties that fp32 rounding could flip.
    rope = {"rope_type": "default", "rope_theta": rope_theta}
    model = LlamaForCausalLM(LlamaConfig(initializer_range=0.1, rope_parameters=rope, **TINY))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * 0.1)  # not all ones, so a lost norm shows
    for dtype, suffix in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        model.to(dtype)
        model.save_pretrained(os.path.join(out_dir, suffix))
        # 20 KB puts about one weight matrix in each file.
        model.save_pretrained(os.path.join(out_dir, suffix + "-sharded"), max_shard_size="20KB")
    print(f"saved {sum(p.numel() for p in model.parameters())} parameters to {out_dir}/"
          "{fp32,fp32-sharded,bf16,bf16-sharded}")


def check_one(atol, model_dir, ours_path):
    ours = read_json(ours_path)
    model, info = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32, output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        # A missing tensor would be initialized at random without a word.
        check(not info.get(kind), f"{model_dir}: transformers reports {kind} {info.get(kind)}")
    model.eval()
    tokens = torch.tensor([ours["tokens"]])
    expected = torch.tensor(ours["logits"], dtype=torch.float32)
    with torch.no_grad():
        logits = model(tokens).logits[0]
    check(logits.shape == expected.shape, f"{model_dir}: logits of shape {list(logits.shape)}, ours {list(expected.shape)}")
    diff = (logits - expected).abs().max().item()
    print(f"{model_dir}: logits of {tokens.shape[1]} tokens x {logits.shape[1]}: max |transformers - ours| = "
          f"{diff:.3g} (scale {expected.abs().max().item():.3g}, tolerance {atol:g})")
    check(diff <= atol, f"{model_dir}: logits differ by {diff:.3g} > {atol:g}")

    prompt, greedy = ours["prompt"], ours["greedy"]
    # No stop token: ours runs the full length, and so must transformers.
    config = GenerationConfig(do_sample=False, max_new_tokens=len(greedy), eos_token_id=None, bos_token_id=None,
                              pad_token_id=0)
    model.generation_config = config
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), generation_config=config)[0, len(prompt):].tolist()
        # The smallest gap between the two likeliest next tokens on the way:
        # a tie within rounding would make a mismatch meaningless.
        top2 = model(torch.tensor([prompt + out])).logits[0, len(prompt) - 1:-1].topk(2).values
    margin = (top2[:, 0] - top2[:, 1]).min().item()
    print(f"{model_dir}: greedy continuation of {prompt}: transformers {out}, ours {greedy} "
          f"(smallest top-2 logit gap {margin:.3g})")
    check(out == greedy, f"{model_dir}: greedy continuations differ: transformers {out}, ours {greedy}")


def main(argv):
    if len(argv) in (2, 3) and argv[0] == "save":
        return save(argv[1], float(argv[2]) if len(argv) == 3 else 10000.0)
    if len(argv) >= 4 and argv[0] == "check" and len(argv) % 2 == 0:
        for model_dir, ours in zip(argv[2::2], argv[3::2]):
            check_one(float(argv[1]), model_dir, ours)
        return
    fail(__doc__)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1:])
