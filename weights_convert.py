"""Convert a BERT checkpoint (Google TF, Hugging Face or minibert) to minibert's or Hugging Face's layout.

    python weights_convert.py SRC DST [--to minibert|hf] [--model auto|base|mlm|pretraining|cls|tokens] [--verbose]
    make convert SRC=downloads/uncased_L-4_H-256_A-4 DST=checkpoints/bert-mini

SRC is detected, never named: a TF checkpoint (prefix, `.index` file or its folder, read WITHOUT TensorFlow),
or a folder with model.safetensors / pytorch_model.bin (minibert or HF names). SRC needs its config
(config.json or bert_config.json) and vocabulary (vocab.txt or tokenizer.json) beside it.

Steps: load into a minibert model (printing the coverage report: where every tensor went, or why it was
skipped), write DST, then self-check: a fixed input through the loaded model gives finite outputs, and DST
read back gives the same outputs. Everything is written into a temporary folder beside DST that is renamed to DST
only after the self-check passes, so DST is replaced as a whole: a DST that is, or holds, SRC, or holds files a
conversion does not write, is refused. A bad input prints ONE line and exits with status 2 (`--debug` shows the
traceback); every source tensor must be finite.

This file is only the command line: the work is `minibert.checkpoint.conversion.convert_checkpoint`, callable
from Python.
"""

import sys

from minibert.checkpoint.conversion import MODEL_CLASSES, convert_checkpoint
from minibert.cli import OneLineParser, run_cli


def convert(argv: list[str]) -> int:
    """Parses the flags and runs convert_checkpoint; main's run_cli turns any error into the one `error:` line."""
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="TF checkpoint prefix/.index/folder, or a minibert/HF folder")
    parser.add_argument("dst", help="output folder: new, or an earlier conversion's output (it is replaced)")
    parser.add_argument("--to", choices=("minibert", "hf"), default="minibert", help="output layout")
    parser.add_argument("--model", choices=("auto",) + tuple(MODEL_CLASSES), default="auto",
                        help="which minibert model to build: auto keeps every head the source has (a classifier: "
                             "cls, or tokens for a token classifier; NSP: pretraining; MLM: mlm; else base)")
    parser.add_argument("--verbose", action="store_true", help="list every tensor in the coverage report")
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback too")
    args = parser.parse_args(argv)
    convert_checkpoint(args.src, args.dst, to=args.to, model=args.model, verbose=args.verbose)
    return 0


def main(argv=None) -> int:
    """Exit codes: 0 converted and self-checked, 1 failed while running, 2 bad input (see minibert/cli.py)."""
    return run_cli(convert, argv)


if __name__ == "__main__":
    sys.exit(main())
