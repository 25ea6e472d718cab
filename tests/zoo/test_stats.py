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


def test_a_net_that_fixes_its_batch_is_counted_at_that_batch(tmp_path):
    """A Reshape that spells out the batch (LRCN's 16 x 10 clips, DCGAN's 64) has no batch-1
    form: stats count it at the net's own input shapes and say so. Hand count: conv 3->4, 3x3,
    on 6x6 -> 4x4: 4*4*4*27 = 1728 mult-adds per element; weights 4*27 + 4 = 112."""
    from protogen.caffe.loader import load_prototxt
    from protogen.stats import compute, format_table
    p = tmp_path / "fixed.prototxt"
    p.write_text('input: "data" input_shape { dim: 2 dim: 3 dim: 6 dim: 6 }\n'
                 'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"\n'
                 '  convolution_param { num_output: 4 kernel_size: 3 } }\n'
                 'layer { name: "r" type: "Reshape" bottom: "conv" top: "r"\n'
                 '  reshape_param { shape { dim: 2 dim: 64 } } }\n')
    s = compute(load_prototxt(p))
    assert s["inputs"] == {"data": [2, 3, 6, 6]}
    assert s["macs"] == 1728 and s["params"] == 112
    # memory access at batch 2: conv reads 2*108 + writes 2*64 + 112 weights; Reshape is a view
    assert s["memory_access"] == 2 * 108 + 2 * 64 + 112
    assert "no batch-1 form" in format_table(s) and "data 2" in format_table(s)
