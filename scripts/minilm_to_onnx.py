#!/usr/bin/env python3
"""Export sentence-transformers/all-MiniLM-L6-v2 (BERT, safetensors) as one ONNX graph.

Usage (from the repository root):
    .venv/bin/python scripts/minilm_to_onnx.py models/minilm/1 models/minilm_onnx/1/model.onnx
    .venv/bin/python scripts/minilm_to_onnx.py SRC OUT --verify   # also check against NumPy float64

The graph is the whole sentence-transformers pipeline: BERT embeddings (word + absolute
position + token_type 0) -> LayerNorm -> encoder layers (post-LN, exact erf GELU, additive
attention mask) -> mean pooling weighted by attention_mask -> L2 normalisation.
Inputs `input_ids`, `attention_mask` INT64 [batch, seq]; output `sentence_embedding` FP32
[batch, hidden]. Opset 17 (no Gelu op there, so GELU is spelt with Erf), FP32 weights.
Needs numpy, onnx, safetensors (and onnxruntime + tokenizers for --verify).
"""

import json
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # as models/generate.py: loadable by onnxruntime 1.31
MASK_MIN = float(np.finfo(np.float32).min)  # HF: (1 - mask) * finfo(dtype).min
VERIFY_SENTENCES = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "Crème brûlée costs €7.50 at the café, naïvely speaking.",
    "A longer sentence, to make the padding in the batch matter: " + "tokens and more tokens " * 12,
]


def load(src):
    """(config dict, {name: float32 array}) from a sentence-transformers model folder."""
    from safetensors.numpy import load_file

    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    weights = load_file(os.path.join(src, "model.safetensors"))
    weights = {k.removeprefix("bert."): v for k, v in weights.items()}
    return config, weights


class Graph:
    """Collects nodes and initializers; every op returns its (fresh) output name."""

    def __init__(self, weights):
        self.weights, self.nodes, self.inits, self.count = weights, [], {}, 0

    def const(self, name, array):
        if name not in self.inits:  # shared constants (shapes, scalars) are stored once
            self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
        return name

    def w(self, key, transpose=False):
        array = self.weights[key].astype(np.float32)
        return self.const(key, array.T if transpose else array)

    def op(self, op_type, *inputs, **attrs):
        self.count += 1
        out = f"{op_type.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out


def layer_norm(g, x, prefix, eps):
    return g.op("LayerNormalization", x, g.w(prefix + ".weight"), g.w(prefix + ".bias"),
                axis=-1, epsilon=eps)


def linear(g, x, prefix):
    """x @ W.T + b, with W stored [out, in] as in PyTorch."""
    return g.op("Add", g.op("MatMul", x, g.w(prefix + ".weight", transpose=True)), g.w(prefix + ".bias"))


def embeddings(g, cfg):
    word = g.op("Gather", g.w("embeddings.word_embeddings.weight"), "input_ids", axis=0)
    seq = g.op("Shape", "input_ids", start=1, end=2)  # [seq], 1-D
    zero = g.const("axes_0", np.array([0], np.int64))
    pos = g.op("Slice", g.w("embeddings.position_embeddings.weight"), zero, seq, zero)  # rows 0..seq
    token_type0 = g.const("token_type0", g.weights["embeddings.token_type_embeddings.weight"][0])
    x = g.op("Add", g.op("Add", word, pos), token_type0)
    return layer_norm(g, x, "embeddings.LayerNorm", cfg["layer_norm_eps"])


def additive_mask(g, mask_f):
    """[batch, seq] 1/0 -> [batch, 1, 1, seq]: 0 where attended, MASK_MIN where padding."""
    inverted = g.op("Sub", g.const("f_one", np.array(1, np.float32)), mask_f)
    scaled = g.op("Mul", inverted, g.const("mask_min", np.array(MASK_MIN, np.float32)))
    return g.op("Unsqueeze", scaled, g.const("axes_1_2", np.array([1, 2], np.int64)))


def attention(g, x, mask, prefix, cfg):
    heads = cfg["num_attention_heads"]
    head_dim = cfg["hidden_size"] // heads
    split = g.const("split_heads", np.array([0, 0, heads, head_dim], np.int64))

    def project(name, perm):
        return g.op("Transpose", g.op("Reshape", linear(g, x, f"{prefix}.self.{name}"), split), perm=perm)

    q = project("query", [0, 2, 1, 3])  # [b, h, s, d]
    k = project("key", [0, 2, 3, 1])  # [b, h, d, s]
    v = project("value", [0, 2, 1, 3])  # [b, h, s, d]
    scale = g.const("attn_scale", np.array(1 / math.sqrt(head_dim), np.float32))
    scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), mask)
    context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)  # [b, h, s, d]
    merged = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]),
                  g.const("merge_heads", np.array([0, 0, cfg["hidden_size"]], np.int64)))
    out = g.op("Add", linear(g, merged, f"{prefix}.output.dense"), x)
    return layer_norm(g, out, f"{prefix}.output.LayerNorm", cfg["layer_norm_eps"])


def gelu(g, x):
    """Exact GELU: 0.5 * x * (1 + erf(x / sqrt(2)))."""
    erf = g.op("Erf", g.op("Div", x, g.const("sqrt2", np.array(math.sqrt(2), np.float32))))
    return g.op("Mul", g.op("Mul", x, g.const("half", np.array(0.5, np.float32))),
                g.op("Add", erf, g.const("f_one", np.array(1, np.float32))))


def feed_forward(g, x, prefix, cfg):
    hidden = gelu(g, linear(g, x, f"{prefix}.intermediate.dense"))
    out = g.op("Add", linear(g, hidden, f"{prefix}.output.dense"), x)
    return layer_norm(g, out, f"{prefix}.output.LayerNorm", cfg["layer_norm_eps"])


def mean_pool_normalize(g, x, mask_f):
    """sum(x * mask) / max(sum(mask), 1e-9), then x / max(||x||, 1e-12) (torch F.normalize)."""
    m = g.op("Unsqueeze", mask_f, g.const("axes_2", np.array([2], np.int64)))  # [b, s, 1]
    axis1 = g.const("axes_1", np.array([1], np.int64))
    summed = g.op("ReduceSum", g.op("Mul", x, m), axis1, keepdims=0)
    count = g.op("Max", g.op("ReduceSum", m, axis1, keepdims=0), g.const("eps_count", np.array(1e-9, np.float32)))
    mean = g.op("Div", summed, count)
    norm = g.op("Max", g.op("ReduceL2", mean, axes=[1], keepdims=1), g.const("eps_norm", np.array(1e-12, np.float32)))
    return g.op("Div", mean, norm)


def build(config, weights):
    g = Graph(weights)
    mask_f = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    mask = additive_mask(g, mask_f)
    x = embeddings(g, config)
    for i in range(config["num_hidden_layers"]):
        x = attention(g, x, mask, f"encoder.layer.{i}.attention", config)
        x = feed_forward(g, x, f"encoder.layer.{i}", config)
    g.nodes.append(helper.make_node("Identity", [mean_pool_normalize(g, x, mask_f)], ["sentence_embedding"]))
    graph = helper.make_graph(
        g.nodes, "minilm",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", config["hidden_size"]])],
        list(g.inits.values()),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="inferd-minilm-to-onnx", producer_version="1")
    onnx.checker.check_model(model)
    return model


# ------------------------------------------------- independent NumPy float64 reference

def numpy_forward(config, weights, ids, mask):
    """The same pipeline in float64 NumPy, written directly from the BERT definition."""
    w = {k: v.astype(np.float64) for k, v in weights.items() if v.dtype == np.float32}
    eps, heads = config["layer_norm_eps"], config["num_attention_heads"]
    erf = np.frompyfunc(math.erf, 1, 1)

    def ln(x, p):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    def lin(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    b, s = ids.shape
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:s]
    x = ln(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e30)
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q, k, v = (lin(x, f"{p}.attention.self.{n}").reshape(b, s, heads, -1).transpose(0, 2, 1, 3)
                   for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]) + bias
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, -1)
        x = ln(lin(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        h = lin(x, f"{p}.intermediate.dense")
        h = 0.5 * h * (1 + erf(h / math.sqrt(2)).astype(np.float64))
        x = ln(lin(h, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    m = mask[:, :, None].astype(np.float64)
    mean = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def tokenize(src, sentences, max_len=256):
    """ids, mask [n, longest] as sentence-transformers: truncation to max_seq_length, pad to longest."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(src, "tokenizer.json"))
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # the file pads to a fixed 128: pad to longest
    enc = tok.encode_batch(sentences)
    return (np.array([e.ids for e in enc], np.int64), np.array([e.attention_mask for e in enc], np.int64))


def verify(src, out_path, sentences=VERIFY_SENTENCES):
    """Min cosine between onnxruntime (padded batch) and NumPy float64 (batch, and each sentence alone)."""
    import onnxruntime as ort

    config, weights = load(src)
    ids, mask = tokenize(src, sentences)
    sess = ort.InferenceSession(out_path, providers=["CPUExecutionProvider"])
    got = sess.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})[0].astype(np.float64)
    ref_batch = numpy_forward(config, weights, ids, mask)
    ref_alone = np.concatenate([numpy_forward(config, weights, *tokenize(src, [s])) for s in sentences])
    cos = lambda a, b: (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)  # noqa: E731
    return np.minimum(cos(got, ref_batch), cos(got, ref_alone)), np.linalg.norm(got, axis=1)


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 2:
        sys.exit(__doc__)
    src, out_path = args
    model = build(*load(src))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, out_path)
    print(f"wrote {out_path} ({len(model.graph.node)} nodes)", file=sys.stderr)
    if "--verify" in argv:
        cos, norms = verify(src, out_path)
        print(f"verify: min cosine vs NumPy float64 {cos.min():.9f}, norms {norms.min():.6f}..{norms.max():.6f}",
              file=sys.stderr)
        if cos.min() < 0.99999:
            sys.exit("verify: ONNX graph does not match the NumPy reference")


if __name__ == "__main__":
    main(sys.argv[1:])
