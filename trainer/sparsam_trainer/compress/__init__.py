"""Model compression: distillation, pruning and int8 quantization, measured and gated.

`python -m sparsam_trainer compress` (cli.py) runs `pipeline.compress`, which applies the stages
a TrainingJob's `spec.compression` asks for (spec.py) and measures each one (evaluate.py); the
result is accepted only when its accuracy drop is within `maxAccuracyDrop` (report.py).
"""
