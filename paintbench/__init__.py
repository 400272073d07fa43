"""paintbench: evaluation-first benchmark harness for text-to-image models (CLI and shared plumbing)."""

__version__ = "0.1.0"
