"""The numbers the paper reports (Jordao et al., arXiv 2301.10835), as data for tests, benchmarks and reports.

Copied from ``shared/docs/PAPER.md``; where the paper misprints, the corrected value is used and the
printed one noted.
"""

from __future__ import annotations

from typing import NamedTuple

# Multiply-accumulates of the dense networks (option B shortcuts, 32x32 inputs) and of one removable block.
DENSE_MACS = {"cifar_resnet32": 69_124_736, "cifar_resnet56": 125_747_840}
BLOCK_MACS = 4_718_592


class Table4Row(NamedTuple):
    """GraSP tickets at initialization, improvement over the dense network."""

    model: str
    p: int
    flops_reduction: float  # percent
    co2_reduction: float  # percent
    training_speedup: float  # x


TABLE_4 = [
    Table4Row("cifar_resnet32", 1, 6.82, 11.11, 1.10),
    Table4Row("cifar_resnet32", 3, 20.47, 25.92, 1.35),
    Table4Row("cifar_resnet32", 5, 34.13, 33.33, 1.57),  # p printed as 4
    Table4Row("cifar_resnet56", 3, 11.25, 13.33, 1.16),
    Table4Row("cifar_resnet56", 4, 15.00, 20.00, 1.24),
    Table4Row("cifar_resnet56", 5, 18.76, 24.44, 1.34),
    Table4Row("cifar_resnet56", 12, 45.03, 51.11, 2.03),  # FLOPs printed as 45.00
]

# Table 2: ResNet-32 on CIFAR-10, tickets at initialization, accuracy change vs dense for p = 1..5.
TABLE_2 = {
    "snip": [0.08, 0.00, -0.50, -0.53, -1.00],
    "grasp": [0.40, 0.72, 0.34, 0.41, 0.12],
}
