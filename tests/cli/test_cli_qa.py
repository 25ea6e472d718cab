"""Regressions from a QA pass over the CLI: every failure is one line, exit 2, no traceback,
no partial output file."""
from __future__ import annotations

from pathlib import Path

import pytest
from tests.helpers import CORPUS_SKIP_REASON

from protogen.cli import main

from tests.helpers import CORPUS  # noqa: E402
MTCNN = CORPUS / "kpzhang93_mtcnn"


def _fail(capsys, *argv, code=2):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == code, err
    assert err.startswith("protogen: error: ") and "Traceback" not in err
    return err


def test_output_is_a_directory(tmp_path, capsys):
    d = tmp_path / "adir"
    d.mkdir()
    err = _fail(capsys, "emit", "resnet18", "-o", d)
    assert "is a directory" in err and str(d) in err
    assert list(d.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["adir"]
    # a trailing slash names a directory too: no file 'x.onnx' appears
    err = _fail(capsys, "convert", tmp_path / "no.prototxt", "-o", f"{tmp_path}/x.onnx/")
    assert "is a directory" in err and not (tmp_path / "x.onnx").exists()


def test_zero_option_values_are_checked_not_ignored(capsys):
    assert "--input-size=0 is outside" in _fail(capsys, "emit", "resnet18", "--input-size", "0")
    assert "--num-classes=0 is outside" in _fail(capsys, "stats", "resnet18", "--num-classes", "0")


def test_unknown_model_option_without_value_is_named(capsys):
    err = _fail(capsys, "emit", "resnet18", "--frobnicate")
    assert "has no option --frobnicate" in err


def test_googlenet_range_matches_the_aux_heads(capsys):
    # by hand: conv1 7x7/2 pad 3 (floor), then 3x3/2 max pools with Caffe's ceil rounding:
    # 79 -> 40 -> 20 -> 10 -> 5 (inception_4a map) fits the aux head's 5x5 average pool;
    # 78 -> 39 -> 19 -> 9 -> 4 does not -> the smallest input is 79
    assert "outside 79..2048" in _fail(capsys, "stats", "googlenet", "--input-size", "78")
    assert main(["stats", "googlenet", "--input-size", "79"]) == 0


def test_empty_prototxt(tmp_path, capsys):
    p = tmp_path / "empty.prototxt"
    p.write_text("")
    out = tmp_path / "o.prototxt"
    err = _fail(capsys, "emit", p, "-o", out)
    assert str(p) in err and "no layers" in err and not out.exists()


def test_inplace_bottom_never_produced(tmp_path, capsys):
    p = tmp_path / "n.prototxt"
    p.write_text('layer { name: "a" type: "ReLU" bottom: "d" top: "d" }\n')
    err = _fail(capsys, "stats", p)
    assert "layer 'a'" in err and "not produced by any earlier layer" in err


def test_shape_error_names_the_file(tmp_path, capsys):
    p = tmp_path / "tiny.prototxt"
    p.write_text('input: "data" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1\n'
                 'layer { name: "pool1" type: "Pooling" bottom: "data" top: "p" '
                 'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n')
    err = _fail(capsys, "stats", p)
    assert str(p) in err and "layer 'pool1'" in err


def test_zoo_options_on_a_prototxt(tmp_path, capsys):
    p = tmp_path / "t.prototxt"
    p.write_text('input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n'
                 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    assert "only applies to zoo models" in _fail(capsys, "stats", p, "--input-size", "64")
    assert "only applies to zoo models" in _fail(capsys, "verify", p, "--num-classes", "3")


def test_convert_zoo_name_points_to_emit(tmp_path, capsys):
    err = _fail(capsys, "convert", "resnet18", "-o", tmp_path / "r.onnx")
    assert "protogen emit resnet18" in err and not (tmp_path / "r.onnx").exists()


@pytest.mark.skipif(not MTCNN.is_dir(), reason=CORPUS_SKIP_REASON)
def test_prototxt_given_as_weights(capsys):
    err = _fail(capsys, "verify", MTCNN / "det1.prototxt", "--weights", MTCNN / "det1.prototxt")
    assert "looks like a text file" in err


@pytest.mark.skipif(not MTCNN.is_dir(), reason=CORPUS_SKIP_REASON)
def test_onnx_input_shape_too_small(tmp_path, capsys):
    pytest.importorskip("onnx")
    onnx = tmp_path / "det1.onnx"
    assert main(["convert", str(MTCNN / "det1.prototxt"), "-o", str(onnx)]) == 0
    capsys.readouterr()
    out = tmp_path / "back.prototxt"
    # 5x5 -> conv1 3x3 -> 3x3 -> pool 2x2/2 (ceil) -> 2x2 -> conv2 3x3: too small, named
    err = _fail(capsys, "convert", onnx, "-o", out, "--input-shape", "1,3,5,5")
    assert "conv2" in err and "smaller than the 3x3 kernel" in err
    assert not out.exists() and not out.with_suffix(".caffemodel").exists()


@pytest.mark.skipif(not MTCNN.is_dir(), reason=CORPUS_SKIP_REASON)
def test_real_weights_no_torch_warning(capsys):
    pytest.importorskip("torch")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        rc = main(["verify", str(MTCNN / "det1.prototxt"), "--weights",
                   str(MTCNN / "det1.caffemodel"), "--no-opencv"])
    assert rc == 0, capsys.readouterr().err


@pytest.mark.skipif(not MTCNN.is_dir(), reason=CORPUS_SKIP_REASON)
def test_convert_to_prototxt_writes_both_files_or_neither(tmp_path, capsys):
    src, weights = MTCNN / "det1.prototxt", MTCNN / "det1.caffemodel"
    # the prototxt target is unwritable (a directory): the caffemodel must not appear either
    (tmp_path / "out.prototxt").mkdir()
    err = _fail(capsys, "convert", src, "--weights", weights, "-o", tmp_path / "out.prototxt")
    assert "is a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.prototxt"]
    assert list((tmp_path / "out.prototxt").iterdir()) == []
    # and a writable target gets both
    assert main(["convert", str(src), "--weights", str(weights), "-o", str(tmp_path / "ok.prototxt")]) == 0
    assert (tmp_path / "ok.prototxt").stat().st_size > 0 and (tmp_path / "ok.caffemodel").stat().st_size > 0


CIFAR_TRAIN_TEST = CORPUS / "bvlc_caffe" / "current" / "examples" / "cifar10" / "cifar10_full_train_test.prototxt"


@pytest.mark.skipif(not CIFAR_TRAIN_TEST.is_file(), reason=CORPUS_SKIP_REASON)
def test_stats_of_a_train_test_net_takes_an_input_shape(capsys):
    # its Data layer has no crop_size: the error says how to give the size, and --input-shape works
    assert "--input-shape" in _fail(capsys, "stats", CIFAR_TRAIN_TEST)
    assert main(["stats", str(CIFAR_TRAIN_TEST), "--input-shape", "1,3,32,32", "--json"]) == 0
    import json
    s = json.loads(capsys.readouterr().out)
    # cifar10_full: conv 3->32 5x5, conv 32->32 5x5, conv 32->64 5x5 (pad 2, 32->16->8 by the
    # pools), ip 64*4*4 -> 10; each with bias
    assert s["params"] == (5*5*3*32 + 32) + (5*5*32*32 + 32) + (5*5*32*64 + 64) + (64*4*4*10 + 10)
    assert "--input-size" in _fail(capsys, "stats", "resnet18", "--input-shape", "1,3,32,32")
