"""命名实体识别 NER data: CLUENER JSON lines, read and checked span by span BEFORE any training starts.

A record is `{"text": "...", "label": {type: {entity: [[start, end_inclusive], ...]}}}`; every span must lie inside
the text and cover the entity string it claims, so a shifted or mistyped span is named with its line instead of
training silently on the wrong characters. The TSV formats and the class-label checks are in finetune/data.py.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .data import MAX_LISTED, DataError, line_listing, read_lines


@dataclass
class NerExample:
    text: str
    entities: list[tuple[str, int, int]] = field(default_factory=list)  # (type, start char, end char inclusive)
    line: int = 0


def resolve_overlapping_spans(examples: list[NerExample], policy: str, path) -> tuple[list[NerExample], str | None]:
    """Overlapping or nested entity spans (CLUENER train.json line 1507 nests two companies in a book title).

    A BIO tag sequence gives each character ONE tag, so the softmax head would silently overwrite one span with
    another; GlobalPointer scores every (start, end) pair and keeps them all.

    Args:
        policy: "refuse" (raise, naming the count and the first line), "drop" (keep the first of each overlap,
            by start then longest), or "keep".
    Returns:
        (examples, a note saying how many spans were dropped, or None).
    """
    if policy == "keep":
        return examples, None
    kept_examples, dropped, first_line = [], 0, None
    for example in examples:
        kept, end = [], -1
        for entity in sorted(example.entities, key=lambda e: (e[1], -e[2], e[0])):
            if entity[1] <= end:
                dropped += 1
                first_line = first_line or example.line
            else:
                kept.append(entity)
                end = entity[2]
        kept_examples.append(dataclasses.replace(example, entities=sorted(kept, key=lambda e: (e[1], e[2], e[0]))))
    if dropped and policy == "refuse":
        raise DataError(f"{path}: {dropped} entity span(s) overlap another (first on line {first_line}); the softmax "
                        f"(BIO) head gives each character one tag and cannot learn them: use --head globalpointer, "
                        f"or --overlapping-spans drop to train without them")
    return kept_examples, (f"note: dropped {dropped} overlapping entity span(s) from {path} "
                           f"(--overlapping-spans drop)" if dropped else None)


def read_cluener(path: str | Path, with_labels: bool = True) -> list[NerExample]:
    """Read CLUENER JSON lines and check every span: inside the text, and covering the entity string."""
    path = Path(path)
    examples, bad, empty, blank = [], [], [], []
    for index, raw in enumerate(read_lines(path, "a CLUENER-style JSON-lines file")):
        line = index + 1
        if not raw.strip():
            blank.append(line)
            continue
        try:
            record = json.loads(raw)
            text = record["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{path}: line {line} is not a JSON object with a \"text\" field: {raw[:60]!r}; "
                            f"each line must look like {{\"text\": ..., \"label\": {{type: {{entity: [[s, e]]}}}}}}"
                            ) from None
        entities = []
        labels = record.get("label") or {} if isinstance(record, dict) else None
        if not isinstance(text, str) or not isinstance(labels, dict) or \
                not all(isinstance(m, dict) for m in labels.values()):
            raise DataError(f"{path}: line {line}: \"text\" must be a string and \"label\" an object "
                            f"{{type: {{entity: [[start, end]]}}}}: {raw[:60]!r}")
        if with_labels and not text.strip():  # no token to tag: a batch of such texts has no loss term at all
            empty.append((line, text))
        for entity_type, mentions in labels.items() if with_labels else ():
            for surface, spans in mentions.items():
                if not isinstance(spans, list):
                    bad.append((line, f"{entity_type} {surface!r} spans {spans!r} is not a list of [start, end]"))
                    continue
                for span in spans:
                    if not (isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span)):
                        bad.append((line, f"{entity_type} {surface!r} span {span!r} is not [start, end]"))
                        continue
                    start, end = span
                    if not (0 <= start <= end < len(text)):
                        bad.append((line, f"{entity_type} {surface!r} span [{start}, {end}] outside text of "
                                          f"length {len(text)}"))
                    elif text[start:end + 1] != surface:
                        bad.append((line, f"{entity_type} span [{start}, {end}] covers {text[start:end + 1]!r}, "
                                          f"not {surface!r}"))
                    else:
                        entities.append((entity_type, start, end))
        examples.append(NerExample(text, sorted(set(entities), key=lambda e: (e[1], e[2], e[0])), line))
    if empty:
        raise DataError(f"{path}: {len(empty)} record(s) with an empty \"text\" ({line_listing(empty)}); a text "
                        f"with no character has nothing to tag: remove those lines")
    if bad:
        shown = "; ".join(f"line {line}: {what}" for line, what in bad[:MAX_LISTED])
        raise DataError(f"{path}: {len(bad)} bad entity span(s) (spans are [start, end] with end inclusive, "
                        f"0 <= start <= end < len(text)): {shown}; fix the offsets")
    if not examples:
        raise DataError(f"{path}: no examples found; is the file empty?")
    inside = [(line, "") for line in blank if line < examples[-1].line]  # trailing blank lines end the file
    if inside and not with_labels:  # predictions line up with the input lines: a skipped one shifts all after it
        raise DataError(f"{path}: {len(inside)} blank line(s) inside the file ({line_listing(inside)}); predictions "
                        f"are written one per input line, so remove them or give them a text")
    if with_labels and not any(e.entities for e in examples):  # a "labels" typo: every text all-O, trained as such
        first = json.loads(next(raw for raw in read_lines(path) if raw.strip()))
        raise DataError(f"{path}: none of its {len(examples)} records has an entity (line {examples[0].line} has "
                        f"the keys {sorted(first)}); a tagger would learn to tag nothing: each line needs \"label\": "
                        f"{{type: {{entity: [[start, end]]}}}}")
    return examples


def entity_types_report(train: list[NerExample], dev: list[NerExample]) -> tuple[list[str], str | None]:
    """All entity types (sorted union), and a warning when train and dev disagree."""
    train_types = {e[0] for ex in train for e in ex.entities}
    dev_types = {e[0] for ex in dev for e in ex.entities}
    warning = None
    if train_types != dev_types:
        warning = (f"warning: entity types differ: dev-only {sorted(dev_types - train_types)}, "
                   f"train-only {sorted(train_types - dev_types)}")
    return sorted(train_types | dev_types), warning
