"""`python -m pretrain`: MLM-pretrain a BERT-mini (or any size) on an anonymised-ID corpus.

    python -m pretrain                                        # embedded corpus: 1,000 steps (950 small, then grown)
    python -m pretrain --corpus train_set.csv --time-budget 10m  # as many steps as fit in 10 minutes, all in
    python -m pretrain --corpus train_set.csv --out runs/tianchi --max-steps 20000
    python -m pretrain --config run.json --model.hidden_size 128 --set num_hidden_layers=2
    python -m pretrain --out runs/tianchi --resume            # continue exactly where the run stopped
    torchrun --nproc_per_node 4 -m pretrain --corpus train_set.csv   # DDP: one process per GPU (or CPU share)

All flags: `python -m pretrain --help`; their meaning and defaults: pretrain/config.py. Errors print one line
(`--debug` adds the traceback); exit codes: 0 done, 1 failed while running (e.g. diverged; the last good checkpoint
is kept), 2 bad input, 130 interrupted (resumable).
"""

import sys
import time

STARTED = time.monotonic()  # --time-budget counts from here: imports, corpus and export included

from minibert.cli import run_cli  # noqa: E402


def main(argv=None, started_at=None) -> int:
    """Exit codes: 0 done, 1 failed while running, 2 bad input, 130 interrupted (see minibert/cli.py).
    started_at: time.monotonic() when the command started (--time-budget counts from there); None = now."""
    from pretrain.config import parse_config  # imported here so that even an import-time error gets one line
    from pretrain.train import train

    def body(args: list[str]) -> int:
        train(parse_config(args), started_at=started_at)
        return 0

    return run_cli(body, argv,
                   resume_hint="continue with the same flags plus --resume, from the last checkpoint (one every "
                               "--checkpoint-every steps; stopped before the first, run again without --resume)")


if __name__ == "__main__":
    sys.exit(main(started_at=STARTED))
