"""Triton's system shared memory extension through the stock `tritonclient`:
regions made with `tritonclient.utils.shared_memory`, registered, used for
inputs and outputs of `simple` (INT32) and `simple_string` (BYTES) over both
protocols, listed and unregistered, and mistakes refused naming the region.

The tests use a server of their own, since they unregister every region.
"""

import os

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.utils import InferenceServerException

from conftest import _serve


@pytest.fixture(scope="module")
def shm_server(tmp_path_factory):
    yield from _serve(tmp_path_factory, "inferd-shm")


@pytest.fixture(params=["http", "grpc"])
def client(request, shm_server):
    if request.param == "http":
        c = httpclient.InferenceServerClient(url=shm_server.http_url)
        c.module = httpclient
    else:
        c = grpcclient.InferenceServerClient(url=shm_server.grpc_url)
        c.module = grpcclient
    yield c
    c.unregister_system_shared_memory()
    c.close()


class Regions:
    """System shared memory regions made here, destroyed at the end of a test."""

    def __init__(self):
        self.handles = []

    def create(self, name, byte_size):
        key = f"/inferd-pytest-{os.getpid()}-{name}"
        handle = shm.create_shared_memory_region(name, key, byte_size)
        self.handles.append(handle)
        return handle, key

    def destroy(self):
        for h in self.handles:
            shm.destroy_shared_memory_region(h)


@pytest.fixture
def regions():
    r = Regions()
    yield r
    r.destroy()


def test_int32_inputs_and_outputs_travel_through_regions(client, regions):
    m = client.module
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    ip, ip_key = regions.create("ints_in", 128)
    op, op_key = regions.create("ints_out", 128)
    shm.set_shared_memory_region(ip, [a])
    shm.set_shared_memory_region(ip, [b], offset=64)
    client.register_system_shared_memory("ints_in", ip_key, 128)
    client.register_system_shared_memory("ints_out", op_key, 128)

    inputs = [m.InferInput("INPUT0", [1, 16], "INT32"), m.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory("ints_in", 64)
    inputs[1].set_shared_memory("ints_in", 64, offset=64)
    outputs = [m.InferRequestedOutput("OUTPUT0"), m.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("ints_out", 64)
    outputs[1].set_shared_memory("ints_out", 64, offset=64)
    result = client.infer("simple", inputs, outputs=outputs)

    out0 = result.get_output("OUTPUT0")
    shape = out0["shape"] if isinstance(out0, dict) else list(out0.shape)
    assert shape == [1, 16]
    np.testing.assert_array_equal(shm.get_contents_as_numpy(op, np.int32, [1, 16]), a + b)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(op, np.int32, [1, 16], offset=64), a - b
    )
    # The outputs came through the region, not the response.
    if m is httpclient:
        assert "data" not in out0
    else:
        assert result.get_response().raw_output_contents[0] == b""


def test_bytes_inputs_and_outputs_travel_through_regions(client, regions):
    m = client.module
    a = np.array([[str(i).encode() for i in range(16)]], dtype=np.object_)
    b = np.array([[b"1"] * 16], dtype=np.object_)
    sa, sb = utils.serialize_byte_tensor(a), utils.serialize_byte_tensor(b)
    size_a, size_b = utils.serialized_byte_size(sa), utils.serialized_byte_size(sb)
    ia, ia_key = regions.create("str_in0", size_a)
    ib, ib_key = regions.create("str_in1", size_b)
    out, out_key = regions.create("str_out", 512)
    shm.set_shared_memory_region(ia, [sa])
    shm.set_shared_memory_region(ib, [sb])
    client.register_system_shared_memory("str_in0", ia_key, size_a)
    client.register_system_shared_memory("str_in1", ib_key, size_b)
    client.register_system_shared_memory("str_out", out_key, 512)

    inputs = [m.InferInput("INPUT0", [1, 16], "BYTES"), m.InferInput("INPUT1", [1, 16], "BYTES")]
    inputs[0].set_shared_memory("str_in0", size_a)
    inputs[1].set_shared_memory("str_in1", size_b)
    outputs = [m.InferRequestedOutput("OUTPUT0"), m.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("str_out", 256)
    outputs[1].set_shared_memory("str_out", 256, offset=256)
    client.infer("simple_string", inputs, outputs=outputs)

    sums = shm.get_contents_as_numpy(out, np.object_, [1, 16])
    diffs = shm.get_contents_as_numpy(out, np.object_, [1, 16], offset=256)
    assert [int(x) for x in sums[0]] == [i + 1 for i in range(16)]
    assert [int(x) for x in diffs[0]] == [i - 1 for i in range(16)]


def test_status_lists_every_region_and_unregister_all_empties_it(client, regions):
    _, key = regions.create("listed", 64)
    client.register_system_shared_memory("listed_a", key, 32)
    client.register_system_shared_memory("listed_b", key, 32, offset=32)
    status = client.get_system_shared_memory_status()
    if client.module is httpclient:
        listed = {r["name"]: r for r in status}
        assert listed["listed_b"] == {"name": "listed_b", "key": key, "offset": 32, "byte_size": 32}
    else:
        listed = dict(status.regions)
        assert (listed["listed_b"].key, listed["listed_b"].offset, listed["listed_b"].byte_size) == (key, 32, 32)
    assert {"listed_a", "listed_b"} <= set(listed)
    one = client.get_system_shared_memory_status("listed_a")
    assert (len(one) if client.module is httpclient else len(one.regions)) == 1

    client.unregister_system_shared_memory("listed_a")
    with pytest.raises(InferenceServerException, match="Unable to find system shared memory region: 'listed_a'"):
        client.get_system_shared_memory_status("listed_a")
    client.unregister_system_shared_memory()
    status = client.get_system_shared_memory_status()
    assert (len(status) if client.module is httpclient else len(status.regions)) == 0


def test_mistakes_are_refused_naming_the_region(client, regions):
    m = client.module
    ip, key = regions.create("mistakes", 128)
    with pytest.raises(InferenceServerException, match="'too_far'.*invalid args"):
        client.register_system_shared_memory("too_far", key, 64, offset=100)
    client.register_system_shared_memory("mistakes", key, 128)
    with pytest.raises(InferenceServerException, match="'mistakes' already in manager"):
        client.register_system_shared_memory("mistakes", key, 128)

    inputs = [m.InferInput("INPUT0", [1, 16], "INT32"), m.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory("mistakes", 64)
    inputs[1].set_shared_memory("mistakes", 64, offset=96)
    with pytest.raises(InferenceServerException, match="out of bounds of shared memory region 'mistakes'"):
        client.infer("simple", inputs)

    inputs[1].set_shared_memory("mistakes", 64, offset=64)
    outputs = [m.InferRequestedOutput("OUTPUT0")]
    outputs[0].set_shared_memory("mistakes", 16)
    with pytest.raises(
        InferenceServerException,
        match=r"output 'OUTPUT0' \(16 bytes\) should be at least 64 bytes to hold the results",
    ):
        client.infer("simple", inputs, outputs=outputs)

    with pytest.raises(InferenceServerException, match="CUDA shared memory is not supported"):
        client.register_cuda_shared_memory("gpu", b"\0" * 64, 0, 64)
    status = client.get_cuda_shared_memory_status()
    assert (len(status) if client.module is httpclient else len(status.regions)) == 0
