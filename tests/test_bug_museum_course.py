"""The bug museum, course wing: bugs in the course's OWN material (../shared/course/), each re-implemented in its
smallest faithful form (the file and line are cited), shown happening, then shown avoided by minibert. The stories
are in docs/notes.md ("The bug museum"). Needs no file from ../shared: the buggy code is re-written here.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from minibert.heads import BertForSequenceClassification
from minibert.training.device import make_grad_scaler


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def course_create_segments_from_document(document: list, max_segment_length: int) -> list:
    """The logic of Task 6's create_segments_from_document (002-datawhale-task6-bert-pretrain.html, lines 75-90):
    cut points every max_segment_length tokens, plus the document end only when the remainder exceeds half."""
    index = list(range(0, len(document), max_segment_length))
    if len(document) % max_segment_length > max_segment_length / 2:
        index.append(len(document))
    return [document[index[i]:index[i + 1]] for i in range(len(index) - 1)]


def test_task6_segments_lose_whole_documents():
    """Task 6: the last full segment is only closed by a later cut point, so an exact multiple loses it."""
    kept = {n: sum(map(len, course_create_segments_from_document(list(range(n)), 256))) for n in (100, 128, 256, 512)}
    assert kept == {100: 0, 128: 0, 256: 0, 512: 256}  # the bug: short documents vanish, a 512 keeps only half
    # minibert cuts the same documents (pieces of T-2 = 256 tokens between [CLS] and [SEP]).
    from pretrain.batching import segment_documents

    lengths = np.array([100, 128, 256, 512])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for pack in (True, False):
        starts, sizes = segment_documents(offsets, np.arange(4), max_len=258, pack=pack)
        doc = np.searchsorted(offsets, starts, side="right") - 1
        per_doc = np.bincount(doc, weights=sizes, minlength=4)
        assert per_doc.tolist() == lengths.tolist(), pack  # every token of every document is kept


def test_cola_validation_reuses_the_last_training_output(tmp_path):
    """003-bert-finetune-cola.txt, line 373: inside the validation loop, `loss, logits = output[:2]` overwrites the
    fresh dev forward pass with `output` from the LAST TRAINING batch, so every dev batch reports that batch."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 2)
    train = [(torch.randn(4, 8), torch.randint(0, 2, (4,))) for _ in range(3)]
    dev = [(torch.randn(4, 8), torch.randint(0, 2, (4,))) for _ in range(3)]
    for x, y in train:  # the training loop (lines 291-298), reduced to what matters here
        logits = model(x)
        output = (F.cross_entropy(logits, y), logits)
    dev_losses, true_losses = [], []
    with torch.no_grad():
        for x, y in dev:
            logits = model(x)
            (loss, logits) = (F.cross_entropy(logits, y), logits)  # line 367: the right values ...
            true_losses.append(loss.item())
            loss, logits = output[:2]  # line 373: ... thrown away
            dev_losses.append(loss.item())
    assert len(set(dev_losses)) == 1 and dev_losses[0] == pytest.approx(output[0].item())  # the bug
    assert len(set(true_losses)) == 3
    # minibert's evaluate() runs its own forward pass per dev batch: its loss is the mean over the dev examples.
    from finetune.train import evaluate

    prepared, cfg = _tiny_prepared(tmp_path)
    dev_loss, _, _ = evaluate(prepared.model, prepared, cfg, torch.device("cpu"), None)
    prepared.model.eval()
    with torch.no_grad():
        one_by_one = [prepared.model(torch.from_numpy(f.input_ids)[None], labels=torch.tensor([f.label])).loss
                      .item() for f in prepared.dev_features]
    assert dev_loss == pytest.approx(float(np.mean(one_by_one)), rel=1e-5)


def _write_cls_data(folder, rng):
    for name, rows in (("train.tsv", 60), ("dev.tsv", 20)):
        lines = ["label\ttext"]
        for _ in range(rows):
            label = int(rng.integers(2))
            lines.append(f"{label}\t{' '.join(str(7 + label + 2 * int(rng.integers(10))) for _ in range(6))}")
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    tiny_config(vocab_size=64).to_json(folder / "tiny.json")


def _tiny_args(tmp_path, *extra):
    return ["--task", "cls", "--train", str(tmp_path / "train.tsv"), "--dev", str(tmp_path / "dev.tsv"),
            "--init", "random", "--model-config", str(tmp_path / "tiny.json"), "--max-length", "16",
            "--patience", "0", "--no-progress", "--out", str(tmp_path / "run"), *extra]


def _tiny_prepared(tmp_path):
    from finetune.config import parse_config
    from finetune.prepare import prepare

    _write_cls_data(tmp_path, np.random.default_rng(0))
    cfg = parse_config(_tiny_args(tmp_path))
    return prepare(cfg), cfg


def test_total_steps_from_len_loader_with_gradient_accumulation(tmp_path):
    """004-bert-text-classification.txt, line 191: total_steps = len(train_loader) * epochs, while the optimizer and
    the scheduler step only every gradient_accumulation_steps batches (lines 229-231): the linear decay is cut off
    halfway at k=2 and the learning rate never gets near 0."""
    batches, epochs, k, peak = 10, 3, 2, 1e-3
    total_steps = batches * epochs  # the course's formula
    w = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([w], lr=peak)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, (total_steps - s) / total_steps))
    for step in range(batches * epochs):
        if (step + 1) % k == 0:
            optimizer.step()
            scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(peak / 2)  # the bug: it ends at half the peak
    # minibert: steps = ceil(batches / k) per epoch; a real fine-tuning run with k=2 runs its whole schedule, down
    # to 1/(S − w) of the peak at its last step (0 would come at step S), and its log shows the LR each step used.
    from finetune.__main__ import main
    from finetune.config import parse_config
    from minibert.training.schedule import lr_multiplier

    _write_cls_data(tmp_path, np.random.default_rng(0))
    args = _tiny_args(tmp_path, "--epochs", "2", "--batch-size", "8", "--gradient-accumulation", "2",
                      "--warmup-ratio", "0.25")
    assert main(args) == 0
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [row["lr"] for row in logged if "lr" in row]
    T, lr = 2 * math.ceil(math.ceil(60 / 8) / 2), parse_config(args).lr
    w = int(0.25 * T)
    assert lrs == pytest.approx([lr * lr_multiplier(s, w, T) for s in range(T)])
    assert lrs[0] == pytest.approx(lr / w) and lrs[w] == pytest.approx(lr) and lrs[-1] == pytest.approx(lr / (T - w))


def test_clipping_every_micro_batch(tmp_path):
    """004-bert-text-classification.txt, lines 224 and 227: clip_grad_norm_ after EVERY micro-batch's backward, on a
    half-accumulated gradient. Earlier micro-batches get clipped again and again, so the step is not the clipped
    gradient of the whole batch; clipping belongs once, just before optimizer.step()."""
    from finetune.features import Feature, collate
    from finetune.train import accumulate_gradients

    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(), num_labels=3).eval()
    rng = np.random.default_rng(0)
    features = [Feature(rng.integers(5, 97, 8), None, int(rng.integers(3))) for _ in range(16)]
    halves = [collate(features[:8], 0, "class", 3), collate(features[8:], 0, "class", 3)]
    max_norm = 1e-3  # small enough that every clip is active
    scaler = make_grad_scaler(torch.device("cpu"), None)

    def grads():
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    accumulate_gradients(model, [collate(features, 0, "class", 3)], "class", scaler, "cpu", None)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    reference = grads()  # the whole batch's gradient, clipped once
    model.zero_grad(set_to_none=True)
    for half in halves:  # the course: (loss / k).backward(), clip, for every micro-batch
        (model(**half).loss / 2).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    buggy = grads()
    model.zero_grad(set_to_none=True)
    accumulate_gradients(model, halves, "class", scaler, "cpu", None)  # minibert: accumulate all micro-batches, ...
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ... then clip once
    ours = grads()
    cosine = F.cosine_similarity(buggy, reference, dim=0).item()
    assert cosine < 0.99  # the bug: a different DIRECTION, not only a different length
    torch.testing.assert_close(ours, reference, atol=1e-9, rtol=1e-4)
