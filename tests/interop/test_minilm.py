"""sentence-transformers/all-MiniLM-L6-v2 served two ways, checked against one reference.

- `minilm`: the candle backend (TEXT BYTES [1] -> EMBEDDING FP32 [384]); the server
  tokenizes, pads each batch, runs BERT, mean-pools and L2-normalises.
- `minilm_onnx`: the same pipeline as one ONNX graph (scripts/minilm_to_onnx.py) on the
  onnxruntime backend (input_ids / attention_mask INT64 [-1] -> sentence_embedding [384]).

The reference embeddings are models/minilm_onnx/1/model.onnx run in-process with
onnxruntime on SENTENCES tokenized as sentence-transformers does (tokenizer.json, truncation
to max_seq_length 256, padding to the longest); that graph is itself checked against an
independent NumPy float64 forward pass (test_onnx_graph_matches_numpy_float64).

Needs the weights: scripts/setup_minilm.sh (run by `make setup`).
"""

import importlib.util
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO_ROOT / "models" / "minilm" / "1"
ONNX_PATH = REPO_ROOT / "models" / "minilm_onnx" / "1" / "model.onnx"
# `make test` installs every fixture these tests need and sets INFERD_REQUIRE_FIXTURES: there, a missing one
# fails the tests instead of skipping them.
REQUIRED = bool(os.environ.get("INFERD_REQUIRE_FIXTURES"))


def _missing(why):
    if REQUIRED:
        pytest.fail(f"{why} (make test installs it)", pytrace=False)
    pytest.skip(f"{why}: run make setup", allow_module_level=True)


if not (MODEL_DIR / "model.safetensors").is_file() or not ONNX_PATH.is_file():
    _missing("models/minilm/1/model.safetensors or models/minilm_onnx/1/model.onnx missing")
try:
    import onnxruntime as ort
    import tokenizers
except ImportError as e:
    _missing(f"{e.name} missing from .venv")

MAX_SEQ_LENGTH = 256  # models/minilm/1/sentence_bert_config.json
DIM = 384
COSINE_MIN = 0.9999
INVALID_ARGUMENT = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}

_LONG = (
    "Inference servers accept requests from many clients at once, group them into batches "
    "when the model allows it, run each batch on a CPU or a GPU, and send every client its "
    "own slice of the result. A sentence embedding model turns each piece of text into a "
    "vector of fixed size, so that texts with similar meanings end up close to each other; "
    "search engines, recommendation systems and clustering tools then compare these vectors "
    "with a cosine similarity instead of comparing words. Because the texts in a batch have "
    "different lengths, the server pads the shorter ones and passes an attention mask, which "
    "tells the model which positions are real tokens and which are padding to be ignored."
)
SENTENCES = [
    "Hello world!",
    "OK",
    "The new movie is awesome",
    "The new movie is so great",
    "ThE QuIcK BrOwN FoX JUMPS over the LAZY dog",
    "Wait... what?! (Really?) -- yes; it's \"done\": 100% [sure] & <ok> {x}.",
    "Crème brûlée à la française, déjà vu: naïve façade in Zürich, Ångström, São Paulo.",
    "東京は日本の首都です。 Привет, как дела? I love pizza 🍕🍕!",
    "In 2023, 3.14159 × 42 = 131.95 and 1,000,000 people paid $9.99 (or €8.50) on 12/31.",
    "  leading and trailing spaces\tand\ttabs\nand a newline  ",
    "Contact jane.doe@example.com or visit https://example.org/path?q=1&lang=en.",
    "def square(x): return x ** 2  # a line of Python code",
    "A man is playing a guitar on stage.",
    "Donaudampfschifffahrtsgesellschaftskapitän",
    _LONG,  # > 100 words, < 256 tokens
    (_LONG + " ") * 3,  # > 256 tokens: truncated to 256 like sentence-transformers
]
TRUNCATED = len(SENTENCES) - 1
UNPADDED = len(SENTENCES) - 2


# --------------------------------------------------------------------- helpers


def load_tokenizer():
    tok = tokenizers.Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    # tokenizer.json itself truncates at 128 and pads to a fixed 128; sentence-transformers
    # truncates at max_seq_length and pads to the longest text of the call.
    tok.enable_truncation(max_length=MAX_SEQ_LENGTH)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def tokenize(tok, sentences):
    """input_ids, attention_mask INT64 [n, longest] for one request."""
    enc = tok.encode_batch(list(sentences))
    return (
        np.array([e.ids for e in enc], np.int64),
        np.array([e.attention_mask for e in enc], np.int64),
    )


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def assert_matches(got, want, what):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}"
    cos = cosines(got, want)
    worst = int(np.argmin(cos))
    assert cos.min() >= COSINE_MIN, f"{what}: cosine {cos[worst]:.6f} for row {worst}"
    norms = np.linalg.norm(got.astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4, err_msg=f"{what}: norms")


def text_input(module, texts, binary_data=True):
    data = np.array([t if isinstance(t, bytes) else t.encode() for t in texts], dtype=np.object_)
    inp = module.InferInput("TEXT", [len(texts), 1], "BYTES")
    if module is httpclient:
        inp.set_data_from_numpy(data.reshape(-1, 1), binary_data=binary_data)
    else:
        inp.set_data_from_numpy(data.reshape(-1, 1))
    return inp


def embed_minilm(module, client, texts, binary_data=True):
    result = client.infer("minilm", [text_input(module, texts, binary_data)])
    return result.as_numpy("EMBEDDING")


def embed_onnx(module, client, tok, texts):
    inputs = []
    for name, data in zip(("input_ids", "attention_mask"), tokenize(tok, texts)):
        inp = module.InferInput(name, list(data.shape), "INT64")
        inp.set_data_from_numpy(data)
        inputs.append(inp)
    return client.infer("minilm_onnx", inputs).as_numpy("sentence_embedding")


# ------------------------------------------------------------------ reference


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def session():
    return ort.InferenceSession(str(ONNX_PATH), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def reference(tok, session):
    """[len(SENTENCES), 384] float32: the ONNX graph in-process, all sentences as one padded batch."""
    ids, mask = tokenize(tok, SENTENCES)
    return session.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})[0]


def test_tokenization_truncates_at_256(tok):
    """The long sentence exceeds max_seq_length untruncated and is cut to exactly 256 tokens
    ([CLS] ... [SEP]); the >100-word one fits."""
    raw = tokenizers.Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    raw.no_truncation()
    assert len(raw.encode(SENTENCES[TRUNCATED]).ids) > MAX_SEQ_LENGTH
    assert 100 < len(SENTENCES[UNPADDED].split()) and len(raw.encode(SENTENCES[UNPADDED]).ids) < MAX_SEQ_LENGTH
    enc = tok.encode(SENTENCES[TRUNCATED])
    assert len(enc.ids) == MAX_SEQ_LENGTH and enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"


def test_onnx_graph_matches_numpy_float64():
    """model.onnx (padded batch) against the NumPy float64 forward pass of
    scripts/minilm_to_onnx.py, batched and one sentence at a time."""
    spec = importlib.util.spec_from_file_location("minilm_to_onnx", REPO_ROOT / "scripts" / "minilm_to_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    subset = [SENTENCES[0], SENTENCES[6], SENTENCES[7], SENTENCES[TRUNCATED]]
    cos, norms = module.verify(str(MODEL_DIR), str(ONNX_PATH), subset)
    assert cos.min() >= 0.99999, cos
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_reference_is_padding_invariant_and_sensible(tok, session, reference):
    """Each sentence alone (no padding) gives its row of the padded batch, and the
    reference behaves like all-MiniLM-L6-v2 (paraphrases ~0.89, unrelated ~0)."""
    for i, sentence in enumerate(SENTENCES):
        ids, mask = tokenize(tok, [sentence])
        alone = session.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})[0]
        assert_matches(alone, reference[i : i + 1], f"sentence {i} alone")
    assert float(reference[2] @ reference[3]) == pytest.approx(0.8939, abs=2e-3)
    assert abs(float(reference[2] @ reference[13])) < 0.3


# ------------------------------------------------------------------ minilm (candle)


def test_minilm_metadata(triton):
    meta = triton.client.get_model_metadata("minilm")
    if triton.is_http:
        inputs = [(t["name"], t["datatype"], list(t["shape"])) for t in meta["inputs"]]
        outputs = [(t["name"], t["datatype"], list(t["shape"])) for t in meta["outputs"]]
    else:
        inputs = [(t.name, t.datatype, list(t.shape)) for t in meta.inputs]
        outputs = [(t.name, t.datatype, list(t.shape)) for t in meta.outputs]
    assert inputs == [("TEXT", "BYTES", [-1, 1])]
    assert outputs == [("EMBEDDING", "FP32", [-1, DIM])]


def test_minilm_batch_matches_reference(triton, reference):
    """All sentences in one request ([n, 1] -> [n, 384])."""
    got = embed_minilm(triton.module, triton.client, SENTENCES)
    assert_matches(got, reference, f"minilm batch ({triton.protocol})")


def test_minilm_json_strings_match_reference(http_client, reference):
    """TEXT sent as JSON strings (not binary tensor data) over HTTP."""
    got = embed_minilm(httpclient, http_client, SENTENCES, binary_data=False)
    assert_matches(got, reference, "minilm batch (http json)")


def test_minilm_one_request_per_sentence(triton, reference):
    for i, sentence in enumerate(SENTENCES):
        got = embed_minilm(triton.module, triton.client, [sentence])
        assert_matches(got, reference[i : i + 1], f"minilm sentence {i} ({triton.protocol})")


# ------------------------------------------------------------------ minilm_onnx (ort)


def test_minilm_onnx_batch_matches_reference(triton, tok, reference):
    got = embed_onnx(triton.module, triton.client, tok, SENTENCES)
    assert_matches(got, reference, f"minilm_onnx batch ({triton.protocol})")


def test_minilm_onnx_one_request_per_sentence(triton, tok, reference):
    for i, sentence in enumerate(SENTENCES):
        got = embed_onnx(triton.module, triton.client, tok, [sentence])
        assert_matches(got, reference[i : i + 1], f"minilm_onnx sentence {i} ({triton.protocol})")


# ------------------------------------------------------------------ concurrency


@pytest.mark.parametrize("model", ["minilm", "minilm_onnx"])
def test_concurrent_requests_get_their_own_embedding(inferd, tok, reference, model):
    """16 threads, each with its own HTTP client and its own sentence, released together
    (3 rounds) so the dynamic batcher groups texts of different lengths: every thread gets
    its own sentence's embedding, so padding + attention mask keep the rows independent."""
    n, rounds = len(SENTENCES), 3
    barrier = threading.Barrier(n)

    def worker(i):
        client = httpclient.InferenceServerClient(url=inferd.http_url)
        try:
            out = []
            for _ in range(rounds):
                barrier.wait(timeout=30)
                if model == "minilm":
                    out.append(embed_minilm(httpclient, client, [SENTENCES[i]]))
                else:
                    out.append(embed_onnx(httpclient, client, tok, [SENTENCES[i]]))
            return out
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(worker, range(n)))
    for i, per_round in enumerate(results):
        for r, got in enumerate(per_round):
            assert_matches(got, reference[i : i + 1], f"{model} thread {i} round {r}")


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "texts",
    [[b"\xff\xfe not utf-8 \xc3\x28"], [b"fine", b"\x80 bad continuation byte"]],
    ids=["alone", "in-batch"],
)
def test_minilm_rejects_invalid_utf8(triton, reference, texts):
    """A TEXT element that is not UTF-8 is an invalid argument (HTTP 400 / gRPC
    INVALID_ARGUMENT), and the model keeps serving afterwards."""
    with pytest.raises(InferenceServerException) as excinfo:
        embed_minilm(triton.module, triton.client, texts)
    assert excinfo.value.status() == INVALID_ARGUMENT[triton.protocol], excinfo.value
    got = embed_minilm(triton.module, triton.client, SENTENCES[:2])
    assert_matches(got, reference[:2], "minilm after an invalid request")
