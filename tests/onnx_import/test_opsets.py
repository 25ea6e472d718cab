"""Opsets 9 to 21: one small net (conv, BatchNorm, ReLU6, floor max pool, nearest upsample,
HardSigmoid gate, average pool, global pool, Linear, Softmax) exported by TorchScript at every
opset it supports from 9 on (Upsample-9, Resize-10/11/13/18/19, Clip attributes vs inputs,
Pad folding at 9, ...) and by dynamo at 18 and 21; each converts with the default (portable)
dialect, and OpenCV's Caffe importer and the IR's ONNX re-export equal ONNX Runtime."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
from protogen.onnx_import import load_onnx, onnx_to_caffe  # noqa: E402
from tests.onnx_import.common import assert_close, opencv_caffe_run, ort_run  # noqa: E402

nn, F = torch.nn, torch.nn.functional


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu6(self.bn(self.c1(x))), 3, 2, 1)          # 16 -> 8 (ceil would be 9)
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.hardsigmoid(self.c2(x)) * x
        x = F.avg_pool2d(x, 2)
        return torch.softmax(self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)), 1)


CASES = [pytest.param("torchscript", o, id=f"torchscript-{o}") for o in (9, 10, 11, 13, 16, 17, 18, 19, 20, 21)]
CASES += [pytest.param("dynamo", o, id=f"dynamo-{o}", marks=pytest.mark.slow) for o in (18, 21)]


@pytest.mark.parametrize("exporter,opset", CASES)
def test_opset(exporter, opset, tmp_path):
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    m = Net().eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(path), opset_version=opset, dynamo=exporter == "dynamo",
                          input_names=["data"], output_names=["out"])
    model = onnx.load(str(path))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == opset
    x = x.numpy()
    ref = ort_run(model, {"data": x})[0]
    proto, cm = onnx_to_caffe(path, tmp_path / "net.prototxt")
    text = proto.read_text()
    assert "round_mode" not in text and "ReLU6" not in text
    assert 'type: "Deconvolution"' in text and 'type: "Slice"' in text      # upsample, floor pool
    assert_close(ref, opencv_caffe_run(proto, cm, x, "out").reshape(ref.shape), f"opset {opset}: OpenCV")
    from protogen.onnx_io import export_onnx
    again = export_onnx(load_onnx(path))
    assert_close(ref, ort_run(again, {again.graph.input[0].name: x})[0], f"opset {opset}: IR re-export")
