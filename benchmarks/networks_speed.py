"""Training and inference speed of pruned torchvision, timm and Hugging Face networks vs the dense network.

``python benchmarks/networks_speed.py [--device cuda] [--networks resnet50 vit_small gpt2] [--repeats 7]
[--steps 5] [--tiny] [--out FILE]``

The paper measures its CIFAR ResNets; users bring ImageNet CNNs, vision transformers and language models.
For each network, the dense model and tickets with ``p`` of its last removable blocks deleted (the selection
rules of ``layerlottery.select_blocks``: first block of each stage kept, at least two per stage) are timed
side by side, each with its own weights and optimizer:

- a training step as the library's loop takes it (``layerlottery.training.step``): forward, cross-entropy,
  backward, fused SGD + Nesterov; on CUDA bfloat16 autocast and, for CNNs, channels-last; in two modes,
  ``fused`` (op by op) and ``graphed`` (the whole step replayed from a CUDA graph, the loop's default on
  CUDA; when a capture fails the row says so);
- an inference forward pass (``torch.inference_mode``, the same autocast).

Every repeat runs one chunk of ``--steps`` steps of each contender, in an order shuffled from repeat to repeat,
synchronized at both ends; reported are median step times with IQRs, the paired speedup (dense chunk / ticket
chunk of the same repeat) and the MAC ratio that bounds it in theory. The batch is fixed (random images or
tokens): data loading is not what this measures.

``--tiny`` shrinks every network and batch to rehearse the script on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import layerlottery as ll
from common import add_machine_arguments, apply_threads, load_average, machine_line, quartiles, repeat_order, sync, write_result
from layerlottery.config import TrainSettings
from layerlottery.training import build_optimizer
from layerlottery.training.graphed import GraphedStep
from layerlottery.training.step import EagerStep, autocast


class NextTokenLogits(nn.Module):
    """A causal LM as a classifier of every position: (B, T) token ids -> (B*T, vocab) logits, so the
    library's cross-entropy step trains it on next-token labels (B*T,)."""

    main_input_name = "input_ids"

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, use_cache=False).logits.flatten(0, 1)


@dataclass(frozen=True)
class Network:
    """How to build one network and a batch for it."""

    label: str
    build: Callable[[bool], nn.Module]
    batch: Callable[[bool, torch.device], tuple[torch.Tensor, torch.Tensor]]
    p_values: tuple[int, ...]
    image: bool
    describe: str


def _images(size: int, classes: int, batch: int) -> Callable[[bool, torch.device], tuple[torch.Tensor, torch.Tensor]]:
    def make(tiny: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        b, s, classes_ = (4, 32, 10) if tiny else (batch, size, classes)
        g = torch.Generator().manual_seed(0)
        return torch.randn(b, 3, s, s, generator=g).to(device), torch.randint(classes_, (b,), generator=g).to(device)

    return make


def _tokens(seq: int, vocab: int, batch: int) -> Callable[[bool, torch.device], tuple[torch.Tensor, torch.Tensor]]:
    def make(tiny: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, v = (2, 16, 256) if tiny else (batch, seq, vocab)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(v, (b, t + 1), generator=g)
        return ids[:, :-1].contiguous().to(device), ids[:, 1:].reshape(-1).to(device)

    return make


def _resnet50(tiny: bool) -> nn.Module:
    import torchvision

    return torchvision.models.resnet50(num_classes=10 if tiny else 1000)


def _vit_small(tiny: bool) -> nn.Module:
    import timm

    if tiny:
        return timm.create_model("vit_small_patch16_224", img_size=32, patch_size=8, depth=8, embed_dim=64, num_heads=2, num_classes=10)
    return timm.create_model("vit_small_patch16_224")


def _gpt2(tiny: bool) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    if tiny:
        config = GPT2Config(n_layer=8, n_embd=32, n_head=2, vocab_size=256, n_positions=64)
    else:
        config = GPT2Config()  # GPT-2 small: 12 layers, 768 wide, 124M parameters
    config._attn_implementation = "sdpa"
    return NextTokenLogits(GPT2LMHeadModel(config))


NETWORKS = {
    "resnet50": Network("resnet50", _resnet50, _images(224, 1000, 128), (4, 8), True,
                        "torchvision ResNet-50, 224x224, batch 128"),
    "vit_small": Network("vit_small", _vit_small, _images(224, 1000, 128), (3, 6), True,
                         "timm ViT-S/16, 224x224, batch 128"),
    "gpt2": Network("gpt2", _gpt2, _tokens(1024, 50257, 8), (3, 6), False,
                    "Hugging Face GPT-2 small (random init), 8 sequences of 1,024 tokens"),
}
MODES = ("fused", "graphed")


class Contender:
    """One model in one mode: its own weights, optimizer and step object."""

    def __init__(self, label: str, mode: str, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
                 device: torch.device, channels_last: bool) -> None:  # fmt: skip
        on_cuda = device.type == "cuda"
        settings = TrainSettings(lr=1e-4, device=str(device))
        self.label, self.mode, self.device, self.batch = label, mode, device, batch
        self.model = model.to(device=device, memory_format=torch.channels_last if channels_last and on_cuda else torch.preserve_format).train()
        optimizer = build_optimizer(self.model, settings, fused=on_cuda)
        make = GraphedStep if mode == "graphed" else EagerStep
        self.stepper = make(self.model, optimizer, device, amp=on_cuda, channels_last=channels_last and on_cuda)
        self.seconds: list[float] = []
        self.failed = ""

    def chunk(self, steps: int) -> float:
        """Seconds for ``steps`` training steps on the fixed batch, synchronized at both ends."""
        inputs, labels = self.batch
        sync(self.device)
        start = time.perf_counter()
        for step in range(1, steps + 1):
            self.stepper(inputs, labels, step)
        sync(self.device)
        return time.perf_counter() - start


def time_training(contenders: list[Contender], steps: int, repeats: int, warmup: int) -> None:
    for contender in contenders:
        try:
            for _ in range(warmup):
                contender.chunk(steps)
        except Exception as exc:  # a capture that fails is a finding, not the end of the benchmark
            contender.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    live = [c for c in contenders if not c.failed]
    for r in range(repeats):
        for i in repeat_order(len(live), r):
            live[i].seconds.append(live[i].chunk(steps))


def time_inference(models: list[nn.Module], batch: torch.Tensor, device: torch.device, steps: int, repeats: int) -> list[list[float]]:
    times: list[list[float]] = [[] for _ in models]
    for model in models:
        model.eval()
    with torch.inference_mode(), autocast(device, device.type == "cuda"):
        for model in models:
            for _ in range(3):
                model(batch)
        for r in range(repeats):
            for i in repeat_order(len(models), r):
                sync(device)
                start = time.perf_counter()
                for _ in range(steps):
                    models[i](batch)
                sync(device)
                times[i].append(time.perf_counter() - start)
    for model in models:
        model.train()
    return times


def last_blocks_plan(model: nn.Module, p: int, shape: tuple[int, ...]) -> ll.RemovalPlan:
    """The ``p`` last removable blocks under the default rules (score = minus the block's position)."""
    blocks = ll.find_blocks(model, shape)
    return ll.select_blocks(blocks, {b.name: -float(i) for i, b in enumerate(blocks)}, p=p)


def cell(q: tuple[float, float, float], steps: int) -> str:
    return f"{1000 * q[1] / steps:.2f} [{1000 * q[0] / steps:.2f}, {1000 * q[2] / steps:.2f}]"


def measure_network(net: Network, args: argparse.Namespace, device: torch.device) -> list[str]:
    torch.manual_seed(0)
    dense = net.build(args.tiny)
    batch = net.batch(args.tiny, device)
    shape = tuple(batch[0].shape[1:])
    dense_macs = ll.count_macs(dense, shape)
    plans = [last_blocks_plan(dense, p, shape) for p in net.p_values]
    models = {"dense": dense, **{f"p={plan.p}": ll.remove_blocks(dense, plan) for plan in plans}}
    macs = {label: ll.count_macs(model, shape) for label, model in models.items()}
    params = {label: ll.count_params(model) for label, model in models.items()}
    modes = [m for m in args.modes if device.type == "cuda" or m == "fused"]
    import copy

    contenders = [Contender(label, mode, copy.deepcopy(model), batch, device, net.image) for label, model in models.items() for mode in modes]
    time_training(contenders, args.steps, args.repeats, args.warmup)
    by_key = {(c.label, c.mode): c for c in contenders}
    inference = time_inference([m.to(device) for m in models.values()], batch[0], device, args.steps, args.repeats)
    rows = []
    removed = {f"p={plan.p}": ", ".join(plan.removed) for plan in plans}
    dense_inf = inference[0]
    for index, label in enumerate(models):
        mac_ratio = dense_macs / macs[label]
        for mode in modes:
            c, d = by_key[(label, mode)], by_key[("dense", mode)]
            if c.failed or d.failed:
                rows.append(f"| {net.label} | {label} | train, {mode} | {mac_ratio:.3f} | - | - | failed: {c.failed or d.failed} |")
                continue
            paired = quartiles([a / b for a, b in zip(d.seconds, c.seconds)])
            rows.append(
                f"| {net.label} | {label} | train, {mode} | {mac_ratio:.3f} | {cell(quartiles(c.seconds), args.steps)} | "
                f"{paired[1]:.3f} [{paired[0]:.3f}, {paired[2]:.3f}] | {speed_efficiency(paired[1], mac_ratio)} |"
            )
        paired = quartiles([a / b for a, b in zip(dense_inf, inference[index])])
        rows.append(
            f"| {net.label} | {label} | inference | {mac_ratio:.3f} | {cell(quartiles(inference[index]), args.steps)} | "
            f"{paired[1]:.3f} [{paired[0]:.3f}, {paired[2]:.3f}] | {speed_efficiency(paired[1], mac_ratio)} |"
        )
    notes = [f"- {net.label}: {net.describe}; dense {dense_macs / 1e9:.2f} GMACs per sample, {params['dense'] / 1e6:.1f} M parameters; "
             + "; ".join(f"{label} removes {removed[label]} ({params[label] / 1e6:.1f} M parameters)" for label in removed)]
    return notes + rows


def speed_efficiency(speedup: float, mac_ratio: float) -> str:
    return f"{speedup / mac_ratio:.0%}" if mac_ratio > 1 else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_machine_arguments(parser)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="tiny networks and batches: a CPU rehearsal")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = apply_threads(args)
    command = "python benchmarks/networks_speed.py " + shlex.join(sys.argv[1:])
    header = [
        "# Pruned torchvision, timm and Hugging Face networks vs dense: training and inference speed",
        "",
        f"Measured with `{command}` on {machine_line(args.device)}.",
        f"1-minute load average at the start: {load_average()}. {args.note}".rstrip(),
        "Tickets delete the p last removable blocks (which blocks go does not change the MACs within a stage much);",
        "times are per step, median [IQR] over repeats; speedup = paired median of dense chunk / ticket chunk;",
        "efficiency = speedup / MAC ratio.",
        "",
    ]
    notes: list[str] = []
    rows: list[str] = []
    out = args.out or f"networks_speed{'_cuda' if device.type == 'cuda' else ''}.md"
    for name in args.networks:
        found = measure_network(NETWORKS[name], args, device)
        notes += [line for line in found if line.startswith("- ")]
        rows += [line for line in found if line.startswith("|")]
        for line in found:
            print(line, flush=True)
        table = ["| network | model | what | MAC ratio | ms per step | speedup | efficiency |", "|---|---|---|---|---|---|---|", *rows]
        write_result(out if args.out is None else __import__("pathlib").Path(out), "\n".join([*header, *notes, "", *table, ""]))


if __name__ == "__main__":
    main()
