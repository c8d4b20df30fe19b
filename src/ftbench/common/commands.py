"""What each ftbench command does, takes and reads: the text of `ftbench --help` and `ftbench <command>
--help`, and its command-line parsing.

The params.yaml keys each stage reads are declared here, once: `--help` lists them and dvc.yaml's
`params:` must name the same (tests/test_dvc_deps.py checks), so that the package needs no dvc.yaml.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NoReturn, get_args, get_origin

from pydantic import BaseModel

from ftbench.common import config
from ftbench.common.errors import UserError

LOG_ENV = "FTBENCH_LOG"
METHOD = "<method>"  # in a declared key: the command's argument (`methods.<method>` for `train qlora`)
MEMBER = "<member>"  # in a declared key: each member of the ensemble the command is given
# how --help spells an entry of each mapping in params.yaml
ENTRY = {"methods": METHOD, "merge": METHOD, "ensembles": "<ensemble>", "datasets": "<dataset>"}
HELP_WIDTH = 100


@dataclass(frozen=True)
class Argument:
    name: str
    help: str
    """What it names; the names params.yaml offers are added when it loads."""
    choices: Callable[[config.Params], list[str]]
    reads: tuple[str, ...] = ()
    """Keys read for the method named: <method> stands for it."""
    base: bool = False
    """Whether `base`, the untrained model, is a choice too (it reads none of `reads`)."""
    member_reads: tuple[str, ...] = ()
    """Keys read for each member of the ensemble named: <member> stands for it."""

    def names(self, p: config.Params) -> list[str]:
        return ["base", *self.choices(p)] if self.base else self.choices(p)


@dataclass(frozen=True)
class Command:
    summary: str
    """One line for `ftbench --help`."""
    reads: tuple[str, ...]
    """params.yaml keys (sections stand for every key in them); dvc.yaml's `params:` for a stage."""
    argument: Argument | None = None
    gpus: Callable[[config.Params], int | str] | None = None
    """How many GPUs the command claims before it starts (ftbench.common.gpus); None: it claims none."""


def gpus_param(p: config.Params) -> int | str:
    return p.resources.gpus


COMMANDS = {
    "model": Command("fetch or unpack the base model into models/base", ("model",)),
    "data": Command("read, tokenize and split every dataset into data/prepared", ("seed", "data")),
    "train": Command(
        "train one method on every dataset, once per seed, into models/<method>",
        ("seed", "seeds", "data.datasets", "train", "resources"),
        Argument("method", "a method of params.yaml", lambda p: list(p.methods), ("methods.<method>",)),
        gpus=gpus_param,
    ),
    "merge": Command(
        "fold a QLoRA method's adapter into a full-precision model, models/merged/<method>",
        ("seeds", "data.datasets", "resources.max_gpu_memory_gib"),
        Argument(
            "method",
            "a qlora method listed under params.yaml's merge",
            lambda p: list(p.merge),
            ("merge.<method>", "methods.<method>.recipe"),
        ),
        gpus=lambda p: 1,  # one process
    ),
    "evaluate": Command(
        "answer each test split and score the answers (BLEU-4, ROUGE) into metrics/eval",
        (
            "data.datasets",
            "evaluate",
            "resources.gpus",
            "resources.max_gpu_memory_gib",
            "train.fused_cross_entropy",  # the test loss's output layer
        ),
        Argument(
            "model",
            "base (the untrained model) or a method of params.yaml",
            lambda p: list(p.methods),
            ("seeds", "methods.<method>.recipe"),
            base=True,
        ),
        gpus=gpus_param,
    ),
    "ensemble": Command(
        "answer each test split with an ensemble's members decoding together, and score the answers",
        (
            "data.datasets",
            "evaluate",
            "resources.gpus",
            "resources.max_gpu_memory_gib",
            "train.fused_cross_entropy",  # a merged QLoRA member's continuity check
        ),
        Argument(
            "ensemble",
            "an ensemble of params.yaml",
            lambda p: list(p.ensembles),
            ("seeds", "ensembles.<method>"),
            member_reads=("methods.<member>.recipe",),
        ),
        gpus=gpus_param,
    ),
    "report": Command(
        "compare the methods: metrics/report.md and report.html, intervals, costs, plots",
        ("seed", "seeds", "model.source", "data.datasets", "methods", "ensembles", "report"),
    ),
    "bench": Command(
        "time training and generation on a model of a given shape (speed, memory; no pipeline outputs)",
        ("seed", "seeds", "data", "methods", "train", "evaluate", "resources.peak_tflops"),
    ),
}


def params_read(command: str, argument: str | None = None, p: config.Params | None = None) -> set[str]:
    """The keys `ftbench <command> <argument>` reads, its argument in place of <method> and, given the
    params `p`, an ensemble's members in place of <member>."""
    cmd = COMMANDS[command]
    keys = set(cmd.reads)
    if cmd.argument and not (cmd.argument.base and argument == "base"):
        keys |= {k.replace(METHOD, argument or METHOD) for k in cmd.argument.reads}
        if cmd.argument.member_reads:
            members = p.ensembles[argument].members if p is not None and argument else [MEMBER]
            keys |= {k.replace(MEMBER, m) for k in cmd.argument.member_reads for m in members}
    return keys


# ---------------------------------------------------------------- params keys, from config's classes


def models_in(annotation) -> tuple[list[type[BaseModel]], bool]:
    """The params classes a field holds (itself, optional, the members of a union such as a method's
    recipes, or as the values of a mapping), and whether as a mapping's values."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation], False
    if get_origin(annotation) is dict:
        return models_in(get_args(annotation)[1])[0], True
    return [m for arg in get_args(annotation) for m in models_in(arg)[0]], False


def merged_fields(classes: list[type[BaseModel]]) -> dict[str, tuple]:
    """name -> (annotation, description) over the classes (a union's members share most keys); where
    the members describe a key differently (a method's `recipe`), the descriptions are joined."""
    merged: dict[str, tuple] = {}
    for cls in classes:
        for name, field in cls.model_fields.items():
            annotation, doc = merged.get(name, (field.annotation, ""))
            more = (field.description or "").rstrip(".")
            if more and more not in doc:
                doc = f"{doc}; {more}" if doc else more
            merged[name] = (annotation, doc)
    return merged


def leaf_keys(
    classes: Sequence[type[BaseModel]] = (config.Params,), prefix: str = "", doc: str = ""
) -> Iterator[tuple[str, str]]:
    """Every key params.yaml can set under `classes`, as (dotted key, what it does); a mapping's entries
    are spelt <method> or <dataset>. A key without a description of its own takes its section's."""
    for name, (annotation, description) in merged_fields(classes).items():
        key, described = f"{prefix}{name}", description or doc
        sub, entries = models_in(annotation)
        if not sub:
            yield key, described
        else:
            entry = f".{ENTRY.get(name, '<name>')}" if entries else ""
            yield from leaf_keys(sub, f"{key}{entry}.", described)


def keys_under(section: str) -> list[tuple[str, str]]:
    """The leaf keys a declared key covers (itself, if it is one); <method> or any name matches an entry."""
    found = [(k, d) for k, d in leaf_keys() if _covers(section.split("."), k.split("."))]
    if not found:
        raise KeyError(f"{section}: no such params.yaml key")
    return found


def _covers(section: list[str], key: list[str]) -> bool:
    entry = set(ENTRY.values()) | {"<name>"}
    head = key[: len(section)]
    return len(head) == len(section) and all(k in (s, *entry) for s, k in zip(section, head, strict=True))


# ---------------------------------------------------------------- parsing


class Parser(argparse.ArgumentParser):
    """argparse with the project's errors: one `ftbench: error:` line (a UserError), exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message}; see `{self.prog} --help`")


class SetLogLevel(argparse.Action):
    """-v/-q: the level goes to FTBENCH_LOG, which stage logging reads (torchrun's workers inherit it)."""

    def __init__(self, option_strings: list[str], dest: str, const: str, help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, const=const, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        # the stage configured logging before parsing its arguments: set the level itself too
        from ftbench.common import progress

        progress.set_level(self.const)


def add_log_level(ap: argparse.ArgumentParser) -> None:
    level = ap.add_mutually_exclusive_group()
    level.add_argument(
        "-v", "--verbose", action=SetLogLevel, const="debug", help=f"debug messages too ({LOG_ENV}=debug)"
    )
    level.add_argument(
        "-q",
        "--quiet",
        action=SetLogLevel,
        const="warning",
        help=f"warnings and errors only ({LOG_ENV}=warning)",
    )


def parser(command: str, p: config.Params | None = None, load_error: UserError | None = None) -> Parser:
    """`ftbench <command>`'s parser: its argument (names from `p`, when params.yaml loaded), -v/-q, and
    the params keys it reads in its --help."""
    cmd = COMMANDS[command]
    ap = Parser(
        prog=f"ftbench {command}",
        description=textwrap.fill(
            f"{cmd.summary[0].upper()}{cmd.summary[1:]}. The same as `python -m ftbench {command}`.",
            HELP_WIDTH,
        ),
        epilog=reads_help(cmd),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_log_level(ap)
    if arg := cmd.argument:
        names = arg.names(p) if p is not None else None
        known = f": {', '.join(names)}" if names is not None else f" (params.yaml did not load: {load_error})"
        ap.add_argument(arg.name, choices=names, metavar=arg.name, help=f"{arg.help}{known}")
    return ap


def parse(command: str, argv: list[str]) -> tuple[config.Params, str | None]:
    """A pipeline stage's command line: params.yaml, and the stage's argument (None if it takes none).
    --help works without params.yaml; without it, the stage itself stops with load()'s error."""
    try:
        p, load_error = config.load(), None
    except UserError as err:
        p, load_error = None, err
    args = parser(command, p, load_error).parse_args(argv)
    if load_error is not None:
        raise load_error
    arg = COMMANDS[command].argument
    return p, getattr(args, arg.name) if arg else None


def reads_help(cmd: Command) -> str:
    """--help's list of the params.yaml keys a command reads, each with what it does."""
    groups = [("params.yaml keys it reads:", cmd.reads)]
    if cmd.argument and cmd.argument.reads:
        unless = " (base reads none of them)" if cmd.argument.base else ""
        groups.append(
            (f"and, for the {cmd.argument.name} it is given as {METHOD}{unless}:", cmd.argument.reads)
        )
    if cmd.argument and cmd.argument.member_reads:
        groups.append((f"and, for each of its members as {MEMBER}:", cmd.argument.member_reads))
    listed = [
        (title, [kd for section in sections for kd in keys_under(section)]) for title, sections in groups
    ]
    width = max(len(key) for _, keys in listed for key, _ in keys) + 2
    lines = []
    for title, keys in listed:
        lines.append(title)
        for key, doc in keys:
            text = f"  {key:<{width}}{_first_sentence(doc)}"
            lines += textwrap.wrap(text, HELP_WIDTH, subsequent_indent=" " * (width + 2))
    return "\n".join(lines)


def _first_sentence(doc: str) -> str:
    text = " ".join(doc.split())
    return text.split(". ")[0].rstrip(".") + "." if text else ""


def overview() -> str:
    """`ftbench --help`'s list of commands, one line each."""
    width = max(map(len, COMMANDS)) + 2
    lines = [f"  {name:<{width}}{cmd.summary}" for name, cmd in COMMANDS.items()]
    return "commands:\n" + "\n".join(lines)
