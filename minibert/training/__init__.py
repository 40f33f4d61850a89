"""The pieces both training loops share (pretrain/ and finetune/): optimizer groups, LR schedules, gradient
accumulation weights, atomic checkpoint I/O, device and precision choice, metric logs and MFU."""
