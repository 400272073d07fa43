"""One fuzz test per CLI entry point (issue #21, item 10): every command is fed the hostile inputs of the
hardening rounds — links, FIFOs, devices, decompression bombs, YAML alias bombs, deep nesting, NaN and
wrong types in JSON, damaged records, absurd numbers — and must answer with exit 0, 2 or 3, at most
one error line on stderr and no traceback, and write nothing outside its output folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path

import pytest
from test_hardening import bomb_png

from paintbench import cli

DEEP = "x: " + "[" * 200 + "]" * 200 + "\n"
ALIAS_BOMB = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['x'] * 9)}]\n"
                     for p, c in zip(["", "a", "b", "c", "d", "e", "f", "g"], "abcdefgh", strict=True)) \
    + "name: [" + ", ".join(["*h"] * 9) + "]\n"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    """Every hostile input, built once: a dict name -> path (inside `root`)."""
    root = tmp_path_factory.mktemp("hostile")
    h: dict[str, Path] = {"root": root}

    def put(name: str, data: str | bytes) -> Path:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        h[name] = p
        return p

    put("alias.yaml", ALIAS_BOMB)
    put("deep.yaml", DEEP)
    put("latin1.yaml", "name: caf\xe9\n".encode("latin-1"))
    put("nan.json", '{"worlds": {"blocks": {"methods": {"HT-GRPO": {"total": {"mean": NaN, "sd": Infinity}}}}}}')
    put("types.json", json.dumps({"worlds": {"blocks": {"methods": {"HT-GRPO": {"total": "high", "curve": 3}}}}}))
    put("short.json", json.dumps({"worlds": {"blocks": {"seeds": [0], "methods": {"HT-GRPO": {
        "total": {"mean": 0.5, "sd": 0.1, "per_seed": [0.5]}, "curve": {"total": [[0]]}}}}}}))
    put("nested.json", '{"worlds": ' + "[" * 5000 + "]" * 5000 + "}")
    put("bombs/bomb.png", bomb_png())
    put("bombs/junk.png", b"not an image at all")
    h["bombs"] = root / "bombs"
    put("prompts-nonutf8.jsonl", b'{"image": "bomb.png", "prompt": "caf\xe9"}\n')
    put("prompts-longid.jsonl", json.dumps({"image": "bomb.png", "prompt": "p", "id": "x" * 300}) + "\n")
    put("questions.csv", b"item_id,text\n\xff\xfe,broken\n")
    put("longid/prompts.jsonl", json.dumps({"id": "x" * 300, "prompt": "a photo of a circle", "tag": "single_object",
                                            "include": [{"class": "circle", "count": 1}]}) + "\n")
    put("longid.yaml", "name: longid\nversion: 1\nprompts: {format: jsonl, path: longid/prompts.jsonl}\n"
                       "metrics: [shapes-geneval]\n")
    put("answers.json", '{"a": [NaN, {"deep": ' + "[" * 3000 + "]" * 3000 + "}]}")
    for name in ("fifo.yaml", "fifo.json", "fifo.jsonl", "fifo.csv"):
        os.mkfifo(root / name)
        h[name] = root / name
    (root / "devzero.yaml").symlink_to("/dev/zero")
    h["devzero.yaml"] = root / "devzero.yaml"
    suites = root / "suites-alias"
    suites.mkdir()
    shutil.copy(h["alias.yaml"], suites / "bomb.yaml")
    h["suites-alias"] = suites
    fifo_suites = root / "suites-fifo"
    fifo_suites.mkdir()
    os.mkfifo(fifo_suites / "hang.yaml")
    h["suites-fifo"] = fifo_suites
    weights = root / "weights"
    (weights / "UniPercept").mkdir(parents=True)
    (weights / "UniPercept" / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "evil.Model"}}))
    (weights / "UniPercept" / "model.safetensors").write_bytes(struct.pack("<Q", 2**62) + b"{}")
    h["weights"] = weights
    # a finished run, then damaged copies of it
    run = root / "run"
    assert cli.main(["eval", "shapes", "--generator", "shapes-oracle", "--out", str(run), "--limit", "2",
                     "--no-progress"]) == 0
    h["run"] = run
    damaged = {
        "run-nan": lambda r: (r / "results.json").write_text((r / "results.json").read_text().replace(
            '"value": 1.0', '"value": NaN', 1)),
        "run-types": lambda r: (r / "results.json").write_text(json.dumps({"metrics": {"shapes-geneval": "x"}})),
        "run-fifo-results": lambda r: ((r / "results.json").unlink(), os.mkfifo(r / "results.json")),
        "run-scores-garbage": lambda r: (r / "scores" / "shapes-geneval.jsonl").write_text(
            '{"prompt_id": [1], "sample_index": -1, "value": "1e999"}\n'),
        "run-lock-link": lambda r: ((r / ".lock").unlink(missing_ok=True), (r / ".lock").symlink_to(h["alias.yaml"])),
        "run-samples-noimage": lambda r: (r / "samples.jsonl").write_text('{"prompt_id": "00000", "sample_index": 0}\n'),
    }
    for name, damage in damaged.items():
        shutil.copytree(run, root / name, symlinks=True)
        damage(root / name)
        h[name] = root / name
    return h


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under `root`, links not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames + dirnames:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns) if not p.is_dir() else (0, 0)
    return out


CASES: dict[str, list[list[str]]] = {
    "metrics": [["metrics", "--weights-dir", "{weights}"], ["metrics", "--weights-dir", "{fifo.yaml}"],
                ["metrics", "--json", "--weights-dir", "{devzero.yaml}"]],
    "weights": [["weights", "list", "--weights-dir", "{fifo.json}"], ["weights", "path", "unipercept-iqa",
                "--weights-dir", "{weights}"], ["weights", "path", "../../etc/passwd"]],
    "suites": [["suites", "--include-path", "{suites-alias}"], ["suites", "--include-path", "{suites-fifo}"],
               ["suites", "--include-path", "{devzero.yaml}"]],
    "score": [["score", "--metric", "shapes-geneval", "--images", "{bombs}", "--prompts", "{fifo.jsonl}", "--out", "{out}"],
              ["score", "--metric", "shapes-geneval", "--images", "{bombs}", "--prompts", "{prompts-nonutf8.jsonl}",
               "--out", "{out}"],
              ["score", "--metric", "shapes-geneval", "--images", "{bombs}", "--prompts", "{prompts-longid.jsonl}",
               "--out", "{out}"],
              ["score", "--metric", "unipercept-iqa", "--images", "{bombs}", "--weights-dir", "{weights}", "--out", "{out}"],
              ["score", "--metric", "shapes-geneval", "--images", "{devzero.yaml}", "--out", "{out}"]],
    "eval": [["eval", "{alias.yaml}", "--generator", "shapes-oracle", "--out", "{out}"],
             ["eval", "{deep.yaml}", "--generator", "shapes-oracle", "--out", "{out}"],
             ["eval", "{fifo.yaml}", "--generator", "shapes-oracle", "--out", "{out}"],
             ["eval", "{latin1.yaml}", "--generator", "shapes-oracle", "--out", "{out}"],
             ["eval", "{longid.yaml}", "--generator", "shapes-oracle", "--out", "{out}", "--no-progress"],
             ["eval", "shapes", "--generator", "shapes-oracle", "--out", "{copy:run-lock-link}", "--limit", "2", "--no-progress"],
             ["eval", "shapes", "--generator", "shapes-oracle", "--out", "{copy:run-scores-garbage}", "--limit", "2",
              "--no-progress"],
             ["eval", "shapes", "--generator", "shapes-oracle", "--out", "{copy:run-samples-noimage}", "--limit", "2",
              "--no-progress"]],
    "results": [["results", "{run-nan}"], ["results", "{run-types}"], ["results", "{run-fifo-results}"],
                ["results", "{fifo.json}"], ["results", "--json", "{run-nan}"], ["results", "{run-samples-noimage}"]],
    "compare": [["compare", "{run}", "{run-nan}"], ["compare", "{run-types}", "{run}"],
                ["compare", "{run}", "{run-scores-garbage}"], ["compare", "{run}", "{run-fifo-results}"],
                ["compare", "{run}", "{run-samples-noimage}"], ["compare", "{run-lock-link}", "{run}"]],
    "train": [["train", "{alias.yaml}", "--out", "{out}"], ["train", "{deep.yaml}", "--out", "{out}"],
              ["train", "{fifo.yaml}", "--out", "{out}"], ["train", "shapes-tiny", "lr=1e300", "--out", "{out}"],
              ["train", "shapes-tiny", "policy_options=[1,2]", "--out", "{out}"],
              ["train", "shapes-tiny", "steps=1", "warmstart_steps=0", "--out", "{copy:run-lock-link}", "--quiet"],
              ["train", "shapes-tiny", "prompts={fifo.jsonl}", "--out", "{out}"],
              ["train", "plan", "{alias.yaml}", "--gpus", "8"], ["train", "plan", "shapes-tiny", "--gpus", "-3"],
              ["train", "plan", "shapes-tiny", "--gpus", "2", "--gpu-memory", "lots"],
              ["train", "plan", "shapes-tiny", "policy=mmada", "policy_path={fifo.yaml}", "--gpus", "2"],
              ["train", "plan", "shapes-tiny", "policy=mmada", "policy_path={weights}", "--gpus", "2"],
              ["train", "plan"], ["train", "export", "{fifo.json}", "--out", "{out}"],
              ["train", "export", "{run}", "--out", "{out}"], ["train", "export"],
              ["train", "shapes-tiny", "prompts={fifo.jsonl}", "reward_ranks=[-1]", "--dry-run"],
              ["train", "shapes-tiny", "parallel=zero3", "--dry-run"]],
    "leaderboard": [["leaderboard", "--experiment", "{nan.json}", "--out", "{out}"],
                    ["leaderboard", "--experiment", "{types.json}", "--out", "{out}"],
                    ["leaderboard", "--experiment", "{short.json}", "--out", "{out}"],
                    ["leaderboard", "--experiment", "{nested.json}", "--out", "{out}"],
                    ["leaderboard", "--experiment", "{fifo.json}", "--out", "{out}"],
                    ["leaderboard", "{run-nan}", "--out", "{out}"], ["leaderboard", "{run-types}", "--out", "{out}"],
                    ["leaderboard", "{run-scores-garbage}", "--out", "{out}"],
                    ["leaderboard", "{run-samples-noimage}", "--out", "{out}"],
                    ["leaderboard", "{run}", "--out", "{fifo.json}"]],
    "dpg": [["dpg", "eval", "--questions", "{questions.csv}", "--images", "{bombs}", "--resolution", "24", "--out", "{out}"],
            ["dpg", "eval", "--questions", "{fifo.csv}", "--images", "{bombs}", "--resolution", "24", "--out", "{out}"],
            ["dpg", "rescore", "--questions", "{questions.csv}", "--answers", "{answers.json}", "--out", "{out}"],
            ["dpg", "rescore", "--questions", "{fifo.csv}", "--answers", "{fifo.json}", "--out", "{out}"]],
    "serve": [["serve", "no-such-metric"], ["serve", "shapes-geneval", "--host", "0.0.0.0"],
              ["serve", "shapes-geneval", "--host", "0.0.0.0", "--token-file", "{fifo.json}"],
              ["serve", "shapes-geneval", "--token-file", "{devzero.yaml}"], ["serve", "shapes-geneval", "--port", "0"],
              ["serve", "shapes-geneval", "--option", "nonsense"], ["serve", "shapes-geneval", "--device", "cuda"],
              ["serve", "shapes-geneval", "--replicas", "-1"]],
    "geneval": [["geneval", "{bombs}", "--out", "{out}", "--weights-dir", "{weights}"],
                ["geneval", "{fifo.json}", "--out", "{out}"]],
}


def test_every_cli_command_has_a_fuzz_case():
    assert set(CASES) == set(cli.COMMANDS)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("command", sorted(CASES))
def test_hostile_inputs_give_exit_0_2_or_3_one_line_and_write_nothing_outside_out(command, hostile, tmp_path, capsys):
    before = snapshot(hostile["root"])
    failures = []
    for i, template in enumerate(CASES[command]):
        out = tmp_path / f"out{i}"

        def fill(m: re.Match, out: Path = out) -> str:
            name = m.group(1)
            if name == "out":
                return str(out)
            if name.startswith("copy:"):   # a damaged run used as --out: worked on in a copy
                shutil.copytree(hostile[name[5:]], out, symlinks=True)
                return str(out)
            return str(hostile[name])

        argv = [re.sub(r"\{([^}]+)\}", fill, a) for a in template]
        code = cli.main(argv)
        err = capsys.readouterr().err
        errors = [ln for ln in err.splitlines() if ": error: " in ln]
        if code not in (0, 2, 3) or "Traceback" in err or len(errors) > 1 or (code == 2 and len(errors) != 1):
            failures.append(f"{' '.join(template)} -> exit {code}, {len(errors)} error lines: {err[-400:]!r}")
    after = snapshot(hostile["root"])
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)
                     and not k.endswith(".lock") and "/.lock" not in k)
    assert not failures, "\n".join(failures)
    assert not changed, f"{command} wrote outside its output folder: {changed[:10]}"
