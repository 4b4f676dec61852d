#!/usr/bin/env python3
"""SentencePiece's own library as the oracle of our tokenizer and preprocessing.

    sentencepiece_ids.py TOKENIZER.model PREFIX CORPUS.txt

loads the model that `minipretrain tokenizer` trained in Python's
SentencePieceProcessor, encodes each document of CORPUS.txt (a document per
non-empty line, as `preprocess` reads plain text) and checks that
PREFIX.bin / PREFIX.idx, the Megatron indexed dataset `preprocess` wrote
(read here with numpy from the format's definition), holds exactly those ids,
each document followed by EOS.
"""
import sys

import numpy as np
import sentencepiece as spm

from common import check, fail

# Megatron's dtype codes (megatron/core/datasets/indexed_dataset.py).
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}


def read_indexed(prefix):
    """Every sequence of PREFIX.bin as a list of ids, by PREFIX.idx."""
    idx = open(prefix + ".idx", "rb").read()
    check(idx[:9] == b"MMIDIDX\x00\x00", f"{prefix}.idx: magic {idx[:9]!r}")
    version = np.frombuffer(idx, np.uint64, 1, 9)[0]
    check(version == 1, f"{prefix}.idx: version {version}")
    dtype = DTYPES[idx[17]]
    sequences, documents = (int(n) for n in np.frombuffer(idx, np.uint64, 2, 18))
    at = 34
    lengths = np.frombuffer(idx, np.int32, sequences, at)
    pointers = np.frombuffer(idx, np.int64, sequences, at + 4 * sequences)
    doc_idx = np.frombuffer(idx, np.int64, documents, at + 12 * sequences)
    check(at + 12 * sequences + 8 * documents == len(idx), f"{prefix}.idx: {len(idx)} bytes, its counts say otherwise")
    check(list(doc_idx) == list(range(sequences + 1)), f"{prefix}.idx: document index {list(doc_idx)[:10]}...")
    data = np.fromfile(prefix + ".bin", dtype)
    item = np.dtype(dtype).itemsize
    check(int(lengths.sum()) == len(data), f"{prefix}.bin: {len(data)} ids, the lengths add up to {lengths.sum()}")
    return [data[p // item:p // item + n].tolist() for p, n in zip(pointers, lengths)]


def main(argv):
    if len(argv) != 3:
        fail(__doc__)
    model, prefix, corpus = argv
    sp = spm.SentencePieceProcessor(model_file=model)
    with open(corpus, encoding="utf-8") as f:
        docs = [line.rstrip("\n") for line in f if line.rstrip("\n")]
    expected = [sp.encode(doc) + [sp.eos_id()] for doc in docs]
    ours = read_indexed(prefix)
    print(f"{model}: {sp.get_piece_size()} pieces (unk {sp.unk_id()}, bos {sp.bos_id()}, eos {sp.eos_id()}); "
          f"{prefix}: {len(ours)} sequences, {sum(map(len, ours))} ids")
    check(len(ours) == len(expected), f"{prefix}: {len(ours)} sequences, {corpus} has {len(expected)} documents")
    for number, (mine, theirs) in enumerate(zip(ours, expected)):
        if mine != theirs:
            at = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
            fail(f"document {number} ({docs[number][:40]!r}...) differs from id {at} on: ours {mine}, SentencePiece {theirs}")
        check(sp.decode(theirs[:-1]) == docs[number], f"document {number} does not decode to its text")
    print(f"{corpus}: every document's ids equal SentencePiece's encoding plus EOS, and decode to the text")


if __name__ == "__main__":
    main(sys.argv[1:])
