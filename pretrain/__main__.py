"""`python -m pretrain`: MLM-pretrain a BERT-mini (or any size) on an anonymised-ID corpus.

    python -m pretrain                                        # embedded default corpus (2,400 steps, growing)
    python -m pretrain --corpus train_set.csv --out runs/tianchi --max-steps 20000
    python -m pretrain --config run.json --model.hidden_size 128 --set num_hidden_layers=2
    python -m pretrain --out runs/tianchi --resume            # continue exactly where the run stopped
    torchrun --nproc_per_node 4 -m pretrain --corpus train_set.csv   # DDP: one process per GPU (or CPU share)

All flags: `python -m pretrain --help`; their meaning and defaults: pretrain/config.py. A wrong flag or path
prints one line and exits with status 2; a diverged run exits with status 1 and keeps its last good checkpoint.
"""

import sys

from pretrain.config import parse_config
from pretrain.train import TrainingDiverged, train


def main(argv=None) -> int:
    try:
        train(parse_config(argv))
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
    sys.exit(main())
