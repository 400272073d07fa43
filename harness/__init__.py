"""paintbench harness (see the README's architecture section)."""
