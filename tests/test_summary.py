"""Table-1 summary: per-row weights / multiply-adds measured from our model, and the flagged rows."""

from __future__ import annotations

import pytest

from classifier.summary import PAPER_TOTAL, TABLE1, format_markdown, format_text, main, summarize

# (weights, multiply-adds per image) by hand from Table 1's channel counts at 224 px.
# Inception: in*#1x1 + in*#3x3red + 9*#3x3red*#3x3 + in*#5x5red + 25*#5x5red*#5x5 + in*poolproj;
# ops = weights * map area (28*28 = 784 for 3x, 14*14 = 196 for 4x, 7*7 = 49 for 5x).
EXPECTED = {
    "conv1": (7 * 7 * 3 * 64, 9408 * 112 * 112),  # 9408 / 118,013,952
    "conv2": (64 * 64 + 9 * 64 * 192, 114688 * 56 * 56),  # 1x1 reduce + 3x3: 114,688 / 359,661,568
    # in=192: 12288 + 18432 + 110592 + 3072 + 12800 + 6144
    "3a": (163328, 163328 * 784),
    # in=256: 32768 + 32768 + 221184 + 8192 + 76800 + 16384
    "3b": (388096, 388096 * 784),
    # in=480: 92160 + 46080 + 179712 + 7680 + 19200 + 30720
    "4a": (375552, 375552 * 196),
    # in=512: 81920 + 57344 + 225792 + 12288 + 38400 + 32768
    "4b": (448512, 448512 * 196),
    # in=512: 65536 + 65536 + 294912 + 12288 + 38400 + 32768
    "4c": (509440, 509440 * 196),
    # in=512: 57344 + 73728 + 373248 + 16384 + 51200 + 32768
    "4d": (604672, 604672 * 196),
    # in=528: 135168 + 84480 + 460800 + 16896 + 102400 + 67584
    "4e": (867328, 867328 * 196),
    # in=832: 212992 + 133120 + 460800 + 26624 + 102400 + 106496
    "5a": (1042432, 1042432 * 49),
    # in=832: 319488 + 159744 + 663552 + 39936 + 153600 + 106496
    "5b": (1442816, 1442816 * 49),
    "linear": (1024 * 1000, 1024 * 1000),
}


@pytest.fixture(scope="module")
def paper():
    return summarize("googlenet", width=1.0, input_size=224, num_classes=1000)


def test_rows_match_hand_counts(paper):
    got = {r.key: (r.params, r.ops) for r in paper.rows}
    for key, expected in EXPECTED.items():
        assert got[key] == expected, key
    for key in set(got) - set(EXPECTED):  # pools, dropout, softmax have no weights
        assert got[key] == (0, 0), key
    assert paper.total.params == sum(w for w, _ in EXPECTED.values()) == 6_990_272
    assert paper.total.ops == sum(o for _, o in EXPECTED.values()) == 1_582_671_872
    assert paper.total.depth == 22  # "22 layers deep when counting only layers with parameters"


def test_outputs_and_depths_match_table1(paper):
    for row in paper.rows:
        assert row.output == row.paper.output, row.key
        assert row.depth == row.paper.depth, row.key
        assert row.channels == row.paper.channels, row.key  # read back from the built convs


def test_flagged_rows_are_exactly_the_papers_inconsistent_ones(paper):
    assert paper.flagged == {"conv1", "4c", "5a", "total"}
    by_key = {r.key: r for r in [*paper.rows, paper.total]}
    assert by_key["conv1"].mismatches() == ["params +240.3%", "ops +247.1%"]
    assert by_key["4c"].mismatches() == ["params +7.5%"]  # 497.5K vs 463K; ops 99.9M vs 100M agree
    assert by_key["5a"].mismatches() == ["params -5.0%", "ops -5.4%"]
    assert by_key["total"].mismatches() == ["ops +5.4%"]  # 1582.7M vs the rows' 1502M
    # 4d (590.5K vs 580K, +1.8%) and linear (1.024M vs "1M", within its rounding) are not flagged
    assert "depthwise-separable" in " ".join(by_key["conv1"].reasons)
    assert all(r.reasons for r in by_key.values() if r.flagged)


def test_paper_totals_and_aux_heads(paper):
    assert PAPER_TOTAL.params_k == pytest.approx(6797.7)  # "~6.8M" in Table 1's K units
    assert PAPER_TOTAL.ops_m == 1502  # "~1.5G"
    # aux1 (from 512 ch) and aux2 (528): 1x1 conv 128, FC 2048 -> 1024, FC 1024 -> 1000
    assert paper.aux_params == 512 * 128 + 528 * 128 + 2 * (2048 * 1024 + 1024 * 1000)


def test_text_and_markdown_render_every_row(paper):
    text, md = format_text(paper), format_markdown(paper)
    for row in TABLE1:
        assert f"\n{row.key} " in text
    assert text.count("FLAG") == 4
    assert md.count("| FLAG |") == 4 and "| **total** |" in md


def test_torchvision_arch_differs_by_its_3x3_branch():
    s = summarize("torchvision_googlenet")
    row = {r.key: r for r in s.rows}["3a"]
    assert row.params == 163328 - 25 * 16 * 32 + 9 * 16 * 32  # 5x5 -> 3x3 in the third branch
    assert s.flagged == {"conv1", "3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b", "total"}
    assert "3x3 conv, not the paper's 5x5" in row.reasons[0]


def test_cli(capsys):
    assert main(["--width", "0.25", "--input-size", "64", "--num-classes", "21"]) == 0
    out = capsys.readouterr().out
    assert "width=0.25 (paper 1.0)" in out and "1x1x21" in out
    assert main(["--width", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "error: classifier width must be a positive number, got -1.0"
