"""`neuralab export RUN`: a run → ONNX / TorchScript / safetensors, checked against PyTorch."""

from __future__ import annotations

import argparse
import json

from neuralab.errors import ConfigError
from neuralab.inference.export import CHECK_DATA, SUFFIXES, export
from neuralab.inference.quantize import DEFAULT_CALIBRATION, DEFAULT_MAX_DROP, quantize

BYTES_PER_MB = 1e6  # sizes are printed in decimal megabytes
DEFAULT_CHECK_EXAMPLES = 1000


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
        default=None,
        metavar="N",
        help="examples compared with PyTorch (default 1000; with --quantize: the whole test split)",
    )
    parser.add_argument(
        "--check-data",
        choices=CHECK_DATA,
        default="test",
        help="test: the run's test split (default); random: random inputs",
    )
    parser.add_argument("--data-dir", help="where the run's dataset lives, if moved")
    parser.add_argument(
        "--quantize",
        choices=["int8"],
        help="int8 ONNX (onnxruntime: static and calibrated on training images for image "
        "runs, dynamic for text runs), written only if its test accuracy holds; "
        "default <run>/export/<model>.int8.onnx",
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=DEFAULT_MAX_DROP,
        metavar="POINTS",
        help=f"most test accuracy points int8 may lose against fp32 (default {DEFAULT_MAX_DROP})",
    )
    parser.add_argument(
        "--calibration",
        type=int,
        default=DEFAULT_CALIBRATION,
        metavar="N",
        help=f"training images that calibrate int8 ranges (default {DEFAULT_CALIBRATION})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    """`neuralab export ...`: export, then print where it went and the parity figures."""
    if args.quantize:
        return run_quantize(args)
    result = export(
        args.run_dir,
        args.format,
        args.out,
        args.check_examples or DEFAULT_CHECK_EXAMPLES,
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


def run_quantize(args: argparse.Namespace) -> int:
    """`neuralab export RUN --quantize int8`: quantize, then print sizes and accuracies."""
    if args.format != "onnx":
        raise ConfigError(f"--quantize int8 writes ONNX; drop --format {args.format}")
    if args.check_data != "test":
        raise ConfigError(
            "--quantize int8 calibrates on the run's training images and is judged on its "
            "test split; drop --check-data random (pass --data-dir if the data moved)"
        )
    result = quantize(
        args.run_dir,
        args.out,
        max_drop=args.max_drop,
        calibration=args.calibration,
        check_examples=args.check_examples,
        data_dir=args.data_dir,
    )
    if args.json:
        fields = {**result.__dict__, "path": str(result.path), "sidecar": str(result.sidecar)}
        print(json.dumps({**fields, "drop": result.drop}))
        return 0
    ratio = result.bytes_fp32 / result.bytes_int8
    print(
        f"wrote {result.path} (int8 ONNX, {result.bytes_int8 / BYTES_PER_MB:.2f} MB, "
        f"{ratio:.1f}x smaller than fp32's {result.bytes_fp32 / BYTES_PER_MB:.2f} MB) and "
        f"{result.sidecar.name}; {result.method}"
    )
    print(
        f"test accuracy on {result.examples} examples: fp32 {result.accuracy_fp32:.2%}, int8 "
        f"{result.accuracy_int8:.2%} ({-result.drop:+.2f} points; --max-drop "
        f"{args.max_drop:g}), same top-1 as fp32 on {result.top1_agreement:.2%} "
        f"({result.seconds:.1f} s)"
    )
    return 0
