"""Every command in README.md's shell code blocks names something real: a make target of the Makefile, an
ftbench command, params.yaml keys (`-S key=value`, bench variants), a file of the repository, or a known
tool. A renamed target, command or key then fails here instead of in a newcomer's terminal. Its Python
snippets run, on the tiny model and a QLoRA adapter in the paths the pipeline writes."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
import yaml

from ftbench.common import commands

from .conftest import ROOT

PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL_BLOCK = re.compile(r"^```(bash|sh|shell|console)[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SUBSTITUTION = re.compile(r"\$\([^)]*\)")  # $(id -u): one word for the check
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")  # VAR=value before a command, or make's arguments
SEPARATORS = {";", "&&", "||", "|", "&"}
TOOLS = {
    *("dvc", "git", "docker", "mlflow", "pip", "pytest", "ruff", "torchrun", "nvidia-smi", "hf"),
    *("python", "python3", "bash", "sh", "export", "cd", "ls", "cat"),
}
RUNS_A_FILE = {"python", "python3", "bash", "sh"}
MAKE_OPTIONS_WITH_VALUE = {"-o", "-C", "-f", "-W", "-I", "--file", "--directory", "--old-file"}
SET_PARAM = {"-S", "--set-param"}
BENCH_VARIANT = re.compile(r"^([a-z0-9][a-z0-9_-]*):(.+)$")  # method:key=value,...: measure.with_overrides


def shell_lines(markdown: str) -> list[str]:
    """The command lines of the shell code blocks, continuations joined; in console blocks, `$ ` lines."""
    lines = []
    for lang, body in SHELL_BLOCK.findall(markdown):
        for line in body.replace("\\\n", " ").splitlines():
            if lang == "console" and not line.startswith("$ "):
                continue  # a command's output
            if line := line.removeprefix("$ ").strip():
                lines.append(line)
    return lines


def simple_commands(line: str) -> list[list[str]]:
    """A line's commands as words: split at ; && || | &, comments and redirections left out."""
    lexer = shlex.shlex(SUBSTITUTION.sub("$X", line), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    found, words, redirected = [], [], False
    for token in lexer:
        if token in SEPARATORS:
            found.append(words)
            words = []
        elif set(token) <= set("<>&"):
            redirected = True  # the next word is a file
        elif not redirected:
            words.append(token)
        else:
            redirected = False
    return [w for w in [*found, words] if w]


def make_targets() -> set[str]:
    rule = re.compile(r"^([A-Za-z0-9_./-]+)\s*:(?!=)", re.MULTILINE)
    return {t for t in rule.findall((ROOT / "Makefile").read_text()) if not t.startswith(".")}


def methods() -> list[str]:
    return list(yaml.safe_load((ROOT / "params.yaml").read_text())["methods"])


def key_problem(key: str) -> str | None:
    try:
        commands.keys_under(key.split(":", 1)[-1])  # dvc also takes file:key
    except KeyError:
        return f"{key} is not a params.yaml key"
    return None


def make_problems(args: list[str]) -> list[str]:
    targets, skip = make_targets(), False
    found = []
    for word in args:
        if skip or ASSIGNMENT.match(word):
            skip = False
        elif word.startswith("-"):
            skip = word in MAKE_OPTIONS_WITH_VALUE
        elif word not in targets:
            found.append(f"make target {word} is not in the Makefile ({', '.join(sorted(targets))})")
    return found


def ftbench_problems(command: str, args: list[str]) -> list[str]:
    if command.startswith("-"):  # ftbench --help
        return []
    if command not in commands.COMMANDS:
        return [f"ftbench {command} is no ftbench command ({', '.join(commands.COMMANDS)})"]
    if command != "bench":
        return []
    found = []
    for method, sets in (m.groups() for m in map(BENCH_VARIANT.match, args) if m):
        if method not in methods():
            found.append(f"bench variant {method}:{sets}: no method {method} in params.yaml")
        for key in (item.partition("=")[0] for item in sets.split(",")):
            absolute = key if key.startswith("train.") else f"methods.{method}.{key}"
            found += filter(None, [key_problem(absolute)])
    return found


def command_problems(words: list[str]) -> list[str]:
    while words and ASSIGNMENT.match(words[0]):
        words = words[1:]
    if not words:
        return []
    tool, found = words[0], []
    if tool not in TOOLS | {"make", "ftbench"} and not (ROOT / tool).is_file():
        found.append(f"{tool} is no make target, ftbench command, file of the repository or known tool")
    script = words[1] if tool in RUNS_A_FILE and len(words) > 1 else ""
    if re.search(r"\.(py|sh)$", script) and not (ROOT / script).is_file():
        found.append(f"{script}: no such file")
    for i, word in enumerate(words):
        rest = words[i + 1 :]
        if word == "-m" and rest and rest[0].startswith("ftbench."):
            found.append(f"python -m {rest[0]} runs nothing: the command is python -m ftbench {rest[0][8:]}")
        if word == "make":  # also inside `docker compose run ... make`
            found += make_problems(rest)
        elif word == "ftbench" and rest:
            found += ftbench_problems(rest[0], rest[1:])
        elif word in SET_PARAM and rest:  # `~key` deletes a key, `+key=value` adds one (Hydra's syntax)
            found += filter(None, [key_problem(rest[0].partition("=")[0].lstrip("~+"))])
    return found


def readme_problems(markdown: str) -> list[str]:
    return [
        f"`{line}`: {problem}"
        for line in shell_lines(markdown)
        for words in simple_commands(line)
        for problem in command_problems(words)
    ]


def test_every_readme_command_names_real_targets_commands_and_keys():
    problems = readme_problems((ROOT / "README.md").read_text())
    assert not problems, "README.md commands that name nothing real:\n" + "\n".join(problems)


def block(lang: str, *lines: str) -> str:
    return f"Some prose.\n\n```{lang}\n" + "\n".join(lines) + "\n```\n"


@pytest.mark.parametrize(
    ("markdown", "named"),
    [
        (block("bash", "make nosuchtarget"), "make target nosuchtarget"),
        (block("bash", "HF_TOKEN=x make repro nosuch   # comment"), "make target nosuch"),
        (block("sh", "docker compose run --rm trainer make -o /x seed nosuch"), "make target nosuch"),
        (block("bash", "dvc exp run -S train.nosuchkey=1"), "train.nosuchkey is not a params.yaml key"),
        (block("bash", "dvc exp run -S 'methods.qlora.lora.rank=[8,16]'"), "methods.qlora.lora.rank"),
        (block("bash", "dvc exp run -n x \\", "  -S nosuch=1"), "nosuch is not a params.yaml key"),
        (block("console", "$ ftbench trian qlora", "ftbench trian output"), "ftbench trian is no"),
        (block("shell", "python -m ftbench.train qlora"), "python -m ftbench.train runs nothing"),
        (block("shell", "python -m ftbench nosuch -v"), "ftbench nosuch is no ftbench command"),
        (block("bash", "python -m ftbench bench -- qlora:nosuch=1"), "methods.qlora.nosuch is not"),
        (block("bash", "python -m ftbench bench -- nomethod:lr=1"), "no method nomethod"),
        (block("bash", "dvc exp run -S '+data.nosuch.x=1'"), "data.nosuch.x is not a params.yaml key"),
        (block("bash", "git status && frobnicate --all"), "frobnicate is no make target"),
        (block("bash", "bash bench/nosuch.sh"), "bench/nosuch.sh: no such file"),
    ],
)
def test_the_check_names_the_line_and_what_is_wrong(markdown, named):
    problems = readme_problems(markdown)
    assert len(problems) == 1 and named in problems[0], problems


def test_the_check_passes_real_names_in_every_form():
    markdown = block(
        "bash",
        "HOST_UID=$(id -u) docker compose build   # a comment: make nosuch",
        "make -o install seed && dvc exp run -S 'seeds=[0,1]' -S methods.galore.galore.rank=8",
        "python -m ftbench bench -- qlora:grad_accum=8 galore:galore.svd=lowrank,train.compile=true",
        "dvc exp run -S '~data.datasets.builtin' -S '+data.datasets.gsm8k={source: hf:openai/gsm8k}'",
        "python -m ftbench --help && python -m ftbench evaluate base",
        "ftbench train --help > help.txt; ftbench --help | cat",
        "dvc exp run -S params.yaml:data.datasets.mine.source=builtin",
    ) + block("console", "$ ftbench report", "frobnicate: output, not a command")
    assert readme_problems(markdown) == []


def test_every_readme_python_snippet_runs(adapter, project):
    """Each snippet as a user pastes it, in a project whose models/ holds the base and a QLoRA adapter."""
    snippets = PYTHON_BLOCK.findall((ROOT / "README.md").read_text())
    assert snippets, "README.md shows no Python"
    for snippet in snippets:
        run = subprocess.run([sys.executable, "-c", snippet], cwd=project, capture_output=True, text=True)
        assert run.returncode == 0, f"{snippet}\n{run.stderr[-3000:]}"
