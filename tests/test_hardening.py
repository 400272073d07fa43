"""Hardening, round 3 (issue #21): each test builds the hostile input and checks the one-line refusal
(or the per-sample failure) and that nothing outside the output folder was touched."""

from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from pathlib import Path

import pytest

from paintbench import cli, files
from paintbench.errors import InputError, UserError
from paintbench.harness.rundir import RunDir


def one_error_line(capsys) -> str:
    """The error: exactly one `paintbench ...: error:` line on stderr (progress lines may precede it), and
    no traceback anywhere."""
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ": error: " in ln]
    assert "Traceback" not in err and len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    return errors[0]


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A 45-byte PNG whose header declares width x height (no pixel data at all)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = struct.pack(">I", 0) + b"IDAT" + struct.pack(">I", zlib.crc32(b"IDAT"))
    return b"\x89PNG\r\n\x1a\n" + chunk + idat


# -- 1. the run lock follows no link and writes nothing that is not its own file ---------------------
@pytest.mark.parametrize("kind", ["symlink", "dangling", "fifo", "folder", "hardlink"])
def test_a_planted_lock_is_refused_and_its_target_untouched(tmp_path, kind):
    run, victim = tmp_path / "run", tmp_path / "victim.txt"
    run.mkdir()
    victim.write_text("precious\n")
    lock = run / ".lock"
    if kind == "symlink":
        lock.symlink_to(victim)
    elif kind == "dangling":
        lock.symlink_to(tmp_path / "created-by-the-lock")
    elif kind == "fifo":
        os.mkfifo(lock)
    elif kind == "folder":
        lock.mkdir()
    else:
        os.link(victim, lock)
    with pytest.raises(UserError, match=r"\.lock"), RunDir(run).lock():
        pass
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "created-by-the-lock").exists()


def test_eval_on_a_folder_with_a_linked_lock_exits_2_and_keeps_the_target(tmp_path, capsys):
    run, victim = tmp_path / "run", tmp_path / "bashrc"
    run.mkdir()
    victim.write_text("export SAFE=1\n")
    (run / ".lock").symlink_to(victim)
    code = cli.main(["eval", "shapes", "--generator", "shapes-oracle", "--out", str(run), "--limit", "2",
                     "--no-progress"])
    assert code == 2 and "symbolic link" in one_error_line(capsys)
    assert victim.read_text() == "export SAFE=1\n"


def test_a_real_lock_still_excludes_a_second_holder(tmp_path):
    rd = RunDir(tmp_path / "run")
    with rd.lock(), pytest.raises(UserError, match="is in use by pid"), RunDir(tmp_path / "run").lock():
        pass
    with rd.lock():   # released
        pass


# -- 2. one image reader with the header limits, for every entry point ---------------------------------
def test_the_bomb_is_45_bytes_and_pil_alone_would_raise_on_it(tmp_path):
    from PIL import Image

    (tmp_path / "bomb.png").write_bytes(bomb_png())
    assert len(bomb_png()) == 45
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "bomb.png")


def test_a_decompression_bomb_is_one_failed_item_in_a_dpg_folder_not_a_dead_run(tmp_path):
    from paintbench.metrics.dpg.grid import scan_folder
    from paintbench.metrics.images import BadImageError, image_header

    (tmp_path / "bomb.png").write_bytes(bomb_png())
    from PIL import Image

    Image.new("RGB", (48, 48)).save(tmp_path / "good.png")
    with pytest.raises(BadImageError, match=r"bomb\.png"):
        image_header(tmp_path / "bomb.png")
    scan = scan_folder(tmp_path, ["bomb", "good"], resolution=24)
    assert set(scan.matched) == {"good"} and "bomb" in scan.bad and "pixels" in scan.bad["bomb"]


def test_a_decompression_bomb_is_one_failed_sample_in_score(tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    (images / "bomb.png").write_bytes(bomb_png())
    Image.new("RGB", (32, 32), (200, 30, 30)).save(images / "ok.png")
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"image": n, "prompt": "a photo of a circle",
                                                                 "tag": "single_object",
                                                                 "include": [{"class": "circle", "count": 1}]}) + "\n"
                                                    for n in ("bomb.png", "ok.png")))
    code = cli.main(["score", "--metric", "shapes-geneval", "--images", str(images), "--prompts",
                     str(tmp_path / "prompts.jsonl"), "--out", str(tmp_path / "out")])
    out = capsys.readouterr()
    assert code in (0, 3) and "Traceback" not in out.err
    assert "bomb.png" in out.out + out.err


# -- 3. no code from a weights folder -----------------------------------------------------------------
@pytest.mark.hf
def test_a_weights_folder_asking_for_remote_code_is_refused_before_any_load(tmp_path):
    from paintbench import metrics
    from paintbench.metrics.remote_code import checked_folder
    from paintbench.metrics.synthetic import write_tiny_weights

    write_tiny_weights("unipercept-iqa", tmp_path)
    folder = tmp_path / "UniPercept"
    (folder / "evil.py").write_text("open(__file__ + '.ran', 'w').write('ran')\n")
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"tokenizer_config\.json: asks for code from the weights folder \(auto_map\)"):
        checked_folder(folder)
    with pytest.raises(InputError, match="auto_map"):
        metrics.get("unipercept-iqa", weights_dir=tmp_path).score(
            __import__("torch").zeros(1, 3, 32, 32, dtype=__import__("torch").uint8), ["x"])
    assert not (folder / "evil.py.ran").exists()


def test_every_from_pretrained_in_the_package_passes_trust_remote_code_false():
    repo = Path(__file__).resolve().parents[1]
    offenders = []
    for folder in ("metrics", "trainer", "harness", "paintbench", "leaderboards"):
        for path in (repo / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for i, part in enumerate(text.split(".from_pretrained(")[1:], start=1):
                call = _arguments(part)
                if "trust_remote_code=False" not in call and not _is_diffusers_part(call, text):
                    offenders.append(f"{path.relative_to(repo)} call {i}: {call[:60]!r}")
    assert not offenders, offenders
    assert "trust_remote_code=True" not in "".join(
        p.read_text(encoding="utf-8") for f in ("metrics", "trainer", "harness") for p in (repo / f).rglob("*.py"))


def _arguments(after_paren: str) -> str:
    """The text of a call's arguments, up to its closing parenthesis."""
    depth = 1
    for i, ch in enumerate(after_paren):
        depth += (ch == "(") - (ch == ")")
        if depth == 0:
            return after_paren[:i]
    return after_paren


def _is_diffusers_part(call: str, text: str) -> bool:
    """diffusers' VQ models (MAGVIT-v2, DiMOO's VQ-VAE) load fixed classes with no remote-code path."""
    return "vq_path" in call or "subfolder=\"vqvae\"" in call


# -- 5. YAML: no anchors or aliases, bounded nesting ------------------------------------------------------
ALIAS_BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
              "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
              "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
              "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
              "name: [*h, *h, *h, *h, *h, *h, *h, *h, *h]\n")


def test_a_yaml_alias_bomb_suite_is_refused_at_once(tmp_path, capsys):
    (tmp_path / "bomb.yaml").write_text(ALIAS_BOMB)
    code = cli.main(["suites", "--include-path", str(tmp_path)])   # refused from the parser's events, never expanded
    assert code == 2 and "anchors and aliases" in one_error_line(capsys)


def test_deep_nesting_and_a_bad_grid_are_refused(tmp_path):
    with pytest.raises(InputError, match="nested more than"):
        files.load_yaml("x: " + "[" * 100 + "]" * 100, "deep.yaml")
    from paintbench.harness.suite import parse_suite

    base = {"name": "s", "version": 1, "prompts": {"format": "jsonl"}, "metrics": ["shapes-geneval"]}
    parse_suite({**base, "grid": {"rows": 2, "cols": 2}})
    for bad in ({"rows": 10**9}, [1, 2], {"rows": "2"}):
        with pytest.raises(UserError, match="grid"):
            parse_suite({**base, "grid": bad})
    with pytest.raises(UserError, match="name"):
        parse_suite({**base, "name": {"a": [1] * 10}})


# -- 6. weight folders: every referenced file inside ---------------------------------------------------
@pytest.mark.parametrize("shard", ["../../etc/passwd", "/etc/hostname", "sub/../../outside.safetensors"])
def test_an_index_naming_a_file_outside_the_folder_is_refused(tmp_path, shard):
    from paintbench.metrics.weights import safetensors_files

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": shard}}))
    with pytest.raises(InputError, match="outside the folder"):
        safetensors_files(folder, "X")


# -- 7. regular files only, capped before reading --------------------------------------------------------
def test_devices_fifos_and_oversized_files_are_refused_before_reading(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="not a regular file"):
        files.read_text("/dev/zero", "config")
    fifo = tmp_path / "suite.yaml"
    os.mkfifo(fifo)
    done = threading.Event()
    err: list[Exception] = []

    def read() -> None:
        try:
            files.read_text(fifo, "config")
        except InputError as e:
            err.append(e)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(10), "a FIFO blocked the reader"
    assert err and "FIFO" in str(err[0])
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: 1\n" * 1000)
    monkeypatch.setenv("PAINTBENCH_MAX_CONFIG_BYTES", "100")
    with pytest.raises(InputError, match="5,000 bytes, more than the 100-byte limit"):
        files.read_text(big, "config")
    link = tmp_path / "link.yaml"
    link.symlink_to(big)
    with pytest.raises(InputError, match="symbolic link"):
        files.read_text(link, "config")


def test_a_suite_file_that_is_a_fifo_does_not_hang_suites(tmp_path, capsys):
    os.mkfifo(tmp_path / "hang.yaml")
    assert cli.main(["suites", "--include-path", str(tmp_path)]) == 2
    assert "FIFO" in one_error_line(capsys)


# -- 8. training: one process per folder, atomic markers, absurd batches refused ----------------------------
def test_an_empty_latest_marker_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    from paintbench.trainer import checkpoint as ckpt

    folder = tmp_path / ckpt.CHECKPOINTS
    for step in (1, 2):
        d = folder / f"step_{step:06d}"
        d.mkdir(parents=True)
        (d / ckpt.STATE_FILE).write_bytes(b"x")
    (folder / "step_000003").mkdir()                       # a checkpoint that never finished
    (folder / ckpt.LATEST).write_text("")
    assert ckpt.latest_checkpoint(tmp_path).name == "step_000002"
    (folder / ckpt.LATEST).write_text("../../somewhere\n")
    assert ckpt.latest_checkpoint(tmp_path).name == "step_000002"
    ckpt.write_marker(folder / ckpt.LATEST, "step_000001")
    assert ckpt.latest_checkpoint(tmp_path).name == "step_000001"
    assert not list(folder.glob(".latest.*"))


def test_a_second_train_into_a_held_folder_is_refused(tmp_path, capsys):
    from paintbench.harness.rundir import hold_folder

    out = tmp_path / "run"
    with hold_folder(out):
        code = cli.main(["train", "shapes-tiny", "steps=1", "warmstart_steps=0", "tensorboard=false",
                         "--out", str(out), "--quiet"])
    assert code == 2 and "is in use by pid" in one_error_line(capsys)
    assert not (out / "metrics.jsonl").exists()


def test_an_absurd_batch_is_refused_with_the_number_before_anything_is_allocated(tmp_path, capsys):
    code = cli.main(["train", "shapes-tiny", "prompts_per_step=100000", "group_size=100000", "tensorboard=false",
                     "--out", str(tmp_path / "run"), "--quiet"])
    line = one_error_line(capsys)
    assert code == 2 and "10,000,000,000 rollouts per round" in line and "GiB" in line


# -- 4. config values checked against the checkpoint before anything is built ----------------------------
@pytest.mark.hf
@pytest.mark.parametrize(("metric", "folder", "key"), [("deqa", "DeQA-Score-Mix3", ("num_hidden_layers",)),
                                                       ("unipercept-iqa", "UniPercept", ("llm_config", "num_hidden_layers"))])
def test_a_config_with_a_huge_layer_count_is_refused_before_building(tmp_path, metric, folder, key):
    from paintbench import metrics
    from paintbench.metrics.synthetic import write_tiny_weights

    write_tiny_weights(metric, tmp_path)
    path = tmp_path / folder / "config.json"
    cfg = json.loads(path.read_text())
    node = cfg
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] = 100_000_000
    path.write_text(json.dumps(cfg))
    with pytest.raises(InputError, match=r"num_hidden_layers = 100000000, but the checkpoint's layer stacks have"):
        metrics.get(metric, weights_dir=tmp_path).score(__import__("torch").zeros(1, 3, 32, 32), ["x"])


@pytest.mark.parametrize("header", [
    struct.pack("<Q", 2**62) + b"{}",
    struct.pack("<Q", 5) + b"{nope",
    struct.pack("<Q", 2) + b"[]",
    None,   # filled below: shapes that are strings / negative
])
def test_hostile_safetensors_headers_are_one_clear_error(tmp_path, header):
    from paintbench.metrics.memory import estimated_bytes

    cases = [header] if header is not None else [
        _st_header({"w": {"dtype": "F32", "shape": "12", "data_offsets": [0, 4]}}),
        _st_header({"w": {"dtype": "F32", "shape": [-4, 2], "data_offsets": [0, 4]}})]
    for i, raw in enumerate(cases):
        f = tmp_path / f"m{i}.safetensors"
        f.write_bytes(raw)
        with pytest.raises(InputError, match=rf"m{i}\.safetensors: (not a safetensors file|tensor 'w' has no valid shape)"):
            estimated_bytes([f], __import__("torch").float32)


def _st_header(header: dict) -> bytes:
    data = json.dumps(header).encode()
    return struct.pack("<Q", len(data)) + data + b"\0" * 8


# -- 9. damaged records: named by file and line, exit 2, or redone -------------------------------------------
def _oracle_run(out: Path) -> None:
    assert cli.main(["eval", "shapes", "--generator", "shapes-oracle", "--out", str(out), "--limit", "3",
                     "--no-progress"]) == 0


def _edit_first(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    rec = json.loads(lines[0])
    edit(rec)
    lines[0] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")


def test_a_score_of_an_unknown_prompt_is_named_by_file_and_line(tmp_path, capsys):
    run = tmp_path / "run"
    _oracle_run(run)
    capsys.readouterr()
    _edit_first(run / "scores" / "shapes-geneval.jsonl", lambda r: r.update(prompt_id="99999"))
    assert cli.main(["eval", "shapes", "--generator", "shapes-oracle", "--out", str(run), "--limit", "3",
                     "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert "shapes-geneval.jsonl:" in line and "'99999', which this run's suite does not have" in line


def test_a_sample_record_without_its_image_is_redone_not_a_traceback(tmp_path, capsys):
    run = tmp_path / "run"
    _oracle_run(run)
    _edit_first(run / "samples.jsonl", lambda r: r.pop("image"))
    capsys.readouterr()
    assert cli.main(["eval", "shapes", "--generator", "shapes-oracle", "--out", str(run), "--limit", "3",
                     "--no-progress"]) == 0
    assert "11 of 12 images already generated" in capsys.readouterr().err
    assert all("image" in json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines())


# -- 11. values: true bounds, counts that cannot be negative ---------------------------------------------------
def test_metrics_with_a_true_bound_refuse_a_record_outside_it():
    from paintbench import metrics
    from paintbench.harness.records import outside_hard_range

    assert outside_hard_range(-1000.0, metrics.spec("blocks-detail"))          # a fraction
    assert outside_hard_range(-1000.0, metrics.spec("hps-v2.1"))               # a cosine
    assert outside_hard_range(1.5, metrics.spec("hps-v2"))
    assert outside_hard_range(1.0005, metrics.spec("hps-v2")) is None         # fp16 rounding of a cosine
    assert outside_hard_range(-1000.0, metrics.spec("blocks-layout")) is None  # GenEval's reward: unbounded below
    assert outside_hard_range(1.2, metrics.spec("blocks-layout"))


@pytest.mark.parametrize(("override", "message"), [
    ("steps=-5", "steps = -5: must be >= 0"), ("warmstart_steps=-3", "warmstart_steps = -3: must be >= 0"),
    ("lr=1e300", "a learning rate must lie in (0, 1]"), ("steps=0", "steps = 0: must be >= 1"),
    ("clip_eps=-0.2", "clip_eps = -0.2: must be >= 0")])
def test_impossible_training_settings_are_refused(tmp_path, capsys, override, message):
    code = cli.main(["train", "shapes-tiny", override, "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2 and message in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


# -- 12. output: user text never forges lines, cells or the reading order ------------------------------------
def test_control_and_bidi_characters_in_user_text_are_escaped_in_printed_tables():
    from paintbench.harness.report import format_results

    evil = "cats\tdogs\nFAKE LINE 100.00 %\u202eolleh"
    results = {"suite": {"name": evil, "version": 1, "n_prompts": 1, "images_per_prompt": 1},
               "generator": {"generator": "x\ny"},
               "metrics": {"m": {"value": 0.5, "ci": [0.4, 0.6], "n_samples": 1, "n_prompts": 1,
                                 "aggregation": "mean", "categories": {evil: {"value": 0.5, "ci": [0.4, 0.6],
                                                                              "n_samples": 1}}}}}
    text = format_results(results)
    assert "\t" not in text and "\u202e" not in text and "FAKE LINE" not in text.split("\n")[0][:5]
    assert all(not line.startswith("FAKE") for line in text.splitlines())
    assert "cats\\tdogs\\nFAKE" in text and "\\u202e" in text


def test_an_error_message_with_newlines_is_still_one_line(tmp_path, capsys):
    bad = tmp_path / "a\nb.yaml"
    bad.write_text("x: [")
    code = cli.main(["train", str(bad), "--out", str(tmp_path / "o")])
    assert code == 2 and "a\\nb.yaml" in one_error_line(capsys)


def test_two_experiment_files_with_one_name_get_two_pages(tmp_path):
    from paintbench.leaderboards.build import build_site

    summary = {"protocol": "", "worlds": {"blocks": {"seeds": [0], "methods": {"HT-GRPO": {
        "total": {"mean": 0.5, "sd": 0.0, "per_seed": [0.5]}, "cpu_seconds": 1.0}}}}}
    paths = []
    for folder, mean in (("a", 0.111), ("b", 0.222)):
        (tmp_path / folder).mkdir()
        summary["worlds"]["blocks"]["methods"]["HT-GRPO"]["total"]["mean"] = mean
        (tmp_path / folder / "hierarchy.json").write_text(json.dumps(summary))
        paths.append(tmp_path / folder / "hierarchy.json")
    build_site([], [], tmp_path / "site", experiments=paths)
    pages = sorted((tmp_path / "site").glob("experiment-*.html"))
    assert len(pages) == 2
    texts = "".join(p.read_text() for p in pages)
    assert "0.111" in texts and "0.222" in texts


def test_a_site_refuses_a_run_whose_scores_changed_after_its_results(tmp_path, capsys):
    run = tmp_path / "run"
    _oracle_run(run)
    assert json.loads((run / "results.json").read_text())["metrics"]["shapes-geneval"]["scores_sha256"]
    _edit_first(run / "scores" / "shapes-geneval.jsonl", lambda r: r.update(value=0.0))   # the swap, no new results
    capsys.readouterr()
    assert cli.main(["leaderboard", str(run), "--out", str(tmp_path / "site")]) == 2
    assert "computed from other scores than scores/shapes-geneval.jsonl" in one_error_line(capsys)
    assert cli.main(["eval", "shapes", "--generator", "shapes-oracle", "--out", str(run), "--limit", "3",
                     "--no-progress", "--rescore", "shapes-geneval"]) == 0
    assert cli.main(["leaderboard", str(run), "--out", str(tmp_path / "site")]) == 0


def test_an_oversized_or_device_tokenizer_file_is_refused_before_the_tokenizer_reads_it(tmp_path, monkeypatch):
    from paintbench.metrics.remote_code import checked_folder

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "merges.txt").write_bytes(b"a b\n" * 1000)
    checked_folder(folder)
    blob = tmp_path / "blob"
    blob.write_text("{}")
    (folder / "vocab.json").symlink_to(blob)                 # a Hugging Face cache snapshot links to blobs
    checked_folder(folder)
    monkeypatch.setenv("PAINTBENCH_MAX_TOKENIZER_BYTES", "100")
    with pytest.raises(InputError, match=r"merges\.txt: 4,000 bytes, more than the 100-byte limit"):
        checked_folder(folder)
    monkeypatch.delenv("PAINTBENCH_MAX_TOKENIZER_BYTES")
    (folder / "tokenizer.json").symlink_to("/dev/zero")
    with pytest.raises(InputError, match=r"tokenizer\.json: not a regular file \(a character device\)"):
        checked_folder(folder)


def test_files_written_in_a_run_folder_never_follow_a_planted_link(tmp_path, capsys):
    run, victim = tmp_path / "run", tmp_path / "victim.txt"
    _oracle_run(run)
    victim.write_text("precious\n")
    (run / "results.json").unlink()
    (run / "results.json").symlink_to(victim)              # replaced by the new file, the target untouched
    (run / ".results.json.tmp").symlink_to(victim)          # an old fixed temp name: never written through
    assert cli.main(["eval", "shapes", "--generator", "shapes-oracle", "--out", str(run), "--limit", "3",
                     "--no-progress"]) == 0
    assert not (run / "results.json").is_symlink() and json.loads((run / "results.json").read_text())["metrics"]
    (run / "log.jsonl").unlink()
    (run / "log.jsonl").symlink_to(victim)                  # an append through a link is refused
    capsys.readouterr()
    assert cli.main(["eval", "shapes", "--generator", "shapes-oracle", "--out", str(run), "--limit", "3",
                     "--no-progress"]) == 2
    assert "log.jsonl: is a symbolic link" in one_error_line(capsys)
    assert victim.read_text() == "precious\n"


def test_a_training_log_that_is_a_link_is_refused(tmp_path, capsys):
    out, victim = tmp_path / "run", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("precious\n")
    (out / "metrics.jsonl").symlink_to(victim)
    code = cli.main(["train", "shapes-tiny", "steps=1", "warmstart_steps=0", "tensorboard=false", "eval_every=0",
                     "--out", str(out), "--quiet"])
    assert code == 2 and "already holds a training run" in one_error_line(capsys)
    # --resume with no checkpoint starts over: the log is rewritten as a file of its own, the target untouched
    code = cli.main(["train", "shapes-tiny", "steps=1", "warmstart_steps=0", "tensorboard=false", "eval_every=0",
                     "--out", str(out), "--quiet", "--resume"])
    assert code == 0 and not (out / "metrics.jsonl").is_symlink()
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1
    assert victim.read_text() == "precious\n"


# -- 10. the last traceback paths of the list ----------------------------------------------------------------
@pytest.mark.hf
def test_a_pickle_payload_is_refused_as_one_line_not_a_traceback(tmp_path, capsys):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    from paintbench.metrics.synthetic import write_tiny_weights

    weights = tmp_path / "w"
    write_tiny_weights("imagereward", weights)              # the other files real, the checkpoint a payload
    (weights / "ImageReward.pt").write_bytes(pickle.dumps({"state": Evil()}))
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "images" / "a.png")
    (tmp_path / "images" / "a.txt").write_text("a photo")
    code = cli.main(["score", "--metric", "imagereward", "--images", str(tmp_path / "images"), "--weights-dir",
                     str(weights), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code in (2, 3) and "Traceback" not in err and not (tmp_path / "pwned").exists()
    assert "cannot be read as a weights-only checkpoint" in err


def test_a_weights_folder_without_its_safetensors_is_a_missing_file(tmp_path):
    from paintbench.errors import MissingFileError
    from paintbench.metrics.weights import load_state_dict, safetensors_files

    (tmp_path / "m").mkdir()
    with pytest.raises(MissingFileError, match=r"model\.safetensors: missing"):
        safetensors_files(tmp_path / "m", "DeQA-Score")
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(InputError, match="not a safetensors file"):
        load_state_dict(tmp_path / "bad.safetensors")


@pytest.mark.hf
def test_transformers_errors_for_a_damaged_folder_are_one_line_naming_the_metric(tmp_path, capsys):
    from paintbench import metrics
    from paintbench.metrics.synthetic import write_tiny_weights

    write_tiny_weights("pickscore", tmp_path)
    for cfg in tmp_path.rglob("config.json"):
        cfg.write_text('{"model_type": "clip", "text_config": 5}')
    with pytest.raises(InputError, match=r"pickscore: \w+ could not load its weights") as info:
        metrics.get("pickscore", weights_dir=tmp_path)
    assert info.value.__cause__ is not None          # the library's own error stays attached (--debug shows it)


def test_a_bug_of_our_own_in_a_provider_keeps_its_traceback(monkeypatch):
    from paintbench import metrics
    from paintbench.harness.shapes.provider import ShapesGenEvalProvider

    def broken(self, **kw):
        raise KeyError("ours")

    monkeypatch.setattr(ShapesGenEvalProvider, "__init__", broken)
    with pytest.raises(KeyError, match="ours"):
        metrics.get("shapes-geneval")
