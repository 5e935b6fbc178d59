"""`python -m experiments.run --help`: the presets, the options people change most, the cores and the
datamodules, and with `--config PRESET` that preset's model and data options; in about a second.

It reads the presets and the source of the classes they name (`ast`), never importing torch or Lightning
(importing Lightning alone takes ~6 s on a 2-core CPU). `--help all` is jsonargparse's full reference of
every option (Lightning's Trainer included), built by the command itself.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

from experiments.presets import DEFAULT_PRESET, expand_configs, preset_summaries
from validation import ConfigError

PROG = "python -m experiments.run"
ROOT = Path(__file__).resolve().parent.parent  # firstlight's checkout: cores/, modules/, datamodules/
DESCRIPTION = (
    "Train a model on a dataset, then test its best checkpoint. A preset names the task, its core (the "
    "network) and the data; any option below overrides it. Each run gets a directory of its own, "
    "runs/<experiment>/<run id>/, with config.yaml, checkpoints, history.jsonl and summary.json."
)
EXAMPLES = (
    (f"{PROG}", f"the default preset, {DEFAULT_PRESET}"),
    (f"{PROG} --config cnn_digits --trainer.max_epochs 5", "a preset, one option changed"),
    (f"{PROG} --help --config cnn_digits", "that preset's model and data options"),
    (f"{PROG} --config cnn_digits --print_config", "the whole resolved config, then exit"),
)
# The options people change most: (option, value, what it does). `tests/test_help.py` checks that the full
# parser accepts each one.
COMMON = (
    ("-c, --config", "PRESET|FILE", "a preset (above) or a YAML file; several merge, later ones win"),
    ("--trainer.max_epochs", "N", "epochs to train"),
    ("--trainer.max_steps", "N", "optimizer steps to train (-1: no limit; ends first of the two)"),
    ("--trainer.max_time", "DD:HH:MM:SS", "stop training after this time; the LR schedule fits into it"),
    ("--trainer.accelerator", "cpu|gpu|auto", "where to train"),
    ("--trainer.devices", "N|auto", "devices (GPUs) per node; more than one trains with DDP"),
    ("--trainer.precision", "auto|32-true|bf16-mixed|16-mixed", "auto: the fastest this machine computes"),
    ("--model.lr", "LR", "peak learning rate (--model.init_args.lr, the same)"),
    ("--model.net", "CLASS", "the core (network); `cores` below lists them"),
    ("--model.net.OPTION", "VALUE", "an argument of the core, e.g. --model.net.dropout 0.2"),
    ("--data.batch_size", "N", "training batch size"),
    ("--seed_everything", "SEED", "seed of the weights and of the data order"),
    ("--run.logger", "wandb|csv|none", "tracker: W&B (offline unless logged in), CSV, or none"),
    ("--run.experiment", "NAME", "runs go to <root>/<experiment>/<run id>/; default: the preset's name"),
    ("--run.root", "DIR", "the folder of all runs (default: runs)"),
    ("--run.tags", "[A,B]", "W&B tags of the run"),
    ("--run.resume", "RUN|auto", "continue a run from its last checkpoint"),
    ("--run.patience", "N", "stop after N validations without improvement"),
    ("--checkpoint.monitor", "METRIC", "the metric that picks the best checkpoint (e.g. val/acc)"),
    ("--print_config", "", "print the resolved config and exit"),
)
MORE = (
    ("--help --config PRESET", "that preset's model and data options, with its values"),
    ("--help all", "every option: Lightning's Trainer, checkpointing, W&B media (loads Lightning: ~10 s)"),
    ("--model.help CLASS", "a task's options, e.g. --model.help modules.classification.ClassificationTask"),
    ("--model.net.help CLASS", "a core's options, e.g. --model.net.help cores.vit.ViTClassifier"),
    ("--data.help CLASS", "a datamodule's options, e.g. --data.help datamodules.image.ImageDataModule"),
)
# Sphinx roles (:class:`~a.b.C`, :paramref:`...`) and reST literals (``x``) in Lightning's docstrings.
ROLE = re.compile(r":[a-z]+:`~?(?:[\w.]+\.)?([^`]+?)`")
LITERAL = re.compile(r"``([^`]*)``")


def clean_markup(text: str) -> str:
    """Docstring text as a reader wants it: `:class:`~a.B`` -> `B`, ``x`` -> `x`."""
    return LITERAL.sub(r"`\1`", ROLE.sub(r"`\1`", text))


def help_asked(args: Sequence[str]) -> bool:
    return any(arg in ("-h", "--help") or arg.startswith("--help=") for arg in args)


def full_help_args(args: Sequence[str]) -> list[str] | None:
    """`--help all` (or `--help=all`) as jsonargparse's `--help`; None when the full reference is not asked for."""
    out, items, asked = [], iter(args), False
    for arg in items:
        if arg in ("--help=all", "-h=all"):
            out.append("--help")
            asked = True
        elif arg in ("-h", "--help"):
            rest = list(items)
            asked = bool(rest) and rest[0] == "all"
            out += ["--help", *(rest[1:] if asked else rest)]
        else:
            out.append(arg)
    return out if asked else None


def answer_help(args: Sequence[str]) -> int | None:
    """Print the quick help and return 0 when it is asked for; None for `--help all`, or no help asked."""
    if not help_asked(args) or full_help_args(args) is not None:
        return None
    try:
        text = quick_help(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def quick_help(args: Sequence[str]) -> str:
    width = min(shutil.get_terminal_size().columns, 120)
    given = [arg for arg in args if arg not in ("-h", "--help")]
    config = merged_config(given) if has_config(given) else None
    parts = [
        f"usage: {PROG} [--config PRESET|FILE ...] [--OPTION VALUE ...]\n",
        *wrap(DESCRIPTION, width),
        "",
        f"presets (--config NAME; without one: {DEFAULT_PRESET}):",
        *table(list(preset_summaries().items()), width, prefix="  "),
        "",
        "options people change most (an option is a key of the preset's YAML, dotted):",
        *table([(f"{option} {value}".strip(), what) for option, value, what in COMMON], width, prefix="  "),
        "",
        "examples:",
        *table(EXAMPLES, width, prefix="  "),
        "",
    ]
    if config is not None:
        parts += preset_options(config, given, width)
    parts += ["cores (--model.net CLASS), by the task that trains them (--model CLASS):"]
    for task, cores in cores_by_task().items():
        parts += wrap(f"{task}: {', '.join(cores)}", width, indent="  ", subsequent="      ")
    parts += ["", "datamodules (--data CLASS):"]
    parts += wrap(", ".join(datamodules()), width, indent="  ", subsequent="  ")
    parts += ["", "more help:", *table(MORE, width, prefix="  "), ""]
    return "\n".join(parts)


def has_config(args: Sequence[str]) -> bool:
    return any(arg in ("-c", "--config") or arg.startswith("--config=") for arg in args)


def merged_config(args: Sequence[str]) -> dict[str, Any]:
    """The presets and config files given, merged as the command merges them (later ones win)."""
    expanded, _ = expand_configs(list(args))
    merged: dict[str, Any] = {}
    for flag, value in pairwise(expanded):
        if flag == "--config":
            merge(merged, yaml.safe_load(Path(value).read_text()) or {})
    return merged


def merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            if "class_path" in value and value["class_path"] != into[key].get("class_path"):
                into[key] = value  # another class: its arguments replace the old class's
            else:
                merge(into[key], value)
        else:
            into[key] = value


def preset_options(config: dict[str, Any], given: Sequence[str], width: int) -> list[str]:
    """The options of the task, its core and the datamodule that the config names, with the config's values."""
    names = [value for flag, value in pairwise(given) if flag in ("-c", "--config")]
    names += [arg.split("=", 1)[1] for arg in given if arg.startswith("--config=")]
    model = config.get("model") or {}
    data = config.get("data") or {}
    net = (model.get("init_args") or {}).get("net") or {}
    facts = set(class_facts(data["class_path"])) if data.get("class_path") else set()
    lines = []
    for prefix, component, what in (
        ("--model", model, "task"),
        ("--model.net", net, "core"),
        ("--data", data, "datamodule"),
    ):
        class_path = component.get("class_path") if isinstance(component, dict) else None
        if not class_path:
            continue
        lines.append(f"{what} of {' + '.join(names)}: {prefix} {class_path}")
        values = component.get("init_args") or {}
        try:
            parameters = class_parameters(class_path)
        except LookupError as error:
            lines += [f"  ({error})", ""]
            continue
        rows = []
        for parameter in parameters:
            if prefix == "--model" and parameter.name == "net":
                continue
            default = command_line_value(parameter.default)
            if parameter.name in facts and prefix != "--data":
                shown, note = "", "set from the data"
            elif parameter.name in values and yaml_value(values[parameter.name]) != default:
                shown, note = yaml_value(values[parameter.name]), f"the preset's; default: {default}"
            else:
                shown, note = default, ""
            details = "; ".join(part for part in (parameter.annotation, note) if part)
            rows.append((f"{prefix}.{parameter.name} {shown}".rstrip(), f"{parameter.doc} ({details})".strip()))
        lines += table(rows, width, prefix="  ")
        lines.append("")
    return lines


def command_line_value(default: str | None) -> str:
    """A Python default as it is written on the command line: None -> null, True -> true, 'max' -> max."""
    if default is None:
        return ""
    try:
        return yaml_value(ast.literal_eval(default))
    except (ValueError, SyntaxError):
        return default


def yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


@dataclass
class Parameter:
    name: str
    annotation: str
    default: str | None
    doc: str


@dataclass
class ClassSource:
    module: str
    tree: ast.Module
    node: ast.ClassDef


def find_class(class_path: str) -> ClassSource:
    """The class's definition, read from its module's source without importing the module."""
    module_name, _, class_name = class_path.rpartition(".")
    try:
        spec = importlib.util.find_spec(module_name) if module_name else None
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise LookupError(f"no Python source for {class_path}")
    tree = parse(Path(spec.origin))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return ClassSource(module_name, tree, node)
    raise LookupError(f"{class_path} is not defined in {spec.origin}")


def imported_names(source: ClassSource) -> dict[str, str]:
    """Name -> dotted path, for the names the module defines or imports with `from X import Y`."""
    names = {node.name: f"{source.module}.{node.name}" for node in source.tree.body if isinstance(node, ast.ClassDef)}
    for node in source.tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def base_classes(source: ClassSource) -> Iterator[ClassSource]:
    """The bases that are defined in Python source this process can find (firstlight's, a user's)."""
    names = imported_names(source)
    for base in source.node.bases:
        path = names.get(ast.unparse(base))
        if path and path.partition(".")[0] in ("cores", "modules", "datamodules", "callbacks", source.module):
            try:
                yield find_class(path)
            except LookupError:
                continue


def class_parameters(class_path: str) -> list[Parameter]:
    """The arguments of a class's `__init__` with their types, defaults and documentation (the class's
    `Args:`); `**kwargs` passed on to a base class adds the base's arguments."""
    return parameters_of(find_class(class_path), set())


def parameters_of(source: ClassSource, seen: set[str]) -> list[Parameter]:
    init = next(
        (n for n in source.node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"),
        None,
    )
    if init is None:  # inherited
        return next((parameters_of(base, seen) for base in base_classes(source)), [])
    docs = argument_docs(ast.get_docstring(source.node) or "") | argument_docs(ast.get_docstring(init) or "")
    aliases = type_aliases(source)
    arguments = [*init.args.posonlyargs, *init.args.args][1:]  # without self
    defaults: list[ast.expr | None] = [None] * (len(arguments) - len(init.args.defaults)) + [*init.args.defaults]
    pairs = [*zip(arguments, defaults, strict=True), *zip(init.args.kwonlyargs, init.args.kw_defaults, strict=True)]
    parameters = []
    for argument, default in pairs:
        if argument.arg in seen:
            continue
        seen.add(argument.arg)
        annotation = ast.unparse(argument.annotation) if argument.annotation else ""
        parameters.append(
            Parameter(
                argument.arg,
                aliases.get(annotation, annotation),
                ast.unparse(default) if default is not None else None,
                docs.get(argument.arg, ""),
            )
        )
    if init.args.kwarg is not None:
        for base in base_classes(source):
            parameters += parameters_of(base, seen)
            break
    return parameters


def type_aliases(source: ClassSource) -> dict[str, str]:
    """`Name = Literal[...]` at the top of the class's module or of a firstlight module it imports the name
    from, so that a parameter shows its choices, not the alias."""
    aliases = literal_aliases(source.tree)
    for name, path in imported_names(source).items():
        module, _, original = path.rpartition(".")
        if name not in aliases and module.partition(".")[0] in ("cores", "modules", "datamodules", "callbacks"):
            file = ROOT.joinpath(*module.split(".")).with_suffix(".py")
            if file.is_file() and (alias := literal_aliases(parse(file)).get(original)):
                aliases[name] = alias
    return aliases


def parse(file: Path) -> ast.Module:
    return ast.parse(file.read_text(encoding="utf-8"))


def literal_aliases(tree: ast.Module) -> dict[str, str]:
    aliases = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = ast.unparse(node.value)
            if value.startswith("Literal["):
                aliases[node.targets[0].id] = value
    return aliases


def argument_docs(docstring: str) -> dict[str, str]:
    """Google-style `Args:` entries: name -> text, continuation lines joined."""
    docs: dict[str, str] = {}
    inside, current, indent, entry_depth = False, None, 0, 0
    for line in docstring.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            inside, indent = True, len(line) - len(line.lstrip())
            continue
        if not inside:
            continue
        if not stripped:
            current = None
            continue
        depth = len(line) - len(line.lstrip())
        if depth <= indent:  # the next section
            break
        match = re.match(r"\*{0,2}(\w+)(?: \([^)]*\))?:\s*(.*)", stripped)
        if match and (current is None or depth <= entry_depth):
            current, entry_depth = match.group(1), depth
            docs[current] = match.group(2)
        elif current is not None:
            docs[current] += " " + stripped
    return {name: clean_markup(text) for name, text in docs.items()}


def class_facts(class_path: str) -> tuple[str, ...]:
    """A datamodule's `model_facts` (the model arguments it fills in), read from its source."""
    try:
        source = find_class(class_path)
    except LookupError:
        return ()
    for node in source.node.body:
        target: ast.expr | None = None
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        if isinstance(target, ast.Name) and target.id == "model_facts":
            return tuple(ast.literal_eval(value))
    return next((class_facts(f"{base.module}.{base.node.name}") for base in base_classes(source)), ())


def package_classes(package: str) -> Iterator[tuple[str, ast.ClassDef, dict[str, str]]]:
    """Every top-level class of a firstlight package: (class path, definition, the names its module knows)."""
    for path in sorted((ROOT / package).glob("*.py")):
        tree = parse(path)
        module = f"{package}.{path.stem}"
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                yield f"{module}.{node.name}", node, imported_names(ClassSource(module, tree, node))


def subclasses(package: str, roots: set[str]) -> dict[str, str]:
    """Class path -> the root it descends from, for the package's classes that descend from one of `roots`
    (class paths), through any depth of bases within the package."""
    classes = {path: (node, names) for path, node, names in package_classes(package)}
    found: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for path, (node, names) in classes.items():
            if path in found:
                continue
            for base in node.bases:
                full = names.get(ast.unparse(base), "")
                root = full if full in roots else found.get(full)
                if root:
                    found[path] = root
                    changed = True
                    break
    return found


def contract_tasks() -> dict[str, str]:
    """Each contract of cores/contracts.py (a class that names its `task`) -> the task that trains its cores,
    read from the source: `class TaggerCore(Core): task = "modules.tagging.TaggingTask"`."""
    found = {}
    for path, node, _ in package_classes("cores"):
        for statement in node.body:
            target = statement.target if isinstance(statement, ast.AnnAssign) else None
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target = statement.targets[0]
            value = getattr(statement, "value", None)
            if isinstance(target, ast.Name) and target.id == "task" and isinstance(value, ast.Constant):
                found[path] = str(value.value)
    return found


def cores_by_task() -> dict[str, list[str]]:
    """Every core in cores/, by the task that trains it (its contract's task)."""
    contracts = contract_tasks()
    tasks: dict[str, list[str]] = {task: [] for task in contracts.values()}
    for core, contract in subclasses("cores", set(contracts)).items():
        tasks[contracts[contract]].append(core)
    return tasks


def datamodules() -> list[str]:
    """The datamodules a preset can name: the DataModule subclasses that take arguments of their own."""
    found = subclasses("datamodules", {"datamodules.base.DataModule"})
    bases = {
        base for path, _, names in package_classes("datamodules") if path in found for base in base_paths(names, path)
    }
    return sorted(path for path in found if path not in bases and has_own_init(path))


def base_paths(names: dict[str, str], class_path: str) -> list[str]:
    node = find_class(class_path).node
    return [names.get(ast.unparse(base), "") for base in node.bases]


def has_own_init(class_path: str) -> bool:
    source = find_class(class_path)
    return any(isinstance(node, ast.FunctionDef) and node.name == "__init__" for node in source.node.body)


def wrap(text: str, width: int, indent: str = "", subsequent: str | None = None) -> list[str]:
    return textwrap.wrap(
        text,
        width,
        initial_indent=indent,
        subsequent_indent=indent if subsequent is None else subsequent,
        break_on_hyphens=False,
        break_long_words=False,
    )


def table(rows: Sequence[tuple[str, str]], width: int, prefix: str = "", column: int = 30) -> list[str]:
    """Two columns, argparse's way: a long first cell puts the second on the next line."""
    column = min(column, max(len(left) for left, _ in rows) + 2)
    lines = []
    for left, right in rows:
        head = f"{prefix}{left}"
        pad = prefix + " " * column
        if len(head) + 2 > len(pad):
            lines.append(head)
            lines += wrap(right, width, indent=pad) if right else []
        else:
            body = wrap(right, width, indent=pad) or [""]
            lines.append(head.ljust(len(pad)) + body[0][len(pad) :])
            lines += body[1:]
    return lines
