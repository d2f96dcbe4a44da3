"""Where one training step's time goes: torch.profiler over a few steps of a registered model,
the top operators by self CPU time written to benchmarks/results/profile_<model>.txt.

    python -m benchmarks.profile_step resnet18 --stem cifar --batch 64
    python -m benchmarks.profile_step airbench --batch 512 --channels-last
    python -m benchmarks.profile_step airbench --batch 2000 --channels-last --bf16
    python -m benchmarks.profile_step resnet18 --batch 128 --channels-last --onednn

--onednn times each oneDNN primitive instead (its verbose log, from a child process), summed
per primitive, implementation and direction: which kernels the convolutions ran and how long
each took. Prefix ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 to see what an AVX2-only CPU
would run. Steps run with freed memory reused, as `neuralab train` does by default.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

import neuralab
from benchmarks.machine import machine_info, machine_line
from neuralab.train.allocator import reused_memory

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--stem", default="cifar", help="ResNet stem (ResNets only)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (native-bf16 CPUs)")
    parser.add_argument("--onednn", action="store_true", help="per-kernel oneDNN times instead")
    parser.add_argument("--onednn-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.onednn:
        onednn_breakdown(args)
        return
    torch.manual_seed(0)
    model_args = {"stem": args.stem} if args.model.startswith("resnet") else {}
    model = neuralab.build_model(args.model, neuralab.InputSpec(3, 32, 32, 10), **model_args)
    images, labels = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    if args.channels_last:
        model, images = (
            model.to(memory_format=torch.channels_last),
            images.contiguous(memory_format=torch.channels_last),
        )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = nn.functional.cross_entropy(model(images).float(), labels)
        loss.backward()
        optimizer.step()

    with reused_memory("reuse", torch.device("cpu")):
        step()  # warm-up
        if args.onednn_child:  # the parent reads the verbose log of these steps
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                for _ in range(args.steps):
                    step()
            return
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(args.steps):
                step()
    table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    write(args, "profile", table)


def write(args: argparse.Namespace, kind: str, text: str) -> None:
    """Print `text` under a line naming the model, settings and machine, and save both."""
    layout = "channels_last" if args.channels_last else "contiguous"
    stem = f" ({args.stem} stem)" if args.model.startswith("resnet") else ""
    precision = "bf16 autocast" if args.bf16 else "fp32"
    text = (
        f"{args.model}{stem}, batch {args.batch}, {args.steps} steps, {precision}, {layout}; "
        f"{machine_line(machine_info())}\n{text}"
    )
    isa = (
        f"_{os.environ['ONEDNN_MAX_CPU_ISA'].lower()}" if "ONEDNN_MAX_CPU_ISA" in os.environ else ""
    )
    path = RESULTS / f"{kind}_{args.model}_{layout}{'_bf16' if args.bf16 else ''}{isa}.txt"
    path.write_text(text + "\n")
    print(text)
    print(f"written to {path}")


def onednn_breakdown(args: argparse.Namespace) -> None:
    """Run the steps in a child with oneDNN's verbose log on; sum its kernel times."""
    command = [sys.executable, "-m", "benchmarks.profile_step", *sys.argv[1:], "--onednn-child"]
    command.remove("--onednn")
    log = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    totals: dict[tuple[str, str, str], float] = collections.defaultdict(float)
    calls: collections.Counter = collections.Counter()
    # onednn_verbose,v1,primitive,exec,cpu,<primitive>,<implementation>,<direction>,...,<ms>
    for line in log.splitlines():
        fields = line.split(",")
        if len(fields) > 8 and fields[2:4] == ["primitive", "exec"]:
            key = (fields[5], fields[6], fields[7])
            totals[key] += float(fields[-1]) / args.steps
            calls[key] += 1
    if not totals:
        raise SystemExit("oneDNN logged no kernels: this torch build or model does not use it")
    rows = [
        f"{ms:10.1f} ms  {calls[key] // args.steps:4d}  {' · '.join(key)}"
        for key, ms in sorted(totals.items(), key=lambda item: -item[1])
    ]
    text = (
        f"oneDNN kernel time per step (sum {sum(totals.values()):.1f} ms), calls per step, "
        + "primitive · implementation · direction\n"
        + "\n".join(rows)
    )
    write(args, "onednn", text)


if __name__ == "__main__":
    main()
