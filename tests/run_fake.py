"""``python tests/run_fake.py run --model fake …``: the entroprobe CLI with the fake family registered
(for subprocess tests: killing a run, torchrun ranks)."""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    import fake_adapter

    from entroprobe.cli import main

    fake_adapter.register()
    sys.exit(main(sys.argv[1:]))
