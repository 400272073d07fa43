"""Benchmark runs end to end on the shapes world: results, determinism, resume after SIGKILL, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paintbench.errors import UserError
from paintbench.harness.evaluate import EvalConfig, run_eval
from paintbench.harness.rundir import RunDir, read_jsonl

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-m", "paintbench", *args], capture_output=True, text=True, env=e, cwd=REPO)
    if check and out.returncode != 0:
        raise AssertionError(f"paintbench {' '.join(args)} -> {out.returncode}\n{out.stdout}\n{out.stderr}")
    return out


def stable(run: Path) -> dict:
    """What must be identical between two runs of one configuration (no timings, hosts, paths)."""
    results = json.loads((run / "results.json").read_text())
    return {
        "metrics": {m: {k: v for k, v in r.items() if k != "provenance"} for m, r in results["metrics"].items()},
        "suite": results["suite"],
        "samples": (run / "samples.jsonl").read_text(),
        "scores": {p.name: p.read_text() for p in sorted((run / "scores").glob("*.jsonl"))},
    }


def test_oracle_scores_near_one_and_random_near_chance(tmp_path):
    oracle = run_eval(EvalConfig(suite="shapes", generator="shapes-oracle", out=str(tmp_path / "o"),
                                 progress=False, n_resamples=2000))
    rand = run_eval(EvalConfig(suite="shapes", generator="shapes-random", out=str(tmp_path / "r"),
                               progress=False, n_resamples=2000))
    o, r = oracle["metrics"]["shapes-geneval"], rand["metrics"]["shapes-geneval"]
    assert o["value"] >= 0.95
    assert r["value"] < 0.3
    assert o["ci"][0] <= o["value"] <= o["ci"][1] and r["ci"][0] <= r["value"] <= r["ci"][1]
    assert r["ci"][1] < o["ci"][0]  # the suite's range is visibly meaningful
    assert set(o["categories"]) == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
    # macro aggregation: overall is the unweighted mean of the category values
    cats = [c["value"] for c in r["categories"].values()]
    assert r["value"] == pytest.approx(sum(cats) / len(cats), abs=1e-12)
    assert r["n_samples"] == len(RunDir(tmp_path / "r").samples_path.read_text().splitlines())
    for key in ("paintbench", "torch", "git_commit", "hardware"):
        assert key in oracle["environment"]
    assert oracle["suite"]["hash"] == rand["suite"]["hash"]


def test_two_runs_give_identical_records(tmp_path):
    for name in ("a", "b"):
        run_eval(EvalConfig(suite="shapes", generator="shapes-random", out=str(tmp_path / name), limit=12,
                            seed=3, progress=False, n_resamples=500, batch_size=7 if name == "a" else 32))
    assert stable(tmp_path / "a") == stable(tmp_path / "b")  # batch size does not matter either
    for line in (tmp_path / "a" / "samples.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert not {"time", "pid", "host", "rank"} & set(rec)


def _kill_when(proc: subprocess.Popen, path_glob: str, root: Path, min_lines: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        n = sum(len(p.read_bytes().splitlines()) for p in root.glob(path_glob))
        if n >= min_lines:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError(f"run finished before it could be killed:\n{proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("timed out waiting for progress")


@pytest.mark.slow
def test_sigkill_during_generation_and_scoring_then_resume(tmp_path):
    args = ["eval", "shapes", "--generator", "python:tests.support.slow:slow_oracle", "--metrics", "slow-shapes",
            "--limit", "20", "--batch-size", "4", "--gen-opt", "batch_size=4", "--no-progress", "--n-resamples", "500"]
    env = {**os.environ, "PAINTBENCH_PLUGINS": "tests.support.slow", "PAINTBENCH_TEST_DELAY": "0.03",
           "PYTHONPATH": str(REPO)}
    run = tmp_path / "killed"

    def start():
        return subprocess.Popen([sys.executable, "-m", "paintbench", *args, "--out", str(run)], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    _kill_when(start(), "parts/samples.rank*.jsonl", run, 20)  # mid-generation
    part = run / "parts" / "samples.rank00000.jsonl"
    n_before = len(part.read_text().splitlines())
    assert 20 <= n_before < 80
    with open(part, "ab") as f:  # and a torn last line, as a kill during a write leaves it
        f.write(b'{"prompt_id": "000')
    _kill_when(start(), "parts/scores.slow-shapes.rank*.jsonl", run, 10)  # mid-scoring
    assert not (run / "results.json").exists()
    done = start()
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    reference = tmp_path / "straight"
    cli(*args, "--out", str(reference), env=env)
    assert stable(run) == stable(reference)
    samples = read_jsonl(run / "samples.jsonl")[0]
    keys = [(s["prompt_id"], s["sample_index"]) for s in samples]
    assert len(keys) == len(set(keys)) == 80  # nothing lost, nothing duplicated
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert any(e["event"] == "repair" for e in log)


def test_resume_skips_finished_work_and_redoes_deleted_images(tmp_path):
    cfg = EvalConfig(suite="shapes", generator="shapes-oracle", out=str(tmp_path / "r"), limit=5, progress=False,
                     n_resamples=200)
    run_eval(cfg)
    before = stable(tmp_path / "r")
    img = tmp_path / "r" / "images" / "00002" / "00001.png"
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "r" / "images").rglob("*.png") if p != img}
    img.unlink()
    run_eval(cfg)
    assert img.exists()
    assert stable(tmp_path / "r") == before
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # nothing else regenerated


def test_corrupt_line_in_samples_is_reported_and_redone(tmp_path):
    cfg = EvalConfig(suite="shapes", generator="shapes-oracle", out=str(tmp_path / "r"), limit=4, progress=False,
                     n_resamples=200)
    run_eval(cfg)
    before = stable(tmp_path / "r")
    path = tmp_path / "r" / "samples.jsonl"
    lines = path.read_text().splitlines()
    lines[3] = "{corrupt"
    path.write_text("\n".join(lines) + "\n")
    run_eval(cfg)
    assert stable(tmp_path / "r") == before
    log = (tmp_path / "r" / "log.jsonl").read_text()
    assert "corrupt line" in log and "samples.jsonl:4" in log


def test_changed_configuration_is_refused(tmp_path):
    run_eval(EvalConfig(suite="shapes", generator="shapes-oracle", out=str(tmp_path / "r"), limit=2, progress=False,
                        n_resamples=100))
    with pytest.raises(UserError, match=r"different configuration.*seed"):
        run_eval(EvalConfig(suite="shapes", generator="shapes-oracle", out=str(tmp_path / "r"), limit=2, seed=1,
                            progress=False))


def test_generator_misbehaviour_is_a_clear_error_and_the_run_stays_resumable(tmp_path):
    out = cli("eval", "shapes", "--generator", "python:tests.support.slow:wrong_count", "--limit", "3",
              "--out", str(tmp_path / "r"), "--no-progress", check=False)
    assert out.returncode == 2 and re.search(r"returned \d+ images for \d+ prompts", out.stderr), out.stderr
    assert "Traceback" not in out.stderr
    out = cli("eval", "shapes", "--generator", "python:tests.support.slow:wrong_size", "--limit", "3",
              "--out", str(tmp_path / "s"), "--no-progress", check=False)
    assert out.returncode == 2 and "8x8 image" in out.stderr and "128x128" in out.stderr
    out = cli("eval", "shapes", "--generator", "shapes-orcale", "--out", str(tmp_path / "t"), check=False)
    assert out.returncode == 2 and "did you mean 'shapes-oracle'" in out.stderr
    out = cli("eval", "shaeps", "--generator", "shapes-oracle", "--out", str(tmp_path / "u"), check=False)
    assert out.returncode == 2 and "did you mean 'shapes'" in out.stderr


def test_folder_generator_reads_geneval_layout_and_reports_missing_images(tmp_path):
    # Write the oracle's images in GenEval's official folder layout, then benchmark that folder.
    from PIL import Image

    from paintbench.harness.shapes.generators import OracleGenerator
    from paintbench.harness.suite import load_suite, stratified_sample

    items = stratified_sample(load_suite("shapes").items, 6, 0)  # the prompts --limit 6 picks
    root = tmp_path / "geneval_layout"
    for it in items:
        (root / it.id / "samples").mkdir(parents=True)
        (root / it.id / "metadata.jsonl").write_text(json.dumps(it.metadata) + "\n")
        imgs = OracleGenerator().generate(None, [it.metadata] * 4, [1, 2, 3, 4])
        for k, t in enumerate(imgs):
            if (it.id, k) != (items[5].id, 3):  # one image missing
                Image.fromarray(t.permute(1, 2, 0).numpy()).save(root / it.id / "samples" / f"{k:05d}.png")
    res = run_eval(EvalConfig(suite="shapes", generator=f"folder:{root}", out=str(tmp_path / "r"), limit=6,
                              progress=False, n_resamples=200))
    m = res["metrics"]["shapes-geneval"]
    assert m["value"] == 1.0 and m["n_samples"] == 23
    assert len(res["generation_failures"]) == 1 and "00003.png" in res["generation_failures"][0]
    samples = read_jsonl(tmp_path / "r" / "samples.jsonl")[0]
    assert Path(samples[0]["image"]).is_absolute()  # referenced in place, not copied
    # a metadata file that contradicts the suite is an error naming the file
    (root / items[0].id / "metadata.jsonl").write_text(json.dumps({"prompt": "something else"}) + "\n")
    res = run_eval(EvalConfig(suite="shapes", generator=f"folder:{root}", out=str(tmp_path / "r2"), limit=6,
                              progress=False, n_resamples=200))
    assert any("does not match" in e and "metadata.jsonl" in e for e in res["generation_failures"])


def test_rescore_and_results_and_compare_commands(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cli("eval", "shapes", "--generator", "shapes-oracle", "--limit", "8", "--out", str(a), "--no-progress",
        "--n-resamples", "300")
    cli("eval", "shapes", "--generator", "shapes-random", "--limit", "8", "--out", str(b), "--no-progress",
        "--n-resamples", "300")
    before = stable(a)
    scores = a / "scores" / "shapes-geneval.jsonl"
    scores.write_text("")  # wreck the scores; --rescore recomputes them from the images
    out = cli("eval", "--rescore", "shapes-geneval", "--out", str(a), "--no-progress", "--n-resamples", "300")
    assert "shapes-geneval" in out.stdout
    assert stable(a) == before
    table = cli("results", str(a)).stdout
    assert "shapes-geneval (primary): 1.000  [95% CI 1.000, 1.000]" in table and "two_object" in table
    cmp = json.loads(cli("compare", str(a), str(b), "--json", "--n-resamples", "500").stdout)
    r = cmp["metrics"]["shapes-geneval"]
    assert r["difference"] < -0.5 and r["p_value"] < 0.05 and r["n_shared"] == 8
    assert "permutation_p_value" in r


def test_metric_options_reach_the_provider(tmp_path):
    res = run_eval(EvalConfig(suite="shapes", generator="shapes-random", out=str(tmp_path / "r"), limit=10,
                              progress=False, n_resamples=200, metric_options={"shapes-geneval": {"mode": "reward"}}))
    m = res["metrics"]["shapes-geneval"]
    assert m["options"]["mode"] == "reward"
    values = [r["value"] for r in read_jsonl(tmp_path / "r" / "scores" / "shapes-geneval.jsonl")[0]]
    assert any(0 < v < 1 for v in values)  # partial credit, not 0/1 correctness


def test_an_image_that_cannot_be_saved_is_a_clear_error_then_resumes(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "images").write_text("not a folder")  # every image save fails, as on a broken disk
    out = cli("eval", "shapes", "--generator", "shapes-oracle", "--limit", "3", "--out", str(run), "--no-progress",
              "--n-resamples", "100", check=False)
    assert out.returncode == 2 and "cannot save" in out.stderr and "rerun" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    (run / "images").unlink()
    cli("eval", "shapes", "--generator", "shapes-oracle", "--limit", "3", "--out", str(run), "--no-progress",
        "--n-resamples", "100")
    assert json.loads((run / "results.json").read_text())["metrics"]["shapes-geneval"]["n_samples"] == 12


def test_rescore_keeps_old_scores_when_the_metric_cannot_load(tmp_path):
    from paintbench.metrics.synthetic import write_tiny_weights

    run, weights = tmp_path / "r", tmp_path / "w"
    write_tiny_weights("aesthetic", weights)
    cli("eval", "shapes", "--generator", "shapes-oracle", "--limit", "2", "--metrics", "shapes-geneval",
        "--metrics", "aesthetic", "--weights-dir", str(weights), "--out", str(run), "--no-progress",
        "--n-resamples", "100")
    before = (run / "scores" / "aesthetic.jsonl").read_text()
    out = cli("eval", "--rescore", "aesthetic", "--out", str(run), "--weights-dir", str(tmp_path / "empty"),
              "--no-progress", check=False)
    assert out.returncode == 2 and "sac+logos+ava1-l14-linearMSE.pth" in out.stderr
    assert (run / "scores" / "aesthetic.jsonl").read_text() == before  # nothing forgotten
    out = cli("eval", "--rescore", "aesthetc", "--out", str(run), check=False)
    assert out.returncode == 2 and "did you mean 'aesthetic'" in out.stderr


def test_resuming_with_other_metric_settings_is_refused(tmp_path):
    cfg = dict(suite="shapes", generator="shapes-random", out=str(tmp_path / "r"), limit=3, progress=False,
               n_resamples=100)
    run_eval(EvalConfig(**cfg))
    (tmp_path / "r" / "scores" / "shapes-geneval.jsonl").write_text(
        "\n".join((tmp_path / "r" / "scores" / "shapes-geneval.jsonl").read_text().splitlines()[:5]) + "\n")
    with pytest.raises(UserError, match=r"other settings.*mode.*--rescore shapes-geneval"):
        run_eval(EvalConfig(**cfg, metric_options={"shapes-geneval": {"mode": "reward"}}))


def test_a_run_that_failed_before_recording_anything_can_be_restarted_differently(tmp_path):
    out = cli("eval", "shapes", "--generator", "python:tests.support.slow:wrong_count", "--limit", "2",
              "--out", str(tmp_path / "r"), "--no-progress", check=False)
    assert out.returncode == 2
    cli("eval", "shapes", "--generator", "shapes-oracle", "--limit", "2", "--out", str(tmp_path / "r"),
        "--no-progress", "--n-resamples", "100")
    out = cli("eval", "shapes", "--generator", "shapes-orcale", "--out", str(tmp_path / "s"), check=False)
    assert out.returncode == 2 and not (tmp_path / "s" / "config.yaml").exists()


def test_macro_overall_is_not_reported_when_a_category_has_no_score():
    from paintbench.harness.aggregate import aggregate_metric

    records = [{"prompt_id": "a", "value": 1.0}, {"prompt_id": "b", "value": None, "error": "x"}]
    res = aggregate_metric(records, {"a": "t1", "b": "t2"}, aggregation="macro", n_resamples=100)
    assert res["value"] is None and res["missing_categories"] == ["t2"] and res["n_failed"] == 1
    assert res["categories"]["t1"]["value"] == 1.0
    ok = aggregate_metric([*records[:1], {"prompt_id": "b", "value": 0.0}], {"a": "t1", "b": "t2"},
                          aggregation="macro", n_resamples=100)
    assert ok["value"] == 0.5


def test_prompt_ids_map_to_distinct_folders_inside_images(tmp_path):
    """`..` wrote RUN/00000.png outside images/; `.`/`""` and `a/b`/`a__b` shared a folder."""
    from paintbench.harness.rundir import prompt_folder
    from paintbench.harness.suite import load_suite

    ids = ["..", ".", "", "a/b", "a__b", "a%2Fb", "%a", "../../x", "plain-id_1.v2"]
    names = [prompt_folder(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert all("/" not in n and n not in (".", "..", "") for n in names)
    assert prompt_folder("plain-id_1.v2") == "plain-id_1.v2"  # plain ids keep their name
    with pytest.raises(UserError, match="too long"):
        prompt_folder("/" * 100)

    base = load_suite("shapes").items
    records = [{**it.metadata, "id": pid} for it, pid in zip(base, ids, strict=False)]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "s.yaml").write_text(
        "name: hostile-ids\nversion: 1\nimages_per_prompt: 1\nimage_size: 128\n"
        f"prompts: {{format: jsonl, path: {tmp_path / 'p.jsonl'}, category_field: tag}}\n"
        "metrics: [{name: shapes-geneval, options: {mode: correct}}]\n")
    run = tmp_path / "run"
    res = run_eval(EvalConfig(suite=str(tmp_path / "s.yaml"), generator="shapes-oracle", out=str(run),
                              progress=False, n_resamples=100))
    assert res["n_samples"] == len(ids) and res["metrics"]["shapes-geneval"]["value"] == 1.0
    pngs = sorted(p.relative_to(run) for p in run.rglob("*.png"))
    assert len(pngs) == len(ids) and all(p.parts[0] == "images" and len(p.parts) == 3 for p in pngs)
    samples = read_jsonl(run / "samples.jsonl")[0]
    assert len({s["sha256"] for s in samples}) == len(ids)  # nine different images, none overwritten


def test_a_damaged_config_yaml_is_one_clear_line(tmp_path):
    out = cli("eval", "shapes", "--generator", "shapes-oracle", "--limit", "1", "--out", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    (tmp_path / "r" / "config.yaml").write_text("identity: [unclosed\n")
    out = cli("eval", "shapes", "--generator", "shapes-oracle", "--limit", "1", "--out", str(tmp_path / "r"),
              check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "config.yaml: not valid YAML" in out.stderr


def test_prompt_files_that_are_not_utf8_are_one_clear_line(tmp_path):
    (tmp_path / "imgs").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "p.txt").write_bytes(b"\xff\xfe bad\n")
    out = cli("score", "--metric", "aesthetic", "--images", str(tmp_path / "imgs"), "--prompts", str(tmp_path / "p.txt"),
              "--out", str(tmp_path / "o"), check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "p.txt: not UTF-8 text" in out.stderr


def test_a_second_process_on_the_same_out_is_refused_naming_the_holder(tmp_path):
    """Two evals on one --out raced (3 of 8 trials failed with a misleading error)."""
    from paintbench.harness.rundir import RunDir

    with RunDir(tmp_path / "r").lock():
        out = cli("eval", "shapes", "--generator", "shapes-oracle", "--limit", "1", "--out", str(tmp_path / "r"),
                  check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"is in use by pid {os.getpid()}" in out.stderr
    cli("eval", "shapes", "--generator", "shapes-oracle", "--limit", "1", "--out", str(tmp_path / "r"))  # released


def test_records_without_their_config_are_refused_not_adopted(tmp_path):
    """A rerun after config.yaml was deleted reused seed 0's images under 'seed 7'."""
    cli("eval", "shapes", "--generator", "shapes-random", "--limit", "2", "--out", str(tmp_path / "r"))
    (tmp_path / "r" / "config.yaml").unlink()
    out = cli("eval", "shapes", "--generator", "shapes-random", "--limit", "2", "--seed", "7", "--out",
              str(tmp_path / "r"), check=False)
    assert out.returncode == 2 and "no config.yaml" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r" / "config.yaml").exists()


def test_an_interrupted_rescore_leaves_the_run_as_it_was_and_resumes(tmp_path, monkeypatch):
    """--rescore used to forget the old scores first: the site showed the old headline over 'not scored'."""
    from paintbench.harness import evaluate

    run = tmp_path / "r"
    run_eval(EvalConfig(suite="shapes", generator="shapes-oracle", limit=6, out=str(run), progress=False,
                        n_resamples=100, batch_size=8))
    before = stable(run)
    real, calls = evaluate._score_batch, []

    def stop_after_one(provider, batch, decoded, meta):
        if calls:
            raise KeyboardInterrupt
        calls.append(len(batch))
        return real(provider, batch, decoded, meta)

    monkeypatch.setattr(evaluate, "_score_batch", stop_after_one)
    cfg = EvalConfig(suite="shapes", generator="shapes-oracle", limit=6, out=str(run), progress=False,
                     n_resamples=100, batch_size=8)
    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg, rescore=["shapes-geneval"])
    assert stable(run) == before  # scores, results.json: untouched while the rescore is incomplete
    assert (run / "parts" / "scores.shapes-geneval@rescore.rank00000.jsonl").is_file()
    monkeypatch.setattr(evaluate, "_score_batch", real)
    run_eval(cfg, rescore=["shapes-geneval"])
    assert stable(run) == before  # same scores, now recomputed; nothing staged is left
    assert not list((run / "scores").glob("*@rescore*")) and not list(run.glob("parts/*@rescore*"))


@pytest.mark.parametrize("value, why", [("0.5x", "value is '0.5x' (str), not a number or null"),
                                        (1000, "value 1000 is outside shapes-geneval's possible range [-inf, 1]")])
def test_a_damaged_score_record_is_named_by_file_and_line(tmp_path, value, why):
    run = tmp_path / "r"
    cli("eval", "shapes", "--generator", "shapes-oracle", "--limit", "2", "--out", str(run))
    scores = run / "scores" / "shapes-geneval.jsonl"
    lines = scores.read_text().splitlines()
    rec = json.loads(lines[1])
    rec["value"] = value
    lines[1] = json.dumps(rec)
    scores.write_text("\n".join(lines) + "\n")
    out = cli("eval", "shapes", "--generator", "shapes-oracle", "--limit", "2", "--out", str(run), check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"shapes-geneval.jsonl:2: {why}" in out.stderr and "--rescore shapes-geneval" in out.stderr


def test_a_headline_outside_its_range_is_refused_by_the_site(tmp_path):
    from paintbench.leaderboards.model import load_run

    run = tmp_path / "r"
    cli("eval", "shapes", "--generator", "shapes-oracle", "--limit", "2", "--out", str(run))
    res = json.loads((run / "results.json").read_text())
    res["metrics"]["shapes-geneval"]["value"] = 7.02
    (run / "results.json").write_text(json.dumps(res))
    with pytest.raises(UserError, match=r"results\.json: metrics\.shapes-geneval value 7\.02 is outside .*\[-inf, 1\]"):
        load_run(run)


def test_resume_says_how_much_is_done(tmp_path):
    cli("eval", "shapes", "--generator", "shapes-oracle", "--limit", "2", "--out", str(tmp_path / "r"))
    again = cli("eval", "shapes", "--generator", "shapes-oracle", "--limit", "2", "--out", str(tmp_path / "r"))
    assert "resuming: 8 of 8 images already generated; nothing left to generate" in again.stderr
    assert "resuming shapes-geneval: 8 of 8 images already scored; nothing left to score (no model loaded)" in again.stderr
