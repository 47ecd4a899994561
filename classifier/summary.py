"""Model summary against Table 1 of "Going Deeper with Convolutions".

``python -m classifier.summary [--arch googlenet] [--width 1.0] [--input-size 224] [--num-classes 1000]``

For every Table-1 row it prints the weights and multiply-adds of OUR model, measured with
forward hooks on its Conv2d/Linear modules during one forward pass (nothing is copied from
the table), beside the paper's figures.  Units are the paper's: params in K = 1024 weights,
weights only (no biases, no batch-norm scales); ops in M = 10^6 multiply-adds.  Pooling, LRN,
ReLU and softmax are not counted (the paper leaves those cells empty).  Every row that differs
from the paper by more than 2% (params, ops, output size or depth) is flagged with its reason;
the auxiliary heads are reported separately (Table 1 and its totals leave them out).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import torch
from torch import nn

from detect.errors import UserError

TOLERANCE = 0.02  # relative difference from the paper above which a row is flagged
CHANNEL_COLUMNS = ("#1x1", "#3x3 reduce", "#3x3", "#5x5 reduce", "#5x5", "pool proj")
PAPER_CONFIG = {"width": 1.0, "input_size": 224, "num_classes": 1000}


@dataclass(frozen=True)
class PaperRow:
    """One row of Table 1 as printed in the paper (params in K = 1024, ops in M = 10^6)."""

    key: str
    type: str
    patch: str
    output: str
    depth: int
    params_k: float | None = None
    ops_m: float | None = None
    channels: tuple[int, ...] = ()


TABLE1: tuple[PaperRow, ...] = (
    PaperRow("conv1", "convolution", "7x7/2", "112x112x64", 1, 2.7, 34),
    PaperRow("pool1", "max pool", "3x3/2", "56x56x64", 0),
    PaperRow("conv2", "convolution", "3x3/1", "56x56x192", 2, 112, 360, (0, 64, 192, 0, 0, 0)),
    PaperRow("pool2", "max pool", "3x3/2", "28x28x192", 0),
    PaperRow("3a", "inception (3a)", "", "28x28x256", 2, 159, 128, (64, 96, 128, 16, 32, 32)),
    PaperRow("3b", "inception (3b)", "", "28x28x480", 2, 380, 304, (128, 128, 192, 32, 96, 64)),
    PaperRow("pool3", "max pool", "3x3/2", "14x14x480", 0),
    PaperRow("4a", "inception (4a)", "", "14x14x512", 2, 364, 73, (192, 96, 208, 16, 48, 64)),
    PaperRow("4b", "inception (4b)", "", "14x14x512", 2, 437, 88, (160, 112, 224, 24, 64, 64)),
    PaperRow("4c", "inception (4c)", "", "14x14x512", 2, 463, 100, (128, 128, 256, 24, 64, 64)),
    PaperRow("4d", "inception (4d)", "", "14x14x528", 2, 580, 119, (112, 144, 288, 32, 64, 64)),
    PaperRow("4e", "inception (4e)", "", "14x14x832", 2, 840, 170, (256, 160, 320, 32, 128, 128)),
    PaperRow("pool4", "max pool", "3x3/2", "7x7x832", 0),
    PaperRow("5a", "inception (5a)", "", "7x7x832", 2, 1072, 54, (256, 160, 320, 32, 128, 128)),
    PaperRow("5b", "inception (5b)", "", "7x7x1024", 2, 1388, 71, (384, 192, 384, 48, 128, 128)),
    PaperRow("avgpool", "avg pool", "7x7/1", "1x1x1024", 0),
    PaperRow("dropout", "dropout (40%)", "", "1x1x1024", 0),
    PaperRow("linear", "linear", "", "1x1x1000", 1, 1000, 1),
    PaperRow("softmax", "softmax", "", "1x1x1000", 0),
)
# Sum of the paper's rows: 6797.7K weights (the "~6.8M") and 1502M multiply-adds ("~1.5G").
PAPER_TOTAL = PaperRow(
    "total", "total", "", "", sum(r.depth for r in TABLE1),
    sum(r.params_k or 0 for r in TABLE1), sum(r.ops_m or 0 for r in TABLE1),
)

# Row -> our modules.  The last module's output is the row's output size; "softmax" has no
# module (the loss applies it) and shows the linear layer's output.
_INCEPTION_ROWS = {k: (f"inception{k}",) for k in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")}
_HEAD_ROWS = {
    "pool3": ("maxpool3",), "pool4": ("maxpool4",), "avgpool": ("avgpool",), "dropout": ("dropout",),
    "linear": ("fc",), "softmax": (),
}
ROW_MODULES: dict[str, dict[str, tuple[str, ...]]] = {
    "googlenet": {
        "conv1": ("stem.conv1",), "pool1": ("stem.maxpool1",), "conv2": ("stem.conv2", "stem.conv3"),
        "pool2": ("stem.maxpool2",), **_INCEPTION_ROWS, **_HEAD_ROWS,
    },
    "torchvision_googlenet": {
        "conv1": ("conv1",), "pool1": ("maxpool1",), "conv2": ("conv2", "conv3"),
        "pool2": ("maxpool2",), **_INCEPTION_ROWS, **_HEAD_ROWS,
    },
}
AUX_MODULES = ("aux1", "aux2")

# Why the paper's own figures disagree with its channel counts (valid at width 1, 224 px).
PAPER_NOTES: dict[str, str] = {
    "conv1": (
        "A dense 7x7 conv from 3 to 64 channels has 7*7*3*64 = 9408 weights (9.2K) and "
        "9408*112*112 = 118.0M multiply-adds. The paper's 2.7K / 34M are exactly a "
        "depthwise-separable 7x7 conv with depth multiplier 8: 7*7*3*8 = 1176 depthwise + "
        "3*8*64 = 1536 pointwise = 2712 weights (2.65K at K = 1024, 2.7 thousand) and "
        "2712*112*112 = 34.0M multiply-adds. Google's later Inception code builds exactly that "
        "stem (TF-slim inception_v2.py, Conv2d_1a_7x7: separable_conv2d with depthwise "
        "multiplier min(64 // 3, 8) = 8). Figure 3 ('Conv 7x7+2(S)') shows a plain convolution, "
        "so we build that and do not match this row."
    ),
    "4c": (
        "The row contradicts itself: its 100M ops match our count for the listed channels "
        "(99.9M), but its 463K weights would give only 463*1024*14*14 = 92.9M ops. Since "
        "ops = weights x 196 here, no channel counts give 463K and 100M together; the listed "
        "ones give 509,440 weights (497.5K) and 99.9M, so the params cell looks like a typo."
    ),
    "5a": (
        "The paper's 1072K weights and 54M ops agree with each other (1072*1024*7*7 = 53.8M) "
        "but both are ~5% above the listed channels (1,042,432 weights = 1018K, 51.1M ops): "
        "about 55K more weights. A single changed channel count would fit (e.g. #3x3 reduce 176 "
        "instead of 160: 1076K / 54.0M; or #1x1 320 instead of 256: 1070K / 53.7M), so the "
        "figures were probably computed from a slightly different 5a; we keep the listed "
        "channel counts."
    ),
    "total": (
        "The ops total is dominated by the 7x7 conv row (118.0M vs the paper's 34M): with the "
        "paper's 34M for that row our total would be 1.50G, the paper's figure."
    ),
}
CONFIG_REASON = "configuration differs from the paper's: "
TORCHVISION_NOTES: dict[str, str] = {
    **{k: "torchvision's third branch is a 3x3 conv, not the paper's 5x5 (pytorch/vision#906)."
       for k in _INCEPTION_ROWS},
    "total": "torchvision's third Inception branch is a 3x3 conv, not the paper's 5x5.",
}


@dataclass
class SummaryRow:
    """Our figures for one Table-1 row beside the paper's.  ``params`` are weights, ``ops`` multiply-adds."""

    paper: PaperRow
    params: int
    ops: int
    output: str
    depth: int
    channels: tuple[int, ...] = ()
    reasons: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.paper.key

    @property
    def params_k(self) -> float:
        return self.params / 1024

    @property
    def ops_m(self) -> float:
        return self.ops / 1e6

    @property
    def params_diff(self) -> float | None:
        return None if self.paper.params_k is None else self.params_k / self.paper.params_k - 1

    @property
    def ops_diff(self) -> float | None:
        return None if self.paper.ops_m is None else self.ops_m / self.paper.ops_m - 1

    @property
    def flagged(self) -> bool:
        return bool(self.mismatches())

    def mismatches(self) -> list[str]:
        """What differs from the paper: params/ops beyond `TOLERANCE`, output size, depth.

        The paper prints whole K/M (2.7K in one row), so a figure stands for its rounding
        interval (1M = 0.5M..1.5M) and only the distance beyond that interval counts.
        """
        out = []
        for what, ours, paper, diff in (
            ("params", self.params_k, self.paper.params_k, self.params_diff),
            ("ops", self.ops_m, self.paper.ops_m, self.ops_diff),
        ):
            if paper is not None and _beyond_rounding(ours, paper) > TOLERANCE:
                out.append(f"{what} {diff:+.1%}")
        if self.paper.output and self.output != self.paper.output:
            out.append(f"output {self.output} vs {self.paper.output}")
        if self.depth != self.paper.depth:
            out.append(f"depth {self.depth} vs {self.paper.depth}")
        return out


def _beyond_rounding(ours: float, paper: float) -> float:
    """Relative distance of ``ours`` from the interval that the printed ``paper`` figure rounds."""
    half_unit = 0.5 if float(paper).is_integer() else 0.05
    return max(0.0, abs(ours - paper) - half_unit) / paper


@dataclass
class Summary:
    arch: str
    width: float
    input_size: int
    num_classes: int
    rows: list[SummaryRow]
    total: SummaryRow
    aux_params: int  # auxiliary heads (training only), not part of Table 1 or its totals
    aux_ops: int

    @property
    def flagged(self) -> set[str]:
        return {r.key for r in [*self.rows, self.total] if r.flagged}


def _depth(module: nn.Module) -> int:
    """Layers with parameters on the longest path: an Inception module counts its deepest branch."""
    branches = [m for name, m in module.named_children() if name.startswith("branch")]
    if branches:
        return max(_depth(b) for b in branches)
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in module.modules())


def _channel_columns(module: nn.Module) -> tuple[int, ...]:
    """(#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) of an Inception module, read from its convs."""
    def outs(branch: nn.Module) -> list[int]:
        return [m.out_channels for m in branch.modules() if isinstance(m, nn.Conv2d)]

    b1, b2, b3, b4 = (outs(getattr(module, f"branch{i}")) for i in range(1, 5))
    return (b1[0], b2[0], b2[1], b3[0], b3[1], b4[0])


def _reduce_columns(model: nn.Module, mods: tuple[str, ...]) -> tuple[int, ...]:
    """The stem's 1x1 reduce and 3x3 conv in Table 1's (#3x3 reduce, #3x3) columns."""
    reduce, conv = (
        next(m for m in model.get_submodule(name).modules() if isinstance(m, nn.Conv2d)).out_channels
        for name in mods
    )
    return (0, reduce, conv, 0, 0, 0)


def _shape_text(t: torch.Tensor) -> str:
    if t.ndim == 4:
        return f"{t.shape[2]}x{t.shape[3]}x{t.shape[1]}"
    return f"1x1x{t.shape[1]}"


def _owner(name: str, prefixes: dict[str, tuple[str, ...]]) -> str | None:
    for key, mods in prefixes.items():
        if any(name == m or name.startswith(m + ".") for m in mods):
            return key
    return None


def summarize_model(model: nn.Module, *, arch: str, input_size: int) -> Summary:
    """Measure ``model`` (an ``arch`` classifier) row by row with one forward pass at ``input_size``.

    The pass runs in train mode (so the aux heads are measured too) with batch-norm layers in
    eval mode (batch of one); ``model``'s mode is restored afterwards.
    """
    row_modules = ROW_MODULES[arch]
    counts: dict[str, list[int]] = {}  # conv/linear module name -> [weights, multiply-adds per image]
    outputs: dict[str, str] = {}
    handles = []

    def count_hook(name: str):
        def hook(m: nn.Module, inputs, out: torch.Tensor) -> None:
            per_output = m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.in_features
            counts[name] = [m.weight.numel(), out[0].numel() * per_output]
        return hook

    def output_hook(key: str):
        def hook(m: nn.Module, inputs, out: torch.Tensor) -> None:
            outputs[key] = _shape_text(out)
        return hook

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            handles.append(m.register_forward_hook(count_hook(name)))
    for key, mods in row_modules.items():
        if mods:
            handles.append(model.get_submodule(mods[-1]).register_forward_hook(output_hook(key)))
    was_training = model.training
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    per_row: dict[str, list[int]] = {r.key: [0, 0] for r in TABLE1}
    aux = [0, 0]
    for name, (w, ops) in counts.items():
        key = _owner(name, row_modules)
        target = per_row[key] if key is not None else aux if _owner(name, {"aux": AUX_MODULES}) else None
        if target is None:
            raise RuntimeError(f"summary: module {name!r} belongs to no Table-1 row")
        target[0] += w
        target[1] += ops

    rows = []
    for paper in TABLE1:
        mods = row_modules[paper.key]
        module = model.get_submodule(mods[0]) if mods else None
        rows.append(
            SummaryRow(
                paper,
                params=per_row[paper.key][0],
                ops=per_row[paper.key][1],
                output=outputs.get(paper.key) or outputs["linear"],
                depth=sum(_depth(model.get_submodule(m)) for m in mods),
                channels=_channel_columns(module) if paper.key in _INCEPTION_ROWS
                else _reduce_columns(model, mods) if paper.key == "conv2" else (),
            )
        )
    total = SummaryRow(
        PAPER_TOTAL,
        params=sum(r.params for r in rows),
        ops=sum(r.ops for r in rows),
        output="",
        depth=sum(r.depth for r in rows),
    )
    num_classes = model.fc.out_features
    summary = Summary(arch, float(getattr(model, "width", 1.0)), input_size, num_classes, rows, total, *aux)
    _add_reasons(summary)
    return summary


def _add_reasons(summary: Summary) -> None:
    config = {"width": summary.width, "input_size": summary.input_size, "num_classes": summary.num_classes}
    changed = [f"{k}={v} (paper {PAPER_CONFIG[k]})" for k, v in config.items() if v != PAPER_CONFIG[k]]
    at_paper_scale = summary.width == 1.0 and summary.input_size == 224
    for row in [*summary.rows, summary.total]:
        if not row.flagged:
            continue
        if changed:
            row.reasons.append(CONFIG_REASON + ", ".join(changed) + ".")
        if summary.arch == "torchvision_googlenet" and row.key in TORCHVISION_NOTES:
            row.reasons.append(TORCHVISION_NOTES[row.key])
        # the stem is the same in both archs; the other notes are about our Table-1 model's figures
        if at_paper_scale and row.key in PAPER_NOTES and (summary.arch == "googlenet" or row.key == "conv1"):
            row.reasons.append(PAPER_NOTES[row.key])
        if not row.reasons:
            row.reasons.append("unexplained")


def summarize(
    arch: str = "googlenet",
    *,
    width: float = 1.0,
    input_size: int = 224,
    num_classes: int = 1000,
    batch_norm: bool | None = None,
) -> Summary:
    """Build a freshly initialised ``arch`` model and measure it (`summarize_model`)."""
    from classifier.factory import build_classifier

    model = build_classifier(
        arch, num_classes=num_classes, width=width, input_size=input_size, batch_norm=batch_norm
    )
    return summarize_model(model, arch=arch, input_size=input_size)


def _pct(diff: float | None) -> str:
    return "" if diff is None else f"{diff:+.1%}"


def _num(x: float | None, digits: int = 1) -> str:
    if x is None:
        return ""
    return f"{x:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{x:.0f}"


def _cells(row: SummaryRow) -> list[str]:
    p = row.paper
    nonzero = row.params > 0
    return [
        row.key, p.type, p.patch, row.output, f"{row.depth} ({p.depth})" if row.key != "total" else str(row.depth),
        f"{row.params_k:.1f}" if nonzero else "", _num(p.params_k), _pct(row.params_diff),
        f"{row.ops_m:.1f}" if nonzero else "", _num(p.ops_m), _pct(row.ops_diff), "FLAG" if row.flagged else "",
    ]


HEADER = ["row", "type", "patch/stride", "output (ours)", "depth (paper)", "params K", "paper K",
          "diff", "ops M", "paper M", "diff", ""]


def _title(s: Summary) -> str:
    return (f"GoogLeNet Table 1 vs our {s.arch} (width {s.width:g}, input {s.input_size} px, "
            f"{s.num_classes} classes); params: weights only, K = 1024; ops: multiply-adds, M = 10^6")


def _footer(s: Summary, bullet: str) -> list[str]:
    lines = [
        f"Totals: {s.total.params:,} weights ({s.total.params_k:.1f}K; paper {PAPER_TOTAL.params_k:.1f}K, "
        f"'~6.8M'), {s.total.ops_m:.1f}M multiply-adds (paper rows sum {PAPER_TOTAL.ops_m:.0f}M, "
        f"'~1.5G'), {s.total.depth} layers with parameters (paper 22).",
        f"Auxiliary heads (training only, not in Table 1): {s.aux_params:,} weights ({s.aux_params / 1024:.1f}K), "
        f"{s.aux_ops / 1e6:.2f}M multiply-adds.",
        "",
        f"Flagged rows (more than {TOLERANCE:.0%} away from the paper's figure beyond its printed rounding "
        "(1M = 0.5-1.5M), or a different output size/depth):",
    ]
    flagged = [r for r in [*s.rows, s.total] if r.flagged]
    if not flagged:
        lines.append(f"{bullet}none")
    config_reason = next((x for r in flagged for x in r.reasons if x.startswith(CONFIG_REASON)), None)
    if config_reason:  # said once, not on every row
        lines.append(f"{bullet}{', '.join(r.key for r in flagged)}: {config_reason[0].upper()}{config_reason[1:]}")
    for r in flagged:
        reasons = [x for x in r.reasons if x != config_reason]
        if reasons:
            lines.append(f"{bullet}{r.key} ({', '.join(r.mismatches())}): {' '.join(reasons)}")
    return lines


def format_text(s: Summary) -> str:
    table = [HEADER] + [_cells(r) for r in [*s.rows, s.total]]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    right = {4, 5, 6, 7, 8, 9, 10}
    lines = [_title(s), ""]
    for row in table:
        cells = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines + [""] + _footer(s, "  - ")) + "\n"


def format_markdown(s: Summary) -> str:
    header = HEADER[:4] + list(CHANNEL_COLUMNS) + HEADER[4:-1] + ["flag"]
    lines = [_title(s), "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in [*s.rows, s.total]:
        cells = _cells(r)
        chans = [str(c) if c else "" for c in r.channels] or [""] * 6
        if r.key == "total":
            cells[0] = "**total**"
        lines.append("| " + " | ".join(cells[:4] + chans + cells[4:-1] + [cells[-1]]) + " |")
    return "\n".join(lines + [""] + _footer(s, "- ")) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m classifier.summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="googlenet", choices=sorted(ROW_MODULES))
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier (1.0 = paper)")
    parser.add_argument("--input-size", type=int, default=224, help="input side in px (224 = paper)")
    parser.add_argument("--num-classes", type=int, default=1000, help="outputs of the linear layer (1000 = paper)")
    parser.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    try:
        s = summarize(args.arch, width=args.width, input_size=args.input_size,
                      num_classes=args.num_classes, batch_norm=args.batch_norm)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(format_markdown(s) if args.markdown else format_text(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
