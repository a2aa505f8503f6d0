"""One rank's share of an image-folder epoch under torchrun: decoding its own rows vs. the whole batch.

``python benchmarks/folder_shard.py [--images 384] [--repeats 3] [--worlds 2 4 8]``

Under torchrun every rank trains on its contiguous slice of each global batch. A loader that cannot cut its
batches is built whole on every rank and then sliced (:func:`layerlottery.distributed.shard_batch`): cheap
for in-memory data, but for an image folder every rank would decode every image. ``FolderLoader.epoch_shard``
decodes only the rank's rows. This benchmark times one epoch of rank 0 both ways, side by side in one
process, on a folder of JPEGs at ImageNet's typical size (500 x 375, random-resized-cropped to 224), and
checks that the two give the same tensors bitwise. One process with ``workers=0`` stands for one rank: what
is measured is the decoding work a rank does, which is what the ranks' data workers share on a real node.

Results go to ``benchmarks/results/folder_shard.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_machine_arguments, apply_threads, load_average, machine_line, repeat_order, write_result  # noqa: E402

from layerlottery import distributed  # noqa: E402
from layerlottery.data import FolderLoader  # noqa: E402


def write_jpegs(root: Path, images: int, classes: int = 4) -> None:
    """Smooth gradients plus noise: JPEGs that decode like photographs (neither flat nor pure noise)."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:375, 0:500]
    for index in range(images):
        folder = root / "train" / f"class{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.stack([(xs * (c + 1) + ys * (index % 7)) % 256 for c in range(3)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.jpg", quality=90)


def whole_then_sliced(loader: FolderLoader, epoch: int, world: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    context = distributed.DistributedContext(rank=0, world_size=world)
    return [distributed.shard_batch(x, y, context) for x, y in loader.epoch(epoch)]


def own_rows(loader: FolderLoader, epoch: int, world: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader.epoch_shard(epoch, 0, world))


def timed(action) -> tuple[float, list]:
    started = time.perf_counter()
    batches = action()
    return time.perf_counter() - started, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worlds", type=int, nargs="+", default=[2, 4, 8])
    add_machine_arguments(parser)
    args = parser.parse_args()
    apply_threads(args)

    contenders = {"whole batch, then sliced": whole_then_sliced, "own rows only (epoch_shard)": own_rows}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jpegs(root, args.images)
        loader = FolderLoader(root, "train", args.batch_size, train=True, image_size=224, workers=0, seed=0)
        load_before = load_average()
        for world in args.worlds:
            seconds: dict[str, list[float]] = {name: [] for name in contenders}
            for repeat in range(args.repeats):
                outputs = {}
                for i in repeat_order(len(contenders), repeat):
                    name = list(contenders)[i]
                    took, outputs[name] = timed(lambda: contenders[name](loader, repeat, world))
                    seconds[name].append(took)
                same = all(
                    torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(*outputs.values(), strict=True)
                )
                if not same:
                    raise SystemExit(f"world {world}, epoch {repeat}: the two ways gave different batches")
            whole, own = (statistics.median(seconds[name]) for name in contenders)
            rows.append((world, whole, own, whole / own))
            print(f"world {world}: whole then sliced {whole:.2f} s, own rows {own:.2f} s, {whole / own:.2f}x")

    lines = [
        "# One rank's share of an image-folder epoch: decoding its own rows vs. the whole batch",
        "",
        f"Machine: {machine_line('cpu')}. Load: {load_before} -> {load_average()}.",
        f"{args.images} JPEGs of 500 x 375, RandomResizedCrop 224 + flip, batches of {args.batch_size}, `workers=0`; "
        f"median of {args.repeats} epochs per contender, contenders in a shuffled order per repeat. "
        "Both ways gave bitwise the same tensors in every epoch. " + args.note,
        "",
        "| ranks | rank 0, whole batch then sliced (s) | rank 0, own rows only (s) | saved |",
        "|---:|---:|---:|---:|",
        *(f"| {world} | {whole:.2f} | {own:.2f} | {ratio:.2f}x |" for world, whole, own, ratio in rows),
        "",
        "The ideal saving is the number of ranks: decoding and cropping are the work per image, and each rank now "
        "does 1/N of it. Measured with `python benchmarks/folder_shard.py`.",
        "",
    ]
    write_result("folder_shard.md", "\n".join(lines))


if __name__ == "__main__":
    main()
