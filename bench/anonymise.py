"""Turn a real text corpus into an anonymised integer-ID corpus in the Tianchi shape (`label\\ttext`, text =
space-separated IDs), so that `python -m pretrain` and `python -m finetune --format tianchi` can be checked on
real text exactly as a user with an anonymised corpus would run them (issue 10's acceptance corpora).

    python -m bench.anonymise sst2 ../shared/data/sst2/train.tsv runs/anon/sst2-train.tsv
    python -m bench.anonymise sst2 ../shared/data/sst2/dev.tsv runs/anon/sst2-dev.tsv --ids runs/anon/sst2-train.ids.tsv
    python -m bench.anonymise cluener ../shared/data/cluener/train.json runs/anon/cluener-train.tsv
    python -m bench.anonymise sst2 ../shared/data/sst2/train.tsv runs/anon/sst2wp-train.tsv \
        --wordpiece ../shared/data/bert-mini-uncased_L-4_H-256_A-4/vocab.txt

Units: SST-2 → whitespace words, or with `--wordpiece VOCAB` the WordPiece pieces of that BERT vocab (a subword
corpus: the same text, another distribution of units); CLUENER → characters (its texts are Chinese, unsegmented).
IDs are given in order of first appearance in the first file (so they say nothing about frequency), starting at
100 like Tianchi's small IDs; the table `<out>.ids.tsv` (ID, unit) is written beside the output, and `--ids`
reuses one so that a dev split shares the training split's IDs (an unseen unit gets a fresh ID). CLUENER has no
document label: every row gets label 0 (pretraining ignores labels).

    python -m bench.anonymise reveal runs/cluener60m/final runs/cluener60m-chars --ids runs/anon/cluener-train.ids.tsv

`reveal` goes the other way for a checkpoint: it copies an encoder pretrained on the anonymised corpus, with each
ID in its vocab.txt replaced by the unit it stands for. The weights are untouched (row i still means the same
unit), so the encoder can be fine-tuned on the original labelled files, e.g. CLUENER's character-level entity
spans, which have no ID form.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from minibert.cli import OneLineParser, run_cli
from minibert.tokenizers.base import require_file
from minibert.tokenizers.wordpiece import WordPieceTokenizer
from minibert.training.io import atomic_write_text, staging_folder

FIRST_ID = 100


def read_units(kind: str, path: Path, split=str.split) -> list[tuple[int, list[str]]]:
    """(label, units) per row: SST-2 `sentence\tlabel` rows → split(sentence) (words by default); CLUENER JSON
    lines → characters."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if kind == "sst2" and number == 1 or not line.strip():  # SST-2's header: sentence, label
                continue
            try:
                if kind == "sst2":
                    sentence, label = line.rstrip("\n").rsplit("\t", 1)
                    rows.append((int(label), split(sentence)))
                else:
                    rows.append((0, [c for c in json.loads(line)["text"] if not c.isspace()]))
            except (ValueError, KeyError, TypeError) as error:
                shape = "sentence<TAB>integer label" if kind == "sst2" else 'a JSON object with a "text" string'
                raise ValueError(f"{path} line {number}: {line.strip()[:60]!r} is not {shape} ({type(error).__name__}"
                                 f"); pass the {kind} file itself (SST-2: train.tsv / dev.tsv; CLUENER: "
                                 f"train.json / dev.json)") from None
    return [(label, units) for label, units in rows if units]


def wordpiece_pieces(vocab: Path):
    """sentence -> its WordPiece pieces under `vocab` (BERT's own tokenizer, no [CLS]/[SEP])."""
    backend = WordPieceTokenizer.from_file(require_file(vocab, "--wordpiece", "pass a BERT vocab.txt or "
                                                        "tokenizer.json")).backend

    def pieces(sentence: str) -> list[str]:
        return backend.encode(sentence, add_special_tokens=False).tokens

    return pieces


def read_table(path: Path) -> dict[str, int]:
    """An ID table written by this tool: `ID<TAB>unit` per line."""
    table = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if line:
            try:
                identifier, unit = line.split("\t", 1)
                table[unit] = int(identifier)
            except ValueError:
                raise ValueError(f"--ids {path} line {number}: {line[:60]!r} is not ID<TAB>unit; pass the "
                                 f"<corpus>.ids.tsv this tool wrote beside the anonymised corpus") from None
    return table


def anonymise(rows, table: dict[str, int]) -> list[str]:
    """`label\\tID ID ...` lines; units missing from `table` are added with the next free ID."""
    lines = []
    for label, units in rows:
        ids = [table.setdefault(unit, FIRST_ID + len(table)) for unit in units]
        lines.append(f"{label}\t{' '.join(map(str, ids))}")
    return lines


def reveal(encoder: Path, out: Path, table: dict[str, int]) -> int:
    """Copies the checkpoint folder `encoder` to `out` with its vocab.txt's IDs replaced by their units.

    Returns the number of vocab entries replaced (special tokens such as [CLS] are kept as they are).
    """
    vocab = encoder / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"reveal: no vocab.txt in {encoder}; give the folder of a checkpoint "
                                "(e.g. runs/cluener60m/final)")
    unit_of = {str(number): unit for unit, number in table.items()}
    tokens = vocab.read_text(encoding="utf-8").splitlines()
    revealed = [unit_of.get(token, token) for token in tokens]
    with staging_folder(out) as staging:  # all files or none: a half-copied checkpoint is never left behind
        for path in encoder.iterdir():
            if path.is_file() and path.name != "vocab.txt":
                shutil.copyfile(path, staging / path.name)
        (staging / "vocab.txt").write_text("\n".join(revealed) + "\n", encoding="utf-8")  # staged: atomic
    return sum(a != b for a, b in zip(tokens, revealed))


def anonymise_cli(argv: list[str]) -> int:
    parser = OneLineParser(prog="python -m bench.anonymise", description="Write an anonymised integer-ID copy of "
                           "SST-2 or CLUENER, or reveal the units of an encoder pretrained on one.")
    parser.add_argument("kind", choices=("sst2", "cluener", "reveal"))
    parser.add_argument("source", type=Path, help="the text file; for reveal, the checkpoint folder")
    parser.add_argument("out", type=Path, help="the TSV to write; for reveal, the folder to write")
    parser.add_argument("--ids", type=Path, help="an existing ID table to reuse (from the training split); "
                                                 "reveal needs the table the corpus was written with")
    parser.add_argument("--wordpiece", type=Path, help="sst2 only: units are the WordPiece pieces of this BERT "
                                                       "vocab.txt (or tokenizer.json), not whitespace words")
    args = parser.parse_args(argv)
    if args.kind == "reveal" and args.ids is None:
        parser.error("reveal needs --ids: the <corpus>.ids.tsv written beside the anonymised corpus")
    if args.wordpiece and args.kind != "sst2":
        parser.error(f"--wordpiece splits SST-2's English words; {args.kind} has no words to split: drop it")
    ids_path = args.out.with_name(args.out.name.removesuffix(".tsv") + ".ids.tsv")
    if args.kind != "reveal" and args.source.resolve() in (args.out.resolve(), ids_path.resolve()):
        parser.error(f"out {args.out} would overwrite source {args.source} with its ID copy (or its table); pass "
                     f"another path")
    table = read_table(args.ids) if args.ids else {}
    if args.kind == "reveal":
        count = reveal(args.source, args.out, table)
        print(f"wrote {args.out}: the checkpoint of {args.source} with {count:,} IDs in vocab.txt replaced by "
              f"their units")
        return 0
    rows = read_units(args.kind, args.source, wordpiece_pieces(args.wordpiece) if args.wordpiece else str.split)
    if not rows:
        raise ValueError(f"{args.source}: no {args.kind} rows to anonymise (an empty file, or only a header); pass "
                         f"the {args.kind} file itself")
    lines = anonymise(rows, table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "label\ttext\n" + "\n".join(lines) + "\n")
    atomic_write_text(ids_path, "".join(f"{number}\t{unit}\n" for unit, number in table.items()))
    tokens = sum(len(units) for _, units in rows)
    print(f"wrote {args.out} ({len(lines):,} rows, {tokens:,} tokens, {len(table):,} distinct units) and {ids_path}")
    return 0


def main(argv=None) -> int:
    """Exit codes: 0 written, 2 bad input (one `error:` line; see minibert/cli.py)."""
    return run_cli(anonymise_cli, argv)


if __name__ == "__main__":
    sys.exit(main())
