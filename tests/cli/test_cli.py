"""The CLI in subprocesses: light imports for emit/stats, one-line errors with exit code 2,
no traceback, no partial output."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "onnxruntime", "onnx", "cv2", "matplotlib")


def run(*args, cwd=REPO, code=None):
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "protogen", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


_PROBE = """
import sys
from protogen.cli import main
rc = main(sys.argv[1:])
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(%r))
print('HEAVY=' + ','.join(heavy), file=sys.stderr)
sys.exit(rc)
""" % (HEAVY,)


@pytest.mark.parametrize("args", [
    ["emit", "shufflenet_v1"],
    ["emit", "mobilenet_v1", "--phase", "train", "--dialect", "bvlc"],
    ["emit", "shufflenet_v1", "--format", "solver"],
    ["stats", "mobilenet_v1"],
    ["stats", "shufflenet_v1", "--json"],
])
def test_emit_and_stats_import_no_heavy_libraries(args):
    r = run(*args, code=_PROBE)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "HEAVY=", r.stderr
    assert r.stdout


def test_emit_prototxt_does_not_even_import_numpy():
    # prototxt text needs protobuf alone; numpy costs ~100 ms of the 0.5 s cold-start budget
    probe = _PROBE.replace("set(%r)" % (HEAVY,), "set(('numpy',))")
    for args in (["emit", "resnet152"], ["emit", "shufflenet_v1", "--phase", "train"]):
        r = run(*args, code=probe)
        assert r.returncode == 0, r.stderr
        assert r.stderr.strip().splitlines()[-1] == "HEAVY=", r.stderr


def test_emit_writes_file_and_stats_json(tmp_path):
    out = tmp_path / "m.prototxt"
    r = run("emit", "mobilenet_v1", "--width", "0.5", "-o", str(out))
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    text = out.read_text()
    assert 'name: "mobilenet_v1_width0.5"' in text and "num_output: 16" in text   # 32 * 0.5
    r = run("stats", "mobilenet_v1", "--json")
    s = json.loads(r.stdout)
    assert s["params"] == sum(l["params"] for l in s["layers"])
    r = run("emit", "mobilenet_v1", "--format", "caffemodel", "-o", str(tmp_path / "m.caffemodel"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.caffemodel").stat().st_size > 4 * 4_000_000     # 4.2M float params


def test_list():
    r = run("list", "--json")
    names = {m["name"] for m in json.loads(r.stdout)}
    assert {"mobilenet_v1", "shufflenet_v1"} <= names


_BROKEN = """
import sys
from protogen import zoo
@zoo.model("broken", summary="a DSL misuse")
def broken(n, x, **kw):
    return n.conv(x, 64, 3, group=2, name="bad_conv")   # 3 input channels, 2 groups
from protogen.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("args,message", [
    (["emit", "nosuch"], "unknown model 'nosuch'"),
    (["emit", "shufflenet_v1", "--groups", "5"], "--groups=5 is not one of"),
    (["emit", "shufflenet_v1", "--groups", "three"], "--groups expects int"),
    (["emit", "shufflenet_v1", "--bogus", "1"], "has no option --bogus"),
    (["emit", "mobilenet_v1", "--dialect", "nope"], "unknown dialect 'nope'"),
    (["emit", "mobilenet_v1", "--format", "bogus"], "invalid choice: 'bogus'"),
    (["stats", "mobilenet_v1", "--input-size", "10"], "outside 32..2048"),
    (["emit", "/nonexistent/x.prototxt"], "cannot read"),
    ("broken", "layer 'bad_conv': input channels 3 are not divisible by group 2"),
])
def test_bad_input_one_line_error(args, message, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    if args == "broken":
        r = run("emit", "broken", "-o", str(out / "x.prototxt"), code=_BROKEN)
    else:
        r = run(*args, *(["-o", str(out / "x.prototxt")] if args[0] == "emit" else []))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("protogen: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert list(out.iterdir()) == []                  # no partial output


def test_caffemodel_to_terminal_refused_or_needs_output():
    r = run("emit", "mobilenet_v1", "--format", "caffemodel")
    assert r.returncode == 2 and "needs -o FILE" in r.stderr
