"""Code that runs inside sparsam's pods: training, checkpoints, compression, serving."""
