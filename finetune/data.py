"""Reading fine-tuning data, and checking the labels BEFORE any training starts.

File formats (a table, so a learner can find every column rule in one place):

    format    header  columns                                   tokenizer   example
    tianchi   yes     label, text (space-separated integer IDs)  whitespace  Tianchi train_set.csv
    sst2      yes     sentence, label                           wordpiece   GLUE SST-2 train.tsv / dev.tsv
    cola      no      source, label, original mark, sentence    wordpiece   CoLA raw/in_domain_train.tsv
    pair      yes     label, text_a, text_b                     whitespace  the embedded pair task
    cluener   -       JSON lines {"text", "label": {type: {entity: [[start, end_inclusive], ...]}}}

`--text-column`, `--text-b-column`, `--label-column` and `--header` override a format's column rules, so any
TSV works. A multi-label (多标签) label cell holds comma-separated class IDs, e.g. `0,3`.

Validation, as the course FAQ needs (a bad label otherwise surfaces as "index -100 is out of bounds for
dimension 0 with size 39", or worse trains silently):
  * class labels must be integers in [0, num_labels); every offending line is listed with its value;
  * NER spans must lie inside the text and cover the entity string they claim (finetune/ner_data.py);
  * label sets that differ between train and dev are reported.
Line numbers are 1-based lines of the file (a header is line 1), so `sed -n 7p file` shows the culprit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# format -> column rules; None = no such column. The table the module docstring shows.
FORMATS = {
    "tianchi": {"header": True, "label_column": 0, "text_column": 1, "text_b_column": None, "tokenizer": "whitespace"},
    "sst2": {"header": True, "label_column": 1, "text_column": 0, "text_b_column": None, "tokenizer": "wordpiece"},
    "cola": {"header": False, "label_column": 1, "text_column": 3, "text_b_column": None, "tokenizer": "wordpiece"},
    "pair": {"header": True, "label_column": 0, "text_column": 1, "text_b_column": 2, "tokenizer": "whitespace"},
    "cluener": {"header": None, "label_column": None, "text_column": None, "text_b_column": None,
                "tokenizer": "whitespace"},
}
MAX_LISTED = 10  # offending lines named in one error message
TEXT_NAMES = ("text", "sentence", "text_a", "sentence1")  # header names of a (first) text column
TEXT_B_NAMES = ("text_b", "sentence2")  # header names of a pair's segment-B column
ID_NAMES = ("id", "idx", "index", "guid", "qid")  # header names of a row-number column


class DataError(ValueError):
    """Bad fine-tuning data: the one-line message names the file, the lines, the values and the fix."""


@dataclass
class TextExample:
    text: str
    text_b: str | None  # segment B of a pair, else None
    label: int | list[int] | None  # class ID, list of class IDs (multi-label), or None (prediction input)
    line: int  # 1-based line number in the file


def line_listing(bad: list[tuple[int, str]]) -> str:
    """`line 3: 'x', line 7: 'y' and 4 more`, each value cut to 40 characters (a label column that holds the texts
    would otherwise paste whole documents into a one-line error)."""
    shown = ", ".join(f"line {line}: {value if len(value) <= 40 else value[:37] + '...'!r}"
                      for line, value in bad[:MAX_LISTED])
    more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
    return f"{shown}{more}"


def check_labelled_header(path, header: str, text_col: int, label_col: int) -> None:
    """Columns are read by position; a header that says otherwise is a file in another layout, read wrongly.

    Refuses a first line that is an example (its label cell holds integers: a headerless file would lose that row),
    a header naming `label` or a text column (text, sentence, text_a, sentence1) elsewhere than the column read as
    such, and a label column named like a row number (id, idx, index, guid, qid): ids read as labels train a model
    of thousands of classes on them, or score a model against them.
    """
    names = [name.strip().lower() for name in header.split("\t")]
    cell = names[label_col] if label_col < len(names) else ""
    if cell and all(part.strip().lstrip("-").isdigit() for part in cell.split(",")):
        raise DataError(f"{path}: the first line {header[:40]!r} is an example, not a header (its label cell "
                        f"{cell!r} is a number), so it would be dropped; add a header line (e.g. `label<TAB>text`), "
                        f"or pass --header false")
    for role, column, fix, wanted in (("label", label_col, "--label-column", ("label",)),
                                      ("text", text_col, "--text-column", TEXT_NAMES)):
        elsewhere = [i for i, name in enumerate(names) if name in wanted and i != column]
        if elsewhere and (column >= len(names) or names[column] not in wanted + TEXT_B_NAMES):
            read = repr(names[column]) if column < len(names) else "a missing column"
            raise DataError(f"{path}: the header names {names[elsewhere[0]]!r} as column {elsewhere[0]} (counting "
                            f"from 0), but the {role} is read from column {column} ({read}); move the columns, or "
                            f"when training pass {fix} {elsewhere[0]}")
    if cell in ID_NAMES:  # `id<TAB>text` and no `label` column: an unlabelled file
        raise DataError(f"{path}: the header calls the label column {label_col} (counting from 0) {cell!r}, which "
                        f"numbers the rows and is no label; to predict labels for an unlabelled file use --predict, "
                        f"or when training pass --label-column N for the column that holds the labels")


def columns_from_header(path, header: str, columns: dict, with_labels: bool) -> tuple[int, int | None]:
    """The (text, segment B) columns to read, after checking the header line against the format's columns.

    A labelled file keeps the format's columns (check_labelled_header refuses a header that contradicts them); a
    prediction file finds its text by name (Tianchi's test_a.csv has only a `text` column). Either way a second
    text in a file read by a one-text model is refused: segment B would be dropped unseen.
    """
    text_col, text_b_col, label_col = columns["text_column"], columns["text_b_column"], columns["label_column"]
    cells = [cell.strip() for cell in header.split("\t")]
    names = [cell.lower() for cell in cells]
    if text_b_col is None:
        second = [cell for cell, name in zip(cells, names) if name in TEXT_B_NAMES]
        if second:
            raise DataError(f"{path}: the header names a second text ({second[0]!r}), which a one-text model would "
                            f"drop unseen; fine-tune --task pair for sentence pairs, or remove that column")
    if with_labels:
        check_labelled_header(path, header, text_col, label_col)
        return text_col, text_b_col
    named = [i for i, name in enumerate(names) if name in TEXT_NAMES]
    if not named:  # its first row would be dropped as a header, and every prediction would shift by one
        raise DataError(f"{path}: the first line {header[:40]!r} names no text column (text, sentence, text_a or "
                        f"sentence1); a prediction file starts with a header row: add `text` as its first line")
    text_col = named[0]
    if text_b_col is not None:  # a pair model: segment B by name, else the format's column
        named_b = [i for i, name in enumerate(names) if name in TEXT_B_NAMES]
        text_b_col = named_b[0] if named_b else text_b_col
        if text_b_col >= len(names) or text_b_col == text_col:
            raise DataError(f"{path}: the header {header!r} has no segment-B column for a pair model; name it "
                            f"text_b, after a text_a column")
    return text_col, text_b_col


def read_tsv(path: str | Path, columns: dict, multi_label: bool = False, with_labels: bool = True) -> list[TextExample]:
    """Read a TSV with the column rules of one FORMATS row.

    Args:
        path: the file.
        columns: {"header", "label_column", "text_column", "text_b_column"}.
        multi_label: the label cell holds comma-separated class IDs.
        with_labels: False for prediction files (e.g. Tianchi test_a.csv has only a `text` column): then a header
            is searched for a column called text/sentence/text_a, and labels are not read.
    Returns:
        The examples, labels parsed to ints (validated later by check_class_labels).
    """
    lines = read_lines(Path(path), "an existing TSV (see docs/finetune.md for the formats)")
    text_col, text_b_col, label_col = columns["text_column"], columns["text_b_column"], columns["label_column"]
    first = 1 if columns["header"] else 0
    if columns["header"] and lines:
        text_col, text_b_col = columns_from_header(path, lines[0], columns, with_labels)
    if not with_labels:  # predictions line up with the input rows: a blank row inside the file cannot be skipped
        last = max((i for i, raw in enumerate(lines) if raw.strip()), default=-1)
        blank = [(i + 1, "") for i in range(first, last) if not lines[i].strip()]
        if blank:
            raise DataError(f"{path}: {len(blank)} blank row(s) inside the file ({line_listing(blank)}); predictions "
                            f"are written one per input row, so remove them or give them a text")
    needed = max(c for c in (text_col, text_b_col, label_col if with_labels else None) if c is not None)
    width = len(lines[0].split("\t")) if columns["header"] and lines else None  # the header's columns
    examples, bad_labels, short_rows, long_rows, empty_texts = [], [], [], [], []
    for index in range(first, len(lines)):
        raw = lines[index]
        if not raw.strip():
            continue  # a blank line (e.g. a trailing newline) is not an example
        cells = raw.split("\t")
        line = index + 1
        if len(cells) <= needed:
            short_rows.append((line, raw[:40]))
            continue
        if width and len(cells) > width:  # a tab inside a text: the cells after it would be dropped unseen
            long_rows.append((line, raw[:40]))
            continue
        if not cells[text_col].strip() or text_b_col is not None and not cells[text_b_col].strip():
            empty_texts.append((line, raw[:40]))
            continue
        label = None
        if with_labels:
            cell = cells[label_col].strip()
            try:
                label = [int(v) for v in cell.split(",")] if multi_label else int(cell)
            except ValueError:
                bad_labels.append((line, cell))
                continue
        examples.append(TextExample(cells[text_col], cells[text_b_col] if text_b_col is not None else None,
                                    label, line))
    # Column hints name the columns, not only the flags: under --load the flags are refused (finetune.json sets them)
    read_from = f"the text is read from column {text_col + 1}" + (
        f", segment B from column {text_b_col + 1}" if text_b_col is not None else "") + (
        f", the label from column {label_col + 1}" if with_labels else "")
    if short_rows:
        raise DataError(f"{path}: {len(short_rows)} row(s) have fewer than {needed + 1} tab-separated columns "
                        f"({line_listing(short_rows)}); {read_from}: fix the file's columns, or when training set "
                        f"--format / --text-column / --label-column")
    if long_rows:
        raise DataError(f"{path}: {len(long_rows)} row(s) have more tab-separated columns than the header's {width} "
                        f"({line_listing(long_rows)}); a tab inside a text would cut it there: replace it with a space")
    if empty_texts:
        raise DataError(f"{path}: {len(empty_texts)} row(s) have an empty text ({line_listing(empty_texts)}); give "
                        f"them a text or remove them")
    if bad_labels:
        kind = "comma-separated integers" if multi_label else "integers"
        sets = not multi_label and all("," in cell for _, cell in bad_labels)  # `0,3`: a multi-label file
        fix = ("they are label sets: fine-tune with --multi-label" if sets
               else f"{read_from}: fix those lines, or when training set --label-column")
        raise DataError(f"{path}: labels must be {kind}; {len(bad_labels)} bad label(s): {line_listing(bad_labels)}; "
                        f"{fix}")
    if not examples:
        raise DataError(f"{path}: no examples found; is the file empty, or is --header wrong?")
    return examples


def check_class_labels(examples: list[TextExample], num_labels: int, path: str | Path,
                       fix: str = "pass --num-labels if there are more classes") -> None:
    """Every label must be an integer in [0, num_labels). A −100 (the PyTorch "ignore" value) is refused too:
    in a classification file it is a data bug, and cross_entropy would silently skip that example."""
    bad = []
    for example in examples:
        values = example.label if isinstance(example.label, list) else [example.label]
        for value in values:
            if not 0 <= value < num_labels:
                bad.append((example.line, str(value)))
    if bad:
        raise DataError(f"{path}: labels must be integers in [0, num_labels={num_labels}); {len(bad)} bad label(s): "
                        f"{line_listing(bad)}; fix those lines, or {fix}")


def infer_num_labels(examples: list[TextExample], path: str | Path) -> int:
    """max label + 1 over the training set (negative labels are reported first by check_class_labels)."""
    values = [v for e in examples for v in (e.label if isinstance(e.label, list) else [e.label])]
    check_class_labels(examples, num_labels=max(max(values) + 1, 1), path=path)  # reports negatives, e.g. -100
    return max(values) + 1


def label_set_report(train: list[TextExample], dev: list[TextExample]) -> str | None:
    """A one-line warning when train and dev label sets differ (a dev-only class can never be predicted)."""
    def label_set(examples):
        return {v for e in examples for v in (e.label if isinstance(e.label, list) else [e.label])}
    train_set, dev_set = label_set(train), label_set(dev)
    if train_set == dev_set:
        return None
    parts = []
    if dev_set - train_set:
        parts.append(f"dev has label(s) {sorted(dev_set - train_set)} never seen in train (they cannot be learned)")
    if train_set - dev_set:
        parts.append(f"train has label(s) {sorted(train_set - dev_set)} absent from dev (their dev F1 is undefined)")
    return "warning: label sets differ: " + "; ".join(parts)


def read_lines(path: Path, expected: str = "the data file") -> list[str]:
    """The lines of a UTF-8 text file (a BOM is dropped); a decode error names the file and the first bad line.

    Split on "\n" (and a "\r" before it) only: str.splitlines() also splits on U+2028, \x85 or \x0c, which
    json.dumps(ensure_ascii=False) and real text carry INSIDE a record."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder; pass the data file itself (or the folder with --data)")
    if not path.is_file():
        what = "is not a regular file (a device or a pipe?)" if path.exists() else "no such file"
        raise DataError(f"{path}: {what}; pass {expected}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        from pretrain.readers import first_undecodable_line
        raise DataError(first_undecodable_line(path)) from None
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines  # a final newline ends the last line
