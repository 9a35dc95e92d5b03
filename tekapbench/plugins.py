"""Plugins: a user's module registers methods, models, datasets, evaluations, table layouts or plots with
the decorators tekapbench itself uses (``register_method``, ``register_model``, ``LAYOUTS.register``, ...).

A plugin is loaded from three places, each once per process:
- installed packages that declare an entry point in the group ``tekapbench.plugins`` (loaded by every
  command), e.g. in the plugin's pyproject.toml ``[project.entry-points."tekapbench.plugins"] nkd = "my_kd"``;
- a suite's ``[suite] plugins = ["my_kd.methods", "local_method.py"]`` (a module name, or a path to a .py
  file relative to the suite file);
- ``--plugin MODULE_OR_FILE`` on the command line (repeatable).

A plugin that fails to import, or registers a name that already exists, is one clear error naming the
plugin (exit code 2). What a plugin registers is recorded with its origin (``tekapbench list`` shows it),
and the code of every plugin entry a run uses is hashed into the run's id (``code_fingerprint``), so that
editing a plugin's method never reuses records of the old code (``Registry.origin`` says where an entry
comes from; ``tekapbench list`` shows it).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tekapbench.errors import UsageError

ENTRY_POINT_GROUP = "tekapbench.plugins"


class PluginError(UsageError):
    """A plugin that cannot be loaded: it fails to import, or registers a name that already exists."""


@dataclass(frozen=True)
class Plugin:
    """A loaded plugin: how it was named, where it came from, and its module."""

    name: str  # the module name, or the file path as given
    source: str  # "entry point <dist> <version>", "suite <file>", "--plugin"
    module: str  # the imported module's name
    spec: str  # what loads it again in another process: the module name, or the file's absolute path


LOADED: dict[str, Plugin] = {}  # module name -> plugin
_loading: list[Plugin] = []  # the plugin being imported (registrations made now are its)


def current_plugin() -> Plugin | None:
    """The plugin whose import is running now (registrations made now belong to it), if any."""
    return _loading[-1] if _loading else None


@contextmanager
def _importing(plugin: Plugin) -> Iterator[None]:
    _loading.append(plugin)
    try:
        yield
    except PluginError:
        raise
    except ValueError as exc:  # Registry.register: a name registered twice
        raise PluginError(f"plugin {plugin.name} ({plugin.source}): {exc}; choose another name") from None
    except Exception as exc:  # noqa: BLE001 - any failure of foreign code is reported as the plugin's
        raise PluginError(f"plugin {plugin.name} ({plugin.source}) failed to import: "
                          f"{type(exc).__name__}: {exc}") from None
    finally:
        _loading.pop()


# tekapbench's own extension points, imported before any plugin: what registers while a plugin imports
# is then the plugin's alone (a plugin that imports tekapbench.methods would otherwise be credited with
# every built-in method)
BUILTIN_REGISTRIES = ("tekapbench.methods", "tekapbench.models", "tekapbench.data", "tekapbench.data.views",
                      "tekapbench.evaluations", "tekapbench.engine.optim", "tekapbench.tables.layouts",
                      "tekapbench.tables.formats", "tekapbench.plots", "tekapbench.execution")


def load_plugin(spec: str, source: str, relative_to: Path | None = None) -> Plugin:
    """Imports one plugin, given as a module name or a path to a .py file (relative to ``relative_to``)."""
    for name in BUILTIN_REGISTRIES:
        importlib.import_module(name)
    is_file = spec.endswith(".py") or "/" in spec or "\\" in spec
    if is_file:
        path = Path(spec).expanduser()
        path = (relative_to / path if relative_to is not None and not path.is_absolute() else path).resolve()
        if not path.is_file():
            raise PluginError(f"plugin {spec} ({source}): file not found: {path}")
        # one module name per file, so that two files of one name do not collide and a file loads once,
        # also when it is a module imported already (an installed plugin that a suite names by its path)
        module_name = next((name for name, module in list(sys.modules.items())
                            if getattr(module, "__file__", None) and Path(module.__file__).resolve() == path),
                           f"tekapbench_plugin_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}_{path.stem}")
    else:
        module_name = spec
    if module_name in LOADED:
        return LOADED[module_name]
    plugin = Plugin(name=spec, source=source, module=module_name, spec=str(path) if is_file else spec)
    with _importing(plugin):
        if module_name in sys.modules:  # imported before (as a plain module): its registrations are made
            pass
        elif is_file:
            file_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(file_spec)
            sys.modules[module_name] = module
            try:
                file_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(module_name, None)
                raise
        else:
            try:
                importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name and module_name.startswith(exc.name):
                    raise PluginError(f"plugin {spec} ({source}): no module named {exc.name!r} (is it installed, "
                                      "or on PYTHONPATH? a file is given as a path ending in .py)") from None
                raise
    LOADED[module_name] = plugin
    return plugin


def load_entry_points() -> list[Plugin]:
    """Every installed plugin of the ``tekapbench.plugins`` entry-point group."""
    plugins = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry.dist
        source = f"entry point {entry.name!r} of {dist.name} {dist.version}" if dist else f"entry point {entry.name!r}"
        plugins.append(load_plugin(entry.module, source))
    return plugins


def code_fingerprint(plugin: Plugin) -> str:
    """A hash of a plugin's code: the source of its module, or of every file of its package, so that an
    edited plugin gives new run ids (tekapbench's own code is tracked by the records' provenance)."""
    module = sys.modules.get(plugin.module)
    digest = hashlib.sha256()
    for path in _source_files(module):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _source_files(module) -> list[Path]:
    origin = getattr(module, "__file__", None)
    if origin is None:
        return []
    origin = Path(origin)
    if origin.name == "__init__.py":  # a package: every .py file under it, in a fixed order
        return sorted(origin.parent.rglob("*.py"))
    return [origin]


def plugin_code(registry, name: str) -> str | None:
    """The code fingerprint of the plugin that registered ``name`` in ``registry``; None for tekapbench's own."""
    plugin = registry.plugin_of(name)
    return None if plugin is None else code_fingerprint(plugin)


def reload_in_this_process(plugins: list[tuple[str, str]]) -> None:
    """Loads, in a worker or a Slurm job, the plugins its parent had loaded: (spec, source) pairs."""
    load_entry_points()
    for spec, source in plugins:
        load_plugin(spec, source)


def loaded() -> list[tuple[str, str]]:
    """The plugins of this process as (spec, source) pairs, for ``reload_in_this_process``."""
    return [(p.spec, p.source) for p in LOADED.values()]
