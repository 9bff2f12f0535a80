"""Compose a Config from conf/ groups, a recipe and command-line overrides, with Hydra.

Every key's default comes from the dataclasses in config.py, registered with Hydra's ConfigStore as
`grpo_defaults`; `conf/config.yaml` starts from it and picks one option from each group (model, sampler,
verifier, optimizer, data, algorithm, environment), each holding only what it changes. A recipe is a `# @package _global_` YAML file that overrides group choices and
values; `recipe=NAME` selects it. Recipes are looked up in the folders of `--recipes-dir` and of the
environment variable GRPO_RECIPES_PATH (os.pathsep-separated), then in the built-in `recipes/`.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import yaml

from grpo_cli.config import Config, suggest_key
from grpo_cli.errors import ConfigError

RECIPES_PATH_ENV = "GRPO_RECIPES_PATH"


def resource_dir(name: str) -> Path:
    """`conf` or `recipes`: inside the installed package (wheel), else at the checkout's root (editable)."""
    package = Path(__file__).resolve().parent
    installed = package / name
    return installed if installed.is_dir() else package.parents[1] / name


def recipe_dirs(extra: list[str] | None = None) -> list[Path]:
    user = list(extra or []) + [p for p in os.environ.get(RECIPES_PATH_ENV, "").split(os.pathsep) if p]
    return [Path(p).expanduser() for p in user] + [resource_dir("recipes")]


def available_recipes(extra: list[str] | None = None) -> dict[str, Path]:
    """Recipe name -> file; a user folder shadows a built-in recipe of the same name."""
    found: dict[str, Path] = {}
    for folder in recipe_dirs(extra):
        for path in sorted(folder.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def recipe_description(path: Path) -> str:
    try:
        return str((yaml.safe_load(path.read_text()) or {}).get("description", "")).strip()
    except yaml.YAMLError as exc:
        return f"(unreadable: {str(exc).splitlines()[0]})"


def compose(overrides: list[str], recipes_dirs: list[str] | None = None) -> Config:
    """Resolve and validate the configuration; raises ConfigError with a one-line message."""
    raw = compose_dict(overrides, recipes_dirs)
    return Config.from_dict(raw)


def compose_dict(overrides: list[str], recipes_dirs: list[str] | None = None) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.errors import HydraException, OverrideParseException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. algorithm.group_size=16)")
    recipes = available_recipes(recipes_dirs)
    recipe = next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("recipe=")), None)
    if recipe is not None and recipe not in recipes:
        raise ConfigError(f"recipe={recipe}: no such recipe; available: {', '.join(sorted(recipes)) or 'none'}")

    ConfigStore.instance().store(name="grpo_defaults", node=Config().to_dict())
    with tempfile.TemporaryDirectory(prefix="grpo-recipes-") as search_root:
        # Hydra finds group options in <search path>/<group>/; expose every recipe folder as one `recipe` group.
        group = Path(search_root) / "recipe"
        group.mkdir()
        for name, path in recipes.items():
            (group / f"{name}.yaml").symlink_to(path.resolve())
        searchpath = f"hydra.searchpath=[file://{search_root}]"
        try:
            with initialize_config_dir(config_dir=str(resource_dir("conf")), version_base="1.3"):
                cfg = hydra_compose("config", overrides=[*overrides, searchpath])
            cfg = OmegaConf.to_container(cfg, resolve=True)
        except OverrideParseException as exc:
            raise ConfigError(f"override {exc.override!r} does not parse: {str(exc).splitlines()[0]}") from None
        except (HydraException, OmegaConfBaseException, ValueError) as exc:
            raise ConfigError(_one_line(exc)) from None
    cfg.pop("hydra", None)
    cfg["recipe"] = recipe
    return cfg


def _one_line(exc: Exception) -> str:
    message = str(exc)
    unknown = re.search(r"Could not override '([^']+)'", message) or re.search(r"Key '([^']+)' is not in struct", message)
    if unknown:
        key = unknown.group(1)
        return f"unknown key {key}{suggest_key(key)}"
    missing = re.search(r"Could not find '([^']+)'", message)
    if missing:
        group, _, option = missing.group(1).partition("/")
        options = re.findall(r"^\t(\S+)$", message, flags=re.M)
        return f"{group}={option}: no such option; available: {', '.join(options) or 'none'}"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "invalid override or configuration: " + " ".join(lines[:2])
