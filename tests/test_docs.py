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

import subprocess
import sys

import pytest

from .conftest import ROOT
from .docs_check import (
    PAGES,
    answer_table_problems,
    inline_problems,
    not_run_reason,
    python_code_problems,
    python_snippets,
    rel,
    shell_problems,
)

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
