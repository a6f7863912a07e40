"""``python tests/run_fake.py run --model fake …``: the entroprobe CLI with the fake family registered
(for subprocess tests: killing a run, torchrun ranks)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import fake_adapter  # noqa: E402

from entroprobe.cli import main  # noqa: E402

fake_adapter.register()
sys.exit(main(sys.argv[1:]))
