"""Where the tests find the checkout: its root, the shipped configs and the helper scripts that
some tests run as subprocesses (they live here, beside the other helpers, whatever folder the
test using them is in)."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CONFIGS = ROOT / "configs"
