"""Where one training step's time goes: torch.profiler over a few steps of a registered model,
the top operators by self CPU time written to benchmarks/results/profile_<model>.txt.

    python -m benchmarks.profile_step resnet18 --stem cifar --batch 64
    python -m benchmarks.profile_step airbench --batch 512 --channels-last
    python -m benchmarks.profile_step airbench --batch 2000 --channels-last --bf16
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

import neuralab
from benchmarks.machine import machine_info, machine_line

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--stem", default="cifar", help="ResNet stem (ResNets only)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (native-bf16 CPUs)")
    args = parser.parse_args()
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

    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(args.steps):
            step()
    table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    layout = "channels_last" if args.channels_last else "contiguous"
    precision = "bf16 autocast" if args.bf16 else "fp32"
    head = (
        f"{args.model}{f' ({args.stem} stem)' if model_args else ''}, batch {args.batch}, "
        f"{args.steps} steps, {precision}, {layout}; {machine_line(machine_info())}\n"
    )
    path = RESULTS / f"profile_{args.model}_{layout}{'_bf16' if args.bf16 else ''}.txt"
    path.write_text(head + table + "\n")
    print(head + table)


if __name__ == "__main__":
    main()
