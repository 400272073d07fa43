"""Suites as data: listing, loading official prompt files from the data cache, clear errors."""

from __future__ import annotations

import pytest
import yaml

from paintbench.errors import UserError
from paintbench.harness.suite import load_suite, parse_suite, suite_files

import shared_data as sd


@pytest.fixture
def shared_data_cache(monkeypatch):
    monkeypatch.setenv("PAINTBENCH_DATA", str(sd.require(sd.SHARED / "data")))


def test_shipped_suites_are_listed():
    assert {"geneval", "dpg", "hpdv2", "shapes"} <= set(suite_files())


def test_geneval_suite_reads_the_official_prompts(shared_data_cache):
    s = load_suite("geneval")
    assert len(s.items) == 553 and s.images_per_prompt == 4
    assert s.items[0].id == "00000" and s.items[0].category == "single_object"
    assert s.items[0].metadata["include"][0]["class"] == "bench"
    tags = {it.category for it in s.items}
    assert tags == set(s.categories)
    assert len(s.suite_hash()) == 64 and s.suite_hash() == load_suite("geneval").suite_hash()


def test_dpg_suite_reads_its_prompts(shared_data_cache):
    s = load_suite("dpg")
    assert len(s.items) == 1065 and s.grid == {"rows": 2, "cols": 2}
    assert len({it.id for it in s.items}) == 1065


def test_wrong_hash_and_missing_prompt_file_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("PAINTBENCH_DATA", str(tmp_path))
    (tmp_path / "geneval").mkdir()
    (tmp_path / "geneval" / "evaluation_metadata.jsonl").write_text('{"tag": "x", "prompt": "y", "include": []}\n')
    with pytest.raises(UserError, match="sha256"):
        load_suite("geneval").items  # noqa: B018
    with pytest.raises(UserError, match=r"dpg/prompts.jsonl is missing.*dpg_bench/prompts"):
        load_suite("dpg").items  # noqa: B018


def test_unknown_suite_suggests_and_lists():
    with pytest.raises(UserError, match=r"did you mean 'geneval'"):
        load_suite("genevl")


def test_suite_yaml_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match=r"missing required field.*metrics"):
        parse_suite({"name": "x", "version": 1, "prompts": {"format": "jsonl"}}, tmp_path / "x.yaml")
    with pytest.raises(UserError, match="aggregation 'median'"):
        parse_suite({"name": "x", "version": 1, "prompts": {"format": "jsonl"},
                     "metrics": [{"name": "aesthetic", "aggregation": "median"}]})
    with pytest.raises(UserError, match=r"unknown field.*promts"):
        parse_suite({"name": "x", "version": 1, "prompts": {"format": "jsonl"}, "promts": 1, "metrics": ["a"]})


def test_include_path_adds_a_users_suite(tmp_path):
    (tmp_path / "mine.jsonl").write_text('{"id": "a", "prompt": "a red cube", "category": "c1"}\n'
                                         '{"id": "b", "prompt": "a blue ball", "category": "c2"}\n')
    (tmp_path / "mine.yaml").write_text(
        f"name: mine\nversion: 2\nprompts: {{format: jsonl, path: {tmp_path / 'mine.jsonl'}}}\n"
        "images_per_prompt: 2\nmetrics: [{name: aesthetic, primary: true}]\n")
    assert "mine" in suite_files([tmp_path])
    s = load_suite("mine", [tmp_path])
    assert [it.id for it in s.items] == ["a", "b"] and s.primary_metric == "aesthetic"
    (tmp_path / "dup.jsonl").write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    dup = parse_suite({"name": "d", "version": 1, "prompts": {"format": "jsonl", "path": str(tmp_path / "dup.jsonl")},
                       "metrics": ["aesthetic"]})
    with pytest.raises(UserError, match="duplicate prompt id 'a'"):
        dup.items  # noqa: B018


def test_a_suite_file_cannot_name_code_to_run(tmp_path):
    """`function:` is a name in paintbench's registry, never a module path: a downloaded suite file is
    data, and `os:system` must not run a shell command."""
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.yaml"
    bad.write_text(yaml.safe_dump({
        "name": "evil", "version": 1, "metrics": ["shapes-geneval"],
        "prompts": {"format": "builtin", "function": "os:system", "args": {"command": f"touch {marker}"}}}))
    suite = load_suite(str(bad))
    with pytest.raises(UserError, match=r"unknown built-in prompt function 'os:system'.*shapes"):
        suite.items  # noqa: B018 (loading the prompts is what is refused)
    assert not marker.exists()


def test_the_shipped_shapes_suite_names_its_builtin_prompts():
    suite = load_suite("shapes")
    assert suite.prompts["function"] == "shapes" and len(suite.items) == 104


def test_an_include_path_cannot_shadow_a_shipped_suite(tmp_path):
    (tmp_path / "fake.yaml").write_text("name: geneval\nversion: 1\nprompts: {format: jsonl, path: x.jsonl}\n"
                                        "metrics: [shapes-geneval]\n")
    with pytest.raises(UserError, match=r"fake\.yaml: suite name 'geneval' is already taken by .*geneval\.yaml"):
        suite_files([tmp_path])
    assert load_suite(str(tmp_path / "fake.yaml")).name == "geneval"  # by path, on purpose, it is allowed


def test_a_suite_file_with_a_python_tag_or_bad_text_is_one_clear_error(tmp_path):
    tagged = tmp_path / "t.yaml"
    tagged.write_text("name: !!python/object/apply:os.system ['true']\nversion: 1\n")
    with pytest.raises(UserError, match=r"t\.yaml: not valid suite YAML"):
        load_suite(str(tagged))
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(UserError, match=r"b\.yaml: not UTF-8 text"):
        load_suite(str(binary))
