"""Fine-tuning a pretrained minibert encoder: `python -m finetune` / `make finetune TASK=cls|pair|ner`.

Reading order: data.py (formats, label validation) -> features.py (tokenize, truncate, align, batch) ->
tasks.py (what differs between tasks) -> prepare.py (data + model) -> train.py (THE loop) -> metrics.py ->
predict.py (reload, predict) -> toy_data.py (embedded default data). See docs/finetune.md.
"""
