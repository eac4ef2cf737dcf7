"""asv: the validator's wall time on a fixed small subset — ``lossoracle check`` in a fresh process
(import, workers, oracles, grading, report) on two losses with their built-in and library
implementations; the user cache as it is (repeated runs)."""

import os
import subprocess
import sys

SUBSET = ("nll_loss", "log_softmax")


class Validator:
    timeout = 600
    number = 1
    repeat = (1, 3, 300.0)
    warmup_time = 0

    def setup(self):
        try:
            import lossoracle.cli  # noqa: F401
        except ImportError:  # an old commit
            raise NotImplementedError from None

    def time_check_subset(self):
        args = [a for loss in SUBSET for a in ("--loss", loss)]
        subprocess.run([sys.executable, "-m", "lossoracle.cli", "check", *args], check=False,
                       stdout=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"))
