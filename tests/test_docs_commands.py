"""Every command in the README and docs/ is checked, and nothing is trained.

Commands are read from the ```bash, ```sh and ```console blocks (``$ `` lines) of README.md and docs/*.md and
expanded by bash itself (variables, quotes, line continuations, comments) with every external command replaced
by a recorder, so nothing in a block runs. Each command is then checked by what it is:

``make TARGET ... VAR=value``
    ``make -n`` with the same variables succeeds; ``STUDY`` names a study file; the ``datascale``,
    ``datascale-plan`` and ``scaling-fit`` commands the dry run prints are checked as below (in-process part).
``datascale ...`` (or ``python -m datascale.launch ...``)
    the console script composes it (``--cfg job``; command-line sweeps left out, Hydra's ``--cfg`` refuses
    them), and every point of its sweep is composed and validated in-process by the launcher's own
    ``validate_config`` and override check: the checks a study runs before training, data preparation aside.
``datascale-plan STUDY ...``
    its ``--help`` names every flag used; the study and overrides are validated as a ``datascale`` study
    (planning itself prepares the data: minutes, not a docs check).
``datascale-prepare ...``
    its ``--help`` names every flag used; its overrides are validated against conf/config.yaml.
``scaling-fit PATH ...`` (or ``python -m scaling_analysis``)
    ``--help`` works and names every flag and choice used; PATH is a study directory under a results
    directory the docs use, or a .csv/.tsv/.parquet table.
``python -m MODULE ...``
    the module's ``--help`` works and names every flag used.
``.ci/run``
    executable, ``bash -n`` clean, and every ``make`` line in it passes the make check.
anything else
    must be in :data:`NOT_RUN`, with the reason it is not run here.

Study files shown in ```yaml blocks whose first line is ``# sweeps/<name>.yaml`` are composed with every point
validated, and the commands above can use them by name. Console scripts are run from ``[project.scripts]``
of pyproject.toml through ``sys.executable`` (an installed script may be stale while modules move), falling
back to ``python -m`` for a script not declared yet; validation functions are looked up by name, wherever
they live.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}

#: Commands the docs show that are not run here, by their first words, and why.
NOT_RUN = {
    ("pip", "install"): "changes the environment and needs the network; the extras it names are checked to "
    "exist in pyproject.toml (test_pip_extras_named_in_the_docs_exist)",
    ("wandb", "sync"): "uploads runs to W&B: needs an account and the network",
    ("pre-commit", "install"): "writes .git/hooks; the hooks run the tools `make lint` runs (dry-run here)",
}

#: Where a console script lives while pyproject.toml does not declare it yet (tried in order).
FALLBACK_MODULES = {
    "datascale": ("datascale.launch", "datascale.orchestration.launch"),
    "datascale-plan": ("datascale.plan", "datascale.orchestration.plan"),
    "datascale-prepare": ("datascale.data.prepare",),
    "scaling-fit": ("scaling_analysis",),
}
#: `python -m <module>` spellings of the console scripts.
MODULE_SCRIPTS = {
    "datascale.launch": "datascale",
    "datascale.plan": "datascale-plan",
    "datascale.data.prepare": "datascale-prepare",
    "scaling_analysis": "scaling-fit",
}
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
ENV = {
    **os.environ,
    "WANDB_MODE": "offline",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HYDRA_FULL_ERROR": "1",
}
ENV.pop("MAKEFLAGS", None)
ENV.pop("MAKELEVEL", None)


# ---------------------------------------------------------------------------------------- reading the docs


@dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository
    line: int  # line of the opening fence
    language: str
    text: str


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return shlex.join(self.argv)


def blocks(paths: list[Path] = DOCS) -> list[Block]:
    found = []
    for path in paths:
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            opening = re.match(r"^(`{3,})\s*([\w+-]*)", lines[i])
            if not opening:
                i += 1
                continue
            fence, language, start = opening.group(1), opening.group(2).lower(), i
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith(fence):
                body.append(lines[i])
                i += 1
            found.append(Block(str(path.relative_to(REPO)), start + 1, language, "\n".join(body) + "\n"))
            i += 1
    return found


def _console_script(text: str) -> str:
    """The ``$ `` lines of a console block (and their continuation lines); output lines become blank."""
    out, continuing = [], False
    for line in text.splitlines():
        if line.startswith("$ ") or continuing:
            command = line[2:] if line.startswith("$ ") and not continuing else line
            out.append(command)
            continuing = command.rstrip().endswith("\\")
        else:
            out.append("")
    return "\n".join(out) + "\n"


RECORDER = (
    'command_not_found_handle() { printf "%s\\0" "${BASH_LINENO[0]}" "$@" >&3; printf "\\036\\0" >&3; }\n'
    'exec 3>"$RECORD"\n'
    'source "$BLOCK"\n'
)


#: Marks a command given by its path (``.ci/run``): bash runs those without a PATH search, so without it they
#: would not reach the recorder.
PATH_COMMAND = "__docs_path_command__"


def _mark_path_commands(script: str) -> str:
    out, continued = [], False
    for line in script.splitlines():
        if not continued:
            line = re.sub(
                r"^(\s*)((?:\.{1,2}/|/)?[\w.-]+(?:/[\w.-]+)+)(?=\s|$)", rf"\1{PATH_COMMAND} \2", line
            )
        out.append(line)
        continued = line.rstrip().endswith("\\")
    return "\n".join(out) + "\n"


def expand(block: Block, scratch: Path) -> list[Command]:
    """The commands of a shell block as the shell would run them, without running any: bash expands the block
    with an empty PATH, so every external command reaches the recorder (builtins such as variable assignments
    still run, inside an empty scratch directory)."""
    scratch.mkdir(parents=True, exist_ok=True)
    script = _console_script(block.text) if block.language == "console" else block.text
    script = _mark_path_commands(script)
    (scratch / "block.sh").write_text(script, encoding="utf-8")
    record = scratch / "record.bin"
    proc = subprocess.run(
        ["/bin/bash", "-c", RECORDER],
        cwd=scratch,
        env={
            "PATH": "/nonexistent",
            "HOME": str(scratch),
            "RECORD": str(record),
            "BLOCK": str(scratch / "block.sh"),
        },
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or proc.stderr.strip():
        raise AssertionError(f"{block.doc}:{block.line}: the block is not valid shell: {proc.stderr.strip()}")
    fields = record.read_bytes().split(b"\0")
    commands: list[Command] = []
    current: list[bytes] = []
    for field in fields:
        if field == b"\x1e":
            line, *argv = (f.decode() for f in current)
            argv = argv[1:] if argv[:1] == [PATH_COMMAND] else argv
            commands.append(Command(block.doc, block.line + int(line), tuple(argv)))
            current = []
        elif field or current:
            current.append(field)
    return commands


def _study_file_name(block: Block) -> str | None:
    first = block.text.splitlines()[0] if block.text.strip() else ""
    match = re.match(r"#\s*sweeps/([\w.-]+)\.yaml\b", first)
    return match.group(1) if block.language in ("yaml", "yml") and match else None


def _collect() -> tuple[list[Command], dict[str, Block]]:
    import tempfile

    commands, study_files = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, block in enumerate(blocks()):
            if block.language in SHELL_LANGUAGES:
                commands += expand(block, Path(tmp) / str(n))
            elif (name := _study_file_name(block)) is not None:
                study_files[name] = block
    return commands, study_files


COMMANDS, STUDY_FILES = _collect()


def _id(command: Command) -> str:
    return f"{command.doc}:{command.line}:{str(command)[:70]}"


# -------------------------------------------------------------------------------------- the project's code


@functools.cache
def _find():
    """``find(name, package)`` of docs/readme_tables.py: an object by name, wherever its module lives now."""
    spec = importlib.util.spec_from_file_location("_readme_tables", REPO / "docs" / "readme_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.find


def project(name: str):
    return _find()(name, "datascale")


@functools.cache
def project_scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("scripts", {})


def console(name: str) -> list[str]:
    """How to run console script ``name`` with this interpreter, from pyproject.toml's current declaration."""
    target = project_scripts().get(name)
    if target:
        module, _, function = target.partition(":")
        code = (
            f"import sys; sys.argv[0] = {name!r}; from {module} import {function} as main; sys.exit(main())"
        )
        return [sys.executable, "-c", code]
    for module in FALLBACK_MODULES.get(name, ()):
        try:
            if importlib.util.find_spec(module) is not None:
                return [sys.executable, "-m", module]
        except ImportError:
            continue
    raise AssertionError(
        f"console script {name} is neither in pyproject.toml nor at {FALLBACK_MODULES.get(name)}"
    )


def run(cmd: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)


@functools.cache
def help_text(program: tuple[str, ...]) -> str:
    proc = run([*program, "--help"])
    assert proc.returncode == 0, f"{' '.join(program[-2:])} --help failed: {proc.stderr.strip()[-800:]}"
    return proc.stdout


@dataclass(frozen=True)
class Option:
    takes_value: bool
    many: bool
    choices: tuple[str, ...] | None


def options(help: str) -> dict[str, Option]:
    """The options of an argparse usage line: ``[--flag]``, ``[--flag VALUE]``, ``[--flag {a,b}]``,
    ``[--flag N [N ...]]``."""
    usage = " ".join(help.split("\n\n")[0].split())
    found, depth, start = {}, 0, 0
    for i, char in enumerate(usage):
        if char == "[":
            depth, start = depth + 1, (i + 1 if depth == 0 else start)
        elif char == "]":
            depth -= 1
            if depth == 0:
                flag, _, rest = usage[start:i].partition(" ")
                if flag.startswith("-"):
                    choices = re.fullmatch(r"\{([^}]*)\}", rest.strip())
                    found[flag] = Option(
                        takes_value=bool(rest.strip()),
                        many="..." in rest,
                        choices=tuple(choices.group(1).split(",")) if choices else None,
                    )
    found.setdefault("--help", Option(False, False, None))
    found.setdefault("-h", Option(False, False, None))
    return found


def split_flags(argv: list[str], help: str, what: str) -> list[str]:
    """Check every flag of ``argv`` against ``help``; return the positional arguments."""
    known = options(help)
    positionals, i = [], 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            continue
        flag, eq, inline = arg.partition("=")
        assert flag in known, f"{what}: {flag} is not an option (see --help): {sorted(known)}"
        option = known[flag]
        if not option.takes_value:
            assert not eq, f"{what}: {flag} takes no value"
            continue
        values = [inline] if eq else []
        while i < len(argv) and not argv[i].startswith("-") and (not values or option.many):
            values.append(argv[i])
            i += 1
        assert values, f"{what}: {flag} needs a value"
        if option.choices:
            assert all(v in option.choices for v in values), (
                f"{what}: {flag} {values} not in {option.choices}"
            )
    return positionals


# ------------------------------------------------------------------------------------------------- workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """sweeps/ plus the docs' study files, and stand-in files for the docs' `data/*.jsonl` globs."""
    root = tmp_path_factory.mktemp("docs_commands")
    (root / "sweeps").mkdir()
    for path in (REPO / "sweeps").glob("*.yaml"):
        shutil.copy(path, root / "sweeps" / path.name)
    for name, block in STUDY_FILES.items():
        (root / "sweeps" / f"{name}.yaml").write_text(block.text, encoding="utf-8")
    (root / "data").mkdir()
    with (root / "data" / "mine.jsonl").open("w", encoding="utf-8") as f:
        for domain in ("news", "forum", "papers"):
            f.write(
                json.dumps({"text": f"One {domain} document, as your files would hold it.", "domain": domain})
            )
            f.write("\n")
    return root


def studies(workspace: Path) -> set[str]:
    return {p.stem for p in (workspace / "sweeps").glob("*.yaml")}


def _absolute_config_dir(argv: list[str], workspace: Path) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, value = arg.partition("=")
        if flag in ("--config-dir", "-cd"):
            value = value if eq else argv[i + 1]
            resolved = workspace / "sweeps" if Path(value).as_posix().rstrip("/") == "sweeps" else Path(value)
            out += [flag, str(resolved)]
            i += 1 if eq else 2
            continue
        out.append(arg)
        i += 1
    return out


def _is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(override).is_sweep_override()


VALIDATED: set[tuple[str, str, tuple[str, ...]]] = set()


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def ends_and_categories(jobs: list[list[str]]) -> list[list[str]]:
    """The points of a sweep that the fast check validates: every value of a categorical axis, the smallest
    and largest of a numeric one (where a budget or a layout fails first), each at least once."""
    values: dict[str, list[str]] = {}
    for job in jobs:
        for override in job:
            key, _, value = override.partition("=")
            values.setdefault(key, [])
            if value not in values[key]:
                values[key].append(value)
    chosen = {}
    for key, vals in values.items():
        numbers = [n for n in map(_number, vals) if n is not None]
        if len(vals) > 2 and len(numbers) == len(vals):
            vals = [vals[numbers.index(min(numbers))], vals[numbers.index(max(numbers))]]
        chosen[key] = set(vals)
    kept: list[list[str]] = []
    covered: set[str] = set()
    for job in jobs:
        if all(o.partition("=")[2] in chosen[o.partition("=")[0]] for o in job) and not set(job) <= covered:
            kept.append(job)
            covered |= set(job)
    return kept


def validate_points(argv: list[str], workspace: Path, every_point: bool = False) -> int:
    """Compose a launcher command line and validate the points of its sweep as the launcher does before
    training (the override check, the config groups' objects, layout, budget, study name, secrets): every
    point, or the ends of its numeric axes and every value of the others (:func:`ends_and_categories`)."""
    from hydra import compose, initialize_config_dir

    from datascale import CONF_DIR

    argv = _absolute_config_dir(argv, workspace)
    project("check_overrides")(argv)
    config_dir, name, overrides = project("split_argv")(argv)
    sweeps = [o for o in overrides if _is_sweep(o)]
    fixed = [o for o in overrides if o not in sweeps]
    search = [f"hydra.searchpath=[file://{CONF_DIR}]"] if config_dir is not None else []
    directory = str(config_dir or CONF_DIR)
    with initialize_config_dir(directory, version_base="1.3"):
        root = compose(name, overrides=[*fixed, *search], return_hydra_config=True)
        jobs = project("sweep_job_overrides")(root, sweeps)
        for job in jobs if every_point else ends_and_categories(jobs):
            key = (directory, name, tuple(job))
            if key not in VALIDATED:
                project("validate_config")(compose(name, overrides=[*job, *search], return_hydra_config=True))
                VALIDATED.add(key)
    return len(jobs)


# ------------------------------------------------------------------------------------------------ the checks


def kind(argv: tuple[str, ...]) -> tuple[str, list[str]]:
    """(kind, arguments) of a command: a console script, a make call, a python module, a repo script."""
    program = Path(argv[0]).name
    if program in ("make", "gmake"):
        return "make", list(argv[1:])
    if program in FALLBACK_MODULES:
        return program, list(argv[1:])
    if re.fullmatch(r"python[\d.]*", program) and len(argv) > 2 and argv[1] == "-m":
        module = argv[2]
        return MODULE_SCRIPTS.get(module, f"python -m {module}"), list(argv[3:])
    if (REPO / argv[0]).is_file() and "/" in argv[0]:
        return "script", [argv[0], *argv[1:]]
    return "other", list(argv)


@dataclass(frozen=True)
class Context:
    workspace: Path
    every_point: bool = False  # validate every point of a sweep, not only its ends and categories
    from_make: bool = False  # a command a make dry run printed: only what the docs' own command implies


def check(command: Command, ctx: Context) -> None:
    what, args = kind(command.argv)
    where = f"{command.doc}:{command.line}: {command}" if command.line else f"{command.doc}: {command}"
    if what == "make":
        check_make(args, ctx, where)
    elif what == "datascale":
        check_launch(args, ctx, where)
    elif what == "datascale-plan":
        positionals = split_flags(args, help_text(tuple(console("datascale-plan"))), where)
        assert positionals, f"{where}: datascale-plan needs a study"
        study, overrides = positionals[0], positionals[1:]
        assert study in studies(ctx.workspace), f"{where}: no study file sweeps/{study}.yaml"
        check_launch(["--config-dir", "sweeps", "--config-name", study, *overrides], ctx, where)
    elif what == "datascale-prepare":
        overrides = split_flags(args, help_text(tuple(console("datascale-prepare"))), where)
        check_launch(overrides, ctx, where)
    elif what == "scaling-fit":
        check_fit(args, ctx, where)
    elif what.startswith("python -m "):
        if not ctx.from_make:
            module = what.removeprefix("python -m ")
            split_flags(args, help_text((sys.executable, "-m", module)), where)
    elif what == "script":
        check_script(args, ctx, where)
    elif not ctx.from_make:
        reason = next((r for prefix, r in NOT_RUN.items() if command.argv[: len(prefix)] == prefix), None)
        assert reason, (
            f"{where}: not a command this check knows; run it in a test or add it to NOT_RUN with why"
        )


def check_make(args: list[str], ctx: Context, where: str) -> None:
    variables = dict(a.split("=", 1) for a in args if "=" in a and not a.startswith("-"))
    proc = run(["make", "-n", "--no-print-directory", *args])
    assert proc.returncode == 0, f"{where}: make -n failed: {proc.stderr.strip()[-800:]}"
    if "STUDY" in variables:
        study = variables["STUDY"]
        assert study in studies(ctx.workspace), f"{where}: no study file sweeps/{study}.yaml"
    printed = Context(ctx.workspace, ctx.every_point, from_make=True)
    for line in proc.stdout.splitlines():
        try:
            argv = tuple(shlex.split(line))
        except ValueError:
            continue
        if argv and kind(argv)[0] in ("datascale", "datascale-plan", "datascale-prepare", "scaling-fit"):
            check(Command(f"{where} → make runs", 0, argv), printed)


def check_launch(args: list[str], ctx: Context, where: str) -> None:
    try:
        validate_points(args, ctx.workspace, every_point=ctx.every_point)
    except Exception as err:
        raise AssertionError(f"{where}: {type(err).__name__}: {err}") from None


def results_dirs() -> set[str]:
    """Where the docs put results: the default, and every paths.results_dir a docs command sets."""
    dirs = {"results"}
    for command in COMMANDS:
        for arg in command.argv:
            if arg.startswith("paths.results_dir="):
                dirs.add(arg.split("=", 1)[1].rstrip("/"))
    return dirs


def study_names(workspace: Path) -> set[str]:
    """Study names the docs can produce results for: study files, and the NAME= / study.name= they set."""
    names = set(studies(workspace))
    for command in COMMANDS:
        for arg in command.argv:
            for prefix in ("NAME=", "study.name="):
                if arg.startswith(prefix):
                    names.add(arg.removeprefix(prefix))
    return names


def check_fit(args: list[str], ctx: Context, where: str) -> None:
    positionals = split_flags(args, help_text(tuple(console("scaling-fit"))), where)
    if {"-h", "--help"} & set(args):
        return
    assert len(positionals) == 1, f"{where}: scaling-fit takes one PATH, got {positionals}"
    path = Path(positionals[0])
    if path.suffix in TABLE_SUFFIXES:
        return
    dirs = results_dirs()
    assert str(path.parent) in dirs, f"{where}: {path} is not in a results directory the docs use: {dirs}"
    assert path.name in study_names(ctx.workspace), f"{where}: no study in the docs writes {path}"


def check_script(args: list[str], ctx: Context, where: str) -> None:
    script = REPO / args[0]
    assert script.stat().st_mode & stat.S_IXUSR, f"{where}: {args[0]} is not executable"
    proc = run(["bash", "-n", str(script)])
    assert proc.returncode == 0, f"{where}: {proc.stderr.strip()}"
    for line in script.read_text().splitlines():
        if re.match(r"\s*make\b", line):
            check_make(shlex.split(line.split("#")[0])[1:], ctx, f"{where} ({line.strip()})")


def hydra_flags(args: list[str]) -> tuple[str, ...]:
    """The Hydra flags of a launcher command line, with their values (overrides left out)."""
    flags, i = [], 0
    while i < len(args):
        if args[i].startswith("-"):
            takes_value = args[i] in ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp")
            flags += args[i : i + 2] if takes_value else args[i : i + 1]
            i += 2 if takes_value else 1
        else:
            i += 1
    return tuple(flags)


# ------------------------------------------------------------------------------------------------------ tests


def test_the_docs_have_commands():
    kinds = {kind(c.argv)[0] for c in COMMANDS}
    assert {"make", "datascale", "scaling-fit"} <= kinds, kinds


@pytest.mark.parametrize("command", COMMANDS, ids=_id)
def test_docs_command(command: Command, workspace: Path, monkeypatch):
    monkeypatch.chdir(workspace)  # relative globs (data/*.jsonl) resolve against the stand-in files
    check(command, Context(workspace))


SWEEPING = [c for c in COMMANDS if kind(c.argv)[0] in ("make", "datascale", "datascale-plan")]


# slow: every point of every sweep the docs start, about 200 Hydra compositions (~45 s more on 2 busy cores)
@pytest.mark.slow
@pytest.mark.parametrize("command", SWEEPING, ids=_id)
def test_docs_command_every_point(command: Command, workspace: Path, monkeypatch):
    monkeypatch.chdir(workspace)
    check(command, Context(workspace, every_point=True))


def test_the_console_script_takes_the_docs_hydra_flags(workspace: Path):
    """`datascale` itself, for each way the docs call it (which Hydra flags, which config dir), composes with
    `--cfg job`: the in-process checks above bypass the entry point and Hydra's own argument parsing (every
    study file they name is composed in-process)."""
    shapes: dict[tuple[str, ...], tuple[str, ...]] = {}  # flag names (and config dir) -> one command's flags
    for command in COMMANDS:
        if kind(command.argv)[0] == "datascale":
            flags = hydra_flags(kind(command.argv)[1])
            names = tuple(f for f in flags if f.startswith("-") or Path(f).name == "sweeps")
            shapes.setdefault(names, flags)
    assert shapes
    for flags in shapes.values():
        argv = _absolute_config_dir(list(flags), workspace)
        proc = run([*console("datascale"), *argv, "--cfg", "job"], cwd=workspace)
        assert proc.returncode == 0, (
            f"datascale {' '.join(flags)} --cfg job: {(proc.stderr or proc.stdout)[-800:]}"
        )


@pytest.mark.parametrize("name", sorted(STUDY_FILES))
def test_study_files_in_the_docs_compose_and_every_point_validates(name: str, workspace: Path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from datascale import CONF_DIR

    monkeypatch.chdir(workspace)
    assert (
        validate_points(["--config-dir", "sweeps", "--config-name", name], workspace, every_point=True) >= 2
    )
    with initialize_config_dir(str(workspace / "sweeps"), version_base="1.3"):
        cfg = compose(name, overrides=[f"hydra.searchpath=[file://{CONF_DIR}]"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN", f"sweeps/{name}.yaml: a study file sets hydra.mode: MULTIRUN"
    assert cfg.study.name == name, f"sweeps/{name}.yaml: study.name is {cfg.study.name}, the file says {name}"


def test_pip_extras_named_in_the_docs_exist():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for command in COMMANDS:
        if command.argv[:2] == ("pip", "install"):
            for arg in command.argv[2:]:
                for named in re.findall(r"\[([^\]]+)\]", arg):
                    missing = set(named.split(",")) - set(extras)
                    assert not missing, f"{command.doc}:{command.line}: no extra {missing} in pyproject.toml"


def test_every_not_run_entry_is_used():
    used = {prefix for prefix in NOT_RUN for c in COMMANDS if c.argv[: len(prefix)] == prefix}
    assert used == set(NOT_RUN), f"NOT_RUN entries no docs command needs: {set(NOT_RUN) - used}"
