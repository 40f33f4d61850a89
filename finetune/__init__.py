"""Fine-tuning a pretrained minibert encoder: `python -m finetune` / `make finetune TASK=cls|pair|ner`.

Reading order: data.py (formats, label validation) -> features.py (tokenize, truncate, align, batch) ->
tasks.py (what differs between tasks) -> prepare.py (data + model) -> train.py (THE loop) -> metrics.py ->
predict.py (reload, predict) -> toy_data.py (embedded default data). Beside them: baseline.py (TF-IDF + LR, the
few-labels subset), cross_validate.py (seeds x folds), probe.py (a linear probe of the frozen layers). See
docs/finetune.md.
"""
