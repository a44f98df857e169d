"""Finding ``testviper.yaml`` and reading it as YAML, before any validation.

Kept apart from ``testviper.config`` so that ``inv run`` can look at the raw file before
it loads pydantic (see ``testviper.runner.starter``).
"""

import os
import re
from pathlib import Path
from typing import Any

import yaml

from testviper.errors import UserError

CONFIG_NAME = "testviper.yaml"
CONFIG_ENV = "TESTVIPER_CONFIG"
DEFAULT_KEY_ENV = "RP_API_KEY"  # an instance's api_key_env when the file names none
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # what may name an environment variable


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to use, or None for the embedded defaults."""
    named = explicit or os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named).expanduser()
        origin = "--config" if explicit else CONFIG_ENV
        if not path.is_file():
            raise UserError(
                f"{path}: no such config file (from {origin}); "
                "create one with `inv config.init` or fix the path"
            )
        return path.resolve()
    default = Path.cwd() / CONFIG_NAME
    return default.resolve() if default.is_file() else None


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping.

    PyYAML keeps the last one silently, so two components with the same name would merge
    into one without a word.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, path: Path) -> Any:
    """Parse ``text`` (read from ``path``): no arbitrary objects, no key given twice; a
    syntax error names the file, line and column."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}{at}: invalid YAML: {problem}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read config file ({exc})") from None
    data = load_yaml(text, path)
    if data is None:
        raise UserError(
            f"{path}: the file is empty; add at least `project: {{name: ...}}` "
            "(see `inv config.init`) or delete it to use the defaults"
        )
    if not isinstance(data, dict):
        raise UserError(
            f"{path}: the top level must be a mapping of sections "
            f"(project, paths, components, ...), not a {type(data).__name__}"
        )
    # A section left empty (`project:` alone, or every key commented out) means defaults.
    return {key: value for key, value in data.items() if value is not None}
