"""protogen draw: valid SVG / PNG / .dot with a node per layer (in-place layers folded into
their producer), one box per scope at --depth, training-only parts marked, no overlaps."""
from __future__ import annotations

import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from protogen import zoo
from protogen.draw import build, layout, render
from protogen.dsl import Net
from tests.helpers import REPO

SVG = "{http://www.w3.org/2000/svg}"


def scoped_net() -> Net:
    """data -> a/conv(+bn+relu in place) -> a/pool -> b/conv1, b/conv2 -> b/concat -> fc."""
    n = Net("scoped")
    x = n.input("data", (1, 3, 32, 32))
    with n.scope("a"):
        y = n.relu(n.bn(n.conv(x, 16, 3, 2, 1, name="conv"), name="bn"), name="relu")
        y = n.max_pool(y, 2, 2, name="pool")
    with n.scope("b"):
        y = n.concat([n.conv(y, 8, 1, name="conv1"), n.conv(y, 8, 3, 1, 1, group=2, name="conv2")],
                     name="concat")
    n.classifier_outputs(n.fc(y, 10, name="fc"))
    return n


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "protogen", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def svg_nodes(data: bytes):
    root = ET.fromstring(data)
    assert root.tag == SVG + "svg"
    return [g for g in root.iter(SVG + "g") if g.get("class") == "node"], root


def test_svg_node_per_layer_inplace_folded(tmp_path):
    n = scoped_net()
    proto = tmp_path / "scoped.prototxt"
    proto.write_text(n.deploy_prototxt())
    out = tmp_path / "net.svg"
    r = run_cli("draw", str(proto), "-o", str(out))
    assert r.returncode == 0, r.stderr
    nodes, root = svg_nodes(out.read_bytes())
    # layers of the deploy net, minus the in-place ones (bn, scale, relu written top == bottom)
    text = proto.read_text()
    layers = re.findall(r"layer \{\s*name: \"([^\"]+)\"", text)
    inplace = [m.group(1) for m in re.finditer(
        r"layer \{\s*name: \"([^\"]+)\"[^}]*?bottom: \"([^\"]+)\"\s*top: \"\2\"", text)]
    assert set(inplace) >= {"a/bn", "a/relu"}
    assert len(nodes) == len(layers) - len(inplace)
    titles = {g.find(SVG + "title").text for g in nodes}
    assert any(t.startswith("a/conv, a/bn") and "a/relu" in t for t in titles)   # folded
    labels = " ".join(t.text for t in root.iter(SVG + "text"))
    assert "Convolution + BatchNorm + Scale + ReLU" in labels
    assert "3x3/2 pad 1" in labels and "g=2" in labels and "16x16x16" in labels
    assert len([p for p in root.iter(SVG + "polyline")]) == 8     # data->conv->pool->2 convs->concat->fc->prob


def test_depth_collapses_scopes_and_dot(tmp_path):
    g = scoped_net().graph
    pic = build(g, depth=1)
    # data, scope a (conv+bn+scale+relu+pool), scope b (conv1, conv2, concat), fc, prob
    assert [k for k in pic.nodes] == ["layer:data", "scope:a", "scope:b", "layer:fc", "layer:prob"]
    assert pic.nodes["scope:a"].label[1] == "5 layers"
    dot = render(g, ".dot", depth=1).decode()
    assert dot.startswith('digraph "scoped" {') and dot.rstrip().endswith("}")
    assert len(re.findall(r"^\s+n\d+ \[label=", dot, re.M)) == 5
    assert len(re.findall(r"^\s+n\d+ -> n\d+;", dot, re.M)) == 4
    nodes, _ = svg_nodes(render(g, ".svg", depth=1, rankdir="LR"))
    assert len(nodes) == 5


def test_png_written(tmp_path):
    out = tmp_path / "net.png"
    r = run_cli("draw", "shufflenet_v2", "--width", "0.5", "--depth", "2", "-o", str(out))
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])                # IHDR width, height
    assert w > 100 and h > 500


def _boxes(pic):
    return [(n.x - n.w / 2, n.y - n.h / 2, n.x + n.w / 2, n.y + n.h / 2) for n in pic.nodes.values()]


@pytest.mark.parametrize("rankdir", ["TB", "LR"])
def test_layout_no_overlap_googlenet(rankdir):
    pic = layout(build(zoo.build("googlenet").graph), rankdir)
    boxes = _boxes(pic)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
        assert 0 <= a[0] and a[2] <= pic.width and 0 <= a[1] and a[3] <= pic.height
    # every edge goes forward along the rank direction
    axis = 1 if rankdir == "TB" else 0
    for (u, v), pts in pic.routes.items():
        assert all(p[axis] <= q[axis] for p, q in zip(pts, pts[1:]))


def test_train_only_parts_marked():
    g = zoo.build("googlenet").graph
    deploy = render(g, ".svg").decode()
    train = render(g, ".svg", phase="train").decode()
    assert "loss1/" not in deploy and "[train]" not in deploy
    nodes, _ = svg_nodes(train.encode())
    marked = [n for n in nodes if "[train]" in "".join(t.text for t in n.iter(SVG + "text"))]
    assert any("loss1/" in n.find(SVG + "title").text for n in marked)     # auxiliary head
    assert all(n.find(SVG + "rect").get("stroke-dasharray") for n in marked)


def test_bad_output_refused(tmp_path):
    out = tmp_path / "net.jpg"
    r = run_cli("draw", "mobilenet_v1", "-o", str(out))
    assert r.returncode == 2 and "draw output must end in" in r.stderr and not out.exists()
    r = run_cli("draw", "mobilenet_v1", "-o", str(tmp_path / "x.svg"), "--depth", "0")
    assert r.returncode == 2 and "--depth must be >= 1" in r.stderr


def test_svg_and_dot_need_no_plotting_or_runtime_library(tmp_path):
    probe = ("import sys\nfrom protogen.cli import main\nrc = main(sys.argv[1:])\n"
             "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
             "{'matplotlib', 'torch', 'onnxruntime', 'onnx'})\n"
             "print('HEAVY=' + ','.join(heavy), file=sys.stderr)\nsys.exit(rc)\n")
    for ext in ("svg", "dot"):
        r = subprocess.run([sys.executable, "-c", probe, "draw", "resnet50", "--depth", "2", "-o",
                            str(tmp_path / f"r.{ext}")], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stderr.strip().splitlines()[-1] == "HEAVY=", r.stderr


def test_verify_pictures_drawing_and_error_plot(monkeypatch):
    import base64

    from protogen.pictures import verify_pictures
    from protogen.verify import verify
    g = scoped_net().graph
    rep = verify(g, blobs="all", opencv=False)
    pics = verify_pictures(rep, g)
    nodes, _ = svg_nodes(pics["drawing"].encode())
    assert len(nodes) == 8          # data, a/conv (+ bn, scale, relu), a/pool, b/conv1, b/conv2, b/concat, fc, prob
    assert pics["errors"].startswith("data:image/png;base64,")
    assert base64.b64decode(pics["errors"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib", None)        # as if not installed
    pics = verify_pictures(rep, g)
    assert pics["drawing"] and pics["errors"] is None
    assert any("matplotlib" in n for n in pics["notes"])


def test_verify_html_report_embeds_pictures(tmp_path):
    proto = tmp_path / "scoped.prototxt"
    proto.write_text(scoped_net().deploy_prototxt())
    html = tmp_path / "v.html"
    r = run_cli("verify", str(proto), "--blobs", "all", "--no-opencv", "--report", str(html))
    assert r.returncode == 0, r.stderr
    text = html.read_text()
    svg = text[text.index("<svg"):text.index("</svg>") + len("</svg>")]
    nodes, _ = svg_nodes(svg.encode())
    assert len(nodes) == 8
    assert re.search(r'<img alt="[^"]+" style="[^"]+" src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}">', text)
