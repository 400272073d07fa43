"""paintbench trainer (see the README's architecture section)."""
