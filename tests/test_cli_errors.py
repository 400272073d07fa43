"""The CLI's error contract: a `UserError` is one line and exit 2; anything else is a bug and keeps its
traceback (a user's own generator included); `--debug` / `PAINTBENCH_DEBUG=1` shows every traceback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from paintbench import cli
from paintbench.errors import InputError, MissingFileError, UnknownNameError, UserError


def _run(*args: str, env: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paintbench", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


def test_a_user_error_is_one_line_and_exit_2():
    out = _run("score", "--metric", "no-such-metric", "--images", "/nonexistent", "--out", "/tmp/x")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paintbench score: error: unknown metric 'no-such-metric'")


def test_debug_shows_the_traceback_of_a_user_error():
    for extra, env in ((["--debug"], None), ([], {"PAINTBENCH_DEBUG": "1"})):
        out = _run(*extra, "score", "--metric", "no-such-metric", "--images", "/nonexistent", "--out", "/tmp/x", env=env)
        assert out.returncode == 1
        assert "Traceback" in out.stderr and "UnknownMetricError" in out.stderr


def test_a_bug_in_a_users_generator_keeps_its_traceback(tmp_path):
    (tmp_path / "buggy.py").write_text(textwrap.dedent("""
        def generate(prompts, seeds, size):
            return [1 / 0 for _ in prompts]
    """))
    out = _run("eval", "shapes", "--generator", "python:buggy:generate", "--limit", "1", "--out",
               str(tmp_path / "run"), env={"PYTHONPATH": str(tmp_path)}, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "Traceback" in out.stderr and "ZeroDivisionError" in out.stderr
    assert 'buggy.py", line 3' in out.stderr  # the user's own line, not a summary of it
    assert "rerun the same command to resume" in out.stderr


@pytest.mark.parametrize("exc", [ValueError("bad internal value"), KeyError("missing"), FileNotFoundError("x")])
def test_a_builtin_exception_from_the_code_is_a_bug_not_a_usage_error(monkeypatch, exc):
    """Before, every ValueError/KeyError/OSError became a one-line 'error', hiding internal failures."""
    from paintbench.commands import results

    def boom(args):
        raise exc

    monkeypatch.setattr(results, "run", boom)
    with pytest.raises(type(exc)):
        cli.main(["results", "somewhere"])


def test_domain_errors_are_user_errors_and_keep_their_builtin_types():
    from paintbench.metrics.dpg.questions import DPGError
    from paintbench.metrics.images import BadImageError
    from paintbench.metrics.registry import UnknownMetricError
    from paintbench.metrics.weights import MissingWeightsError

    assert issubclass(DPGError, InputError) and issubclass(DPGError, ValueError)
    assert issubclass(BadImageError, InputError)
    assert issubclass(MissingWeightsError, MissingFileError) and issubclass(MissingWeightsError, FileNotFoundError)
    assert issubclass(UnknownMetricError, UnknownNameError) and issubclass(UnknownMetricError, KeyError)
    assert str(UnknownNameError("plain sentence")) == "plain sentence"  # not KeyError's quoted repr


def test_disk_full_and_permission_errors_are_one_line(monkeypatch, capsys):
    from paintbench.commands import results

    for code in (errno.ENOSPC, errno.EACCES):
        def boom(args, code=code):
            raise OSError(code, os.strerror(code), "/runs/x/results.json")

        monkeypatch.setattr(results, "run", boom)
        assert cli.main(["results", "somewhere"]) == 2
        err = capsys.readouterr().err
        assert err.strip() == f"paintbench results: error: /runs/x/results.json: {os.strerror(code)}"


def test_user_message_is_none_for_bugs():
    assert cli.user_message(UserError("fix me")) == "fix me"
    assert cli.user_message(RuntimeError("bug")) is None
    assert cli.user_message(FileNotFoundError(errno.ENOENT, "No such file", "/x")) is None


def test_record_text_cannot_drive_the_terminal(tmp_path):
    """A category name with escape sequences set the terminal title and faked a '100.00 %' line."""
    import json

    out = _run("eval", "shapes", "--generator", "shapes-oracle", "--limit", "2", "--out", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    m = res["metrics"]["shapes-geneval"]
    evil = "colors\x1b]0;pwned\x07\r\x1b[2Kfake 100.00 %"
    m["categories"][evil] = m["categories"].pop(next(iter(m["categories"])))
    (tmp_path / "r" / "results.json").write_text(json.dumps(res))
    for args in (["results", str(tmp_path / "r")], ["results", str(tmp_path / "r"), "--json"]):
        shown = _run(*args)
        assert shown.returncode == 0, shown.stderr
        assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout and "\r" not in shown.stdout
        assert "\\u001b]0;pwned" in shown.stdout
    assert json.loads(_run("results", str(tmp_path / "r"), "--json").stdout)  # JSON output stays valid JSON


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this checks a machine without CUDA")
@pytest.mark.parametrize("command", [
    ["score", "--metric", "aesthetic", "--images", "IMGS", "--out", "OUT"],
    ["geneval", "IMGS", "--out", "OUT"],
    ["eval", "shapes", "--generator", "shapes-oracle", "--limit", "1", "--out", "OUT"],
    ["train", "shapes-tiny", "--out", "OUT", "steps=1", "warmstart_steps=0"],
])
def test_device_cuda_without_a_gpu_is_one_clear_line_for_every_command(tmp_path, command):
    from PIL import Image

    imgs = tmp_path / "imgs"
    (imgs / "00000" / "samples").mkdir(parents=True)
    (imgs / "00000" / "metadata.jsonl").write_text('{"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a cat"}')
    Image.new("RGB", (32, 32)).save(imgs / "00000" / "samples" / "00000.png")
    Image.new("RGB", (32, 32)).save(imgs / "a.png")
    args = [str(imgs) if a == "IMGS" else str(tmp_path / "out") if a == "OUT" else a for a in command]
    if command[0] == "score":
        args[args.index(str(imgs))] = str(imgs / "00000" / "samples")
    out = _run(*args, "device=cuda") if command[0] == "train" else _run(*args, "--device", "cuda")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "CUDA is not available" in out.stderr


def test_ctrl_c_says_how_to_resume(monkeypatch, capsys):
    from paintbench.commands import results

    monkeypatch.setattr(results, "run", lambda args: (_ for _ in ()).throw(KeyboardInterrupt))
    assert cli.main(["results", "somewhere"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("\n")   # never inside a progress bar's line
    assert "interrupted; whatever had finished is kept: rerun the same command to resume" in err


def test_small_messages_say_the_right_thing(tmp_path, capsys):
    from paintbench import metrics

    # a typo on the command line blames the command line, not the config file
    assert cli.main(["train", "shapes-tiny", "lamda_s=1", "--dry-run"]) == 2
    assert "the command line (key=value): unknown key 'lamda_s' (did you mean 'lambda_s'?)" in capsys.readouterr().err
    # suggestions are names that exist as metrics (an alias is shown as its metric)
    with pytest.raises(KeyError) as e:
        metrics.spec("hpsv2.x")
    assert "did you mean 'hps-v2.1'" in str(e.value) and "'hpsv2.1'" not in str(e.value)
    # results on a folder that is not there
    assert cli.main(["results", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'}: no such folder" in capsys.readouterr().err
    # weights list: every row's columns line up
    assert cli.main(["weights", "list", "--weights-dir", str(tmp_path)]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines()[2:] if ln and not ln.startswith(" ")]
    assert len({ln.index("MISSING") if "MISSING" in ln else ln.index("missing") for ln in rows}) == 1
    # a generator module that is not on the path says how to put it there
    out = _run("eval", "shapes", "--generator", "python:not_on_path:gen", "--limit", "1", "--out", str(tmp_path / "r"))
    assert out.returncode == 2 and "PYTHONPATH" in out.stderr


def test_a_long_failure_list_says_how_many_more():
    from paintbench.harness.report import format_results

    res = {"run_name": "r", "suite": {"name": "s", "version": 1, "n_prompts": 1, "images_per_prompt": 1},
           "primary_metric": "m", "metrics": {}, "generator": {"generator": "g"},
           "generation_failures": [f"img{i}: gone" for i in range(13)]}
    text = format_results(res)
    assert "img9: gone" in text and "img10" not in text and "... and 3 more" in text
