"""`neuralab export RUN`: a run → ONNX / TorchScript / safetensors, checked against PyTorch."""

from __future__ import annotations

import argparse
import json

from neuralab.inference.export import CHECK_DATA, SUFFIXES, export

BYTES_PER_MB = 1e6  # sizes are printed in decimal megabytes


def add_export(commands) -> None:
    """Add `neuralab export` to the CLI's subcommands."""
    parser = commands.add_parser(
        "export",
        help="export a run to ONNX / TorchScript / safetensors, checked against PyTorch",
        description="Export a saved run. The export is run on real inputs (the run's test "
        "split) and compared with PyTorch; one that does not match is not written.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--format", choices=list(SUFFIXES), default="onnx")
    parser.add_argument("--out", help="destination file (default <run>/export/<model><suffix>)")
    parser.add_argument(
        "--check-examples",
        type=int,
        default=1000,
        metavar="N",
        help="examples compared with PyTorch (default 1000)",
    )
    parser.add_argument(
        "--check-data",
        choices=CHECK_DATA,
        default="test",
        help="test: the run's test split (default); random: random inputs",
    )
    parser.add_argument("--data-dir", help="where the run's dataset lives, if moved")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    """`neuralab export ...`: export, then print where it went and the parity figures."""
    result = export(
        args.run_dir,
        args.format,
        args.out,
        args.check_examples,
        check_data=args.check_data,
        data_dir=args.data_dir,
    )
    if args.json:
        fields = {**result.__dict__, "path": str(result.path), "sidecar": str(result.sidecar)}
        print(json.dumps(fields))
        return 0
    size = result.path.stat().st_size / BYTES_PER_MB
    print(f"wrote {result.path} ({result.format}, {size:.2f} MB) and {result.sidecar.name}")
    print(
        f"parity on {result.examples} {result.check_data} examples: max |logit difference| "
        f"{result.max_abs_diff:.2g} (tolerance {result.tolerance:.2g}), top-1 agreement "
        f"{result.top1_agreement:.2%} ({result.seconds:.1f} s)"
    )
    return 0
