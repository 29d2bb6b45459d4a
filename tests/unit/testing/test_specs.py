"""Finding vendor specs: beside the repository, or where the environment says; a missing one
is a skip with the reason on a laptop and a failure under CI."""

from __future__ import annotations

import pytest

from customer_sync.testing.specs import SPECS_ENV, load_spec, spec_file, specs_dir


def test_specs_are_found_beside_an_ancestor_of_the_test(tmp_path, monkeypatch):
    """With no variable set, the first `shared/specs` beside an ancestor folder is used."""
    monkeypatch.delenv(SPECS_ENV, raising=False)
    (tmp_path / "shared" / "specs").mkdir(parents=True)
    test_file = tmp_path / "repo" / "tests" / "test_x.py"
    test_file.parent.mkdir(parents=True)
    assert tmp_path / "shared" / "specs" == specs_dir(test_file)


def test_missing_spec_skips_with_the_reason_outside_ci(tmp_path, monkeypatch):
    """On a laptop a missing document skips, naming where it looked and the variable to set."""
    monkeypatch.setenv(SPECS_ENV, str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=SPECS_ENV):
        spec_file("vendor/api.json")


def test_missing_spec_fails_under_ci(tmp_path, monkeypatch):
    """Under CI a missing document fails, so a green CI always checked the contract."""
    monkeypatch.setenv(SPECS_ENV, str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        spec_file("vendor/api.json")


def test_yaml_documents_load_with_bare_equals_scalars(tmp_path, monkeypatch):
    """YAML specs load, and a bare `=` (YAML 1.1's `value` tag) reads as the string "="."""
    monkeypatch.setenv(SPECS_ENV, str(tmp_path))
    (tmp_path / "api.yaml").write_text("openapi: 3.0.0\nops:\n  - =\n", encoding="utf-8")
    assert {"openapi": "3.0.0", "ops": ["="]} == load_spec("api.yaml")
