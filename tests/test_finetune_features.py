"""Fine-tuning inputs (finetune/data.py, finetune/features.py, finetune/tasks.py): column formats, truncation,
NER labels on first sub-tokens (-100 elsewhere), bucketed batches, pair segments, multi-label rows, BIO decoding."""

import csv

import numpy as np
import pytest
import torch

from finetune.data import FORMATS, read_tsv
from finetune.features import Feature, bucketed_batches, collate, encode_ner, longest_first, truncate


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ---- column formats --------------------------------------------------------------------------------------------------

def test_column_formats_cola_and_sst2(tmp_path):
    cola = read_tsv(write(tmp_path / "cola.tsv", "gj04\t1\t\tOur friends won't buy this.\ngj04\t0\t*\tThe more.\n"),
                    FORMATS["cola"])
    assert [(e.label, e.text) for e in cola] == [(1, "Our friends won't buy this."), (0, "The more.")]
    sst = read_tsv(write(tmp_path / "sst.tsv", "sentence\tlabel\nhide new secretions \t0\n"), FORMATS["sst2"])
    assert (sst[0].label, sst[0].line) == (0, 2)


# ---- truncation ------------------------------------------------------------------------------------------------------
def test_truncation_modes():
    ids = np.arange(100)
    assert truncate(ids, 10, "head").tolist() == list(range(10))
    assert truncate(ids, 10, "tail").tolist() == list(range(90, 100))
    assert truncate(ids, 12, "head+tail").tolist() == [0, 1, 2] + list(range(91, 100))  # 1/4 head, 3/4 tail
    kept = truncate(np.arange(300), 110, "head+tail")  # round(110·128/510) = 28 head tokens (int() gives 27)
    assert kept[:28].tolist() == list(range(28)) and kept[28] == 300 - 82 and len(kept) == 110
    assert truncate(np.arange(1000), 510, "head+tail")[127:129].tolist() == [127, 1000 - 382]  # Sun et al.: 128+382
    assert truncate(ids[:5], 10, "head+tail").tolist() == list(range(5))  # short texts are untouched
    with pytest.raises(ValueError, match="--truncate"):
        truncate(ids, 10, "middle")


def test_longest_first_matches_the_token_by_token_loop():
    rng = np.random.default_rng(0)
    for _ in range(300):
        a, b, budget = (int(v) for v in rng.integers(0, 40, 3))
        loop_a, loop_b = a, b
        while loop_a + loop_b > budget:
            if loop_a > loop_b:
                loop_a -= 1
            else:
                loop_b -= 1
        assert longest_first(a, b, budget) == (loop_a, loop_b)


# ---- NER label alignment ---------------------------------------------------------------------------------------------
class SplittingTokenizer:
    """A stand-in tokenizer where 'X' splits into two sub-tokens and ' ' into none (as WordPiece may)."""
    pad_id, unk_id, cls_id, sep_id = 0, 1, 2, 3

    def encode_ids_batch(self, texts):
        table = {"X": [10, 11], " ": []}
        return [np.array(table.get(t, [20 + ord(t) % 50]), np.int32) for t in texts]


def test_ner_labels_sit_on_first_sub_tokens_with_minus_100_elsewhere():
    from finetune.ner_data import NerExample
    example = NerExample("aX b", [("name", 0, 1), ("company", 3, 3)])  # 'aX' is a name, 'b' a company
    tokenizer = SplittingTokenizer()
    (bio,) = encode_ner(tokenizer, [example], max_length=32, types=["company", "name"], scheme="bio")
    # tokens: [CLS] a X1 X2 [UNK](space) b [SEP]
    assert bio.input_ids.tolist() == [2, 20 + ord("a") % 50, 10, 11, 1, 20 + ord("b") % 50, 3]
    # tags: O=0, B-company=1, I-company=2, B-name=3, I-name=4
    assert bio.label.tolist() == [-100, 3, 4, -100, 0, 1, -100]
    assert bio.token_to_char.tolist() == [-1, 0, 1, -1, 2, 3, -1]
    (spans,) = encode_ner(tokenizer, [example], max_length=32, types=["company", "name"], scheme="spans")
    assert spans.label.tolist() == [[1, 1, 2], [0, 5, 5]]  # (type, first token of start, first token of end)
    batch = collate([bio, Feature(np.array([2, 5, 3]), None, np.array([-100, 0, -100]))], 0, "tags", 5)
    assert batch["labels"][1].tolist() == [-100, 0, -100] + [-100] * 4  # padding is -100 too


def test_ner_truncation_drops_cut_entities_from_training_labels():
    from finetune.ner_data import NerExample
    example = NerExample("abcdef", [("name", 1, 2), ("name", 3, 5)])
    (f,) = encode_ner(SplittingTokenizer(), [example], max_length=6, types=["name"], scheme="spans")
    assert len(f.input_ids) == 6 and f.label.tolist() == [[0, 2, 3]]  # only the entity that fits
    (bio,) = encode_ner(SplittingTokenizer(), [example], max_length=6, types=["name"], scheme="bio")
    # a b c d kept: "bc" is B/I-name; "d" starts the cut entity "def", so it is left out (-100), not taught as O
    assert bio.label.tolist() == [-100, 0, 1, 2, -100, -100]


# ---- batching --------------------------------------------------------------------------------------------------------
def test_bucketed_batches_cover_every_example_once_with_similar_lengths():
    lengths = np.random.default_rng(0).integers(5, 500, 1000)
    batches = bucketed_batches(lengths, 16, shuffle=True, seed=1, bucket_batches=10)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    random_spread = np.mean([np.ptp(lengths[i:i + 16]) for i in range(0, 1000, 16)])
    assert spread < random_spread / 4
    assert bucketed_batches(lengths, 16, shuffle=True, seed=2)[0].tolist() != batches[0].tolist()


# ---- pairs and multi-label rows through the same code paths ----------------------------------------------------------
def test_pair_features_have_segments_and_longest_first_truncation(tmp_path):
    from finetune.features import encode_texts
    from minibert.tokenizers import WhitespaceTokenizer
    tsv = write(tmp_path / "pair.tsv", "label\ttext_a\ttext_b\n1\ta b c d e f\tx y\n")
    examples = read_tsv(tsv, FORMATS["pair"])
    tokenizer = WhitespaceTokenizer.build(["a b c d e f x y"])
    (f,) = encode_texts(tokenizer, examples, max_length=8, truncate_mode="head")  # 5 text tokens fit
    tokens = tokenizer.convert_ids_to_tokens(f.input_ids)
    assert tokens == ["[CLS]", "a", "b", "c", "[SEP]", "x", "y", "[SEP]"]
    assert f.token_type_ids.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert collate([f], tokenizer.pad_id, "class", 2)["token_type_ids"].tolist() == [[0, 0, 0, 0, 0, 1, 1, 1]]


def test_multi_label_rows_become_multi_hot_and_thresholded_predictions(tmp_path):
    from finetune.tasks import TaskSpec, decode
    tsv = write(tmp_path / "m.tsv", "label\ttext\n0,2\t5 6\n1\t7\n")
    examples = read_tsv(tsv, FORMATS["tianchi"], multi_label=True)
    assert [e.label for e in examples] == [[0, 2], [1]]
    features = [Feature(np.array([2, 9, 3]), None, e.label) for e in examples]
    assert collate(features, 0, "multi", 3)["labels"].tolist() == [[1, 0, 1], [0, 1, 0]]
    spec = TaskSpec("cls", "tianchi", "multi", 3, ["0", "1", "2"], "micro_f1", ("classifier",))
    predicted = decode(spec, torch.tensor([[2.0, -1.0, 0.5], [-3.0, -2.0, -1.0]]), features, 0.5)
    assert predicted == [[0, 2], []]
    # Written out, the empty set is a row of its own (""), not a blank line a CSV reader skips: rows stay aligned.
    from finetune.tasks import write_predictions
    write_predictions(spec, tmp_path / "predictions.csv", examples, predicted + [[1]])
    with open(tmp_path / "predictions.csv", newline="") as f:
        assert [row["label"] for row in csv.DictReader(f)] == ["0,2", "", "1"]


def test_bio_decoding_to_entities():
    from finetune.tasks import bio_to_entities
    # tags: O=0, B-a=1, I-a=2, B-b=3, I-b=4
    tags = np.array([1, 2, 0, 3, 4, 4, 2, 0, 4, 1])
    assert bio_to_entities(tags, ["a", "b"]) == {("a", 0, 1), ("b", 3, 5), ("a", 9, 9)}  # stray I-tags ignored


def test_span_decoding_skips_spans_that_end_on_a_special_or_a_continuation_piece():
    from finetune.tasks import TaskSpec, decode

    spec = TaskSpec("ner", "cluener", "spans", 1, ["name"], "f1", ("ner",))
    # [CLS] 王 ##x 明 [SEP]: token 2 continues character 0's word, tokens 0 and 4 are specials
    to_char = np.array([-1, 0, -1, 1, -1])
    scores = torch.full((1, 1, 5, 5), -10.0)  # [B, types, T, T]
    scores[0, 0, 1, 3] = 5.0  # a real span: characters 0-1
    scores[0, 0, 1, 4] = scores[0, 0, 0, 3] = scores[0, 0, 1, 2] = 5.0  # ends on [SEP], starts on [CLS], ends on ##x
    predicted = decode(spec, scores, [Feature(np.arange(5), None, None, to_char)], 0.5)
    assert predicted == [{("name", 0, 1)}]
