"""The converter on bad input: a clear one-line error naming file + layer + problem, exit
status 2, no traceback, no partial output file. Plus a bounded fuzz test on real corpus files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from protogen.caffe.caffemodel import write_caffemodel
from protogen.caffe.loader import load_model, read_net
from protogen.cli import main
from protogen.errors import ProtogenError, UnsupportedError

from tests.helpers import CORPUS  # noqa: E402
from tests.helpers import needs_corpus  # noqa: E402

SMALL = '''name: "small"
input: "data" input_dim: 1 input_dim: 2 input_dim: 6 input_dim: 6
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" inner_product_param { num_output: 4 } }
'''


def _run(capsys, *argv):
    rc = main(["convert", *map(str, argv)])
    err = capsys.readouterr().err
    return rc, err


def _assert_clean_failure(rc, err, out_dir: Path, *needles):
    assert rc == 2
    assert "Traceback" not in err
    assert err.startswith("protogen: error: ")
    for n in needles:
        assert n in err, (n, err)
    # no output and no temporary file left behind
    assert [p.name for p in out_dir.iterdir() if p.name.startswith(("out", ".out"))] == []


@pytest.fixture
def small(tmp_path):
    p = tmp_path / "small.prototxt"
    p.write_text(SMALL)
    rng = np.random.default_rng(0)
    blobs = {"conv1": [rng.standard_normal((3, 2, 3, 3)).astype(np.float32), np.zeros(3, np.float32)],
             "fc": [rng.standard_normal((4, 48)).astype(np.float32), np.zeros(4, np.float32)],
             "not_in_net": [np.ones(5, np.float32)]}          # unknown source layers are ignored
    w = tmp_path / "small.caffemodel"
    write_caffemodel(w, read_net(p), blobs)
    return p, w, blobs


def test_small_model_loads_with_weights(small):
    p, w, blobs = small
    g = load_model(p, w)
    np.testing.assert_array_equal(g.layer("fc").blobs[0], blobs["fc"][0])
    assert g.layer("relu1").blobs is None


def test_malformed_prototxt_names_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer {\n  name: "a"\n  type: "ReLU"\n  bottom: "x" top: "y"\n  oops: 3\n}\n')
    rc, err = _run(capsys, bad, "-o", tmp_path / "out.onnx")
    # an unknown field is listed with its place and layer (every one, see test_unknown_fields)
    _assert_clean_failure(rc, err, tmp_path, f"{bad}:6:3", "unknown field 'oops'", "layer 'a' (ReLU)")
    bad.write_text('name: "x"\nlayer {\n  name: "a"\n  type: "ReLU"\n  bottom: "x" top "y"\n}\n')
    rc, err = _run(capsys, bad, "-o", tmp_path / "out.onnx")
    _assert_clean_failure(rc, err, tmp_path, f"{bad}:5:", "malformed prototxt")


def test_binary_file_as_prototxt(tmp_path, capsys, small):
    _, w, _ = small
    rc, err = _run(capsys, w, "-o", tmp_path / "out.prototxt")
    assert rc == 2 and "Traceback" not in err


def test_truncated_caffemodel(tmp_path, capsys, small):
    p, w, _ = small
    data = w.read_bytes()
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(data[: len(data) - 37])
    rc, err = _run(capsys, p, "--weights", cut, "-o", tmp_path / "out.prototxt")
    _assert_clean_failure(rc, err, tmp_path, str(cut), "truncated or corrupt")


def test_caffemodel_cut_at_a_layer_boundary_misses_weights(tmp_path, small):
    p, _, blobs = small
    w = tmp_path / "partial.caffemodel"
    write_caffemodel(w, read_net(p), {"conv1": blobs["conv1"]})
    # Caffe's CopyTrainedLayersFrom leaves 'fc' as its LayerSetUp filled it: no weight_filler
    # / bias_filler means FillerParameter's default, constant 0 (said in a note)
    g = load_model(p, w)
    assert not g.layer("fc").blobs[0].any() and not g.layer("fc").blobs[1].any()
    np.testing.assert_array_equal(g.layer("conv1").blobs[0], blobs["conv1"][0])
    assert any("no weights for 1 layer(s) ('fc')" in n for n in g.notes), g.notes


def test_missing_weights_with_random_fillers_name_every_layer(tmp_path, small):
    p, _, _ = small
    p.write_text(SMALL.replace("convolution_param { num_output: 3 kernel_size: 3 }",
                               'convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "msra" } }')
                 .replace("inner_product_param { num_output: 4 }",
                          'inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.01 } }'))
    w = tmp_path / "empty.caffemodel"
    write_caffemodel(w, read_net(p), {})
    with pytest.raises(UnsupportedError) as ei:
        load_model(p, w)
    e = ei.value
    assert [(n, t) for n, t, _ in e.items] == [("conv1", "Convolution"), ("fc", "InnerProduct")]
    assert "weight_filler (msra)" in e.items[0][2] and "weight_filler (gaussian)" in e.items[1][2]
    assert e.file == str(w)


def test_blob_shape_mismatch_names_both_shapes(tmp_path, capsys, small):
    p, _, blobs = small
    w = tmp_path / "wrong.caffemodel"
    wrong = dict(blobs, fc=[np.zeros((5, 48), np.float32), np.zeros(5, np.float32)])
    write_caffemodel(w, read_net(p), wrong)
    rc, err = _run(capsys, p, "--weights", w, "-o", tmp_path / "out.prototxt")
    _assert_clean_failure(rc, err, tmp_path, str(w), "layer 'fc'", "(5, 48)", "(4, 48)")


def test_blob_count_mismatch(tmp_path, small):
    p, _, blobs = small
    w = tmp_path / "count.caffemodel"
    write_caffemodel(w, read_net(p), dict(blobs, fc=blobs["fc"][:1]))
    with pytest.raises(ProtogenError, match="1 weight blob"):
        load_model(p, w)


def test_legacy_4d_blob_shapes_are_aligned_from_the_end(tmp_path, small):
    """V1 caffemodels store an InnerProduct weight as 1x1xMxN and its bias as 1x1x1xN."""
    p, _, blobs = small
    w = tmp_path / "legacy.caffemodel"
    legacy = dict(blobs, fc=[blobs["fc"][0].reshape(1, 1, 4, 48), blobs["fc"][1].reshape(1, 1, 1, 4)])
    write_caffemodel(w, read_net(p), legacy)
    g = load_model(p, w)
    assert g.layer("fc").blobs[0].shape == (4, 48) and g.layer("fc").blobs[1].shape == (4,)
    np.testing.assert_array_equal(g.layer("fc").blobs[0], blobs["fc"][0])


def test_unknown_layer_types_listed_together(tmp_path, capsys):
    p = tmp_path / "unk.prototxt"
    p.write_text(SMALL + 'layer { name: "u1" type: "Frobnicate" bottom: "fc" top: "u1" }\n'
                         'layer { name: "u2" type: "Wibble" bottom: "u1" top: "u2" }\n')
    rc, err = _run(capsys, p, "-o", tmp_path / "out.onnx")
    _assert_clean_failure(rc, err, tmp_path, "layer 'u1'", "Frobnicate", "layer 'u2'", "Wibble",
                          "2 unsupported")


def test_cycle(tmp_path, capsys):
    p = tmp_path / "cyc.prototxt"
    p.write_text('''input: "data" input_dim: 1 input_dim: 1 input_dim: 2 input_dim: 2
        layer { name: "a" type: "Eltwise" bottom: "data" bottom: "b" top: "a" }
        layer { name: "b" type: "ReLU" bottom: "a" top: "b" }''')
    rc, err = _run(capsys, p, "-o", tmp_path / "out.prototxt")
    _assert_clean_failure(rc, err, tmp_path, "layer 'a'", "cycle")


@pytest.mark.parametrize("body, needle", [
    ('input: "data" input_dim: 100000 input_dim: 100000 input_dim: 100000 input_dim: 3'
     '\nlayer { name: "r" type: "ReLU" bottom: "data" top: "r" }', "absurd"),
    ('input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
     'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
     'inner_product_param { num_output: 2000000000 } }', "absurd weight size"),
])
def test_absurd_dimensions_refused_before_allocating(tmp_path, capsys, body, needle):
    p = tmp_path / "big.prototxt"
    p.write_text(body)
    rc, err = _run(capsys, p, "-o", tmp_path / "out.prototxt")
    _assert_clean_failure(rc, err, tmp_path, needle)


def test_data_layer_without_crop_size_needs_input_shape(tmp_path, capsys):
    p = tmp_path / "tv.prototxt"
    p.write_text('''layer { name: "d" type: "Data" top: "data" top: "label" data_param { source: "x" batch_size: 4 } }
        layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 3 } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }''')
    rc, err = _run(capsys, p, "-o", tmp_path / "out.prototxt")
    _assert_clean_failure(rc, err, tmp_path, "layer 'd'", "--input-shape")
    g = load_model(p, input_shape="4,1,5,5")
    assert [l.type for l in g.layers] == ["Input", "InnerProduct"]
    assert g.steps()[-1].out_shapes == [(4, 3)]


def test_bad_input_shape_option(tmp_path, capsys):
    p = tmp_path / "small.prototxt"
    p.write_text(SMALL)
    rc, err = _run(capsys, p, "--input-shape", "1,x,3", "-o", tmp_path / "out.prototxt")
    _assert_clean_failure(rc, err, tmp_path, "--input-shape")


def test_unknown_output_kind(tmp_path, capsys):
    p = tmp_path / "small.prototxt"
    p.write_text(SMALL)
    rc, err = _run(capsys, p, "-o", tmp_path / "out.tflite")
    _assert_clean_failure(rc, err, tmp_path, "output must end in")


def test_missing_input_file(tmp_path, capsys):
    rc, err = _run(capsys, tmp_path / "nope.prototxt", "-o", tmp_path / "out.prototxt")
    _assert_clean_failure(rc, err, tmp_path, "nope.prototxt", "cannot read")


# ---------------------------------------------------------------- fuzz (bounded)
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

FUZZ_PROTOTXTS = ["kpzhang93_mtcnn/det1.prototxt", "bvlc_caffe/history_11a4c1655_v1/examples/mnist/lenet.prototxt",
                  "bvlc_caffe/history_4b273e35c_v0_padding/models/imagenet.prototxt",
                  "linzaer_ultra-light-face/slim-320.prototxt"]
FUZZ_MODEL = ("kpzhang93_mtcnn/det1.prototxt", "kpzhang93_mtcnn/det1.caffemodel")

_TOKENS = ["0", "-1", "99999999", "3", "}", "{", "layer {", '"', "top: \"x\"", "kernel_size: 0",
           "stride: 0", "pad: 7", "group: 5", "num_output: 0", "type: \"Frobnicate\"", "\n", "axis: 9"]


def _load_quietly(proto, weights=None):
    try:
        g = load_model(proto, weights)
        g.steps()
    except ProtogenError:
        pass


@needs_corpus
@settings(max_examples=int(os.environ.get("PROTOGEN_FUZZ_EXAMPLES", "60")), deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(FUZZ_PROTOTXTS), data=st.data())
def test_fuzz_prototxt_text_edits(tmp_path, which, data):
    text = (CORPUS / which).read_text()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["delete", "insert", "replace_number"]))
        if op == "delete":
            j = min(len(text), i + data.draw(st.integers(1, 40)))
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + " " + data.draw(st.sampled_from(_TOKENS)) + " " + text[i:]
        else:
            import re
            nums = list(re.finditer(r"\b\d+\b", text))
            if nums:
                m = nums[data.draw(st.integers(0, len(nums) - 1))]
                text = text[:m.start()] + data.draw(st.sampled_from(["0", "1", "7", "65535", "4294967295"])) + text[m.end():]
    p = tmp_path / "fuzz.prototxt"
    p.write_text(text)
    _load_quietly(p)


@needs_corpus
@settings(max_examples=int(os.environ.get("PROTOGEN_FUZZ_EXAMPLES", "60")), deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_caffemodel_bytes(tmp_path, data):
    proto, model = (CORPUS / f for f in FUZZ_MODEL)
    raw = bytearray(model.read_bytes())
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    for _ in range(data.draw(st.integers(0, 8))):
        if raw:
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
    p = tmp_path / "fuzz.caffemodel"
    p.write_bytes(bytes(raw))
    _load_quietly(proto, p)
