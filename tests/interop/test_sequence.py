"""Sequence batching with the official tritonclient: `sequence_id` / `sequence_start` / `sequence_end` over
HTTP, gRPC and a gRPC stream reach the sequence batcher, which keeps each sequence's implicit state apart.

`simple_accumulator` answers the running sum of a sequence's inputs; `simple_sequence` answers INPUT + START
as Triton's sequence examples expect.
"""

import queue
import threading
import uuid
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


@pytest.fixture(params=["http", "grpc"])
def triton(request, inferd):
    """tritonclient of each protocol, with its URL so that threads can open their own clients."""
    import tritonclient.http as httpclient

    module = httpclient if request.param == "http" else grpcclient
    url = inferd.http_url if request.param == "http" else inferd.grpc_url
    client = module.InferenceServerClient(url=url)
    yield SimpleNamespace(protocol=request.param, module=module, url=url, client=client)
    client.close()


def one(module, value):
    inp = module.InferInput("INPUT", [1, 1], "INT32")
    inp.set_data_from_numpy(np.array([[value]], dtype=np.int32))
    return [inp]


def infer(triton, model, seq_id, value, start, end):
    result = triton.client.infer(
        model,
        one(triton.module, value),
        sequence_id=seq_id,
        sequence_start=start,
        sequence_end=end,
    )
    return int(result.as_numpy("OUTPUT")[0][0])


def values_for(k, n=7):
    return [(i + 1) * (k + 2) - 5 * (k % 3) for i in range(n)]


def test_interleaved_sequences_accumulate_exactly(triton):
    # Four sequences, one request of each in turn, numeric and string ids mixed.
    ids = [41000, 41001, f"s-{uuid.uuid4()}", 41003]
    series = {sid: values_for(k) for k, sid in enumerate(ids)}
    got = {sid: [] for sid in ids}
    n = len(series[ids[0]])
    for i in range(n):
        for sid in ids:
            got[sid].append(infer(triton, "simple_accumulator", sid, series[sid][i], i == 0, i == n - 1))
    for sid in ids:
        assert got[sid] == list(np.cumsum(series[sid])), sid


def test_sequences_from_concurrent_clients_keep_their_own_state(triton):
    # Twelve sequences from threads at once: more than the model's eight slots, so some wait for a free one.
    results, errors = {}, []

    def run(k):
        try:
            module = triton.module
            client = module.InferenceServerClient(url=triton.url)
            vals = values_for(k, 5)
            out = []
            for i, v in enumerate(vals):
                r = client.infer(
                    "simple_accumulator",
                    one(module, v),
                    sequence_id=42000 + k,
                    sequence_start=i == 0,
                    sequence_end=i == len(vals) - 1,
                )
                out.append(int(r.as_numpy("OUTPUT")[0][0]))
            results[k] = (out, list(np.cumsum(vals)))
            client.close()
        except Exception as e:  # noqa: BLE001 - reported below with its sequence
            errors.append((k, e))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(results) == 12
    for k, (got, want) in results.items():
        assert got == want, k


def test_a_non_start_request_for_an_unknown_sequence_is_refused(triton):
    with pytest.raises(InferenceServerException) as e:
        infer(triton, "simple_accumulator", 43000, 1, False, False)
    assert (
        "inference request for sequence 43000 to model 'simple_accumulator' must specify the START flag "
        "on the first request of the sequence" in str(e.value)
    )


def test_a_request_without_sequence_id_to_a_sequence_model_is_refused(triton):
    with pytest.raises(InferenceServerException) as e:
        triton.client.infer("simple_accumulator", one(triton.module, 1))
    assert "must specify a non-zero or non-empty correlation ID" in str(e.value)


def test_simple_sequence_adds_start_on_the_first_request_only(triton):
    vals = [100, -11, -7, -5]
    got = [infer(triton, "simple_sequence", 44000, v, i == 0, i == len(vals) - 1) for i, v in enumerate(vals)]
    assert got == [101, -11, -7, -5]


def test_a_grpc_stream_keeps_each_sequence_in_order_and_answers_with_request_ids(inferd):
    answers = queue.Queue()
    client = grpcclient.InferenceServerClient(url=inferd.grpc_url)
    client.start_stream(callback=partial(lambda q, result, error: q.put((result, error)), answers))
    ids = [45000, 45001, str(uuid.uuid4())]
    series = {sid: values_for(k, 8) for k, sid in enumerate(ids)}
    n = 8
    # Every request of every sequence is sent before any answer is read, interleaved.
    for i in range(n):
        for sid in ids:
            client.async_stream_infer(
                "simple_accumulator",
                one(grpcclient, series[sid][i]),
                request_id=f"{sid}|{i}",
                sequence_id=sid,
                sequence_start=i == 0,
                sequence_end=i == n - 1,
            )
    got = {}
    for _ in range(n * len(ids)):
        result, error = answers.get(timeout=30)
        assert error is None, error
        rid = result.get_response().id
        got[rid] = int(result.as_numpy("OUTPUT")[0][0])
    client.stop_stream()
    client.close()
    for sid in ids:
        want = np.cumsum(series[sid])
        assert [got[f"{sid}|{i}"] for i in range(n)] == list(want), sid


def test_dyna_models_see_the_correlation_id_on_the_end_request(triton):
    # simple_dyna_sequence adds its uint64 CORRID on END; simple_string_dyna_sequence accumulates and adds its
    # string CORRID (read as an integer) on END.
    vals = [0, 11, 7, 1]
    got = [infer(triton, "simple_dyna_sequence", 46000, v, i == 0, i == 3) for i, v in enumerate(vals)]
    assert got == [1, 11, 7, 1 + 46000]
    vals = [20, -11, -7, -1]
    got = [infer(triton, "simple_string_dyna_sequence", "46001", v, i == 0, i == 3) for i, v in enumerate(vals)]
    assert got == [20, 9, 2, 1 + 46001]


def test_a_string_id_that_is_not_a_number_is_refused_before_a_numeric_corrid_model_runs(triton):
    with pytest.raises(InferenceServerException) as e:
        infer(triton, "simple_string_dyna_sequence", "not-a-number", 5, True, False)
    assert "must be an integer" in e.value.message() and "CORRID" in e.value.message()
    assert e.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
