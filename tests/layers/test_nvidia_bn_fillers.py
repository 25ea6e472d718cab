"""NVIDIA Caffe's batch_norm_param scale_filler/bias_filler. In NVIDIA/caffe
src/caffe/layers/batch_norm_layer.cpp either one turns on a fused scale and bias (blobs 3 and
4, y = x_norm * scale + bias) that they initialise: constant 1/0 starts it at identity, so
the upstream BatchNorm computes the same (accepted, with a note); another filler, or a
caffemodel with the 5 NVIDIA blobs, is refused."""
from __future__ import annotations

import numpy as np
import pytest

from protogen.caffe.caffemodel import write_caffemodel
from protogen.caffe.loader import load_model, read_net
from protogen.cli import main
from protogen.errors import ProtogenError


def _proto(tmp_path, scale=('constant', 1), bias=('constant', 0)):
    p = tmp_path / "bn.prototxt"
    p.write_text('name: "bn"\ninput: "data" input_shape { dim: 2 dim: 3 dim: 4 dim: 4 }\n'
                 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param { '
                 f'scale_filler {{ type: "{scale[0]}" value: {scale[1]} }} '
                 f'bias_filler {{ type: "{bias[0]}" value: {bias[1]} }} }} }}\n')
    return p


def _blobs(n):
    rng = np.random.default_rng(0)
    b = [rng.standard_normal(3).astype(np.float32), rng.uniform(0.5, 2, 3).astype(np.float32),
         np.array([2.0], np.float32), np.full(3, 2.0, np.float32), np.ones(3, np.float32)]
    return b[:n]


def test_identity_fillers_accepted_with_a_note(tmp_path, capsys):
    p = _proto(tmp_path)
    cm = tmp_path / "bn.caffemodel"
    write_caffemodel(cm, read_net(str(p)), {"bn": _blobs(3)})
    g = load_model(p, cm)
    assert any("scale_filler/bias_filler" in n for n in g.notes), g.notes
    # upstream BatchNorm (BVLC/caffe src/caffe/layers/batch_norm_layer.cpp), by hand:
    # f = 1/s, y = (x - f*b0) / sqrt(f*b1 + eps)
    torch = pytest.importorskip("torch")
    from protogen.torch_ref import TorchNet
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4))
    with torch.no_grad():
        y = TorchNet.from_graph(g).double()({"data": torch.from_numpy(x)})["bn"].numpy()
    b0, b1, s = (b.astype(np.float64) for b in _blobs(3))
    want = (x - (b0 / s)[None, :, None, None]) / np.sqrt(b1 / s + 1e-5)[None, :, None, None]
    assert np.max(np.abs(y - want)) < 1e-9
    # the CLI reads it too, with the note
    assert main(["stats", str(p), "--phase", "test"]) == 0
    assert "NVIDIA" in capsys.readouterr().err


def test_other_fillers_and_five_blobs_are_refused(tmp_path, capsys):
    p = _proto(tmp_path, scale=("gaussian", 0))
    rc = main(["stats", str(p), "--phase", "test"])
    err = capsys.readouterr().err
    assert rc == 2 and "scale_filler (gaussian)" in err and "layer 'bn'" in err
    p = _proto(tmp_path)
    cm = tmp_path / "bn5.caffemodel"
    write_caffemodel(cm, read_net(str(p)), {"bn": _blobs(5)})
    with pytest.raises(ProtogenError, match="5 weight blob"):
        load_model(p, cm)
