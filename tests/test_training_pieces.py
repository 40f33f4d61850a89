"""The pieces both loops share (minibert/training/): the schedule's exact values, layer-wise LR decay, atomic
writes that fail half-way, the precision choice and a precision change on resume. On the CPU: the GPU's answers
are faked where the code asks torch about the hardware."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from minibert import BertConfig, BertForMaskedLM
from minibert.training import io
from minibert.training.checkpoint import gather_rng_states, load_training_state, save_training_state
from minibert.training.device import autocast_dtype, pick_device
from minibert.training.optim import param_groups
from minibert.training.schedule import lr_multiplier


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_the_schedule_peaks_after_warmup_and_halves_midway(kind):
    warmup, total = 4, 24  # decay over 20 steps
    assert [lr_multiplier(s, warmup, total, kind) for s in range(warmup)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_multiplier(warmup, warmup, total, kind) == 1.0  # the decay starts at the peak
    assert lr_multiplier(warmup + 10, warmup, total, kind) == pytest.approx(0.5)  # both are 0.5 half-way
    decay = [lr_multiplier(s, warmup, total, kind) for s in range(warmup, total)]
    assert all(a > b for a, b in zip(decay, decay[1:])) and decay[-1] > 0  # falls every step, never wastes one
    if kind == "cosine":  # flat near both ends, unlike the line
        assert lr_multiplier(warmup + 2, warmup, total, kind) > lr_multiplier(warmup + 2, warmup, total, "linear")


def test_layer_decay_gives_each_depth_its_exact_rate():
    config = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=32)
    groups = param_groups(BertForMaskedLM(config), 1e-3, 0.01, layer_decay=0.5)
    rates = {name: group["lr"] for group in groups for name in group["param_names"]}
    assert rates["bert.encoder.layers.2.ffn.up.weight"] == pytest.approx(1e-3 * 0.5)  # the top layer: lr·d
    assert rates["bert.encoder.layers.0.ffn.up.weight"] == pytest.approx(1e-3 * 0.5 ** 3)  # lr·d^(L−i)
    assert rates["bert.embeddings.word_embeddings.weight"] == pytest.approx(1e-3 * 0.5 ** 4)  # the least


def test_an_atomic_write_that_fails_half_way_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"the previous, complete file")

    def disk_fails(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", disk_fails)  # after the new bytes were written, before the rename
    with pytest.raises(OSError):
        io.atomic_write_bytes(target, b"half of a new file")
    assert target.read_bytes() == b"the previous, complete file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_auto_precision_takes_fp16_where_bf16_is_only_emulated(monkeypatch):
    # A T4 / V100 (sm_75 / sm_70): torch can EMULATE bf16 there, slowly; is_bf16_supported() says True by default.
    def t4(including_emulation: bool = True) -> bool:
        return including_emulation
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", t4)
    assert autocast_dtype(torch.device("cuda"), "auto") == torch.float16  # fp16 + GradScaler, as documented
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # Ampere+
    assert autocast_dtype(torch.device("cuda"), "auto") == torch.bfloat16
    assert autocast_dtype(torch.device("cpu"), "auto") is None
    # torch < 2.4 has no including_emulation keyword, and its answer was already "native only"
    for native in (False, True):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda native=native: native)
        assert autocast_dtype(torch.device("cuda"), "auto") == (torch.bfloat16 if native else torch.float16)


def test_a_numbered_gpu_becomes_the_current_device(monkeypatch):
    """torch.cuda.synchronize() and the bf16 check follow the CURRENT device: a run on cuda:1 that left it at 0
    would time its steps by waiting on GPU 0. (Faked: no GPU needed.)"""
    made_current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    assert pick_device("cuda:1") == torch.device("cuda", 1) and made_current == [torch.device("cuda", 1)]
    pick_device("cuda")  # no number: torch's current device stays what it is
    assert made_current == [torch.device("cuda", 1)]
    with pytest.raises(ValueError, match="only 2 CUDA GPU"):
        pick_device("cuda:2")


def test_a_run_without_a_loss_scale_resumes_into_one_with_it(tmp_path):
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradScaler warns where its device type is not CUDA
        saved_scaler, resumed_scaler = torch.amp.GradScaler("cpu", enabled=False), torch.amp.GradScaler("cpu")
    save_training_state(tmp_path / "ckpt.pt", step=3, model=model, optimizer=optimizer, scheduler=scheduler,
                        scaler=saved_scaler, data_state={}, rng_states=gather_rng_states())
    assert resumed_scaler.is_enabled()  # e.g. a CPU run (fp32) resumed with --device cuda on a T4 (fp16)
    state = load_training_state(tmp_path / "ckpt.pt", model=model, optimizer=optimizer, scheduler=scheduler,
                                scaler=resumed_scaler)
    assert state["step"] == 3 and resumed_scaler.get_scale() == torch.amp.GradScaler("cpu").get_scale()
