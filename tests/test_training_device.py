"""Precision choice and a precision change on resume (minibert/training/device.py, checkpoint.py), on the CPU:
the GPU's answers are faked where the code asks torch about the hardware."""

from __future__ import annotations

import warnings

import torch

from minibert.training.checkpoint import gather_rng_states, load_training_state, save_training_state
from minibert.training.device import autocast_dtype


def test_auto_precision_takes_fp16_where_bf16_is_only_emulated(monkeypatch):
    # A T4 / V100 (sm_75 / sm_70): torch can EMULATE bf16 there, slowly; is_bf16_supported() says True by default.
    def t4(including_emulation: bool = True) -> bool:
        return including_emulation
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", t4)
    assert autocast_dtype(torch.device("cuda"), "auto") == torch.float16  # fp16 + GradScaler, as documented
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # Ampere+
    assert autocast_dtype(torch.device("cuda"), "auto") == torch.bfloat16
    assert autocast_dtype(torch.device("cpu"), "auto") is None


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
