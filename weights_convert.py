"""Convert a BERT checkpoint (Google TF, Hugging Face or minibert) to minibert's or Hugging Face's layout.

    python weights_convert.py SRC DST [--to minibert|hf] [--model auto|base|mlm|pretraining|cls|tokens] [--verbose]
    make convert SRC=downloads/uncased_L-4_H-256_A-4 DST=checkpoints/bert-mini

SRC is detected, never named: a TF checkpoint (prefix, `.index` file or its folder, read WITHOUT TensorFlow),
or a folder with model.safetensors / pytorch_model.bin (minibert or HF names). SRC needs its config
(config.json or bert_config.json) and vocabulary (vocab.txt or tokenizer.json) beside it.

Steps: load into a minibert model (printing the coverage report: where every tensor went, or why it was
skipped), write DST, then self-check: a fixed input through the loaded model gives finite outputs, and DST
read back gives the same outputs. Everything is written into a temporary folder beside DST that is renamed to DST
only after the self-check passes, so DST is replaced as a whole: a DST that is, or holds, SRC, or holds files a
conversion does not write, is refused. A bad input prints ONE line and exits with status 2 (`--debug` shows the
traceback); every source tensor must be finite.
"""

import sys
from pathlib import Path

import torch

from minibert import BertForMaskedLM, BertForPreTraining, BertModel
from minibert.heads import BertForSequenceClassification, BertForTokenClassification
from minibert.checkpoint import CheckpointError, from_pretrained, load_pretrained, open_source, save_pretrained
from minibert.checkpoint.convert import canonical_source_name, parts_present
from minibert.checkpoint.hf_io import WEIGHT_FILES
from minibert.checkpoint.pretrained import CONFIG_FILES, VOCAB_FILES, json_object, saved_head_settings
from minibert.cli import OneLineParser, run_cli
from minibert.training.io import staging_folder

MODEL_CLASSES = {"base": BertModel, "mlm": BertForMaskedLM, "pretraining": BertForPreTraining,
                 "cls": BertForSequenceClassification, "tokens": BertForTokenClassification}
OUTPUT_FILES = {*CONFIG_FILES, *VOCAB_FILES, *WEIGHT_FILES}  # what an earlier conversion's DST may hold


def check_destination(src: Path, dst: Path) -> None:
    """DST is replaced as a whole (staging_folder), so it must be new or an earlier conversion's output: a folder
    holding anything else, the source above all, would be deleted with it."""
    source_folder = src if src.is_dir() else src.parent
    if dst.resolve() == source_folder.resolve() or dst.resolve() == src.resolve():
        raise CheckpointError(f"DST {dst} is the source's own folder: converting in place would overwrite the "
                              f"original; pass another output folder")
    if dst.exists() and not dst.is_dir():
        raise CheckpointError(f"DST {dst} is a file; pass a folder path")
    if dst.resolve() in source_folder.resolve().parents:
        raise CheckpointError(f"DST {dst} contains the source {src}: replacing it would delete the source; pass "
                              f"a new output folder")
    others = sorted(p.name for p in dst.iterdir() if p.name not in OUTPUT_FILES) if dst.is_dir() else []
    if others:
        raise CheckpointError(f"DST {dst} holds {others[:3]}{' ...' if len(others) > 3 else ''}, which a "
                              f"conversion's output never does: it replaces DST as a whole; pass a new folder")


def choose_model(name: str, src: str) -> tuple[type, dict]:
    """The minibert class (and its head's arguments) that --model names. auto keeps every head the source has:
    a classifier -> cls (tokens when its config.json's architectures or its finetune.json says token
    classification), else NSP -> pretraining, else MLM -> mlm, else base."""
    source = open_source(src)
    parts = parts_present(source.shapes, source.format)
    if name == "auto":
        architectures = json_object(source.config_path).get("architectures") or []
        spec = json_object(source.path.parent / "finetune.json").get("spec")  # a fine-tuning run's best/ folder
        token_level = ("BertForTokenClassification" in architectures
                       or isinstance(spec, dict) and spec.get("label_kind") == "tags")
        name = (("tokens" if token_level else "cls") if "classifier" in parts else "pretraining" if "nsp" in parts
                else "mlm" if "mlm" in parts else "base")
    if name not in ("cls", "tokens"):
        return MODEL_CLASSES[name], {}
    weights = [shape for tensor, shape in source.shapes.items()
               if canonical_source_name(tensor, source.format) in ("classifier.weight", "output_weights")]
    if not weights:
        raise CheckpointError(f"--model {name}: {source.path} holds no classifier (classifier.weight or TF "
                              f"output_weights); use --model auto")
    kwargs = {"num_labels": weights[0][0]}  # classifier weight [C,H]
    if name == "cls":
        kwargs.update(saved_head_settings(source))
        if "representation" not in kwargs:  # a minibert classifier saved before it was recorded
            if "pooler" not in parts:
                raise CheckpointError(f"{source.path} does not record which representation its classifier reads "
                                      f"([CLS] or mean): load it in Python with from_pretrained("
                                      f"BertForSequenceClassification, ..., representation=...) and save it again")
            kwargs["representation"] = "pooler"
    return MODEL_CLASSES[name], kwargs


def fixed_outputs(model) -> list:
    """The model's output tensors for a fixed batch of 2×8 token IDs (the second row padded)."""
    vocab_size = model.config.vocab_size
    input_ids = (torch.arange(16).reshape(2, 8) * 7 + 1) % vocab_size  # [B,T] = [2,8]
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0  # padding: exercises the attention mask
    with torch.no_grad():
        out = model.eval()(input_ids, attention_mask=attention_mask)
    return [v for v in vars(out).values() if isinstance(v, torch.Tensor)]


def self_check(model, model_cls, head_arguments: dict, dst: str) -> str:
    """Finite outputs, and the written DST reloads to the same outputs."""
    before = fixed_outputs(model)
    if not all(torch.isfinite(t).all() for t in before):
        raise CheckpointError("self-check failed: the converted model gives non-finite outputs on a fixed input; "
                              "the source weights are probably corrupt")
    after = fixed_outputs(from_pretrained(model_cls, dst, **head_arguments))
    if not all(torch.equal(a, b) for a, b in zip(before, after)):
        raise CheckpointError(f"self-check failed: {dst} read back gives different outputs than the converted model")
    largest = max(t.abs().max().item() for t in before)
    return f"self-check: fixed 2x8 input -> outputs finite (max |value| {largest:.4g}); {dst} reloads identically"


def convert(argv: list[str]) -> int:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="TF checkpoint prefix/.index/folder, or a minibert/HF folder")
    parser.add_argument("dst", help="output folder: new, or an earlier conversion's output (it is replaced)")
    parser.add_argument("--to", choices=("minibert", "hf"), default="minibert", help="output layout")
    parser.add_argument("--model", choices=("auto",) + tuple(MODEL_CLASSES), default="auto",
                        help="which minibert model to build: auto keeps every head the source has (a classifier: cls, or tokens "
                             "for a token classifier; NSP: pretraining; MLM: mlm; else base)")
    parser.add_argument("--verbose", action="store_true", help="list every tensor in the coverage report")
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback too")
    args = parser.parse_args(argv)
    src, dst = Path(args.src), Path(args.dst)
    check_destination(src, dst)
    model_cls, head_arguments = choose_model(args.model, args.src)
    result = load_pretrained(model_cls, args.src, require_vocab=True, **head_arguments)  # refuses NaN/inf weights
    print(f"{result.source.format} checkpoint {result.source.path} -> minibert {model_cls.__name__}")
    print(result.report.format(verbose=args.verbose))
    # Write into a temporary sibling folder and rename it into place only after the self-check: a failed or
    # killed conversion never leaves a complete-looking (but wrong) model in DST.
    with staging_folder(dst) as staging:
        save_pretrained(result.model, staging, format=args.to, vocab=result.source.vocab_path)
        print(self_check(result.model, model_cls, head_arguments, staging).replace(str(staging), str(dst)))
    print(f"wrote {args.to} layout to {dst}")
    return 0


def main(argv=None) -> int:
    """Exit codes: 0 converted and self-checked, 1 failed while running, 2 bad input (see minibert/cli.py)."""
    return run_cli(convert, argv)


if __name__ == "__main__":
    sys.exit(main())
