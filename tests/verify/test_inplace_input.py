"""An input blob rewritten in place (Intel's ResNeXt-50 deploy scales ``data`` in place) is the
resolved graph's ``data@1`` but the written nets' input ``data``: every runtime gets the feed."""
from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

NET = """
name: "inplace_input"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "scale_in" type: "Power" bottom: "data" top: "data" power_param { scale: 0.5 shift: 1 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
"""


def test_verify_feeds_an_input_rewritten_in_place(tmp_path):
    from protogen.caffe.loader import load_model
    from protogen.verify import verify
    p = tmp_path / "net.prototxt"
    p.write_text(NET)
    rep = verify(load_model(p), seed=0, batch=1, model_name="inplace_input")
    ran = {c.runtime for c in rep.comparisons if c.ok}
    assert "ort-cpu" in ran, rep.format_table()
    assert rep.ok, rep.format_table()


def test_by_input_name_rekeys_ssa_values():
    import numpy as np
    from protogen.verify_runtimes import by_input_name
    a, b = np.zeros(1), np.ones(1)
    out = by_input_name({"data@1": a, "im_info": b}, ["data", "im_info"])
    assert out["data"] is a and out["im_info"] is b
    with pytest.raises(KeyError):
        by_input_name({"data@1": a}, ["label"])
