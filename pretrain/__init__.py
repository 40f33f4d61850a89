"""pretrain: masked-language-model (MLM, 掩码语言模型) pretraining of minibert on anonymised integer-ID corpora.

Reading order:
    corpus.py    the embedded default corpus: a seeded generator of a Tianchi-shaped corpus (`make pretrain`
                 runs on it when no corpus is given)
    data.py      read a corpus, build or load its vocabulary (词表), encode it once into a cached memmap,
                 split documents into train / held-out, the unigram baseline
    batching.py  cut documents into [CLS] piece [SEP] rows (padded or packed), batch, shard per DDP rank,
                 resume from an exact data position
    masking.py   dynamic 80/10/10 masking, fresh at every step
    evaluation.py, baselines.py, diagnostics.py   held-out MLM accuracy next to the count baselines (unigram,
                 bidirectional bigram, ±2 window) and the plateau diagnostics (is the model using context yet?)
    budget.py    --time-budget: the time you have, turned into max_steps (a probe, then again at the growth step)
    clock.py     --time-budget's clock at every log step: a slow last stage is shortened, then a hard stop
    config.py, train.py, __main__.py   the training loop (`python -m pretrain`)
    outputs.py   what a run leaves: the final model, count tables, loss_curve.png, results.json
"""
