"""``python -m layerlottery``: the command line, also as torchrun launches it.

``torchrun --nproc_per_node N -m layerlottery run PRESET`` trains each run of the preset on N processes
(see :mod:`layerlottery.distributed`).
"""

from layerlottery.cli import main

if __name__ == "__main__":
    main()
