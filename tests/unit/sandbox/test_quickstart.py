"""The sandbox's config writer and its refusals: the written config passes `check` (and
`check --connect` against the seeded simulators, so every mapped field exists in each app),
holds no secret, and a directory or port the sandbox must not take is refused naming the option."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from customer_sync.cli import app
from customer_sync.sandbox import seed
from customer_sync.sandbox.quickstart import (
    CONFIG_NAME,
    ENV_NAME,
    MARK,
    STORE_NAME,
    SandboxRefused,
    Simulators,
    Urls,
    check_port,
    claim_dir,
    render_config,
    sandbox_env,
    write_files,
)

URLS = Urls(hubspot="http://127.0.0.1:41001", zendesk="http://127.0.0.1:41002",
            mailchimp="http://127.0.0.1:41003/3.0", chatwoot="http://127.0.0.1:41004",
            daemon="http://127.0.0.1:8080")


def _write(folder: Path, env: dict[str, str], urls: Urls = URLS) -> Path:
    text = render_config(urls=urls, store_path=(folder / STORE_NAME).resolve(),
                         listen="127.0.0.1:8080", list_id="a6b5da1054",
                         zendesk_agent="admin@example.com", chatwoot_account=1)
    return write_files(folder, config_text=text, env=env)


def test_written_config_passes_check_and_holds_no_secret(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The config loads as written (`check`: store to be created, four apps), references
    every credential as ${VAR} and holds none; sandbox.env holds them, owner-only."""
    env = sandbox_env()
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    config = _write(tmp_path, env)

    result = CliRunner().invoke(app, ["check", "--config", str(config)])

    assert 0 == result.exit_code, (result.stdout, result.stderr)
    assert f"ok config: {config} (4 of 4 apps enabled)" in result.stdout.splitlines()
    text = config.read_text(encoding="utf-8")
    assert MARK == text.splitlines()[0]
    assert [] == [var for var, value in env.items() if value in text]
    assert all(f"${{{var}}}" in text for var in env)
    env_file = tmp_path / ENV_NAME
    assert 0o600 == stat.S_IMODE(env_file.stat().st_mode)
    assert {f"export {var}={value}" for var, value in env.items()} <= set(
        env_file.read_text(encoding="utf-8").splitlines())


def test_written_config_passes_check_connect_against_the_seeded_simulators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Served on loopback, the seeded simulators answer every app, and every field the
    config maps exists in its app (HubSpot's email_consent custom property included)."""
    env = sandbox_env()
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    sims = Simulators(env, daemon_url="http://127.0.0.1:8080")
    sims.start()
    try:
        config = _write(tmp_path, env, sims.urls)
        result = CliRunner().invoke(app, ["check", "--connect", "--config", str(config)])
    finally:
        sims.stop()

    assert 0 == result.exit_code, (result.stdout, result.stderr)
    ok = [line for line in result.stdout.splitlines() if line.startswith("ok app ")]
    assert 4 == len(ok), result.stdout
    held = {app: sum(app in p.apps for p in seed.PEOPLE) for app in seed.APPS}
    assert held["crm"] == len(sims.hubspot.contact_ids())
    assert held["list"] == sims.mailchimp.member_count
    assert held["inbox"] == sims.chatwoot.contact_count


def test_a_config_the_sandbox_did_not_write_is_refused_unless_forced(tmp_path: Path) -> None:
    """`--dir` holding an operator's config is left alone (exit 2, naming --force); with
    --force the directory is taken."""
    config = tmp_path / CONFIG_NAME
    config.write_text('[daemon]\nstore_url = "sqlite:///mine.db"\n', encoding="utf-8")

    with socket.socket() as probe:  # a free port, so that what is refused is the directory
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(app, ["sandbox", "--dir", str(tmp_path), "--port", str(port)])

    assert 2 == result.exit_code
    assert "--force" in result.stderr and str(config) in result.stderr
    assert '[daemon]\nstore_url = "sqlite:///mine.db"\n' == config.read_text(encoding="utf-8")
    with claim_dir(tmp_path, force=True) as folder:
        assert tmp_path == folder


def test_a_sandbox_config_is_taken_again_and_its_old_store_removed(tmp_path: Path) -> None:
    """A directory a sandbox wrote is reused; the last run's store goes with its simulators."""
    (tmp_path / CONFIG_NAME).write_text(MARK + "\n", encoding="utf-8")
    (tmp_path / STORE_NAME).write_bytes(b"old")
    with claim_dir(tmp_path, force=False):
        assert not (tmp_path / STORE_NAME).exists()


def test_a_second_sandbox_on_one_directory_is_refused(tmp_path: Path) -> None:
    with claim_dir(tmp_path, force=False), pytest.raises(SandboxRefused, match="another sandbox"), \
            claim_dir(tmp_path, force=False):
        pass


def test_a_taken_port_is_refused_naming_the_option(tmp_path: Path) -> None:
    """A daemon port already in use ends the start with one line naming --port, exit 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(SandboxRefused, match=f"--port {port}"):
            check_port(port)
        result = CliRunner().invoke(app, ["sandbox", "--dir", str(tmp_path / "s"), "--port", str(port)])

    assert 2 == result.exit_code
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: --port {port}: cannot listen on 127.0.0.1:{port}: "), line
    assert "Traceback" not in result.output
    assert not (tmp_path / "s").exists()


def test_an_admin_token_too_short_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """CUSTOMER_SYNC_ADMIN_TOKEN set but guessable: one line naming it, exit 2, nothing written."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(app, ["sandbox", "--dir", str(tmp_path / "s"), "--port", str(port)],
                                env={"CUSTOMER_SYNC_ADMIN_TOKEN": "short"})

    assert 2 == result.exit_code
    [line] = result.stderr.splitlines()
    assert line.startswith("error: CUSTOMER_SYNC_ADMIN_TOKEN: "), line
    assert not (tmp_path / "s").exists()
