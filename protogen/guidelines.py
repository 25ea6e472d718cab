"""The ShuffleNet v2 guideline experiments (Ma et al. 2018, arXiv:1807.11164, Tables 1-4),
built with the DSL.

Each experiment stacks a block 10 times on a 56x56 input (batch 1) and varies one factor at
(nearly) fixed mult-adds. Configurations are the paper's CPU/ARM column ("for x1"); the x2 and
x4 scales multiply every channel count by 2 and 4 (in the paper's Tables 2 and 3 the x1/x2/x4
CPU figures of g=1 and of the 1-fragment, both ten 1x1 convolutions of 64/128/256 channels,
coincide, which fixes that reading).

* G1 (Table 1): blocks of two 1x1 convolutions c1 -> c2 -> c1, c1:c2 = 1:1, 1:2, 1:6, 1:12.
* G2 (Table 2): ten 1x1 group convolutions c -> c with g = 1, 2, 4, 8 groups (the paper's
  c = 180 for g = 8 is not divisible by 8: we build 176).
* G3 (Table 3): blocks of 1, 2 or 4 1x1 convolutions in series (c' = c/sqrt(k) so that the
  mult-adds match) or in parallel (k branches c -> c/k on the same input, concatenated: the
  paper's appendix figure could not be read here, so this reading is ours).
* G4 (Table 4): ResNet bottleneck units (1x1 c -> c/4, 3x3 c/4 -> c/4, 1x1 c/4 -> c, as in
  ResNet; our reading of "c is the number of channels in unit"), with or without the ReLUs
  and the identity shortcut.

``PAPER`` holds the published figures: GPU in batches/s (batch 8), ARM (Table 1) or CPU
(Tables 2-4) in images/s, per scale x1, x2, x4; transcribed from the paper's tables as quoted
by a public bilingual transcription (checked for internal consistency, see above), not from
the PDF itself.
"""
from __future__ import annotations

import math

from .dsl import Net

SIZE = 56
BLOCKS = 10
SCALES = (1, 2, 4)

#: Table id -> (title, rows); a row: (label, paper GPU x1/x2/x4, paper CPU-or-ARM x1/x2/x4)
PAPER = {
    "G1": ("Table 1: equal channel width minimises MAC (c1:c2 at fixed mult-adds)", "ARM", [
        ("1:1", (1480, 723, 232), (76.2, 21.7, 5.3)),
        ("1:2", (1296, 586, 206), (72.9, 20.5, 5.1)),
        ("1:6", (876, 489, 189), (69.1, 17.9, 4.6)),
        ("1:12", (748, 392, 163), (57.6, 15.1, 4.4))]),
    "G2": ("Table 2: excessive group convolution increases MAC (groups at fixed mult-adds)", "CPU", [
        ("g=1", (2451, 1289, 437), (40.0, 10.2, 2.3)),
        ("g=2", (1725, 873, 341), (35.0, 9.5, 2.2)),
        ("g=4", (1026, 644, 338), (32.9, 8.7, 2.1)),
        ("g=8", (634, 445, 230), (27.8, 7.5, 1.8))]),
    "G3": ("Table 3: network fragmentation reduces parallelism (fragments at fixed mult-adds)", "CPU", [
        ("1-fragment", (2446, 1274, 434), (40.2, 10.1, 2.3)),
        ("2-fragment-series", (1790, 909, 336), (38.6, 10.1, 2.2)),
        ("4-fragment-series", (752, 745, 349), (38.4, 10.1, 2.3)),
        ("2-fragment-parallel", (1537, 803, 320), (33.4, 9.1, 2.2)),
        ("4-fragment-parallel", (691, 572, 292), (35.0, 8.4, 2.1))]),
    "G4": ("Table 4: element-wise operations are not free (ReLU, shortcut in a bottleneck)", "CPU", [
        ("ReLU+shortcut", (2427, 2066, 1436), (56.7, 16.9, 5.0)),
        ("ReLU only", (2647, 2256, 1735), (61.9, 18.8, 5.2)),
        ("shortcut only", (2672, 2121, 1458), (57.3, 18.2, 5.1)),
        ("neither", (2842, 2376, 1782), (66.3, 20.2, 5.4))]),
}
#: the paper's CPU/ARM channel configurations at x1
G1_CHANNELS = {"1:1": (32, 32), "1:2": (22, 44), "1:6": (13, 78), "1:12": (9, 108)}
G2_CHANNELS = {"g=1": 64, "g=2": 90, "g=4": 128, "g=8": 180}
G3_CHANNELS = 64
G4_CHANNELS = 32


def _net(name: str, c: int) -> tuple[Net, object]:
    n = Net(name)
    return n, n.input("data", (1, c, SIZE, SIZE))


def g1(label: str, scale: int) -> Net:
    c1, c2 = (scale * c for c in G1_CHANNELS[label])
    n, x = _net(f"g1_{label.replace(':', 'to')}_x{scale}", c1)
    for i in range(BLOCKS):
        with n.scope(f"block{i + 1}"):
            x = n.conv(x, c2, 1, bias=False, name="conv1")
            x = n.conv(x, c1, 1, bias=False, name="conv2")
    return n


def g2(label: str, scale: int) -> Net:
    c, g = scale * G2_CHANNELS[label], int(label.split("=")[1])
    c -= c % g
    n, x = _net(f"g2_g{g}_x{scale}", c)
    for i in range(BLOCKS):
        x = n.conv(x, c, 1, group=g, bias=False, name=f"conv{i + 1}")
    return n


def g3(label: str, scale: int) -> Net:
    c = scale * G3_CHANNELS
    k = int(label[0])
    parallel = label.endswith("parallel")
    cs = c if parallel or k == 1 else int(round(c / math.sqrt(k)))
    n, x = _net(f"g3_{label.replace('-', '_')}_x{scale}", cs)
    for i in range(BLOCKS):
        with n.scope(f"block{i + 1}"):
            if parallel:
                x = n.concat([n.conv(x, cs // k, 1, bias=False, name=f"branch{j + 1}") for j in range(k)],
                             name="concat")
            else:
                for j in range(k):
                    x = n.conv(x, cs, 1, bias=False, name=f"conv{j + 1}")
    return n


def g4(label: str, scale: int) -> Net:
    c = scale * G4_CHANNELS
    relu = label in ("ReLU+shortcut", "ReLU only")
    shortcut = label in ("ReLU+shortcut", "shortcut only")
    n, x = _net(f"g4_{'relu' if relu else 'norelu'}_{'sc' if shortcut else 'nosc'}_x{scale}", c)
    for i in range(BLOCKS):
        with n.scope(f"unit{i + 1}"):
            y = n.conv(x, c // 4, 1, name="conv1")
            if relu:
                y = n.relu(y, name="relu1")
            y = n.conv(y, c // 4, 3, 1, 1, name="conv2")
            if relu:
                y = n.relu(y, name="relu2")
            y = n.conv(y, c, 1, name="conv3")
            if shortcut:
                y = n.add_(x, y, name="add")
            if relu:
                y = n.relu(y, name="relu3")
            x = y
    return n


BUILDERS = {"G1": g1, "G2": g2, "G3": g3, "G4": g4}


def configurations(scales=SCALES) -> dict[str, list[tuple[str, int, Net]]]:
    """Experiment id -> [(row label, scale, net)]."""
    return {gid: [(label, s, BUILDERS[gid](label, s)) for label, _, _ in PAPER[gid][2] for s in scales]
            for gid in PAPER}
