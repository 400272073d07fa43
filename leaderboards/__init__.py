"""paintbench leaderboards (see the README's architecture section)."""
