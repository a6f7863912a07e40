"""entroprobe: layer-wise matrix-based Rényi entropy probing of models' prompts and responses."""

__version__ = "0.1.0"
