"""`python -m pretrain`: MLM-pretrain a BERT-mini (or any size) on an anonymised-ID corpus.

    python -m pretrain                                        # embedded default corpus, ~5 min on 2 CPU cores
    python -m pretrain --corpus train_set.csv --time-budget 10m  # as many steps as fit in 10 minutes, all in
    python -m pretrain --corpus train_set.csv --out runs/tianchi --max-steps 20000
    python -m pretrain --config run.json --model.hidden_size 128 --set num_hidden_layers=2
    python -m pretrain --out runs/tianchi --resume            # continue exactly where the run stopped
    torchrun --nproc_per_node 4 -m pretrain --corpus train_set.csv   # DDP: one process per GPU (or CPU share)

All flags: `python -m pretrain --help`; their meaning and defaults: pretrain/config.py. A wrong flag or path
prints one line and exits with status 2; a diverged run exits with status 1 and keeps its last good checkpoint.
"""

import sys
import time

STARTED = time.monotonic()  # --time-budget counts from here: imports, corpus and export included

from pretrain.config import parse_config  # noqa: E402
from pretrain.train import TrainingDiverged, train  # noqa: E402


def main(argv=None, started_at=None) -> int:
    """started_at: time.monotonic() when the command started (--time-budget counts from there); None = now."""
    try:
        train(parse_config(argv), started_at=started_at)
    except (ValueError, FileNotFoundError) as error:  # user errors: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; continue with --resume (from the last checkpoint)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(started_at=STARTED))
