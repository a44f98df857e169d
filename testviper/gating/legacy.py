"""Import the old ``coverage_thresholds.json`` as a ``thresholds:`` section.

The old file holds ``{"thresholds": {"<component>": percent, ..., "overall": percent}}``;
each percent becomes that component's ``fail_under``. What is deliberately not carried
over: the fixed ``quality_levels`` bands (they failed components that met their own
threshold) and the fallback of unknown components to ``overall`` (a rule for a component
that does not exist is a configuration error here). Old names with the ``testviper_``
prefix (``testviper_misc``) map to the configured component without it when there is one.
"""

import re
from pathlib import Path
from typing import Any

import yaml

from testviper.errors import UserError
from testviper.fsutil import read_json

TOP_LEVEL = re.compile(r"^[A-Za-z_][\w-]*\s*:")


def read_legacy(path: Path, components: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The ``thresholds`` section equivalent to a legacy file, and notes on the mapping."""
    data = read_json(path, "legacy thresholds file")
    old = data.get("thresholds") if isinstance(data, dict) else None
    if not isinstance(old, dict) or not old:
        raise UserError(
            f"{path}: no 'thresholds' object; expected the old coverage_thresholds.json "
            '({"thresholds": {"<component>": 60, "overall": 60}})'
        )
    notes = []
    section: dict[str, Any] = {"overall": {}, "components": {}}
    for name, value in old.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
            raise UserError(f"{path}: thresholds.{name}: {value!r} is not a percentage (0 to 100)")
        level = {"fail_under": float(value)}
        if name == "overall":
            section["overall"] = level
            continue
        target = name
        if name not in components and name.removeprefix("testviper_") in components:
            target = name.removeprefix("testviper_")
            notes.append(f"'{name}' is the configured component '{target}'")
        elif name not in components:
            notes.append(
                f"'{name}' is not a configured component: define it under components "
                "(with its source paths) or remove this threshold"
            )
        section["components"][target] = level
    if isinstance(data.get("quality_levels"), dict):
        notes.append(
            "quality_levels not imported: a component meeting its threshold no longer fails "
            "on fixed bands; use warn_under for an early warning"
        )
    return section, notes


def section_yaml(section: dict[str, Any]) -> str:
    body = yaml.safe_dump({"thresholds": section}, sort_keys=False, default_flow_style=None)
    return (
        "# Imported from the old coverage_thresholds.json (fail_under = the old threshold).\n"
        + (body)
    )


def replace_section(text: str, new_section: str) -> str:
    """``text`` (a testviper.yaml) with its top-level ``thresholds:`` block replaced.

    Everything else, comments included, is kept as it was; without such a block the
    section is appended.
    """
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith("thresholds:")), None)
    if start is None:
        sep = "" if not text or text.endswith("\n") else "\n"
        return text + sep + "\n" + new_section
    end = start + 1
    while end < len(lines) and not TOP_LEVEL.match(lines[end]):
        end += 1
    # Comment lines just before the next section belong to it.
    while end - 1 > start and lines[end - 1].startswith("#"):
        end -= 1
    return "".join(lines[:start]) + new_section + "\n" + "".join(lines[end:]).lstrip("\n")


def import_into_config(settings: Any, legacy: Path, write: bool) -> tuple[str, list[str]]:
    """The YAML for ``legacy``; with ``write``, also put it into the config file atomically.

    The new file is validated before it replaces the old one, so a mapping that names an
    undefined component is refused with the same message ``config.validate`` would give.
    """
    from testviper import config as config_module
    from testviper import config_file
    from testviper.fsutil import atomic_write

    section, notes = read_legacy(legacy, list(settings.config.components))
    text = section_yaml(section)
    if not write:
        return text, notes
    target = settings.path or (settings.root / config_file.CONFIG_NAME)
    old = target.read_text(encoding="utf-8") if target.is_file() else ""
    new = replace_section(old, text)
    raw = yaml.safe_load(new) or {}
    try:
        parsed = config_module.Config.model_validate(raw)
    except config_module.ValidationError as exc:
        raise UserError(f"{target}: {config_module._describe(exc)}") from None
    for problem in config_module._check_references(parsed):
        raise UserError(f"{target}: {problem}; nothing written")
    atomic_write(target, new)
    return text, notes
