"""The README's examples, run as written (issue 13): every ``protogen ...`` line of its shell
blocks and its Python DSL block, in a temporary directory, so that the README stays true.

Files the README names but does not make (``deploy.prototxt``, ``net.caffemodel``,
``model.onnx``, legacy ``old_v0/old_v1`` prototxts) are stand-ins made here: a small zoo net
emitted by protogen, or a legacy file of the shared corpus (skipped without it).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.helpers import CORPUS, CORPUS_SKIP_REASON, REPO

README = (REPO / "README.md").read_text()
#: commands that run for minutes: covered elsewhere, run here only when asked
VERY_SLOW = {"verify --zoo": "every zoo net at 224x224 (minutes); tests/verify/test_verify.py runs "
                             "them all at smaller sizes; set PROTOGEN_README_ZOO=1 to run it here",
             "bench --zoo": "times every zoo net at 224x224 (minutes); tests/cli/test_bench.py runs it "
                            "on small sizes; set PROTOGEN_README_ZOO=1 to run it here"}
#: commands over ~10 s on 2 cores
SLOW = ("verify resnet50", "--verify", "--blobs all", "bench --guidelines", "profile ")
#: legacy stand-ins from the corpus
LEGACY = {"old_v1.prototxt": "bvlc_caffe/history_11a4c1655_v1/examples/mnist/lenet.prototxt",
          "old_v0.prototxt": "bvlc_caffe/history_2e330581c_v0/examples/cifar10/cifar10_quick.prototxt"}
SMALL = ["mobilenet_v1", "--width", "0.25", "--input-size", "64"]


def shell_commands(text: str) -> list[str]:
    """Every ``protogen ...`` line of the ```sh blocks (comments dropped)."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("protogen "):
                out.append(" ".join(shlex.split(line, comments=True)))
    return out


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def _protogen(*args, cwd):
    exe = shutil.which("protogen", path=str(REPO / ".venv" / "bin")) or shutil.which("protogen")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "protogen", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)


def _stand_ins(tmp, argv: list[str]):
    """Make the input files ``argv`` names; a reason to skip when one cannot be made."""
    def emit(*a):
        r = _protogen("emit", *a, cwd=tmp)
        assert r.returncode == 0, r.stderr
    names = set(argv)
    if names & {"deploy.prototxt", "some/deploy.prototxt", "net.caffemodel"}:
        (tmp / "some").mkdir(exist_ok=True)
        emit(*SMALL, "-o", "deploy.prototxt")
        emit(*SMALL, "--format", "caffemodel", "-o", "net.caffemodel")
        shutil.copy(tmp / "deploy.prototxt", tmp / "some" / "deploy.prototxt")
    if "model.onnx" in names:
        emit(*SMALL, "--format", "onnx", "-o", "model.onnx")
    for name, rel in LEGACY.items():
        if name in names:
            if not (CORPUS / rel).is_file():
                return CORPUS_SKIP_REASON
            shutil.copy(CORPUS / rel, tmp / name)
    if "old.caffemodel" in names:
        emit("old_v1.prototxt", "--format", "caffemodel", "-o", "old.caffemodel")
    for a in argv:
        if a.startswith("../shared/"):
            if not (REPO / a).exists():
                return CORPUS_SKIP_REASON
    return None


def _params():
    out = []
    for cmd in shell_commands(README):
        marks = []
        if any(k in cmd for k in SLOW):
            marks.append(pytest.mark.slow)
        for k, why in VERY_SLOW.items():
            if k in cmd and not os.environ.get("PROTOGEN_README_ZOO"):
                marks.append(pytest.mark.skip(reason=why))
        out.append(pytest.param(cmd, id=cmd[len("protogen "):][:60], marks=marks))
    return out


def test_the_readme_has_examples():
    cmds = shell_commands(README)
    assert len(cmds) >= 15 and any(c.startswith("protogen verify") for c in cmds)
    assert len(python_blocks(README)) >= 1


@pytest.mark.parametrize("cmd", _params())
def test_readme_command(cmd, tmp_path):
    argv = shlex.split(cmd)[1:]
    why = _stand_ins(tmp_path, argv)
    if why:
        pytest.skip(why)
    # the README's paths into ../shared are relative to the checkout
    argv = [str(REPO / a) if a.startswith("../shared/") else a for a in argv]
    r = _protogen(*argv, cwd=tmp_path)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert r.stdout or any(tmp_path.iterdir())
    if "-o" in argv:
        out = tmp_path / argv[argv.index("-o") + 1]
        assert out.is_file() and out.stat().st_size > 0, cmd
    if "--report" in argv:
        assert (tmp_path / argv[argv.index("--report") + 1]).is_file()


@pytest.mark.parametrize("i", range(len(python_blocks(README))))
def test_readme_python_block(i, tmp_path):
    code = python_blocks(README)[i]
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"README python block {i}:\n{r.stderr[-3000:]}"
    assert r.stdout.count("layer {") > 10, r.stdout[-2000:]
