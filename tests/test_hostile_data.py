"""Hostile input, part 2: corpora, resume, fine-tuning data, checkpoints and conversion, run in-process through
each CLI's main(argv). Every case ends in exit 0 with valid outputs, or ONE `error:` line with exit code 2."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from hostile import assert_outcome, copy_run, make_corpus, pretrain_argv, run_cli
from safetensors.torch import load_file, save_file

from pretrain.data import prepare_corpus


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny finished pretraining run (2 steps) that resume, --init, finetune and convert cases start from."""
    from pretrain.__main__ import main

    folder = tmp_path_factory.mktemp("shared-run")
    threads = torch.get_num_threads()
    assert main([str(a) for a in pretrain_argv(folder, "run")]) == 0
    torch.set_num_threads(threads)
    return folder / "run"


def write(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


# (id, corpus bytes, words). All refused with exit 2, naming the file.
BAD_CORPORA = [
    ("empty", b"", ["no tokens"]),
    ("header only", b"label\ttext\n", ["no tokens"]),
    ("blank lines", b"\n\n\n", ["no tokens"]),
    ("one document", b"1 2 3 4 5 6 7 8 9\n", ["2 documents"]),
    ("binary", bytes(range(128, 256)) * 4, ["line 1", "not UTF-8"]),
    ("latin-1 line", b"caf\xe9 au lait\nthe cat sat\n" * 3, ["line 1", "UTF-8"]),
    ("short TSV row", b"label\ttext\n1\t5 6 7\n2\n", ["line 3", "field"]),
    ("quoted, broken", b'"label\ttext"\r\n"1\t5 6 7"\r\nstray\t8\r\n', ["line 3", "quoted"]),
    ("quoted, open record", b'"label\ttext"\r\n"1\t5 6 7\r\n', ["line 2"]),
    ("only special tokens", b"[UNK] [UNK]\n[MASK] [CLS] [PAD]\n", ["no token", "but the special ones", "real text"]),
    # read as plain text, its labels and header became the most frequent tokens
    ("a TSV without a text column", b"sentence\tlabel\nthe cat sat\t1\na dog ran\t0\n",
     ["2 tab-separated cells", "'sentence', 'label'", "none is named `text`", "label<TAB>text"]),
    ("Tianchi rows without their header", b"1\t5 6 7\n2\t8 9 5\n", ["none is named `text`", "add `label<TAB>text`"]),
    ("a comma-separated label,text file", b"label,text\n1,5 6 7\n2,8 9 5\n",  # each label glued to a token
     ["'label,text'", "COMMA-separated", "csv.writer"]),
    ("texts without spaces (Chinese)", "北京欢迎你\n上海的天气很好\n广州塔很高\n".encode(),  # one token per document
     ["3 documents average 1.0 token(s)", "(at least 1.5)", "Chinese", "' '.join"]),
    ("CR-only line ends", b"the cat sat\rthe dog ran\ra bird flew\r", ["bare carriage return", "convert them to LF"]),
    ("a tab inside a text", b"label\ttext\n1\t5 6 7\t8 9\n2\t5 6\n",  # "8 9" was dropped unseen
     ["line 2", "3 tab-separated fields, more than the header's 2", "replace it with a space"]),
]


@pytest.mark.parametrize("case_id, data, words", BAD_CORPORA, ids=[c[0] for c in BAD_CORPORA])
def test_bad_corpus_is_refused_naming_file(case_id, data, words, capsys, tmp_path):
    corpus = write(tmp_path / "corpus.txt", data)
    code, _, err = run_cli("pretrain", pretrain_argv(tmp_path, "run", corpus), capsys)
    assert_outcome(code, err, 2, [*words, "corpus.txt"])


@pytest.mark.parametrize("case_id, argv, words", [
    ("missing corpus", ["--corpus", "nope.tsv"], ["nope.tsv"]),
    ("corpus is a folder", ["--corpus", "."], ["not a file"]),
    ("missing vocab", ["--vocab", "nope.txt"], ["nope.txt"]),
    ("--out is a file", ["--out", "afile"], ["afile"]),
    ("--cache-dir is a file", ["--cache-dir", "afile"], ["afile"]),
    ("--resume with nothing", ["--resume"], ["no checkpoint"]),
    ("--init missing", ["--init", "nope"], ["--init", "nope"]),
    ("--out holds a fine-tune", ["--out", "finetuned"], ["holds a fine-tuning run", "another --out"]),
    ("--out holds a fine-tune, --overwrite", ["--out", "finetuned", "--overwrite"], ["holds a fine-tuning run"]),
])
def test_bad_paths_are_one_line(case_id, argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "finetuned").mkdir()
    (tmp_path / "finetuned" / "finetune_config.json").write_text("{}")
    code, _, err = run_cli("pretrain", pretrain_argv(tmp_path, "run", None, *argv), capsys)
    assert_outcome(code, err, 2, words)


def corpus_texts(path, tmp_path):
    corpus = prepare_corpus(path, cache_dir=tmp_path / "c", log=lambda *a: None)
    return corpus, corpus.tokenizer.tokens


def test_bom_crlf_and_quoted_tianchi_are_read_fully(tmp_path, monkeypatch):
    plain = write(tmp_path / "plain.txt", b"\xef\xbb\xbf83 5 6\n7 83 5\n")
    _, tokens = corpus_texts(plain, tmp_path)
    assert "83" in tokens and not any("\ufeff" in t for t in tokens)
    rows = [f"{i % 3}\t" + " ".join(str(7 + (i * j) % 50) for j in range(40)) for i in range(30)]
    clean = write(tmp_path / "clean.tsv", "label\ttext\n" + "\n".join(rows) + "\n")
    # The spreadsheet damage of ../shared/data/tianchi-news/train_set.csv: quotes, CRLF, long records cut in two.
    damaged = ['"label\ttext"'] + [f'"{r}"' for r in rows]
    damaged[5:6] = [damaged[5][:30] + '"', damaged[5][30:-1]]
    write(tmp_path / "damaged.csv", "\r\n".join(damaged) + "\r\n")
    monkeypatch.setattr("pretrain.readers.CHUNK_BYTES", 64)  # records must also rejoin across chunk borders
    a, _ = corpus_texts(clean, tmp_path)
    b, _ = corpus_texts(tmp_path / "damaged.csv", tmp_path)
    assert a.num_docs == b.num_docs == 30 and list(a.tokens) == list(b.tokens)
    # blank lines (trailing ones from an editor, CRLF too) are no documents, in a TSV and in one-per-line text
    blank = write(tmp_path / "blank.tsv", "label\ttext\r\n" + "\r\n\r\n".join(rows) + "\r\n\r\n")
    assert corpus_texts(blank, tmp_path)[0].num_docs == 30
    lines = write(tmp_path / "lines.txt", "\n\n".join(r.split("\t")[1] for r in rows) + "\n\n")
    assert corpus_texts(lines, tmp_path)[0].num_docs == 30


def test_real_damaged_tianchi_file_reads_like_its_repair(tmp_path):
    from conftest import require_shared
    damaged = require_shared("tianchi-news/train_set.csv")
    repaired = require_shared("tianchi-news/train_set.repaired.csv")
    a, b = corpus_texts(damaged, tmp_path)[0], corpus_texts(repaired, tmp_path)[0]
    assert a.num_docs == b.num_docs == 498 and list(a.offsets) == list(b.offsets)


# ---- resume is a contract: (id, extra flags, words); the run copy is resumed with them.
RESUME_CASES = [
    ("new lr", ["--lr", "0.5"], ["--lr 0.001 -> 0.5", "--init"]),
    ("more steps", ["--max-steps", "5"], ["--max-steps 2 -> 5"]),
    ("other seed", ["--seed", "3"], ["--seed"]),
    ("no packing", ["--no-pack"], ["--pack"]),
    ("other model", ["--set", "num_hidden_layers=1"], ["num_hidden_layers 2 -> 1"]),
    ("other corpus, same shape", ["--corpus", "OTHER"], ["corpus", "digest"]),
    ("other vocab, same size", ["--vocab", "SWAPPED"], ["vocab"]),
    ("init and resume", ["--init", "RUN/final"], ["--init", "--resume"]),
]


@pytest.mark.parametrize("case_id, extra, words", RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_resume_refuses_any_change(case_id, extra, words, finished_run, capsys, tmp_path):
    run = copy_run(finished_run, tmp_path)
    other = make_corpus(tmp_path, seed=9)
    tokens = (run / "vocab.txt").read_text(encoding="utf-8").split("\n")
    tokens[-2], tokens[-3] = tokens[-3], tokens[-2]  # the same tokens and size, two IDs swapped
    swapped = write(tmp_path / "swapped_vocab.txt", "\n".join(tokens))
    names = {"OTHER": str(other), "SWAPPED": str(swapped)}
    extra = [names.get(a, a.replace("RUN", str(run))) for a in extra]
    argv = pretrain_argv(finished_run.parent, "x", None, "--out", run, "--resume", *extra)
    code, _, err = run_cli("pretrain", argv, capsys)
    assert_outcome(code, err, 2, words)


def test_resume_allows_cadence_and_init_starts_a_new_run(finished_run, capsys, tmp_path, restore_threads):
    run = copy_run(finished_run, tmp_path)
    argv = pretrain_argv(finished_run.parent, "x", None, "--out", run, "--resume", "--log-every", "5",
                         "--num-threads", "1", "--eval-every", "7")
    assert_outcome(*run_cli("pretrain", argv, capsys)[::2], 0)
    other = make_corpus(tmp_path, seed=9)
    argv = pretrain_argv(tmp_path, "new", other, "--init", run / "final", "--lr", "5e-4")
    assert_outcome(*run_cli("pretrain", argv, capsys)[::2], 0)
    assert (tmp_path / "new" / "final" / "vocab.txt").read_bytes() == (run / "final" / "vocab.txt").read_bytes()


def nan_in_checkpoint(path):
    state = torch.load(path, weights_only=False)
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name].clone()
    state["model"][name].view(-1)[0] = float("nan")
    torch.save(state, path)


@pytest.mark.parametrize("case_id, damage, words", [
    ("truncated checkpoint", lambda p: p.write_bytes(p.read_bytes()[:1000]), ["checkpoint.pt"]),
    ("a NaN weight in the checkpoint", nan_in_checkpoint, ["checkpoint.pt", "NaN/inf", "start a fresh run"]),
    ("text as checkpoint", lambda p: p.write_text('{"step": 3}'), ["checkpoint.pt"]),
    ("empty checkpoint", lambda p: p.write_bytes(b""), ["checkpoint.pt"]),
])
def test_damaged_checkpoint_is_one_line(case_id, damage, words, finished_run, capsys, tmp_path):
    run = copy_run(finished_run, tmp_path)
    damage(run / "checkpoint.pt")
    argv = pretrain_argv(finished_run.parent, "x", None, "--out", run, "--resume")
    assert_outcome(*run_cli("pretrain", argv, capsys)[::2], 2, words)


# ---- conversion and loading: finite weights or nothing
def nan_copy(finished_run, tmp_path):
    src = shutil.copytree(finished_run / "final", tmp_path / "nan-src")
    state = load_file(src / "model.safetensors")
    state["bert.encoder.layers.1.ffn.output.weight" if "bert.encoder.layers.1.ffn.output.weight" in state
          else sorted(state)[3]][0, 0] = float("nan")
    save_file(state, src / "model.safetensors")
    return src


def test_convert_refuses_nan_and_writes_nothing(finished_run, capsys, tmp_path):
    src = nan_copy(finished_run, tmp_path)
    line = assert_outcome(*run_cli("convert", [src, tmp_path / "dst"], capsys)[::2], 2, ["NaN"])
    assert "tensor" in line and not (tmp_path / "dst").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dst")], "no temp folder left behind"


@pytest.mark.parametrize("case_id, argv, words", [
    ("SRC == DST", ["SRC", "SRC"], ["overwrite the original"]),
    ("DST inside SRC's folder", ["SRC/model.safetensors", "SRC"], ["overwrite"]),
    ("missing SRC", ["nope", "DST"], ["nope", "does not exist"]),
    ("JSON as SRC", ["JSON", "DST"], ["not a weight file"]),
    ("DST is a file", ["SRC", "JSON"], ["is a file"]),
    ("hostile pickle", ["PICKLE", "DST"], ["pytorch_model.bin"]),
])
def test_convert_bad_inputs(case_id, argv, words, finished_run, capsys, tmp_path):
    src = shutil.copytree(finished_run / "final", tmp_path / "src")
    (tmp_path / "c.json").write_text("{}")
    evil = tmp_path / "evil"
    evil.mkdir()

    class Boom:
        def __reduce__(self):
            return (print, ("the pickle ran code",))
    torch.save({"w": Boom()}, evil / "pytorch_model.bin")
    names = {"SRC": str(src), "DST": str(tmp_path / "dst"), "JSON": str(tmp_path / "c.json"), "PICKLE": str(evil)}
    argv = [names.get(a.split("/")[0], a.split("/")[0]) + ("/" + a.split("/", 1)[1] if "/" in a else "")
            for a in argv]
    code, out, err = run_cli("convert", argv, capsys)
    assert_outcome(code, err, 2, words)
    assert "the pickle ran code" not in out


def test_two_configs_that_disagree_are_refused(finished_run, capsys, tmp_path):
    # A folder with config.json AND Google's bert_config.json: config.json used to win without a word.
    src = shutil.copytree(finished_run / "final", tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    (src / "bert_config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    line = assert_outcome(*run_cli("convert", [src, tmp_path / "dst"], capsys)[::2], 2,
                          ["config.json and bert_config.json disagree", "hidden_act 'gelu' vs 'relu'"])
    assert "delete the one" in line and not (tmp_path / "dst").exists()
    (src / "bert_config.json").write_text(json.dumps(config))  # the same model twice: fine
    assert run_cli("convert", [src, tmp_path / "dst"], capsys)[0] == 0


def test_convert_ok_honours_umask_and_replaces_only_after_self_check(finished_run, capsys, tmp_path):
    import os
    old = os.umask(0o022)
    try:
        assert_outcome(*run_cli("convert", [finished_run / "final", tmp_path / "dst"], capsys)[::2], 0)
    finally:
        os.umask(old)
    assert (tmp_path / "dst" / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]


def test_loading_nan_weights_names_the_tensor(finished_run, tmp_path):
    from minibert import BertForMaskedLM
    from minibert.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="tensor .* NaN"):
        BertForMaskedLM.from_pretrained(nan_copy(finished_run, tmp_path))


def test_a_vocab_that_does_not_fit_the_corpus_is_refused_before_training(capsys, tmp_path):
    # an ID vocab for a corpus of words: every token would be [UNK], and [UNK] is never masked
    corpus = write(tmp_path / "corpus.txt", b"the cat sat on the mat\n" * 20)
    vocab = write(tmp_path / "ids.txt", b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n1\n2\n3\n")
    for attempt in ("encoded now", "read from the cache"):
        code, _, err = run_cli("pretrain", pretrain_argv(tmp_path, "run", corpus, "--vocab", str(vocab)), capsys)
        assert_outcome(code, err, 2, ["corpus.txt", "100% of its tokens are [UNK]", "ids.txt", "drop --vocab"])
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_vocab_rewritten_in_place_is_encoded_afresh(tmp_path):
    # The encoding cache is keyed by the vocab's BYTES, not its path: the same vocab.txt, edited, must not reuse
    # IDs from the old one.
    corpus_path = write(tmp_path / "c.tsv", "label\ttext\n0\t11 12 13\n0\t12 13 14\n")
    vocab = write(tmp_path / "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n11\n12\n13\n14\n")
    first = prepare_corpus(corpus_path, vocab, cache_dir=tmp_path / "cache", log=lambda message: None)
    write(vocab, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n14\n13\n12\n11\n")  # the same path, the IDs reversed
    second = prepare_corpus(corpus_path, vocab, cache_dir=tmp_path / "cache", log=lambda message: None)
    assert second.directory != first.directory
    assert list(first.tokens[:3]) == [5, 6, 7] and list(second.tokens[:3]) == [8, 7, 6]


def test_an_integer_weight_is_refused_not_cast(finished_run, capsys, tmp_path):
    src = shutil.copytree(finished_run / "final", tmp_path / "src")
    state = load_file(src / "model.safetensors")
    name = sorted(state)[3]
    state[name] = state[name].round().to(torch.int64)  # a damaged file: copy_ used to cast it to 0/±1 "weights"
    save_file(state, src / "model.safetensors")
    line = assert_outcome(*run_cli("convert", [src, tmp_path / "dst"], capsys)[::2], 2, [name, "torch.int64"])
    assert "not a floating-point weight" in line and not (tmp_path / "dst").exists()
