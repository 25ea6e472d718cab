"""protogen profile: latency and per-layer time named by Caffe layers, beside the counted cost.

Timings are never asserted (they depend on the machine); what is checked: the JSON fields,
that every per-layer time is named by a Caffe layer of the net, that they sum to no more than
the profiled run they were measured in, the cost columns (hand-computed mult-adds) and the
clean refusal of --provider cuda without CUDA."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from protogen import stats
from protogen.dsl import Net
from protogen.profile import _layer_of, profile
from tests.helpers import REPO


def small_net() -> Net:
    n = Net("tiny")
    x = n.input("data", (1, 3, 16, 16))
    y = n.conv(x, 8, 3, 1, 1, bias=False, name="conv1")
    y = n.relu(n.bn(y, name="conv1/bn"), name="conv1/relu")
    y = n.conv(y, 8, 3, 1, 1, group=8, bias=False, name="dw")
    y = n.relu(y, name="dw/relu")
    y = n.channel_shuffle(y, 2, name="shuffle")
    z = n.conv(y, 8, 1, name="pw")
    y = n.add_(y, z, name="add")
    y = n.max_pool(y, 2, 2, name="pool")
    n.classifier_outputs(n.fc(y, 10, name="fc"))
    return n


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "protogen", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_layer_name_mapping():
    layers = {"conv1", "conv1/bn", "stage2/unit1/shuffle", "fc"}
    assert _layer_of("conv1", layers) == "conv1"
    assert _layer_of("conv1_nchwc", layers) == "conv1"              # ORT's layout suffix
    assert _layer_of("conv1/bn", layers) == "conv1/bn"              # longest match wins
    assert _layer_of("conv1/bn/Mul_2", layers) == "conv1/bn"        # a helper node of a layer
    assert _layer_of("stage2/unit1/shuffle/Transpose", layers) == "stage2/unit1/shuffle"
    assert _layer_of("ReorderInput_token_12", layers) is None       # inserted by the runtime


def test_profile_fields_names_and_sum():
    n = small_net()
    p = profile(n.graph, repeat=3, warmup=1, threads=1)
    for k in ("latency_ms", "provider", "batch", "layers", "by_type", "profiled_run_ms"):
        assert k in p
    assert p["provider"] == "cpu" and p["batch"] == 1 and p["latency_ms"] > 0
    names = [l.name for l in n.graph.select(net="deploy").layers]
    assert [l["name"] for l in p["layers"]] == names                # one row per Caffe layer
    for l in p["layers"]:
        assert {"name", "type", "time_ms", "macs", "memory_access"} <= set(l)
        assert l["time_ms"] >= 0
    total = sum(l["time_ms"] for l in p["layers"])
    assert 0 < total <= p["profiled_run_ms"] + 1e-6                 # measured inside those runs
    assert total + p["runtime_ms"] <= p["profiled_run_ms"] + 1e-6
    # the layers that do the arithmetic got time; a layer without any names where it went
    by = {l["name"]: l for l in p["layers"]}
    assert by["conv1"]["time_ms"] > 0 and by["fc"]["time_ms"] > 0
    for l in p["layers"]:
        if l["time_ms"] == 0 and l["type"] != "Input":
            assert l.get("fused_into") in names, l
    # cost columns, by hand: conv1 3->8, 3x3, 16x16 out; dw 8 groups; pw 8->8 1x1; fc 8*8*8 -> 10
    assert by["conv1"]["macs"] == 8 * 3 * 9 * 16 * 16
    assert by["dw"]["macs"] == 8 * 1 * 9 * 16 * 16
    assert by["pw"]["macs"] == 8 * 8 * 16 * 16
    assert by["fc"]["macs"] == 8 * 8 * 8 * 10
    assert by["conv1"]["params"] == 8 * 3 * 9
    assert sum(t["time_ms"] for t in p["by_type"]) == pytest.approx(total)


def test_profile_batch_cost_per_image():
    p2 = profile(small_net().graph, batch=2, repeat=1, warmup=0, per_layer=False)
    # cost per image, as `protogen stats` counts it, whatever the batch timed
    assert p2["batch"] == 2 and p2["macs"] == (8 * 3 * 9 + 8 * 9 + 64) * 256 + 5120
    assert "layers" not in p2


def test_cli_profile_json_and_plot(tmp_path):
    svg = tmp_path / "p.svg"
    r = run_cli("profile", "mobilenet_v1", "--width", "0.25", "--input-size", "64", "--repeat", "2",
                "--warmup", "1", "--threads", "1", "--json", "--plot", str(svg))
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    s = json.loads(run_cli("stats", "mobilenet_v1", "--width", "0.25", "--input-size", "64",
                           "--json").stdout)
    assert [l["name"] for l in p["layers"]] == [l["name"] for l in s["layers"]]
    assert [l["macs"] for l in p["layers"]] == [l["macs"] for l in s["layers"]]
    assert p["macs"] == s["macs"] and p["memory_access"] == s["memory_access"]
    assert sum(l["time_ms"] for l in p["layers"]) <= p["profiled_run_ms"] + 1e-6
    import xml.etree.ElementTree as ET
    assert ET.parse(svg).getroot().tag.endswith("svg")


def _has_cuda() -> bool:
    import onnxruntime
    import torch
    return torch.cuda.is_available() or "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.skipif(_has_cuda(), reason="this machine has CUDA: the refusal cannot be shown")
def test_cuda_refused_cleanly_without_cuda(tmp_path):
    out = tmp_path / "p.png"
    r = run_cli("profile", "shufflenet_v2", "--width", "0.5", "--provider", "cuda", "--plot", str(out))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "no CUDA" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_bad_options_one_line(tmp_path):
    r = run_cli("profile", "shufflenet_v2", "--repeat", "0")
    assert r.returncode == 2 and "--repeat must be >= 1" in r.stderr
    r = run_cli("profile", "shufflenet_v2", "--plot", str(tmp_path / "p.jpg"))
    assert r.returncode == 2 and "--plot must end in" in r.stderr


def test_torch_timing_path_per_layer_on_cpu():
    # the --provider cuda fallback (PyTorch reference timed per layer through its step hook),
    # exercised on the CPU clock: every timed name is a layer, the sum within the runs
    from protogen.profile import _feeds, _per_layer, _torch_profile, prepared
    g = prepared(small_net().graph, 1)
    raw = _torch_profile(g, _feeds(g, 0), 1, 1, 3, True, device="cpu")
    assert raw["runtime"].startswith("torch ") and len(raw["times"]) == 3
    names = [l.name for l in g.layers]
    assert set(raw["node_ms"]) == set(names)
    assert 0 < sum(raw["node_ms"].values()) <= raw["profiled_run_ms"] + 1e-6
    rows = _per_layer(g, raw, stats.compute(g)["layers"])
    assert [l["name"] for l in rows["layers"]] == names
    assert all(l["time_ms"] > 0 for l in rows["layers"] if l["type"] != "Input")
