"""OpenCV's dnn (an independent Caffe runtime) loads and runs every zoo net with seeded weights,
and every blob shape it reports equals protogen's shape inference.

OpenCV removed its Caffe importer in 5.0; these tests skip there (install
``opencv-python-headless<5`` to run them). OpenCV's bundled caffe.proto predates upstream's
``PoolingParameter.round_mode`` and has ``bool ceil_mode = 13`` instead, so for OpenCV the text
``round_mode: FLOOR`` is spelled ``ceil_mode: false`` (the same numbers in both schemas).
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

from protogen import zoo
from protogen.caffe.caffemodel import write_caffemodel
from protogen.caffe.loader import load_prototxt
from protogen.caffe.prototxt import to_net_param, to_prototxt
from protogen.dialect import Dialect
from protogen.ir import DEPLOY
from protogen.weights import init_weights, seeded_input

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2.dnn, "readNetFromCaffe"):
    pytest.skip(f"OpenCV {cv2.__version__} has no Caffe importer (removed in OpenCV 5)",
                allow_module_level=True)

MODELS = sorted(zoo.models())
DIALECTS = {"default": Dialect(), "shufflechannel": Dialect.make(shuffle="shufflechannel"),
            "bvlc": Dialect.make("bvlc")}


def opencv_text(text: str) -> str:
    return text.replace("round_mode: FLOOR", "ceil_mode: false").replace("round_mode: CEIL", "ceil_mode: true")


@functools.lru_cache(maxsize=None)
def _deploy_text(model: str, dialect: str) -> str:
    n = zoo.build(model, DIALECTS[dialect])
    return to_prototxt(n.graph, DEPLOY, n.dialect)


#: big nets (over ~5 s each on a busy machine) run only in the full suite (`make test`)
SLOW_MODELS = {"resnet101", "resnet152", "resnext101_32x4d", "resnext101_64x4d", "inception_v3",
               "inception_v4", "inception_resnet_v1", "inception_resnet_v2", "xception"}


@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_MODELS else m
                                   for m in MODELS])
def test_opencv_runs_zoo_net_with_our_shapes(model, dialect, tmp_path):
    text = _deploy_text(model, dialect)
    if dialect != "default" and text == _deploy_text(model, "default"):
        pytest.skip("this dialect writes the same prototxt as the default one for this net")
    if dialect == "bvlc" and 'type: "Clip"' in text:
        pytest.skip("OpenCV's Caffe importer has no Clip layer (the bvlc form of ReLU6)")
    n = zoo.build(model, DIALECTS[dialect])
    g = n.graph
    init_weights(g, seed=0)
    proto, model_file = tmp_path / "deploy.prototxt", tmp_path / "deploy.caffemodel"
    proto.write_text(opencv_text(text))
    write_caffemodel(model_file, to_net_param(g, DEPLOY, n.dialect),
                     {l.name: l.blobs for l in g.select(net=DEPLOY) if l.blobs})
    net = cv2.dnn.readNetFromCaffe(str(proto), str(model_file))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.enableFusion(False)          # keep every layer's own output
    # protogen's inference on exactly the emitted layers (dialect expansions included)
    emitted = tmp_path / "ours.prototxt"
    emitted.write_text(text)
    steps = load_prototxt(emitted).steps()
    (inp,) = [s for s in steps if s.layer.type == "Input"]
    assert inp.out_shapes[0][0] == 1                     # batch 1 keeps the runtime bounded
    net.setInput(seeded_input(inp.out_shapes[0]))
    names = list(net.getLayerNames())
    outs = net.forward(names)
    got = {name: tuple(o.shape) for name, o in zip(names, outs)}
    want = {s.layer.name: s.out_shapes[0] for s in steps if s.layer.type != "Input"}
    assert set(want) <= set(got)
    assert {k: got[k] for k in want} == want
    # the net output is finite and not degenerate
    final = outs[names.index(steps[-1].layer.name)]
    assert np.isfinite(final).all() and final.std() > 0
