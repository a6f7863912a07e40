"""Every test runs offline: no hub, no downloads (tiny models are built from config, minilm ships in a package)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
