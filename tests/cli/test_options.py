"""The shared CLI options (protogen.cli.options) and issue 13's small CLI items: one meaning of
--phase in every subcommand, --input-shape values starting with '-', output checks before any
work (format vs suffix, missing directory), ONNX files read by stats/verify, help texts."""
from __future__ import annotations

import json

import pytest

from protogen.cli import COMMANDS, build_parser, main
from protogen.cli.options import PHASE_HELP

TINY = ('name: "tiny"\ninput: "data" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
        'convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }\n'
        'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
        'layer { name: "pool" type: "Pooling" bottom: "conv1" top: "pool" '
        'pooling_param { pool: AVE global_pooling: true } }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" '
        'inner_product_param { num_output: 3 } }\n')


def _fail(capsys, *argv, code=2):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == code, err
    assert err.startswith("protogen: error: ") and "Traceback" not in err and err.count("\n") == 1
    return err


def _subparsers():
    ap = build_parser()
    return next(a for a in ap._actions if a.dest == "cmd").choices


def _help(cmd: str) -> str:
    return " ".join(_subparsers()[cmd].format_help().split())


def test_every_subcommand_module_follows_the_pattern():
    names = set(_subparsers())
    assert {"list", "emit", "stats", "verify", "convert", "diff"} <= names
    for mod in COMMANDS:
        assert callable(mod.add_parser) and callable(mod.run)


def test_every_phase_option_is_the_shared_one():
    # subcommands added later (layers, profile, bench, draw...) too: one --phase, one help
    with_phase = [name for name, p in _subparsers().items()
                  if any("--phase" in a.option_strings for a in p._actions)]
    assert {"emit", "stats", "verify", "convert", "diff"} <= set(with_phase)
    for name in with_phase:
        assert " ".join(PHASE_HELP.split()) in _help(name), name
        assert "--phase {test,train}" in _help(name), name


@pytest.mark.parametrize("cmd", ["emit", "stats", "verify", "convert", "diff"])
def test_phase_means_the_same_everywhere(cmd):
    text = _help(cmd)
    assert " ".join(PHASE_HELP.split()) in text, text
    assert "--phase {test,train}" in text
    p = _subparsers()[cmd]
    for given, meant in (("test", "test"), ("deploy", "test"), ("TRAIN", "train")):
        argv = {"diff": ["a", "b"], "convert": ["a", "-o", "b.onnx"]}.get(cmd, ["m"])
        assert p.parse_args([*argv, "--phase", given]).phase == meant


def test_bad_phase_is_one_line(capsys):
    assert "invalid phase 'deploy2'" in _fail(capsys, "stats", "resnet18", "--phase", "deploy2")


def test_emit_phase_deploy_is_test_and_train_is_train_val(capsys):
    assert main(["emit", "shufflenet_v1", "--phase", "deploy"]) == 0
    deploy = capsys.readouterr().out
    assert main(["emit", "shufflenet_v1", "--phase", "test"]) == 0
    assert capsys.readouterr().out == deploy and "SoftmaxWithLoss" not in deploy
    assert main(["emit", "shufflenet_v1", "--phase", "train"]) == 0
    train = capsys.readouterr().out
    assert "SoftmaxWithLoss" in train and "phase: TRAIN" in train and "phase: TEST" in train


def test_help_texts_of_emit_and_list():
    emit = _help("emit")
    assert "zoo model name (see 'protogen list') or FILE.prototxt" in emit
    assert "caffemodel: seeded weights" in emit and "onnx: ONNX model" in emit
    assert "machine-readable" in _help("list")
    conv = _help("convert")
    assert "when protogen.onnx_import is present" not in conv and "IN.onnx" in conv


def test_input_shape_may_start_with_minus(tmp_path, capsys):
    p = tmp_path / "tiny.prototxt"
    p.write_text(TINY)
    # N = -1 (any batch) is taken as 1; the value is not mistaken for an option
    assert main(["stats", str(p), "--input-shape", "-1,3,8,8", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    conv = next(l for l in s["layers"] if l["name"] == "conv1")
    assert conv["output_shapes"][0] == [1, 4, 8, 8]
    assert "--input-shape" in _fail(capsys, "stats", p, "--input-shape", "-2,3,8,8")


def test_emit_refuses_a_suffix_that_does_not_match_the_format(tmp_path, capsys):
    for fmt, name in (("onnx", "x.prototxt"), ("caffemodel", "x.onnx"), ("prototxt", "x.onnx")):
        out = tmp_path / name
        err = _fail(capsys, "emit", "resnet18", "--format", fmt, "-o", out)
        assert f"--format {fmt} output must end in" in err and not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_output_directory_is_not_created(tmp_path, capsys):
    for argv in (["emit", "resnet18", "--format", "onnx"], ["emit", "resnet18"],
                 ["convert", tmp_path / "none.prototxt"]):
        out = tmp_path / "nonexistent_dir" / ("x.onnx" if "onnx" in argv or "convert" in argv
                                              else "x.prototxt")
        err = _fail(capsys, *argv, "-o", out)
        assert "does not exist" in err and "nonexistent_dir" in err
        assert not (tmp_path / "nonexistent_dir").exists()


def test_stats_and_verify_read_onnx(tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    src = tmp_path / "tiny.prototxt"
    src.write_text(TINY)
    onnx_file = tmp_path / "tiny.onnx"
    assert main(["convert", str(src), "-o", str(onnx_file)]) == 0
    capsys.readouterr()
    # protogen's export leaves H, W dynamic (global pooling): the importer asks for the shape
    assert "--input-shape" in _fail(capsys, "stats", onnx_file)
    assert main(["stats", str(onnx_file), "--input-shape", "1,3,6,6", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    # conv 3x3x3x4 + 4, fc 4x3 + 3
    assert s["params"] == 3 * 3 * 3 * 4 + 4 + 4 * 3 + 3
    conv = next(l for l in s["layers"] if l["output_shapes"][0][1:] == [4, 6, 6])
    assert conv["macs"] == 4 * 6 * 6 * 3 * 3 * 3
    assert main(["verify", str(onnx_file), "--input-shape", "1,3,6,6", "--no-opencv", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and {r["name"] for r in rep["runtimes"]} >= {"torch", "ort-cpu"}
    err = _fail(capsys, "verify", onnx_file, "--weights", src)
    assert "ONNX file carries its weights" in err


def test_zoo_options_are_refused_where_no_zoo_model_is_read(capsys):
    assert "unrecognized arguments: --groups 3" in _fail(capsys, "diff", "resnet18", "resnet18",
                                                        "--groups", "3")


def test_missing_weights_name_every_layer(tmp_path, capsys):
    pytest.importorskip("torch")
    net = tmp_path / "t.prototxt"
    net.write_text('name: "t"\ninput: "data" input_shape { dim: 1 dim: 3 dim: 5 dim: 5 }\n'
                   'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
                   'convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" } } }\n'
                   'layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" '
                   'convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }\n'
                   'layer { name: "fc" type: "InnerProduct" bottom: "conv2" top: "fc" '
                   'inner_product_param { num_output: 3 } }\n')
    only_fc = tmp_path / "fc.prototxt"
    only_fc.write_text('name: "t"\ninput: "data" input_shape { dim: 1 dim: 4 dim: 1 dim: 1 }\n'
                       'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                       'inner_product_param { num_output: 3 } }\n')
    weights = tmp_path / "fc.caffemodel"
    assert main(["emit", str(only_fc), "--format", "caffemodel", "-o", str(weights)]) == 0
    rc = main(["verify", str(net), "--weights", str(weights), "--no-opencv"])
    err = capsys.readouterr().err
    assert rc == 2 and "layer 'conv1'" in err and "layer 'conv2'" in err, err


# ----------------------------------------------------------------------------- --stage / --level
STAGED = ('name: "staged"\ninput: "data" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
          'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
          'convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }\n'
          # only in the NetState with stage "extra" (Caffe's NetStateRule stage)
          'layer { name: "extra" type: "Convolution" bottom: "conv1" top: "conv1x" '
          'include { stage: "extra" } convolution_param { num_output: 2 kernel_size: 1 } }\n'
          # only from level 2 up (NetStateRule min_level)
          'layer { name: "deep" type: "ReLU" bottom: "conv1" top: "deep" include { min_level: 2 } }\n')


def _layers_in(capsys, *argv) -> set:
    assert main([str(a) for a in argv] + ["--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    return {l["name"] for l in s["layers"]}


def test_stage_and_level_select_layers(tmp_path, capsys):
    p = tmp_path / "staged.prototxt"
    p.write_text(STAGED)
    # stats: the rules decide (Caffe's default NetState: TEST, level 0, no stage)
    assert {"extra", "deep"}.isdisjoint(_layers_in(capsys, "stats", p, "--phase", "test"))
    got = _layers_in(capsys, "stats", p, "--stage", "extra")
    assert "extra" in got and "deep" not in got
    got = _layers_in(capsys, "stats", p, "--level", "2", "--stage", "other", "--stage", "extra")
    assert {"extra", "deep"} <= got
    # convert writes the inference view of that NetState
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "out.onnx"
    assert main(["convert", str(p), "-o", str(out), "--stage", "extra", "--level", "1"]) == 0
    capsys.readouterr()
    assert {o.name for o in onnx.load(str(out)).graph.output} == {"conv1x"}
    # verify runs the staged net (its extra output is compared)
    assert main(["verify", str(p), "--stage", "extra", "--no-opencv", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert "conv1x" in {h["blob"] for h in rep["health"]}
    # draw keeps the staged layer only in its stage
    dot = tmp_path / "n.dot"
    assert main(["draw", str(p), "-o", str(dot), "--stage", "extra"]) == 0
    assert 'label="extra' in dot.read_text() and 'label="deep' not in dot.read_text()
    assert main(["draw", str(p), "-o", str(dot), "--stage", "other"]) == 0
    assert 'label="extra' not in dot.read_text() and 'label="conv1' in dot.read_text()


def test_stage_is_refused_for_zoo_models(capsys):
    err = _fail(capsys, "stats", "mobilenet_v1", "--stage", "x")
    assert "--stage" in err
