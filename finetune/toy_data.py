"""The embedded default data of `make finetune TASK=cls|pair|ner`: small, deterministic, honest, learnable.

No real data ships with minibert, so each task writes its own default files on first use (same seed, same bytes):

  * cls: the labelled split of the pretraining corpus generator (pretrain/corpus.py): Tianchi-shaped documents
    from the SAME generative "world" that `make pretrain` trains on, with 14 imbalanced classes. So
    runs/pretrain/final has seen this vocabulary and its phrase/topic structure, and should beat random init.
  * pair: paraphrase detection (like MRPC/QQP) on corpus passages. A is a window of a generated document. For
    label 1, B is a noisy copy of A: half of its tokens replaced by random corpus tokens and neighbouring tokens
    swapped; for label 0, B is a window of another document. Nothing in A or B alone gives the label away (both
    are corpus-like text); the model must compare the two segments, which [SEP] and the segment IDs
    (token_type_ids 0 then 1) separate. Chance = 50%.
  * ner: character-level Chinese sentences in CLUENER format with three entity types, each with honest cues
    and honest ambiguity: `name` = a surname + 1-2 given-name characters, `address` = 1-2 characters + 市/省/县,
    `company` = 2-3 characters + 公司/银行/集团. The body characters also occur in the filler text, so a model
    must use the surname/suffix and the boundaries, not memorise characters.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from minibert.training.io import atomic_write_text

SEED = 0
CLS_DOCS = 3000  # labelled documents: 90% train, 10% dev (pretrain.corpus.generate_corpus's split)
PAIR_DOCS, PAIR_TRAIN, PAIR_DEV, PAIR_WINDOW = 1200, 4000, 400, 32
PAIR_REPLACE = 0.5  # share of a positive B's tokens replaced by random tokens
NER_TRAIN, NER_DEV = 3000, 300

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
ADDRESS_SUFFIX = ("市", "省", "县")
COMPANY_SUFFIX = ("公司", "银行", "集团")
# Shared by entity bodies AND filler text: the ambiguity that makes context matter.
COMMON = "天地人和平安国家东西南北中大小山水云海明华新光金文成长春永兴信德美力利发达通远宏建华晨阳江河湖"
FILLER_ONLY = "的了是在有这个我们他说到和也就要会对上年来出时可以与下过于经而去还那些都已发展工作记者表示今日报道"


def default_cls_data(folder: Path) -> tuple[Path, Path]:
    """train.tsv / dev.tsv from pretrain/corpus.py's labelled split (written once, then reused)."""
    from pretrain.corpus import generate_corpus

    train, dev = folder / "train.tsv", folder / "dev.tsv"
    if not (train.is_file() and dev.is_file()):
        # generate_corpus always writes a pretraining corpus too; ask for one document and delete it.
        scratch = folder / "unused_pretraining_corpus.tsv"
        generate_corpus(scratch, num_docs=1, seed=SEED, labelled_dir=folder, labelled_docs=CLS_DOCS)
        scratch.unlink()
    return train, dev


def _window(doc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random window of PAIR_WINDOW tokens."""
    start = int(rng.integers(0, len(doc) - PAIR_WINDOW + 1))
    return doc[start:start + PAIR_WINDOW]


def _noisy_copy(tokens: np.ndarray, vocabulary: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A paraphrase stand-in: replace PAIR_REPLACE of the tokens with random corpus tokens, swap some neighbours."""
    copy = tokens.copy()
    replaced = rng.random(len(copy)) < PAIR_REPLACE
    copy[replaced] = rng.choice(vocabulary, size=int(replaced.sum()))
    for i in np.flatnonzero(rng.random(len(copy) - 1) < 0.2):  # local word-order changes
        copy[i], copy[i + 1] = copy[i + 1], copy[i]
    return copy


def _pair_rows(docs: list, count: int, rng: np.random.Generator) -> list[str]:
    vocabulary = np.concatenate(docs)  # sampling from it follows the corpus frequencies
    rows = []
    for _ in range(count):
        a = int(rng.integers(len(docs)))
        text_a = _window(docs[a], rng)
        same = bool(rng.random() < 0.5)
        if same:
            text_b = _noisy_copy(text_a, vocabulary, rng)
        else:
            other = int(rng.integers(len(docs) - 1))
            text_b = _window(docs[other + (other >= a)], rng)  # any document but A's
        rows.append(f"{int(same)}\t{' '.join(map(str, text_a.tolist()))}\t{' '.join(map(str, text_b.tolist()))}")
    return rows


def default_pair_data(folder: Path) -> tuple[Path, Path]:
    """train.tsv / dev.tsv with header label, text_a, text_b; train and dev use disjoint documents."""
    from pretrain.corpus import CorpusSpec, CorpusWorld

    train, dev = folder / "train.tsv", folder / "dev.tsv"
    if not (train.is_file() and dev.is_file()):
        world = CorpusWorld(CorpusSpec(), np.random.default_rng([SEED, 0]))  # the corpus generator's world
        _, docs = world.sample_documents(PAIR_DOCS, np.random.default_rng([SEED, 3]))
        docs = [d for d in docs if len(d) >= PAIR_WINDOW]
        cut = len(docs) * 9 // 10  # train and dev passages come from different documents
        rng = np.random.default_rng([SEED, 4])
        for path, part, count in ((train, docs[:cut], PAIR_TRAIN), (dev, docs[cut:], PAIR_DEV)):
            rows = _pair_rows(part, count, rng)
            atomic_write_text(path, "label\ttext_a\ttext_b\n" + "\n".join(rows) + "\n")
    return train, dev


def _ner_sentence(rng: np.random.Generator) -> dict:
    """One sentence: filler characters with 1-3 entities inserted, and its CLUENER label dict."""
    def chars(pool: str, low: int, high: int) -> str:
        return "".join(rng.choice(list(pool), size=int(rng.integers(low, high + 1))))

    filler_pool = COMMON + FILLER_ONLY * 2  # filler mostly, but with the entity-body characters too
    text, label = chars(filler_pool, 2, 8), {}
    for _ in range(int(rng.integers(1, 4))):
        kind = ("name", "address", "company")[int(rng.integers(3))]
        if kind == "name":
            entity = rng.choice(list(SURNAMES)) + chars(COMMON, 1, 2)
        elif kind == "address":
            entity = chars(COMMON, 1, 2) + rng.choice(ADDRESS_SUFFIX)
        else:
            entity = chars(COMMON, 2, 3) + rng.choice(COMPANY_SUFFIX)
        start = len(text)
        text += entity
        label.setdefault(kind, {}).setdefault(entity, []).append([start, start + len(entity) - 1])
        text += chars(filler_pool, 2, 8)
    return {"text": text, "label": label}


def default_ner_data(folder: Path) -> tuple[Path, Path]:
    """train.json / dev.json in CLUENER JSON-lines format."""
    train, dev = folder / "train.json", folder / "dev.json"
    if not (train.is_file() and dev.is_file()):
        rng = np.random.default_rng([SEED, 5])
        for path, count in ((train, NER_TRAIN), (dev, NER_DEV)):
            lines = [json.dumps(_ner_sentence(rng), ensure_ascii=False) for _ in range(count)]
            atomic_write_text(path, "\n".join(lines) + "\n")
    return train, dev


DEFAULT_DATA = {"cls": default_cls_data, "pair": default_pair_data, "ner": default_ner_data}


def default_data(task: str, root: str | Path = "runs/finetune/data") -> tuple[Path, Path]:
    """(train, dev) paths of a task's embedded default data, generated on first use."""
    folder = Path(root) / task
    folder.mkdir(parents=True, exist_ok=True)
    return DEFAULT_DATA[task](folder)
