"""One small registry type for every extension point (models, datasets, methods, layouts, ...).

Adding a model, dataset, method or table layout is one file plus a ``@REGISTRY.register(...)`` line;
nothing else in the code base switches on names. A namespace (``register_namespace("torchvision.", ...)``)
stands for a whole family of names that another library knows, resolved when asked for.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Generic, Iterable, Iterator, TypeVar

if TYPE_CHECKING:
    from tekapbench.plugins import Plugin

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that no entry of a registry carries; the message lists what is allowed."""

    def __init__(self, kind: str, name: str, allowed: list[str], *, message: str | None = None):
        self.kind, self.name, self.allowed = kind, name, allowed
        super().__init__(message or f"unknown {kind} {name!r}; allowed: {', '.join(allowed)}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


@dataclass(frozen=True)
class Namespace(Generic[T]):
    """Names ``<prefix><rest>`` that a library knows: ``resolve(rest)`` gives the entry of one of them."""

    prefix: str
    resolve: Callable[[str], T]
    contains: Callable[[str], bool]  # whether the library knows ``rest`` (may raise, e.g. when it is missing)
    names: Callable[[], Iterable[str]]  # every ``rest`` it knows (for the close matches of an unknown one)
    listing: str  # how a user lists them, e.g. "timm.list_models()"


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._namespaces: dict[str, Namespace[T]] = {}
        self._plugins: dict[str, "Plugin"] = {}  # name -> the plugin that registered it (absent: tekapbench's)

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            from tekapbench.plugins import current_plugin  # here: plugins.py imports this module's users

            key = name or getattr(obj, "__name__")
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is registered twice (first by {self.origin(key)})")
            self._entries[key] = obj
            if (plugin := current_plugin()) is not None:
                self._plugins[key] = plugin
            return obj

        return decorator

    def origin(self, name: str) -> str:
        """Where an entry comes from: 'tekapbench', a plugin and how it was loaded, or a library namespace."""
        if name in self._plugins:
            plugin = self._plugins[name]
            return f"plugin {plugin.name} ({plugin.source})"
        if name in self._entries:
            return "tekapbench"
        found = self._namespace_of(name)
        return found[0].listing if found is not None else "unknown"

    def plugin_of(self, name: str) -> "Plugin | None":
        """The plugin that registered ``name``, if a plugin did."""
        return self._plugins.get(name)

    def register_namespace(self, prefix: str, resolve: Callable[[str], T], *, contains: Callable[[str], bool],
                           names: Callable[[], Iterable[str]], listing: str) -> None:
        """Every ``<prefix><rest>`` that ``contains(rest)`` accepts is a name of this registry, whose entry is
        ``resolve(rest)``; ``names()`` lists each ``rest`` (not called unless a name is unknown), ``listing``
        says how a user lists them. Registered entries win over a namespace; ``names()`` of the registry
        lists registered entries only (``namespaces()`` lists the namespaces)."""
        if not prefix or prefix in self._namespaces:
            raise ValueError(f"{self.kind} namespace {prefix!r} is empty or registered twice")
        self._namespaces[prefix] = Namespace(prefix, resolve, contains, names, listing)

    def _namespace_of(self, name: object) -> tuple[Namespace[T], str] | None:
        if not isinstance(name, str):
            return None
        prefixes = [p for p in self._namespaces if name.startswith(p)]
        prefix = max(prefixes, key=len, default=None)
        return None if prefix is None else (self._namespaces[prefix], name[len(prefix):])

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            pass
        found = self._namespace_of(name)
        if found is None:
            namespaces = ", ".join(f"{p}<name> (a name of {ns.listing})" for p, ns in sorted(self._namespaces.items()))
            message = None if not namespaces else (
                f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}; or {namespaces}")
            raise UnknownNameError(self.kind, name, self.names(), message=message)
        namespace, rest = found
        if not (rest and namespace.contains(rest)):
            close = [namespace.prefix + n for n in difflib.get_close_matches(rest, list(namespace.names()), n=5)]
            raise UnknownNameError(self.kind, name, close, message=(
                f"unknown {self.kind} {name!r}: {rest!r} is not a name of {namespace.listing}"
                + (f"; close matches: {', '.join(close)}" if close else "")))
        return namespace.resolve(rest)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def namespaces(self) -> list[str]:
        """The registered namespaces as patterns, e.g. ``["timm.<name>", "torchvision.<name>"]``."""
        return sorted(f"{prefix}<name>" for prefix in self._namespaces)

    def __contains__(self, name: object) -> bool:
        if name in self._entries:
            return True
        found = self._namespace_of(name)
        return found is not None and bool(found[1]) and found[0].contains(found[1])

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def import_submodules(package_name: str) -> None:
    """Imports every module of a package, so that a new file registers itself: no import list to edit."""
    package = importlib.import_module(package_name)
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
