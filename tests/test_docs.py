"""The user-facing pages (README.md, BENCHMARKS.md, docs/*.md) name only what exists, so a renamed target,
command, key, module or file fails here instead of in a reader's terminal:

- every command of their shell blocks names a make target of the Makefile, an ftbench command, params.yaml
  keys (`-S key=value`, bench variants) with values config accepts together, a file of the repository or a
  known tool; the ftbench names a `python -c` imports exist;
- every Python snippet runs, in a project whose models/ holds the tiny model as the base and a QLoRA
  adapter where the pipeline writes them; a snippet that cannot run there (a GPU, a hub model) opens with
  `# not run: <why>` and is skipped, its ftbench imports still checked;
- inline `code` that looks like a params key (`train.cuda_graphs`, `methods.*.micro_batch_tokens: 1024`),
  a path of the repository (`src/ftbench/...`), an ftbench name (`ftbench.training.loop.fit`) or a command
  (`make repro GPU=1`) names something real, and every FTBENCH_ variable is one the code reads;
- every number of README.md's answer table is in its run's report.md, on a line of that model.
"""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.util
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
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


# ---------------------------------------------------------------- the pages


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_shell_command_names_real_targets_commands_and_keys(page):
    problems = shell_problems(page.read_text())
    assert not problems, f"{rel(page)}: commands that name nothing real:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_inline_code_names_real_keys_paths_modules_and_commands(page):
    problems = inline_problems(page.read_text())
    assert not problems, f"{rel(page)}: inline code that names nothing real:\n" + "\n".join(problems)


def test_every_number_of_the_readme_answer_table_is_in_its_report():
    problems = answer_table_problems((ROOT / "README.md").read_text())
    assert not problems, "README.md's answer table:\n" + "\n".join(problems)


SNIPPETS = python_snippets()


@pytest.mark.parametrize(("page", "index", "code"), SNIPPETS, ids=[f"{rel(p)}-{i}" for p, i, _ in SNIPPETS])
def test_every_python_snippet_runs(page, index, code, request):
    """Each snippet as a user pastes it, in a project whose models/ holds the base and a QLoRA adapter;
    one marked `# not run: <why>` only has its ftbench imports checked."""
    problems = python_code_problems(code)
    assert not problems, f"{rel(page)}, snippet {index}: " + "; ".join(problems)
    if reason := not_run_reason(code):
        pytest.skip(f"{rel(page)}, snippet {index}: not run: {reason}")
    request.getfixturevalue("adapter")
    project = request.getfixturevalue("project")
    run = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True)
    assert run.returncode == 0, f"{rel(page)}, snippet {index}:\n{code}\n{run.stderr[-3000:]}"


def test_the_pages_show_python_that_runs():
    assert any(not not_run_reason(code) for _, _, code in SNIPPETS)


# ---------------------------------------------------------------- the checks can fail


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
        # keys that exist, with values config refuses
        (block("bash", "dvc exp run -S train.gradient_checkpointing=true"), "train: Value error, cuda_gr"),
        (block("bash", "dvc exp run --queue -S methods.qlora.lr=2,0.1"), "methods.qlora.lr: Input should be"),
        (block("bash", "dvc exp run -S '~data.datasets.builtin'"), "data.datasets: Value error, list at"),
        (block("bash", "ftbench bench -- qlora:train.compile=true"), "cuda_graphs: true does not combine"),
        (block("bash", "python -c 'from ftbench.bench import build_model'"), "ftbench has no bench"),
        (block("bash", "python -c 'from ftbench.loading import nosuch'"), "ftbench.loading has no nosuch"),
        (block("bash", "dvc exp run -S 'seeds=[0,1]"), "does not parse as a shell command"),
    ],
)
def test_the_shell_check_names_the_line_and_what_is_wrong(markdown, named):
    problems = shell_problems(markdown)
    assert len(problems) == 1 and named in problems[0], problems


def test_the_shell_check_passes_real_names_in_every_form():
    markdown = block(
        "bash",
        "HOST_UID=$(id -u) docker compose build   # a comment: make nosuch",
        "make -o install seed && dvc exp run -S 'seeds=[0,1]' -S methods.galore.galore.rank=8",
        "python -m ftbench bench -- qlora:grad_accum=8 galore:galore.svd=lowrank,train.compile=false",
        "dvc exp run -S '~data.datasets.builtin' -S '+data.datasets.gsm8k={source: hf:openai/gsm8k}'",
        "python -m ftbench --help && python -m ftbench evaluate base",
        "ftbench train --help > help.txt; ftbench --help | cat",
        "dvc exp run -S params.yaml:data.datasets.mine.source=builtin",
        "dvc exp run --queue -S methods.qlora.lora.r=8,16,32 -S 'train.betas=[0.9,0.95]'",
        "dvc exp run -S train.gradient_checkpointing=true -S train.cuda_graphs=false",
        "make install GPU=1 && . .venv/bin/activate",
        "python -c 'from ftbench.benchmark.measure import build_model; import ftbench.loading'",
    ) + block("console", "$ ftbench report", "frobnicate: output, not a command")
    assert shell_problems(markdown) == []


@pytest.mark.parametrize(
    ("span", "named"),
    [
        ("`train.nosuch`", "train.nosuch is not a params.yaml key"),
        ("`methods.*.galore.nosuch: 2`", "methods.*.galore.nosuch is not"),
        ("`evaluate.generate`", "evaluate.generate is not a params.yaml key"),
        ("`src/ftbench/config.py`", "src/ftbench/config.py: no such file"),
        ("`src/ftbench/nosuch/<recipe>.py`", "src/ftbench/nosuch: no such file"),
        ("`tests/test_nosuch.py:12`", "tests/test_nosuch.py: no such file"),
        ("`ftbench.bench`", "ftbench.bench: ftbench has no bench"),
        ("`ftbench.training.loop.nosuch()`", "ftbench.training.loop has no nosuch"),
        ("`make repro nosuch`", "make target nosuch"),
        ("`python -m ftbench trian qlora`", "ftbench trian is no"),
        ("`dvc exp run -S train.compile=true`", "cuda_graphs"),
        ("set FTBENCH_NOSUCH=1", "FTBENCH_NOSUCH: no code of src/ftbench reads it"),
        ("run `python -m ftbench.<stage>`", "runs nothing"),
    ],
)
def test_the_inline_check_names_what_is_wrong(span, named):
    problems = inline_problems(f"Some prose with {span} in it.\n")
    assert len(problems) == 1 and named in problems[0], problems


def test_the_inline_check_passes_real_names_and_leaves_the_rest():
    markdown = (
        "`train.cuda_graphs: true`, `methods.*.micro_batch_tokens`, `methods.<method>.lora.r=32`,"
        " `resources.*`, `data.datasets.gsm8k`, `ensembles.<ensemble>.weights`, `merge.qlora.base: nf4`"
        " `src/ftbench/recipes/<recipe>.py`, `src/ftbench/**/*.py`, `tools/stage_table.py`, `tests/recipes/`"
        " `ftbench.training.loop.fit`, `ftbench.evaluation.generate.generate()`, `make repro GPU=1`"
        " `python tools/stage_table.py SECONDS`, `dvc exp run -S <key>=<value>`, FTBENCH_LOG, FTBENCH_MLFLOW"
        " and what is none of these: `report.json`, `data.json`, `models/base`, `metrics/nosuch.json`,"
        " `stats.final_answer`, `hf:openai/gsm8k`, `seeds: [0, 1, 2]`, the `ftbench.invocation` tag\n"
        "```bash\n`train.nosuch` in a block is the shell check's\n```\n"
    )
    assert inline_problems(markdown) == []


def test_the_answer_table_check_finds_a_number_its_report_does_not_hold(tmp_path):
    (tmp_path / "results/run").mkdir(parents=True)
    (tmp_path / "results/run/report.md").write_text(
        "| gsm8k | qlora | 19.14 ± 0.22 | 29.69 ± 0.31 |\n| 6 | qlora | 18.91 | 100.0 | 5.87 |\n"
        "| gsm8k | galore | 18.14 ± 0.25 | 29.56 ± 0.31 |\n"
    )
    readme = (
        "## The answer so far\n\n[the run](results/run/README.md)\n\n"
        "| model | BLEU-4 | wall s |\n|---|---|---|\n"
        "| qlora (NF4) | 19.14 ± 0.22 | 100.0 |\n| galore | 18.14 ± 0.25 | 100.0 |\n"
        "| qlora (rounded) | 19.1 ± 0.2 | 100 |\n\n## Next\n"
    )
    assert answer_table_problems(readme, tmp_path) == [
        "galore: 100.0 is on no line of galore in results/run/report.md",
        *(f"qlora: {n} is on no line of qlora in results/run/report.md" for n in ["19.1", "0.2", "100"]),
    ]


def test_a_snippet_marked_not_run_says_why():
    assert not_run_reason("# not run: needs a GPU\nimport torch\n") == "needs a GPU"
    assert not_run_reason("import torch  # not run: a comment, not the marker\n") is None
