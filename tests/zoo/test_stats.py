"""stats.compute: params vs BatchNorm statistics, mult-adds and MAC per layer, by hand."""
from __future__ import annotations

from protogen import Net, stats


def _net():
    n = Net("small")
    x = n.input("data", (4, 3, 8, 8))            # batch 4: stats are reported at batch 1
    c = n.conv(x, 16, 3, pad=1, bias=True)       # 16*3*9 + 16 = 448 params
    c = n.relu(n.bn(c))                          # BN: 16+16+1 = 33 stats; Scale: 32 params
    p = n.global_pool(c)
    n.fc(p, 10)                                  # 16*10 + 10 = 170 params
    return n


def test_totals_by_hand():
    s = stats.compute(_net().graph)
    assert s["params"] == 448 + 32 + 170
    assert s["stats"] == 33
    # conv: 8*8 outputs * 16 channels * (3*9) = 27,648; fc: 16*10 = 160; nothing else counts
    assert s["macs"] == 64 * 16 * 27 + 160
    assert s["inputs"] == {"data": [1, 3, 8, 8]}
    rows = {r["name"]: r for r in s["layers"]}
    # conv MAC: input 3*64 + output 16*64 + weights 448
    assert rows["conv1"]["memory_access"] == 3 * 64 + 16 * 64 + 448
    # ReLU in place still reads and writes its blob: 2 * 16*64
    assert rows["conv1/relu"]["memory_access"] == 2 * 16 * 64
    # BN: in + out + 33 statistics
    assert rows["conv1/bn"]["memory_access"] == 2 * 16 * 64 + 33
    assert rows["data"]["memory_access"] == 0
    assert rows["conv1"]["output_shapes"] == [[1, 16, 8, 8]]
    assert s["memory_access"] == sum(r["memory_access"] for r in s["layers"])


def test_table_mentions_totals():
    s = stats.compute(_net().graph)
    text = stats.format_table(s)
    last = text.splitlines()[-1]
    assert last.startswith("small: 650 params (650), 27.808K mult-adds"), last
    assert "33 BatchNorm statistics" in last
    assert stats.human(1_234_567) == "1.235M"
