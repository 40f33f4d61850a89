"""Shared test helpers: where the course's real data lives, how to skip without it, and a tiny model config.

Other test files import these names directly (`from conftest import require_shared, tiny_config`): pytest puts
the tests/ folder on sys.path because it has no __init__.py.

Exported:
    REPO_ROOT        the repository root (the folder that holds minibert/)
    SHARED_DATA      ../shared/data seen from the repo root (the course's shared folder; CI has it)
    require_shared   the path of a file/folder under SHARED_DATA, or a pytest skip with a clear reason
    pretrain_args    the CLI arguments of a tiny `python -m pretrain` run on a small generated corpus
    restore_threads  fixture: tests that pass --num-threads get torch's thread count back afterwards
    one_thread       module fixture: tiny-model demo/museum modules run on one thread, then restore the count
    tiny_config      a small BertConfig (H32, L2, N4) for fast CPU tests, with keyword overrides
    seed_torch       autouse fixture: every test starts from torch.manual_seed(0), so failures reproduce
"""

from __future__ import annotations

import os
from pathlib import Path

# Tests must never reach the network: transformers is only a local parity reference, built from a config.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from minibert import BertConfig  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def require_shared(subpath: str) -> Path:
    """Return SHARED_DATA / subpath, or skip the calling test (with the reason) when it is absent."""
    path = SHARED_DATA / subpath
    if not path.exists():
        pytest.skip(f"../shared/data/{subpath} absent: this real-data test needs the course's shared folder "
                    f"(CI has it)")
    return path


def pretrain_args(tmp_path: Path, out: str, tiny: list[str], corpus_seed: int, *extra: str) -> list[str]:
    """Arguments of a tiny pretraining run: a 40-document generated corpus (written once per test), its cache and
    the run's output under tmp_path, the test's TINY model/optimiser flags, then `extra` (later flags win)."""
    from pretrain.corpus import generate_corpus

    corpus = tmp_path / "corpus.tsv"
    if not corpus.exists():
        generate_corpus(corpus, num_docs=40, seed=corpus_seed)
    return ["--corpus", str(corpus), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / out),
            *tiny, *extra]


@pytest.fixture
def restore_threads():
    """`train(--num-threads 1)` changes torch's global thread count; put it back for the tests that follow."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is faster than two on a 2-core machine (no hand-off cost) and keeps timings stable.
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(**overrides) -> BertConfig:
    """A BERT small enough that a forward pass takes milliseconds: V97 H32 L2 N4 (D8) I64 P64, no dropout.

    Dropout is 0 so that train and eval mode give the same numbers unless a test asks for dropout."""
    values = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    values.update(overrides)
    return BertConfig(**values)


@pytest.fixture(autouse=True)
def seed_torch():
    """Seed torch before every test: random inputs and weights are then the same on every run."""
    torch.manual_seed(0)
    yield
