"""bench/anonymise.py: real text -> a Tianchi-shaped integer-ID corpus (the acceptance corpora of issue 10)."""
import json

from bench.anonymise import main


def test_sst2_words_become_ids_in_order_of_first_appearance_and_dev_reuses_them(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nthe film works \t1\nthe plot fails\t0\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nthe new plot\t1\n", encoding="utf-8")
    assert main(["sst2", str(tmp_path / "train.tsv"), str(tmp_path / "out" / "train.tsv")]) == 0
    assert (tmp_path / "out" / "train.tsv").read_text().splitlines() == ["label\ttext", "1\t100 101 102",
                                                                         "0\t100 103 104"]
    assert main(["sst2", str(tmp_path / "dev.tsv"), str(tmp_path / "out" / "dev.tsv"),
                 "--ids", str(tmp_path / "out" / "train.ids.tsv")]) == 0
    assert (tmp_path / "out" / "dev.tsv").read_text().splitlines()[1] == "1\t100 105 103"  # "new" is unseen: 105


def test_cluener_characters_without_whitespace(tmp_path):
    rows = [{"text": "浙商 银行", "label": {}}, {"text": "银行", "label": {}}]
    (tmp_path / "train.json").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                                         encoding="utf-8")
    assert main(["cluener", str(tmp_path / "train.json"), str(tmp_path / "c.tsv")]) == 0
    assert (tmp_path / "c.tsv").read_text().splitlines() == ["label\ttext", "0\t100 101 102 103", "0\t102 103"]
    assert (tmp_path / "c.ids.tsv").read_text(encoding="utf-8").splitlines()[0] == "100\t浙"


def test_reveal_swaps_ids_for_units_in_a_checkpoint_copy_and_keeps_the_weights(tmp_path, capsys):
    (tmp_path / "ids.tsv").write_text("100\t浙\n101\t商\n", encoding="utf-8")
    encoder = tmp_path / "final"
    encoder.mkdir()
    (encoder / "vocab.txt").write_text("[PAD]\n[UNK]\n101\n100\n999\n", encoding="utf-8")
    (encoder / "model.safetensors").write_bytes(b"\x00weights\x01")
    assert main(["reveal", str(encoder), str(tmp_path / "chars"), "--ids", str(tmp_path / "ids.tsv")]) == 0
    # Same order (row i keeps its meaning); an ID missing from the table stays as it is.
    assert (tmp_path / "chars" / "vocab.txt").read_text(encoding="utf-8").splitlines() == \
        ["[PAD]", "[UNK]", "商", "浙", "999"]
    assert (tmp_path / "chars" / "model.safetensors").read_bytes() == b"\x00weights\x01"
    assert (encoder / "vocab.txt").read_text(encoding="utf-8").startswith("[PAD]\n[UNK]\n101")  # source untouched
    assert main(["reveal", str(tmp_path / "nowhere"), str(tmp_path / "x"), "--ids", str(tmp_path / "ids.tsv")]) == 2
    assert "no vocab.txt in" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_malformed_row_or_table_is_one_line_naming_file_and_line(tmp_path, capsys):
    (tmp_path / "sst.tsv").write_text("sentence\tlabel\na fine film\t1\nno label here\n")
    assert main(["sst2", str(tmp_path / "sst.tsv"), str(tmp_path / "out.tsv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sst.tsv line 3: 'no label here' is not sentence<TAB>integer label" in err
    assert main(["cluener", str(tmp_path / "sst.tsv"), str(tmp_path / "out.tsv")]) == 2
    assert "line 1: 'sentence\\tlabel' is not a JSON object" in capsys.readouterr().err
    (tmp_path / "ids.tsv").write_text("100\tfine\nbroken\n")
    assert main(["sst2", str(tmp_path / "sst.tsv"), str(tmp_path / "out.tsv"), "--ids", str(tmp_path / "ids.tsv")]) == 2
    assert "ids.tsv line 2: 'broken' is not ID<TAB>unit" in capsys.readouterr().err
    assert main(["sst2", str(tmp_path / "absent.tsv"), str(tmp_path / "out.tsv")]) == 2  # not a traceback
    assert "absent.tsv: No such file or directory" in capsys.readouterr().err
    assert not (tmp_path / "out.tsv").exists()
    (tmp_path / "good.tsv").write_text("sentence\tlabel\na fine film\t1\n")
    assert main(["sst2", str(tmp_path / "good.tsv"), str(tmp_path / "good.tsv")]) == 2  # its own ID copy over it
    assert "would overwrite source" in capsys.readouterr().err
    assert (tmp_path / "good.tsv").read_text() == "sentence\tlabel\na fine film\t1\n"
    (tmp_path / "empty.tsv").write_text("sentence\tlabel\n")
    assert main(["sst2", str(tmp_path / "empty.tsv"), str(tmp_path / "out.tsv")]) == 2
    assert "no sst2 rows to anonymise" in capsys.readouterr().err and not (tmp_path / "out.tsv").exists()


def test_sst2_wordpiece_pieces_become_ids_and_a_misplaced_flag_is_refused(tmp_path, capsys):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "work", "##s"]) + "\n")
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nThe film works\t1\nworks\t0\n", encoding="utf-8")
    assert main(["sst2", str(tmp_path / "train.tsv"), str(tmp_path / "wp.tsv"), "--wordpiece", str(vocab)]) == 0
    # lower-cased, "works" -> "work" "##s": four units, the second row reuses two of them
    assert (tmp_path / "wp.tsv").read_text().splitlines() == ["label\ttext", "1\t100 101 102 103", "0\t102 103"]
    assert (tmp_path / "wp.ids.tsv").read_text().splitlines()[3] == "103\t##s"
    assert main(["cluener", str(tmp_path / "train.tsv"), str(tmp_path / "c.tsv"), "--wordpiece", str(vocab)]) == 2
    assert "--wordpiece splits SST-2's English words" in capsys.readouterr().err
    assert main(["sst2", str(tmp_path / "train.tsv"), str(tmp_path / "x.tsv"), "--wordpiece", str(tmp_path / "no")]) == 2
    assert "--wordpiece not found" in capsys.readouterr().err and not (tmp_path / "x.tsv").exists()
