#!/usr/bin/env python3
"""The safetensors library as the oracle of the files we write.

    safetensors_files.py FILE.safetensors OURS.json

reads every tensor of FILE with safetensors.torch.load_file and safe_open and
checks it against
  - what the files beside it say: for a checkpoint shard (shard-tpT-ppP), its
    .json index (every sliced tensor, its shape within its full_shape, the
    file's size); for an export, config.json (the LlamaForCausalLM names and shapes);
  - OURS.json = {name: {"dtype": "F32", "shape": [...], "values": [...]}},
    what our own code holds for the same tensors: equal names, dtypes,
    shapes and values.
"""
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from common import check, fail, read_json

DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64"}


def llama_shapes(config):
    """Every tensor of LlamaForCausalLM by name, with its shape, from config.json."""
    h, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads = config["num_attention_heads"]
    d = h // heads
    kv = config.get("num_key_value_heads", heads) * d
    shapes = {"model.embed_tokens.weight": [vocab, h], "model.norm.weight": [h], "lm_head.weight": [vocab, h]}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes.update({p + "input_layernorm.weight": [h], p + "post_attention_layernorm.weight": [h],
                       p + "self_attn.q_proj.weight": [heads * d, h], p + "self_attn.k_proj.weight": [kv, h],
                       p + "self_attn.v_proj.weight": [kv, h], p + "self_attn.o_proj.weight": [h, heads * d],
                       p + "mlp.gate_proj.weight": [inter, h], p + "mlp.up_proj.weight": [inter, h],
                       p + "mlp.down_proj.weight": [h, inter]})
    return shapes


def check_against_checkpoint_index(path, tensors):
    index = read_json(os.path.splitext(path)[0] + ".json")
    specs = index["specs"]
    # Unsliced state (the step counter) has no spec; every spec names a tensor.
    check(set(specs) <= set(tensors), f"{path}: its index names {sorted(set(specs) - set(tensors))}, not in the file")
    check(os.path.getsize(path) == index["bytes"], f"{path}: {os.path.getsize(path)} bytes, its index says {index['bytes']}")
    for name, spec in specs.items():
        shape, full = list(tensors[name].shape), spec["full_shape"]
        check(len(shape) == len(full), f"{path}: {name} has shape {shape}, full shape {full}")
        for dim, (n, f) in enumerate(zip(shape, full)):
            # A TP slice is shorter along its dimension (and may carry padding past a vocabulary's end).
            sliced = dim == spec["dim"]
            check(n == f or (sliced and 0 < n), f"{path}: {name} has shape {shape}, full shape {full} sliced on {spec['dim']}")
            check(not sliced or spec["offset"] < f, f"{path}: {name} starts at {spec['offset']} of {f}")
    print(f"{path}: {len(specs)} sliced tensors ({sorted(set(tensors) - set(specs))} whole), their shapes and "
          f"{index['bytes']} bytes as its index says")


def check_against_llama_config(path, tensors):
    config = read_json(os.path.join(os.path.dirname(path), "config.json"))
    shapes = llama_shapes(config)
    check(set(tensors) == set(shapes), f"{path}: names differ from LlamaForCausalLM's: only in the file "
          f"{sorted(set(tensors) - set(shapes))}, missing {sorted(set(shapes) - set(tensors))}")
    for name, shape in shapes.items():
        check(list(tensors[name].shape) == shape, f"{path}: {name} has shape {list(tensors[name].shape)}, config.json implies {shape}")
    print(f"{path}: {len(shapes)} names and shapes as config.json implies for LlamaForCausalLM")


def main(argv):
    if len(argv) != 2:
        fail(__doc__)
    path, ours_path = argv
    tensors = load_file(path)
    with safe_open(path, framework="pt") as f:
        check(set(f.keys()) == set(tensors), f"{path}: safe_open and load_file see different names")
        metadata = f.metadata() or {}
        for name in f.keys():
            check(list(f.get_slice(name).get_shape()) == list(tensors[name].shape), f"{path}: {name}: slice shape")
    print(f"{path}: safetensors reads {len(tensors)} tensors, metadata {metadata}")

    if os.path.basename(path).startswith("shard-"):
        check_against_checkpoint_index(path, tensors)
    else:
        check(metadata.get("format") == "pt", f"{path}: metadata format {metadata.get('format')!r}, transformers wants 'pt'")
        check_against_llama_config(path, tensors)

    ours = read_json(ours_path)
    check(set(tensors) == set(ours), f"{path}: names differ from ours: only in the file "
          f"{sorted(set(tensors) - set(ours))}, only in ours {sorted(set(ours) - set(tensors))}")
    for name, t in tensors.items():
        mine = ours[name]
        check(DTYPES.get(t.dtype) == mine["dtype"], f"{path}: {name} is {t.dtype}, ours {mine['dtype']}")
        check(list(t.shape) == mine["shape"], f"{path}: {name} has shape {list(t.shape)}, ours {mine['shape']}")
        expected = torch.tensor(mine["values"], dtype=torch.float64).to(t.dtype).reshape(t.shape)
        if not torch.equal(t, expected):
            where = (t != expected).nonzero()[0].tolist()
            fail(f"{path}: {name}{where} is {t[tuple(where)].item()!r}, ours {expected[tuple(where)].item()!r}")
    print(f"{path}: every dtype, shape and value equals ours")


if __name__ == "__main__":
    main(sys.argv[1:])
