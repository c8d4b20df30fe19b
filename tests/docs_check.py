"""What tests/test_docs.py checks the pages with: their shell commands, inline code, Python snippets and
README's answer table, each checker returning the problems it finds (an empty list: none)."""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.util
import re
import shlex
from functools import cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from ftbench.common import commands, config
from ftbench.common.errors import UserError

from .conftest import ROOT

PAGES = sorted({ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md")})
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL_BLOCK = re.compile(r"^```(bash|sh|shell|console)[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
NOT_RUN = re.compile(r"\A# not run: (\S.*)")  # a snippet's first line: why it cannot run in the test project
SUBSTITUTION = re.compile(r"\$\([^)]*\)")  # $(id -u): one word for the check
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")  # VAR=value before a command, or make's arguments
SEPARATORS = {";", "&&", "||", "|", "&"}
TOOLS = {
    *("dvc", "git", "docker", "mlflow", "pip", "pytest", "ruff", "torchrun", "nvidia-smi", "hf", "uv"),
    *("python", "python3", "bash", "sh", "export", "cd", "ls", "cat", "tar", "mkdir", ".", "source"),
}
RUNS_A_FILE = {"python", "python3", "bash", "sh"}
MAKE_OPTIONS_WITH_VALUE = {"-o", "-C", "-f", "-W", "-I", "--file", "--directory", "--old-file"}
SET_PARAM = {"-S", "--set-param"}
BENCH_VARIANT = re.compile(r"^([a-z0-9][a-z0-9_-]*):(.+)$")  # method:key=value,...: measure.with_overrides
PARAMS_FILE_PREFIX = re.compile(r"^[\w./-]+\.yaml:")  # dvc's file:key
# inline code: a dotted key of a params.yaml section, alone or as `key: value` / `key=value`
INLINE_KEY = re.compile(r"^([a-z_]+(?:\.[A-Za-z0-9_*<>-]+)+)(?:\s*[:=]\s*\S.*)?$")
FILE_NAME = re.compile(r"\.(json|jsonl|py|md|yaml|yml|txt|toml|tgz|db|html|png|sh|csv|parquet|pt|lock)$")
# inline code: a path in one of the repository's own folders (outputs such as metrics/ and models/ are not)
INLINE_PATH = re.compile(r"^(?:\.\./)?((?:src|tests|tools|bench|docs|requirements|results|\.ci)/\S*)$")
INLINE_NAME = re.compile(r"^ftbench(?:\.[A-Za-z_]\w*)+(?:\(\))?$")
INLINE_COMMAND = re.compile(r"^(make|ftbench|python3? -m ftbench|python3? (?:tools|bench)/|dvc exp run) ")
ENV_VARIABLE = re.compile(r"\bFTBENCH_[A-Z0-9_]+\b")
RUN_MODULE = re.compile(r"-m\s+ftbench\.[\w<]")


def rel(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name


# ---------------------------------------------------------------- shell commands


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


@cache
def project_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def key_problem(key: str) -> str | None:
    try:
        commands.keys_under(PARAMS_FILE_PREFIX.sub("", key))
    except KeyError:
        return f"{key} is not a params.yaml key"
    return None


def first_choice(value: str) -> str:
    """A sweep's first value (`8,16,32` -> `8`); commas inside brackets, braces or quotes belong to it."""
    depth, quote = 0, ""
    for i, char in enumerate(value):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            return value[:i]
    return value


def override_problem(sets: list[str]) -> str | None:
    """Whether config accepts params.yaml with the `-S` overrides of one `dvc exp run` applied (a sweep's
    first value; `~key` deletes, `+key=value` adds)."""
    tree = copy.deepcopy(project_params())
    for item in sets:
        item = PARAMS_FILE_PREFIX.sub("", item)
        key, _, value = item.lstrip("~+").partition("=")
        *parents, leaf = key.split(".")
        node = tree
        for k in parents:
            node = node.setdefault(k, {})
        if item.startswith("~"):
            node.pop(leaf, None)
        else:
            node[leaf] = yaml.safe_load(first_choice(value))
    try:
        config.Params.model_validate(tree)
    except ValidationError as err:
        first = err.errors()[0]
        return f"config refuses -S {' -S '.join(sets)}: {config.error_key(first['loc'])}: {first['msg']}"
    return None


def bench_variant_problem(variant: str) -> str | None:
    from ftbench.benchmark.measure import with_overrides

    try:
        with_overrides(config.Params.model_validate(project_params()), variant)
    except UserError as err:
        return str(err)
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
    for variant in args:
        if not (m := BENCH_VARIANT.match(variant)):
            continue
        method, sets = m.groups()
        if method not in project_params()["methods"]:
            found.append(f"bench variant {variant}: no method {method} in params.yaml")
            continue
        keys = [item.partition("=")[0] for item in sets.split(",")]
        problems = [key_problem(k if k.startswith("train.") else f"methods.{method}.{k}") for k in keys]
        found += [x for x in problems if x] or list(filter(None, [bench_variant_problem(variant)]))
    return found


def python_code_problems(code: str) -> list[str]:
    try:
        names = ftbench_imports(code)
    except SyntaxError as err:
        return [f"Python that does not parse: {err}"]
    return list(filter(None, map(ftbench_name_problem, names)))


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
    if script == "-c" and len(words) > 2:
        found += python_code_problems(words[2])
    sets = []
    for i, word in enumerate(words):
        rest = words[i + 1 :]
        if word == "-m" and rest and rest[0].startswith("ftbench."):
            found.append(f"python -m {rest[0]} runs nothing: the command is python -m ftbench {rest[0][8:]}")
        if word == "make":  # also inside `docker compose run ... make`
            found += make_problems(rest)
        elif word == "ftbench" and rest:
            found += ftbench_problems(rest[0], rest[1:])
        elif word in SET_PARAM and rest:  # `~key` deletes a key, `+key=value` adds one (Hydra's syntax)
            problem = key_problem(rest[0].partition("=")[0].lstrip("~+"))
            found += [problem] if problem else []
            sets.append(rest[0])
    if sets and not found and " ".join(words).count("exp run"):
        found += filter(None, [override_problem(sets)])
    return found


def shell_problems(markdown: str) -> list[str]:
    found = []
    for line in shell_lines(markdown):
        try:
            words = simple_commands(line)
        except ValueError as err:  # shlex: an unclosed quote
            found.append(f"`{line}`: does not parse as a shell command ({err})")
            continue
        found += [f"`{line}`: {problem}" for w in words for problem in command_problems(w)]
    return found


# ---------------------------------------------------------------- Python and ftbench names


def ftbench_imports(code: str) -> list[str]:
    """The ftbench names a piece of Python imports: `from ftbench.x import y` gives `ftbench.x.y`."""
    names = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names += [f"{node.module}.{a.name}" for a in node.names]
    return [name for name in names if name.split(".")[0] == "ftbench"]


def ftbench_name_problem(dotted: str) -> str | None:
    """None where `ftbench.a.b.c` is a module, or a name a module holds."""
    parts = dotted.removesuffix("()").split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            found = module != "ftbench.__main__" and importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            continue
        obj = importlib.import_module(module)
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return f"{dotted}: {module} has no {attr}"
            obj = getattr(obj, attr)
        return None
    return f"{dotted}: no such module"


def python_snippets() -> list[tuple[Path, int, str]]:
    blocks = {page: PYTHON_BLOCK.findall(page.read_text()) for page in PAGES}
    return [(page, i, code) for page, codes in blocks.items() for i, code in enumerate(codes)]


def not_run_reason(code: str) -> str | None:
    m = NOT_RUN.match(code)
    return m.group(1) if m else None


# ---------------------------------------------------------------- inline code


@cache
def source_text() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "src/ftbench").rglob("*.py")))


def path_problem(path: str) -> str | None:
    path = re.split(r"[:#]", path)[0]
    cut = re.search(r"[<*{$]", path)
    if cut:  # a pattern: the folder it is in exists
        path = path[: cut.start()].rpartition("/")[0]
    return None if (ROOT / path).exists() else f"{path}: no such file or folder in the repository"


def inline_problems(markdown: str) -> list[str]:
    """What the page's inline code names that does not exist, and the page's every FTBENCH_ variable
    the code does not read."""
    found = []
    sections = set(config.Params.model_fields)
    for span in INLINE.findall(FENCE.sub("", markdown)):
        span = span.strip()
        if (m := INLINE_KEY.match(span)) and m.group(1).split(".")[0] in sections:
            key = m.group(1).removesuffix(".*")
            if not FILE_NAME.search(key) and (problem := key_problem(key)):
                found.append(f"`{span}`: {problem}")
        elif m := INLINE_PATH.match(span):
            if problem := path_problem(m.group(1)):
                found.append(f"`{span}`: {problem}")
        elif INLINE_NAME.match(span) and f'"{span}"' not in source_text():  # not a name the code writes
            if problem := ftbench_name_problem(span):
                found.append(f"`{span}`: {problem}")
        elif INLINE_COMMAND.match(span) and not re.search(r"<|\.\.\.", span):
            found += [f"`{span}`: {p}" for words in simple_commands(span) for p in command_problems(words)]
    for name in sorted(set(ENV_VARIABLE.findall(markdown))):
        if name not in source_text():
            found.append(f"{name}: no code of src/ftbench reads it")
    if RUN_MODULE.search(markdown):
        found.append("`python -m ftbench.<command>` runs nothing: it is `python -m ftbench <command>`")
    return found


# ---------------------------------------------------------------- README's answer table


def answer_table_problems(markdown: str, root: Path = ROOT) -> list[str]:
    """Each number of the table under `## The answer...` against the report.md of the run folder that
    section links: it must be on a report line of the row's model (`| <model> |`)."""
    section = re.search(r"^## The answer.*?(?=^## |\Z)", markdown, re.MULTILINE | re.DOTALL)
    if not section:
        return ["no `## The answer` section"]
    run = re.search(r"\]\((results/[^)#]+?)/(?:README\.md)?\)", section.group())
    if not run:
        return ["the answer section links no results/<run>/ folder"]
    report = (root / run.group(1) / "report.md").read_text().splitlines()
    rows = [r for r in section.group().splitlines() if r.startswith("|") and not r.startswith("|-")][1:]
    if not rows:
        return ["the answer section has no table"]
    found = []
    for row in rows:
        label, *cells = [c.strip() for c in row.strip().strip("|").split("|")]
        model = label.split()[0]
        lines = [x for x in report if f"| {model} |" in x]
        for number in re.findall(r"\d+(?:\.\d+)?", " ".join(cells)):
            exact = re.compile(rf"(?<![\d.]){re.escape(number)}(?!\.?\d)")  # 100 is not 100.0
            if not any(exact.search(x) for x in lines):
                found.append(f"{model}: {number} is on no line of {model} in {run.group(1)}/report.md")
    return found
