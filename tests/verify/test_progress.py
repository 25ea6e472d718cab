"""Progress (protogen.progress): a status line on a terminal, nothing when stderr is not one
(issue 13 item 5), for verify (per model, per runtime, per layer of the torch runs) and
convert (read / write / verify stages)."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from protogen.cli import main
from protogen.progress import Progress

TINY = ('name: "tiny"\ninput: "data" input_shape { dim: 1 dim: 3 dim: 6 dim: 6 }\n'
        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
        'convolution_param { num_output: 4 kernel_size: 3 } }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" '
        'inner_product_param { num_output: 3 } }\n')


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_draws_only_on_a_terminal():
    tty, pipe = Terminal(), io.StringIO()
    for stream in (tty, pipe):
        with Progress(3, "verify --zoo", stream=stream) as p:
            p.update(1, "resnet50")
            p.stage("ort-cpu")
    assert pipe.getvalue() == ""
    text = tty.getvalue()
    assert "\r\033[K[########................] 1/3" in text
    assert "verify --zoo: resnet50 / ort-cpu" in text
    assert text.endswith("\r\033[K")          # the line is cleared at the end


def _tiny(tmp_path):
    p = tmp_path / "tiny.prototxt"
    p.write_text(TINY)
    return p


def test_verify_progress_per_runtime_and_layer(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    p = _tiny(tmp_path)
    fake = Terminal()
    monkeypatch.setattr(sys, "stderr", fake)
    assert main(["verify", str(p), "--no-opencv"]) == 0
    text = fake.getvalue()
    for what in ("torch", "torch-cpu", "ort-cpu"):
        assert f"verify {p}: {what}" in text, text
    assert "torch layer 2/3" in text and "torch-cpu layer 2/3" in text, text   # first layer shown
    assert "PASS" in capsys.readouterr().out


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path, capsys):
    pytest.importorskip("torch")
    p = _tiny(tmp_path)
    assert main(["verify", str(p), "--no-opencv"]) == 0
    assert main(["convert", str(p), "-o", str(tmp_path / "t.onnx")]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_convert_progress_on_a_real_terminal(tmp_path):
    pytest.importorskip("onnx")
    p = _tiny(tmp_path)
    master, slave = os.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "protogen", "convert", str(p), "-o",
                            str(tmp_path / "t.onnx")], stderr=slave, stdout=subprocess.PIPE,
                           text=True, timeout=120)
        os.close(slave)
        chunks = []
        while True:
            try:
                b = os.read(master, 4096)
            except OSError:
                break
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(master)
    err = b"".join(chunks).decode()
    assert r.returncode == 0 and "wrote" in r.stdout
    assert "convert: reading tiny.prototxt" in err and "convert: writing t.onnx (3 layers)" in err
