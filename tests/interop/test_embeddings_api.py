"""Text embeddings over the OpenAI and Hugging Face TEI routes, driven with the clients people use.

`all-MiniLM-L6-v2` (models/all-MiniLM-L6-v2, made by scripts/setup_minilm.sh) is sentence-transformers'
all-MiniLM-L6-v2 as one ONNX graph on ONNX Runtime that takes text: TEXT BYTES [1] -> sentence_embedding
FP32 [384], L2-normalised, tokenized in the server (at most 256 tokens). One server answers for it on three
sets of routes, all through the same routing, batching and statistics:

- OpenAI: POST /v1/embeddings and GET /v1/models[/{id}], driven with the official `openai` package and with
  LangChain's OpenAIEmbeddings; with --api-key, a Bearer key is required;
- Hugging Face text-embeddings-inference (TEI): POST /embed (and POST /), POST /tokenize, GET /info, serving
  the model named by --tei-model;
- KServe V2: POST /v2/models/all-MiniLM-L6-v2/infer with tritonclient, whose request parameter `truncate`
  (default true) cuts a text to 256 tokens or refuses it.

Every route gives the V2 endpoint's embedding to 1e-6, and all of them match the reference of test_minilm.py
(models/minilm_onnx/1/model.onnx in-process with onnxruntime, tokenized by the tokenizers package as
sentence-transformers does, 256 tokens at most) with cosine >= 0.9999; so does the candle twin `minilm`
through /v1/embeddings.

Needs the weights: scripts/setup_minilm.sh (run by `make setup`).
"""

import base64
import json
import os
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import _serve

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "all-MiniLM-L6-v2"
CANDLE_TWIN = "minilm"
MODEL_DIR = REPO_ROOT / "models" / MODEL / "1"
REFERENCE_TOKENIZER = REPO_ROOT / "models" / "minilm" / "1" / "tokenizer.json"
REFERENCE_ONNX = REPO_ROOT / "models" / "minilm_onnx" / "1" / "model.onnx"
API_KEY = "test-key"
# `make test` installs every fixture these tests need and sets INFERD_REQUIRE_FIXTURES: there, a missing one
# fails the tests instead of skipping them.
REQUIRED = bool(os.environ.get("INFERD_REQUIRE_FIXTURES"))


def _missing(why, module_level=True):
    if REQUIRED:
        pytest.fail(f"{why} (make test installs it)", pytrace=False)
    pytest.skip(f"{why}: run make setup", allow_module_level=module_level)


for _path in (MODEL_DIR / "model.onnx", MODEL_DIR / "tokenizer.json", REFERENCE_TOKENIZER, REFERENCE_ONNX):
    if not _path.is_file():
        _missing(f"{_path.relative_to(REPO_ROOT)} missing")
try:
    import onnxruntime as ort
    import openai
    import tokenizers
except ImportError as e:
    _missing(f"{e.name} missing from .venv")

MAX_TOKENS = 256  # models/all-MiniLM-L6-v2/1/sentence_bert_config.json: max_seq_length
DIM = 384
COSINE_MIN = 0.9999
SAME = 1e-6  # absolute: the same graph on the same tokens, whichever route carried the text

SENTENCES = [
    "Hello world!",
    "OK",
    "The new movie is awesome",
    "ThE QuIcK BrOwN FoX JUMPS over the LAZY dog",
    "Crème brûlée à la française, déjà vu: naïve façade in Zürich, Ångström, São Paulo.",
    "東京は日本の首都です。 Привет, как дела? I love pizza 🍕🍕!",
    "Contact jane.doe@example.com or visit https://example.org/path?q=1&lang=en.",
    "  leading and trailing spaces\tand\ttabs\nand a newline  ",
    "In 2023, 3.14159 × 42 = 131.95 and 1,000,000 people paid $9.99 (or €8.50) on 12/31.",
    (
        "Inference servers accept requests from many clients at once, group them into batches when the model "
        "allows it, and send every client its own slice of the result; a sentence embedding model turns each "
        "text into a vector of fixed size, so that texts with similar meanings end up close to each other."
    ),
]
_WORDS = (
    "servers group requests from many clients into batches so that each run of the model serves several of "
    "them at once while every client still receives its own row of the result"
).split()
LONG = " ".join(_WORDS[i % len(_WORDS)] for i in range(600))  # 600 words: far more than 256 tokens


# --------------------------------------------------------------------- helpers


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def assert_matches(got, want, what):
    """Same shape, float32, cosine >= COSINE_MIN row by row, unit norms."""
    got = np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}"
    cos = cosines(got, want)
    worst = int(np.argmin(cos))
    assert cos.min() >= COSINE_MIN, f"{what}: cosine {cos[worst]:.6f} for row {worst}"
    np.testing.assert_allclose(np.linalg.norm(got.astype(np.float64), axis=1), 1.0, atol=1e-4,
                               err_msg=f"{what}: norms")


def assert_same(got, want, what):
    got = np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=0, atol=SAME, err_msg=what)


def request(url, method, path, body=None, headers=None):
    """(status, decoded JSON body, or the text when it is not JSON) of one plain HTTP request."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{url}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def tei_embed(url, inputs, path="/embed", **options):
    status, body = request(url, "POST", path, {"inputs": inputs, **options})
    assert status == 200, (status, body)
    return np.array(body, np.float32)


def v2_embed(client, texts, parameters=None):
    """all-MiniLM-L6-v2's V2 endpoint: TEXT [n, 1] BYTES (binary tensor data) -> [n, 384]."""
    data = np.array([t.encode() for t in texts], dtype=np.object_).reshape(-1, 1)
    inp = httpclient.InferInput("TEXT", [len(texts), 1], "BYTES")
    inp.set_data_from_numpy(data)
    return client.infer(MODEL, [inp], parameters=parameters).as_numpy("sentence_embedding")


def vectors(response):
    """The rows of an OpenAI embeddings response, in the order of their `index`, as float32."""
    data = sorted(response.data, key=lambda d: d.index)
    return np.array([d.embedding for d in data], np.float32)


def assert_openai_error(body, status, code=None):
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["type"] == "invalid_request_error", (status, error)
    if code is not None:
        assert error["code"] == code, error


def assert_tei_error(status, body, want_status, error_type):
    assert status == want_status, (status, body)
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    assert body.get("error_type") == error_type, body


def inference_count(url, model):
    status, body = request(url, "GET", f"/v2/models/{model}/stats")
    assert status == 200, body
    stats = body["model_stats"]
    return (sum(int(m["inference_count"]) for m in stats),
            sum(int(m["inference_stats"]["success"]["count"]) for m in stats))


def prometheus_inference_count(metrics_port, model):
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    prefix = f'nv_inference_count{{model="{model}",'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


# --------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """inferd on models/ with TEI's routes serving all-MiniLM-L6-v2; no API key."""
    yield from _serve(tmp_path_factory, "inferd-embeddings", ("--tei-model", MODEL), repositories=("models",))


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory):
    """The same with --api-key: the OpenAI routes want `Authorization: Bearer test-key`."""
    yield from _serve(tmp_path_factory, "inferd-embeddings-key",
                      ("--tei-model", MODEL, "--api-key", API_KEY), repositories=("models",))


@pytest.fixture(scope="session")
def url(server):
    return server.http_url


@pytest.fixture(scope="session")
def oai(url):
    client = openai.OpenAI(base_url=f"http://{url}/v1", api_key="unused", max_retries=0, timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="session")
def v2(url):
    client = httpclient.InferenceServerClient(url=url, network_timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="session")
def model_tokenizer():
    """The model's own tokenizer.json without its fixed padding and truncation to 128."""
    tok = tokenizers.Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


@pytest.fixture(scope="session")
def reference():
    """reference(texts) -> [n, 384] float32: models/minilm_onnx/1/model.onnx in-process, each text alone,
    tokenized as sentence-transformers does (truncated to 256 tokens)."""
    tok = tokenizers.Tokenizer.from_file(str(REFERENCE_TOKENIZER))
    tok.no_padding()
    tok.enable_truncation(max_length=MAX_TOKENS)
    session = ort.InferenceSession(str(REFERENCE_ONNX), providers=["CPUExecutionProvider"])
    cache = {}

    def embed(texts):
        for text in texts:
            if text not in cache:
                enc = tok.encode(text)
                feed = {"input_ids": np.array([enc.ids], np.int64),
                        "attention_mask": np.array([enc.attention_mask], np.int64)}
                cache[text] = session.run(["sentence_embedding"], feed)[0][0]
        return np.stack([cache[t] for t in texts])

    return embed


def test_the_long_text_is_longer_than_the_model_takes(model_tokenizer):
    assert len(LONG.split()) == 600
    assert len(model_tokenizer.encode(LONG).ids) > MAX_TOKENS
    assert all(len(model_tokenizer.encode(s).ids) <= MAX_TOKENS for s in SENTENCES)


# ------------------------------------------------------------------ V2: the yardstick


def test_the_v2_endpoint_takes_text_and_matches_the_reference(v2, reference):
    meta = v2.get_model_metadata(MODEL)
    assert [(t["name"], t["datatype"], list(t["shape"])) for t in meta["inputs"]] == [("TEXT", "BYTES", [-1, 1])]
    assert [(t["name"], t["datatype"], list(t["shape"])) for t in meta["outputs"]] == [
        ("sentence_embedding", "FP32", [-1, DIM])]
    assert_matches(v2_embed(v2, SENTENCES), reference(SENTENCES), "V2 batch")


def test_v2_cuts_a_long_text_to_256_tokens_unless_truncate_is_false(v2, reference):
    """V2's `truncate` defaults to true: the 600-word text is embedded as its first 256 tokens, as
    sentence-transformers does; with truncate=false it is refused with 400."""
    cut = v2_embed(v2, [LONG])
    assert_matches(cut, reference([LONG]), "V2 long text, truncated by default")
    assert_same(v2_embed(v2, [LONG], {"truncate": True}), cut, "V2 long text, truncate=true")
    with pytest.raises(InferenceServerException) as raised:
        v2_embed(v2, [LONG], {"truncate": False})
    assert raised.value.status() == "400", raised.value
    assert_same(v2_embed(v2, SENTENCES[:2], {"truncate": False}), v2_embed(v2, SENTENCES[:2]),
                "V2 short texts with truncate=false")


# ------------------------------------------------------------------ OpenAI: /v1/embeddings


def test_one_string_gives_one_embedding_equal_to_v2s(oai, v2, reference):
    for text in SENTENCES:
        resp = oai.embeddings.create(input=text, model=MODEL, encoding_format="float")
        assert resp.object == "list" and resp.model == MODEL, resp
        assert len(resp.data) == 1 and resp.data[0].object == "embedding" and resp.data[0].index == 0
        assert isinstance(resp.data[0].embedding, list)
        got = vectors(resp)
        assert_same(got, v2_embed(v2, [text]), f"/v1/embeddings {text!r} against V2")
        assert_matches(got, reference([text]), f"/v1/embeddings {text!r}")


def test_a_list_longer_than_the_max_batch_size_keeps_its_order(oai, v2, reference):
    """40 texts of mixed lengths in one request (max_batch_size is 32): 40 rows, index i for input i."""
    texts = [f"{SENTENCES[i % len(SENTENCES)]} (number {i})" for i in range(40)]
    resp = oai.embeddings.create(input=texts, model=MODEL, encoding_format="float")
    assert [d.index for d in resp.data] == list(range(40))
    got = vectors(resp)
    assert_matches(got, reference(texts), "/v1/embeddings 40 texts")
    want = np.concatenate([v2_embed(v2, texts[:20]), v2_embed(v2, texts[20:])])
    assert_same(got, want, "/v1/embeddings 40 texts against V2")


def test_base64_is_little_endian_float32_of_the_same_vectors(oai, url):
    """Explicit base64: each embedding is a base64 string of little-endian f32, the float answer's bits."""
    floats = vectors(oai.embeddings.create(input=SENTENCES[:3], model=MODEL, encoding_format="float"))
    resp = oai.embeddings.create(input=SENTENCES[:3], model=MODEL, encoding_format="base64")
    assert all(isinstance(d.embedding, str) for d in resp.data), "explicit base64 should come back undecoded"
    decoded = np.stack([np.frombuffer(base64.b64decode(d.embedding), "<f4")
                        for d in sorted(resp.data, key=lambda d: d.index)])
    np.testing.assert_array_equal(decoded, floats)
    # The same over plain HTTP, so the wire format itself is checked, not the client's parsing.
    status, body = request(url, "POST", "/v1/embeddings",
                           {"input": SENTENCES[0], "model": MODEL, "encoding_format": "base64"})
    assert status == 200, body
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), "<f4"),
                                  floats[0])


def test_the_clients_default_asks_for_base64_and_decodes_it(oai):
    """Without encoding_format the openai package sends encoding_format=base64 and decodes the answer
    itself: the caller sees the same floats."""
    floats = vectors(oai.embeddings.create(input=SENTENCES[:3], model=MODEL, encoding_format="float"))
    default = oai.embeddings.create(input=SENTENCES[:3], model=MODEL)
    assert all(isinstance(d.embedding, list) for d in default.data)
    np.testing.assert_array_equal(vectors(default), floats)


def test_token_ids_in_the_models_vocabulary_embed_like_their_text(oai, model_tokenizer, v2):
    """[int] and [[int]] inputs are the model's own token ids, taken as they are ([CLS] ... [SEP] included,
    as /tokenize gives them): the same embedding as the text."""
    ids = [model_tokenizer.encode(t).ids for t in SENTENCES[:4]]
    one = oai.embeddings.create(input=ids[0], model=MODEL, encoding_format="float")
    assert len(one.data) == 1 and one.usage.prompt_tokens == len(ids[0])
    assert_same(vectors(one), v2_embed(v2, SENTENCES[:1]), "one list of token ids")
    many = oai.embeddings.create(input=ids, model=MODEL, encoding_format="float")
    assert [d.index for d in many.data] == [0, 1, 2, 3]
    assert many.usage.prompt_tokens == sum(map(len, ids))
    assert_same(vectors(many), v2_embed(v2, SENTENCES[:4]), "lists of token ids")


def test_token_ids_without_cls_and_sep_get_them(oai, model_tokenizer, v2):
    """Ids as an OpenAI-style client tokenizes them, with no special tokens, are wrapped in [CLS] ... [SEP]
    as the model was trained: the text's embedding, and the usage counts the two added tokens."""
    bare = model_tokenizer.encode(SENTENCES[2], add_special_tokens=False).ids
    resp = oai.embeddings.create(input=[bare], model=MODEL, encoding_format="float")
    assert resp.usage.prompt_tokens == len(bare) + 2
    assert_same(vectors(resp), v2_embed(v2, SENTENCES[2:3]), "token ids without [CLS] and [SEP]")


def test_usage_counts_the_tokens_tokenize_gives(oai, url, model_tokenizer):
    status, tokens = request(url, "POST", "/tokenize", {"inputs": SENTENCES})
    assert status == 200, tokens
    n = sum(len(t) for t in tokens)
    assert n == sum(len(model_tokenizer.encode(s).ids) for s in SENTENCES)
    resp = oai.embeddings.create(input=SENTENCES, model=MODEL, encoding_format="float", user="alice")
    assert resp.usage.prompt_tokens == n and resp.usage.total_tokens == n, resp.usage


def test_dimensions_may_only_be_the_models_own_size(oai, v2):
    resp = oai.embeddings.create(input=SENTENCES[0], model=MODEL, encoding_format="float", dimensions=DIM)
    assert_same(vectors(resp), v2_embed(v2, SENTENCES[:1]), "dimensions=384")
    for dimensions in (128, 0, DIM + 1):
        with pytest.raises(openai.BadRequestError) as raised:
            oai.embeddings.create(input=SENTENCES[0], model=MODEL, dimensions=dimensions)
        assert raised.value.type == "invalid_request_error", raised.value.body


def test_a_traffic_label_selects_the_version_it_names(oai, url, v2):
    """"name:label" routes like a label in the V2 path; an unknown label is an unknown model (404)."""
    status, body = request(url, "PUT", f"/v2/models/{MODEL}/traffic", {"labels": {"stable": 1}})
    assert status == 200, body
    resp = oai.embeddings.create(input=SENTENCES[0], model=f"{MODEL}:stable", encoding_format="float")
    assert_same(vectors(resp), v2_embed(v2, SENTENCES[:1]), "label stable")
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(input=SENTENCES[0], model=f"{MODEL}:no-such-label")


def test_requests_are_counted_in_the_models_statistics_and_metrics(oai, server, url):
    """The OpenAI and TEI routes go through the model's scheduler: its statistics and its Prometheus series
    count their texts."""
    count0, success0 = inference_count(url, MODEL)
    metric0 = prometheus_inference_count(server.metrics_port, MODEL)
    oai.embeddings.create(input=SENTENCES[:3], model=MODEL, encoding_format="float")
    tei_embed(url, SENTENCES[3])
    count1, success1 = inference_count(url, MODEL)
    assert count1 - count0 == 4, (count0, count1)
    assert success1 - success0 >= 2, (success0, success1)
    assert prometheus_inference_count(server.metrics_port, MODEL) - metric0 == 4


# ------------------------------------------------------------------ OpenAI: errors


def test_an_unknown_model_is_not_found(oai):
    with pytest.raises(openai.NotFoundError) as raised:
        oai.embeddings.create(input="hello", model="no-such-model")
    assert raised.value.code == "model_not_found" and raised.value.type == "invalid_request_error", \
        raised.value.body
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("no-such-model")


def test_a_model_that_does_not_embed_text_is_refused_on_the_embeddings_route(oai):
    """`simple` (INT32 in and out) and `minilm_onnx` (token ids in) are served over V2 but are not text
    embedding models: asking them for embeddings is a bad request that says so (and GET /v1/models/{id}
    does not know them, test_models_lists_the_text_embedding_models_only)."""
    for model in ("simple", "minilm_onnx"):
        with pytest.raises(openai.BadRequestError) as raised:
            oai.embeddings.create(input="hello", model=model)
        assert raised.value.type == "invalid_request_error", raised.value.body
        assert model in raised.value.body["message"] and "embedding" in raised.value.body["message"], \
            raised.value.body


@pytest.mark.parametrize("bad_input", ["", [], [""], ["fine", ""], [[]]],
                         ids=["empty-string", "empty-list", "list-with-empty-string", "one-empty-of-two",
                              "empty-token-list"])
def test_empty_input_is_a_bad_request(oai, bad_input):
    with pytest.raises(openai.BadRequestError) as raised:
        oai.embeddings.create(input=bad_input, model=MODEL)
    assert raised.value.type == "invalid_request_error", raised.value.body


def test_a_text_longer_than_the_model_takes_is_refused(oai, model_tokenizer):
    """OpenAI refuses a text over the model's context rather than cutting it: 400 context_length_exceeded,
    for text and for token ids."""
    with pytest.raises(openai.BadRequestError) as raised:
        oai.embeddings.create(input=LONG, model=MODEL)
    assert raised.value.code == "context_length_exceeded", raised.value.body
    with pytest.raises(openai.BadRequestError) as raised:
        oai.embeddings.create(input=["short", LONG], model=MODEL)
    assert raised.value.code == "context_length_exceeded", raised.value.body
    with pytest.raises(openai.BadRequestError) as raised:
        oai.embeddings.create(input=model_tokenizer.encode(LONG).ids, model=MODEL)
    assert raised.value.code == "context_length_exceeded", raised.value.body


@pytest.mark.parametrize(
    "body",
    [
        {"input": 42, "model": MODEL},
        {"input": {"text": "hello"}, "model": MODEL},
        {"input": ["hello", 3], "model": MODEL},
        {"input": [[1, 2], "hello"], "model": MODEL},
        {"input": [1.5, 2.5], "model": MODEL},
        {"input": [101, -1, 102], "model": MODEL},
        {"input": [101, 10**9, 102], "model": MODEL},
        {"input": None, "model": MODEL},
        {"model": MODEL},
        {"input": "hello"},
        {"input": "hello", "model": 7},
        {"input": "hello", "model": MODEL, "encoding_format": "int8"},
        {"input": "hello", "model": MODEL, "dimensions": "384"},
        {"input": ["hello"] * 2049, "model": MODEL},
    ],
    ids=["number", "object", "mixed-list", "ids-and-text", "floats", "negative-id", "id-past-the-vocabulary",
         "null", "no-input", "no-model", "model-not-a-string", "unknown-encoding", "dimensions-a-string",
         "2049-inputs"],
)
def test_malformed_requests_get_400_with_an_openai_error(url, body):
    status, answer = request(url, "POST", "/v1/embeddings", body)
    assert status == 400, (status, answer)
    assert_openai_error(answer, status)


def test_a_body_that_is_not_json_gets_400_with_an_openai_error(url):
    req = urllib.request.Request(f"http://{url}/v1/embeddings", data=b"{not json", method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(req, timeout=30)
    assert raised.value.code == 400
    assert_openai_error(json.loads(raised.value.read()), 400)


def test_2048_inputs_are_allowed(oai, reference):
    texts = [f"item {i}" for i in range(2048)]
    resp = oai.embeddings.create(input=texts, model=MODEL, encoding_format="float")
    assert [d.index for d in resp.data] == list(range(2048))
    rows = [0, 1, 1000, 2047]
    assert_matches(vectors(resp)[rows], reference([texts[i] for i in rows]), "2048 inputs")


def test_openai_errors_have_openais_envelope(url):
    for body, status, code in (({"input": "hello", "model": "no-such-model"}, 404, "model_not_found"),
                               ({"input": LONG, "model": MODEL}, 400, "context_length_exceeded"),
                               ({"input": "", "model": MODEL}, 400, None)):
        got, answer = request(url, "POST", "/v1/embeddings", body)
        assert got == status, (got, answer)
        assert_openai_error(answer, status, code)


# ------------------------------------------------------------------ OpenAI: /v1/models


def test_models_lists_the_text_embedding_models_only(oai):
    """Every loaded model with one BYTES input and one FP32 output: both MiniLMs, not `simple`, not
    `minilm_onnx` (token ids in), not `simple_identity` (BYTES out)."""
    listed = list(oai.models.list())
    assert {m.id for m in listed} == {MODEL, CANDLE_TWIN}, [m.id for m in listed]
    for m in listed:
        assert (m.object, m.created, m.owned_by) == ("model", 0, "inferd"), m
    one = oai.models.retrieve(MODEL)
    assert (one.id, one.object, one.owned_by) == (MODEL, "model", "inferd")
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("simple")


def test_models_list_is_openais_shape_on_the_wire(url):
    status, body = request(url, "GET", "/v1/models")
    assert status == 200, body
    assert body["object"] == "list"
    assert sorted(m["id"] for m in body["data"]) == sorted([MODEL, CANDLE_TWIN])
    for m in body["data"]:
        assert m == {"id": m["id"], "object": "model", "created": 0, "owned_by": "inferd"}, m
    status, body = request(url, "GET", f"/v1/models/{MODEL}")
    assert status == 200 and body == {"id": MODEL, "object": "model", "created": 0, "owned_by": "inferd"}, body
    status, body = request(url, "GET", "/v1/models/simple")
    assert status == 404, (status, body)
    assert_openai_error(body, status, "model_not_found")


def test_the_candle_twin_answers_on_the_openai_route_too(oai, reference):
    resp = oai.embeddings.create(input=SENTENCES, model=CANDLE_TWIN, encoding_format="float")
    assert resp.model == CANDLE_TWIN
    assert_matches(vectors(resp), reference(SENTENCES), "minilm (candle) through /v1/embeddings")


# ------------------------------------------------------------------ OpenAI: API key


def test_without_the_api_key_the_openai_routes_answer_401(keyed_server):
    url = keyed_server.http_url
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": API_KEY}):
        status, body = request(url, "POST", "/v1/embeddings", {"input": "hello", "model": MODEL}, headers)
        assert status == 401, (headers, status, body)
        assert_openai_error(body, status, "invalid_api_key")
    wrong = openai.OpenAI(base_url=f"http://{url}/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.embeddings.create(input="hello", model=MODEL)
    assert raised.value.code == "invalid_api_key", raised.value.body
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    wrong.close()


def test_with_the_api_key_the_openai_routes_serve(keyed_server, reference):
    client = openai.OpenAI(base_url=f"http://{keyed_server.http_url}/v1", api_key=API_KEY, max_retries=0)
    try:
        resp = client.embeddings.create(input=SENTENCES[:2], model=MODEL)
        assert_matches(vectors(resp), reference(SENTENCES[:2]), "with the API key")
        assert {m.id for m in client.models.list()} == {MODEL, CANDLE_TWIN}
    finally:
        client.close()


def test_with_an_api_key_tei_routes_want_it_too_and_v2_does_not(keyed_server, reference):
    """As TEI's own --api-key: /embed needs the Bearer key. The V2 routes keep their own rules (open)."""
    url = keyed_server.http_url
    status, body = request(url, "POST", "/embed", {"inputs": SENTENCES[0]})
    assert status == 401 and isinstance(body, dict) and body.get("error"), (status, body)
    status, body = request(url, "POST", "/embed", {"inputs": SENTENCES[0]}, {"Authorization": f"Bearer {API_KEY}"})
    assert status == 200, (status, body)
    assert_matches(np.array(body, np.float32), reference(SENTENCES[:1]), "/embed with the API key")
    client = httpclient.InferenceServerClient(url=url)
    try:
        assert_matches(v2_embed(client, SENTENCES[:1]), reference(SENTENCES[:1]), "V2 without a key")
    finally:
        client.close()


# ------------------------------------------------------------------ LangChain


def test_langchain_openai_embeddings_work_against_the_server(url, reference):
    """LangChain's OpenAIEmbeddings with the context-length check off (it would count tokens with tiktoken's
    OpenAI vocabularies, which this model does not use)."""
    try:
        from langchain_openai import OpenAIEmbeddings
    except ImportError:
        _missing("langchain-openai missing from .venv", module_level=False)
    emb = OpenAIEmbeddings(model=MODEL, base_url=f"http://{url}/v1", api_key="unused",
                           check_embedding_ctx_length=False, max_retries=0)
    docs = emb.embed_documents(SENTENCES)
    assert len(docs) == len(SENTENCES) and all(len(d) == DIM for d in docs)
    assert_matches(np.array(docs, np.float32), reference(SENTENCES), "LangChain embed_documents")
    query = emb.embed_query(SENTENCES[2])
    assert_matches(np.array([query], np.float32), reference(SENTENCES[2:3]), "LangChain embed_query")


# ------------------------------------------------------------------ TEI: /embed, /


def test_tei_embed_one_string_is_a_list_of_one_vector(url, v2, reference):
    for text in SENTENCES:
        got = tei_embed(url, text)
        assert got.shape == (1, DIM), got.shape
        assert_same(got, v2_embed(v2, [text]), f"/embed {text!r} against V2")
        assert_matches(got, reference([text]), f"/embed {text!r}")


def test_tei_embed_a_batch_keeps_its_order(url, v2, reference):
    texts = [f"{SENTENCES[i % len(SENTENCES)]} (number {i})" for i in range(40)]
    got = tei_embed(url, texts)
    assert got.shape == (40, DIM)
    assert_matches(got, reference(texts), "/embed 40 texts")
    assert_same(got, np.concatenate([v2_embed(v2, texts[:20]), v2_embed(v2, texts[20:])]), "/embed against V2")


def test_huggingface_hubs_inference_client_embeds_through_tei_routes(url, v2, reference):
    """TEI's documented Python client, `huggingface_hub.InferenceClient`, pointed at the server as at a TEI
    deployment (it posts to the root)."""
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=f"http://{url}")
    one = np.asarray(client.feature_extraction(SENTENCES[0]))
    assert one.shape == (1, DIM), one.shape
    assert_same(one, v2_embed(v2, SENTENCES[:1]), "InferenceClient one text against V2")
    batch = np.asarray(client.feature_extraction(SENTENCES[:4], normalize=True, truncate=True))
    assert batch.shape == (4, DIM), batch.shape
    assert_matches(batch, reference(SENTENCES[:4]), "InferenceClient four texts")


def test_post_to_the_root_is_embed(url):
    np.testing.assert_array_equal(tei_embed(url, SENTENCES[:3], path="/"), tei_embed(url, SENTENCES[:3]))


def test_tei_normalize_true_is_the_default_and_false_is_refused(url):
    """The graph itself L2-normalises, so it cannot give unnormalised vectors: normalize=false is a
    Validation error (400) rather than a silently normalised answer."""
    np.testing.assert_array_equal(tei_embed(url, SENTENCES[0], normalize=True), tei_embed(url, SENTENCES[0]))
    status, body = request(url, "POST", "/embed", {"inputs": SENTENCES[0], "normalize": False})
    assert_tei_error(status, body, 400, "Validation")


def test_tei_refuses_a_long_text_unless_truncate_is_true(url, v2, reference):
    for options in ({}, {"truncate": False}):
        status, body = request(url, "POST", "/embed", {"inputs": LONG, **options})
        assert_tei_error(status, body, 413, "Validation")
    status, body = request(url, "POST", "/embed", {"inputs": ["short", LONG]})
    assert_tei_error(status, body, 413, "Validation")
    cut = tei_embed(url, LONG, truncate=True)
    assert_matches(cut, reference([LONG]), "/embed truncate=true")
    assert_same(cut, v2_embed(v2, [LONG]), "/embed truncate=true against V2 (which truncates by default)")


def test_a_request_of_many_long_texts_is_counted_and_cut_like_one(url, reference):
    """Past 16 KiB of text a request's tokens are counted off the front-end thread; the answer is the same."""
    texts = [f"{i} {LONG}" for i in range(12)]
    assert sum(len(t.encode()) for t in texts) > 16 * 1024
    assert_matches(tei_embed(url, texts, truncate=True), reference(texts), "/embed 12 long texts, truncate=true")
    status, body = request(url, "POST", "/embed", {"inputs": texts})
    assert_tei_error(status, body, 413, "Validation")


@pytest.mark.parametrize("inputs", ["", [], ["fine", ""]], ids=["empty-string", "empty-list", "one-empty"])
def test_tei_empty_input_is_refused(url, inputs):
    status, body = request(url, "POST", "/embed", {"inputs": inputs})
    assert_tei_error(status, body, 400, "Empty")


# ------------------------------------------------------------------ TEI: /tokenize, /info


def test_tei_tokenize_gives_the_tokenizers_packages_ids(url, model_tokenizer):
    status, body = request(url, "POST", "/tokenize", {"inputs": SENTENCES})
    assert status == 200, body
    assert len(body) == len(SENTENCES)
    for text, tokens in zip(SENTENCES, body):
        enc = model_tokenizer.encode(text)
        assert [t["id"] for t in tokens] == enc.ids, text
        assert [t["special"] for t in tokens] == [bool(s) for s in enc.special_tokens_mask], text
        for t, token in zip(tokens, enc.tokens):
            assert set(t) == {"id", "text", "special", "start", "stop"}, t
            if t["special"]:
                assert (t["text"], t["start"], t["stop"]) == (token, None, None), t
            else:  # TEI's offsets count UTF-8 bytes
                assert isinstance(t["start"], int) and isinstance(t["stop"], int), t
                assert t["text"] == text.encode()[t["start"]:t["stop"]].decode(), (text, t)
    status, one = request(url, "POST", "/tokenize", {"inputs": SENTENCES[2]})
    assert status == 200 and one == body[2:3], one


def test_tei_tokenize_without_special_tokens(url, model_tokenizer):
    status, body = request(url, "POST", "/tokenize", {"inputs": SENTENCES[2], "add_special_tokens": False})
    assert status == 200, body
    assert [t["id"] for t in body[0]] == model_tokenizer.encode(SENTENCES[2], add_special_tokens=False).ids
    assert not any(t["special"] for t in body[0])


def test_tei_info_describes_the_model(url):
    status, info = request(url, "GET", "/info")
    assert status == 200, info
    assert isinstance(info["model_id"], str) and info["model_id"], info
    assert info["model_sha"] is None
    assert info["model_dtype"] == "float32"
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_input_length"] == MAX_TOKENS
    for field in ("max_concurrent_requests", "max_batch_tokens", "max_client_batch_size",
                  "tokenization_workers"):
        assert isinstance(info[field], int) and info[field] > 0, (field, info)
    assert info["max_batch_requests"] is None or (
        isinstance(info["max_batch_requests"], int) and info["max_batch_requests"] > 0), info
    assert isinstance(info["version"], str) and info["version"], info


# ------------------------------------------------------------------ concurrency


def test_32_concurrent_single_text_requests_each_get_their_own_embedding(url, reference):
    """32 threads, each with its own connection and its own text of a different length, released together
    three times over the three routes (OpenAI, TEI, V2) so the batcher mixes them in its batches: every
    thread gets its own text's embedding."""
    n, rounds = 32, 3
    texts = [f"{SENTENCES[i % len(SENTENCES)]} {'and more ' * (i % 7)}#{i}" for i in range(n)]
    want = reference(texts)
    barrier = threading.Barrier(n)

    def worker(i):
        route = ("openai", "tei", "v2")[i % 3]
        client = (openai.OpenAI(base_url=f"http://{url}/v1", api_key="unused", max_retries=0, timeout=120)
                  if route == "openai" else
                  httpclient.InferenceServerClient(url=url, network_timeout=120) if route == "v2" else None)
        try:
            out = []
            for _ in range(rounds):
                barrier.wait(timeout=60)
                if route == "openai":
                    out.append(vectors(client.embeddings.create(input=texts[i], model=MODEL,
                                                                encoding_format="float")))
                elif route == "tei":
                    out.append(tei_embed(url, texts[i]))
                else:
                    out.append(v2_embed(client, [texts[i]]))
            return route, out
        finally:
            if client is not None:
                client.close()

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(worker, range(n)))
    for i, (route, per_round) in enumerate(results):
        for r, got in enumerate(per_round):
            assert_matches(got, want[i : i + 1], f"thread {i} ({route}) round {r}")
