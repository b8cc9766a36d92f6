"""sparsam: a Kubernetes operator that trains and serves AI models frugally."""

__version__ = "0.1.0"
