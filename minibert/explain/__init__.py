"""`python -m minibert.explain CONCEPT`: small CPU demos, one per concept of the course (see docs/notes.md).

Each demo runs in seconds on a CPU, prints the numbers a learner should look at, and ends with a "=> ..." line that
states what they show. Demos call minibert's OWN code (the model, the optimizer groups, the masking, the loaders),
so what you see is what training does; where a demo needs a wrong version for contrast (the bug), it builds that
locally and says so. `python -m minibert.explain list` shows every concept.

CONCEPTS is the table: CLI name -> (module in this package, function, title). A demo is a function
`demo(ctx: DemoContext) -> dict`: it prints, and returns its key numbers so tests/test_explain.py can check them.
Modules are imported only when one of their demos runs, so a demo that needs pretrain/ or finetune/ never slows
down the others.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .common import DemoContext


@dataclass(frozen=True)
class Concept:
    name: str  # what you type: python -m minibert.explain NAME
    module: str  # minibert/explain/<module>.py
    function: str  # the demo function in it
    title: str  # Chinese term, English term


CONCEPTS = (
    # what goes in: tokens, segments, labels
    Concept("wordpiece", "inputs", "wordpiece", "分词 WordPiece tokenization"),
    Concept("token_type_ids", "inputs", "token_type_ids", "段嵌入 token_type_ids / segment embeddings"),
    Concept("ignore_index", "inputs", "ignore_index", "标签 -100 / ignore_index"),
    Concept("device_side_assert", "inputs", "device_side_assert", "设备端断言 device-side assert: debug on the CPU"),
    Concept("segments", "questions_finetune", "segments", "段 two or three segments, t1 + '[SEP]' + t2"),
    Concept("chinese_ner_wordpiece", "questions_finetune", "chinese_ner_wordpiece",
            "中文 NER 与 WordPiece: per character, iphone ##12"),
    # the model
    Concept("attention_mask", "model_parts", "attention_mask", "注意力掩码 attention mask and padding"),
    Concept("layer_norm", "model_parts", "layer_norm", "层归一化 LayerNorm"),
    Concept("pre_post_ln", "model_parts", "pre_post_ln", "后置/前置层归一化 post-LN vs pre-LN"),
    Concept("tied_decoder", "model_parts", "tied_decoder", "绑定解码器 tied MLM decoder"),
    Concept("sparse_mlm", "model_parts", "sparse_mlm", "稀疏 MLM 头 sparse MLM head"),
    Concept("attention_heatmap", "attention_map", "attention_heatmap", "注意力热力图 attention heatmap"),
    Concept("fp16_mask", "precision", "fp16_mask", "混合精度 fp16 attention-mask overflow"),
    Concept("positions_not_input", "questions_model", "positions_not_input", "位置编码 why position is not an input"),
    Concept("heads_together", "questions_model", "heads_together", "多头 the heads are trained together"),
    Concept("train_eval_mode", "questions_model", "train_eval_mode", "train()/eval() and self.training"),
    Concept("causal_vs_bidirectional", "questions_model", "causal_vs_bidirectional",
            "编码器 vs 编码器-解码器 encoder-only vs encoder-decoder"),
    # pretraining
    Concept("mlm_masking", "pretraining", "mlm_masking", "掩码语言模型 MLM masking 80/10/10"),
    Concept("fill_mask", "fill_mask", "fill_mask", "完形填空 fill-mask: the pretrained model's guesses vs the bigram"),
    # the optimizer and the training step
    Concept("weight_decay_groups", "optimizer", "weight_decay_groups", "权重衰减 weight-decay parameter groups"),
    Concept("weight_decay_vs_l2", "optimizer", "weight_decay_vs_l2", "权重衰减 vs L2 正则 weight decay vs L2"),
    Concept("adam_bias_correction", "optimizer", "adam_bias_correction", "Adam 偏差修正 bias correction"),
    Concept("differential_lr", "optimizer", "differential_lr", "差分学习率 differential learning rates"),
    Concept("warmup", "training_step", "warmup", "学习率预热 warmup and decay"),
    Concept("gradient_accumulation", "training_step", "gradient_accumulation", "梯度累积 gradient accumulation"),
    Concept("gradient_clipping", "training_step", "gradient_clipping", "梯度裁剪 gradient clipping"),
    # fine-tuning
    Concept("head_tail_truncation", "long_text", "head_tail_truncation", "长文本截断 head+tail truncation"),
    Concept("hierarchical_positions", "long_text", "hierarchical_positions",
            "层次分解位置编码 hierarchical position embeddings"),
    Concept("global_pointer", "ner", "global_pointer", "全局指针 GlobalPointer with 旋转位置编码 RoPE"),
    Concept("mcc_vs_accuracy", "finetuning", "mcc_vs_accuracy", "马修斯相关系数 MCC vs accuracy"),
    Concept("overfitting", "finetuning", "overfitting", "过拟合 overfitting in the dev loss"),
    Concept("output_shapes", "questions_finetune", "output_shapes", "输出维度 NER [B,T,C] vs sentence [B,C]"),
    Concept("sentence_vector", "questions_finetune", "sentence_vector", "句向量 [CLS] vs pooler vs mean pooling"),
    Concept("weighted_vs_macro_f1", "questions_finetune", "weighted_vs_macro_f1", "加权 vs 宏平均 F1"),
    Concept("crf_mask", "crf", "crf_mask", "条件随机场 CRF with -100: a valid tag AND a mask"),
    Concept("fgm_fp16", "tricks", "fgm_fp16", "对抗训练 FGM under one GradScaler"),
    Concept("focal_loss", "tricks", "focal_loss_demo", "焦点损失 focal loss"),
    Concept("freeze_encoder", "tricks", "freeze_encoder_demo", "冻结编码器 freezing the encoder"),
    # checkpoints
    Concept("tf_name_mapping", "conversion", "tf_name_mapping", "TF→PyTorch 参数名映射 name mapping"),
    Concept("key_drift", "conversion", "key_drift", "键名漂移 checkpoint key drift (bert. prefix, gamma/beta)"),
)


def find(name: str) -> Concept:
    """The concept called `name`, or a ValueError listing the valid names."""
    for concept in CONCEPTS:
        if concept.name == name:
            return concept
    raise ValueError(f"unknown concept {name!r}; valid names: {', '.join(c.name for c in CONCEPTS)} "
                     f"(or `list`)")


def run(name: str, ctx: DemoContext | None = None) -> dict:
    """Run the demo `name` (printing as it goes) and return its key numbers."""
    concept = find(name)
    module = importlib.import_module(f"{__name__}.{concept.module}")
    return getattr(module, concept.function)(ctx or DemoContext())


__all__ = ["CONCEPTS", "Concept", "DemoContext", "find", "run"]
