"""Discovering plugins and checking what they declare.

`get_plugin_manager()` builds a pluggy manager with the hookspecs; `load_registry()` loads every
plugin registered under the `pixmill` entry-point group (built-ins included: they are declared
the same way), asks each for its definitions, checks them, and returns a `Registry`.

Nothing here raises because of a plugin: a plugin that fails to import, a hook that raises, a
definition with a bad id or schema, or an id already taken is recorded in the plugin's report
(`PluginInfo.errors`) with what to do about it, and the rest keeps working.

Plugin API version. A plugin may declare the plugin API it targets with a module (or object)
attribute `PIXMILL_PLUGIN_API = 1`; it is read right after the import and before the plugin is
registered, so a plugin targeting another API than `pixmill.PLUGIN_API_VERSION` is refused
whole (none of its hooks is ever called): never half-loaded. No declaration means "the current
API", so the plugins written before versions existed keep working (docs/plugins/versioning.md).

Plugins dir. `load_registry(plugins_dir=DIR)` also loads every `*.py` module and every package
directory in DIR, unpackaged, each reported like an entry-point plugin (package
`(plugins dir)`). They are imported under a private name (`_pixmill_plugins_dir.<name>`) so
that a file called, say, `json.py` cannot shadow a real module.

Tracing. With `PIXMILL_TRACE_PLUGINS=1`, every hook call (and, in `execution`, every tool,
extractor and source call) is logged with its duration on the `pixmill.trace` logger, which
then writes to stderr by itself: tracing is for a plugin author at a terminal, who should not
have to configure logging first.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy
from marshmallow import Schema

from pixmill import PLUGIN_API_VERSION
from pixmill.core import hookspecs
from pixmill.core.contracts import (
    ID_PATTERN,
    SECTIONS,
    Definition,
    Extractor,
    PluginKind,
    Source,
    Tool,
)
from pixmill.core.errors import NotFoundError, PixmillError
from pixmill.core.settings import to_json_schema, validate_settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "pixmill"
BUILTIN_PACKAGE = "pixmill"
# The attribute a plugin module (or object) sets to the plugin API version it targets.
API_ATTRIBUTE = "PIXMILL_PLUGIN_API"
# What `PluginInfo.package` says of a module loaded from `--plugins-dir` (no distribution).
PLUGINS_DIR_PACKAGE = "(plugins dir)"
_PLUGINS_DIR_NAMESPACE = "_pixmill_plugins_dir"
TRACE_ENV = "PIXMILL_TRACE_PLUGINS"
trace_log = logging.getLogger("pixmill.trace")

_HOOK_KINDS = {
    "pixmill_tools": (PluginKind.TOOL, Tool),
    "pixmill_extractors": (PluginKind.EXTRACTOR, Extractor),
    "pixmill_sources": (PluginKind.SOURCE, Source),
}


def get_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager that knows pixmill's hookspecs (no module-level global)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    if tracing_enabled():
        # Every call through `pm.hook` (hooks other code calls the usual pluggy way).
        pm.add_hookcall_monitoring(_trace_before, _trace_after)
    return pm


# --- tracing -----------------------------------------------------------------------------------


def tracing_enabled(environ: Any = None) -> bool:
    """Whether `PIXMILL_TRACE_PLUGINS` asks for tracing (1/true/yes/on); it also makes sure
    the trace reaches stderr."""
    raw = (os.environ if environ is None else environ).get(TRACE_ENV, "")
    enabled = raw.strip().lower() in {"1", "true", "yes", "on"}
    if enabled and not trace_log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("pixmill trace: %(message)s"))
        trace_log.addHandler(handler)
        trace_log.setLevel(logging.DEBUG)
        trace_log.propagate = False  # once on stderr is enough, whatever the app's logging
    return enabled


class _StderrHandler(logging.Handler):
    """Writes to `sys.stderr` as it is at each record (a `StreamHandler` keeps the stream it
    was built with, which may since have been replaced by a test runner or a daemon)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


@contextmanager
def traced(what: str) -> Iterator[None]:
    """Log `what` with its duration when tracing is on, and whether it raised."""
    if not tracing_enabled():
        yield
        return
    started = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        elapsed = (time.perf_counter() - started) * 1000
        trace_log.info("%s raised %s after %.1f ms", what, type(exc).__name__, elapsed)
        raise
    trace_log.info("%s took %.1f ms", what, (time.perf_counter() - started) * 1000)


def _trace_before(
    hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]
) -> None:
    plugins = ", ".join(impl.plugin_name for impl in impls) or "no plugin"
    trace_log.info("calling %s(%s) on %s", hook_name, ", ".join(kwargs), plugins)


def _trace_after(
    outcome: pluggy.Result[Any],
    hook_name: str,
    impls: Sequence[pluggy.HookImpl],
    kwargs: Mapping[str, Any],
) -> None:
    failed = outcome.exception is not None
    trace_log.info("%s %s", hook_name, "raised" if failed else "returned")


@dataclass
class PluginInfo:
    """What one plugin is and provides, or why it (or part of it) was not loaded."""

    name: str
    package: str | None
    version: str | None
    hooks: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    extractors: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    loaded: bool = False
    # The plugin API version the plugin declares (`PIXMILL_PLUGIN_API`); None: undeclared,
    # taken as the current one.
    api_version: int | None = None

    @property
    def builtin(self) -> bool:
        return self.package == BUILTIN_PACKAGE

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "package": self.package,
            "version": self.version,
            "builtin": self.builtin,
            "loaded": self.loaded,
            "pluginApi": self.api_version,
            "hooks": self.hooks,
            "tools": self.tools,
            "extractors": self.extractors,
            "sources": self.sources,
            "errors": self.errors,
        }


@dataclass
class Registry:
    """Every loaded definition by id, and the report of every plugin that was considered."""

    tools: dict[str, Tool] = field(default_factory=dict)
    extractors: dict[str, Extractor] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    owners: dict[tuple[PluginKind, str], str] = field(default_factory=dict)

    def catalogue(self) -> list[Tool | Extractor]:
        """Tools and extractors together, as the REST tools catalogue lists them."""
        items: list[Tool | Extractor] = [*self.tools.values(), *self.extractors.values()]
        return sorted(items, key=lambda item: (item.section, item.id))

    def catalogue_entry(self, tool_id: str, section: str | None = None) -> Tool | Extractor:
        entry: Tool | Extractor | None = self.tools.get(tool_id) or self.extractors.get(tool_id)
        if entry is None or (section is not None and entry.section != section):
            raise NotFoundError(
                f"no tool {tool_id!r}" + (f" in section {section!r}" if section else ""),
                code="TOOL_NOT_FOUND",
                details={
                    "toolId": tool_id,
                    "available": sorted(self.tools) + sorted(self.extractors),
                },
            )
        return entry

    def route_entry(self, route: str, section: str) -> Tool | Extractor:
        """The tool or extractor serving a sub-route such as `edit-metadata/inspect`."""
        entries: list[Tool | Extractor] = [*self.tools.values(), *self.extractors.values()]
        for entry in entries:
            if entry.route == route and entry.section == section:
                return entry
        raise NotFoundError(
            f"no route {route!r} in section {section!r}",
            code="TOOL_NOT_FOUND",
            details={"route": route},
        )

    def tool(self, tool_id: str) -> Tool:
        try:
            return self.tools[tool_id]
        except KeyError:
            raise NotFoundError(f"no tool {tool_id!r}", code="TOOL_NOT_FOUND") from None

    def extractor(self, extractor_id: str) -> Extractor:
        try:
            return self.extractors[extractor_id]
        except KeyError:
            raise NotFoundError(
                f"no extractor {extractor_id!r}", code="EXTRACTOR_NOT_FOUND"
            ) from None

    def source(self, source_id: str) -> Source:
        try:
            return self.sources[source_id]
        except KeyError:
            raise NotFoundError(f"no source {source_id!r}", code="SOURCE_NOT_FOUND") from None

    def owner(self, definition: Definition) -> str:
        return self.owners.get((_namespace(definition.kind), definition.id), "?")

    @property
    def errors(self) -> list[tuple[str, str]]:
        return [(info.name, error) for info in self.plugins for error in info.errors]


def _namespace(kind: PluginKind) -> PluginKind:
    # Tools and extractors share one namespace: both live at /api/v1/tools/<section>/<id>.
    return PluginKind.TOOL if kind is PluginKind.EXTRACTOR else kind


def load_registry(
    load_plugins: Iterable[str] | None = None,
    extra_plugins: Iterable[ModuleType | object] = (),
    *,
    entry_points: bool = True,
    plugins_dir: Path | str | None = None,
) -> Registry:
    """Load plugins and return their checked definitions.

    `load_plugins` restricts entry-point plugins to these names (`PIXMILL_LOAD_PLUGINS`);
    `extra_plugins` are objects or modules registered directly (tests, `PIXMILL_EXTRA_PLUGINS`);
    `plugins_dir` is a directory of unpackaged plugin modules (`--plugins-dir`), loaded after
    the installed plugins so that they can never shadow an installed id.
    """
    wanted = set(load_plugins) if load_plugins is not None else None
    pm = get_plugin_manager()
    registry = Registry()
    if entry_points:
        for ep in _sorted_entry_points():
            if wanted is not None and ep.name not in wanted:
                continue
            _register_entry_point(pm, registry, ep)
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", type(plugin).__name__)
        info = PluginInfo(name=name, package=None, version=None)
        registry.plugins.append(info)
        _register(pm, info, plugin)
    if plugins_dir is not None:
        for name, path in plugins_dir_modules(Path(plugins_dir)):
            _register_plugins_dir_module(pm, registry, name, path)
    for info in registry.plugins:
        if info.loaded:
            _collect(pm, registry, info)
    return registry


def _sorted_entry_points() -> list[importlib.metadata.EntryPoint]:
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    # Built-ins first, so a third-party plugin can never shadow a built-in id.
    return sorted(
        eps,
        key=lambda ep: (_dist_name(ep) != BUILTIN_PACKAGE, _dist_name(ep) or "", ep.name),
    )


def _dist_name(ep: importlib.metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else None


def _register_entry_point(
    pm: pluggy.PluginManager, registry: Registry, ep: importlib.metadata.EntryPoint
) -> None:
    dist = getattr(ep, "dist", None)
    package = _dist_name(ep)
    info = PluginInfo(name=ep.name, package=package, version=dist.version if dist else None)
    registry.plugins.append(info)
    try:
        module = ep.load()
    except Exception as exc:  # any import-time failure of a third-party package
        advice = (
            "this is a bug in pixmill; skip this plugin with PIXMILL_LOAD_PLUGINS listing "
            "the others, and report it"
            if package == BUILTIN_PACKAGE
            else f"fix or uninstall it: pip uninstall {package or ep.name}"
        )
        info.errors.append(f"failed to import {ep.value}: {type(exc).__name__}: {exc}. {advice}")
        log.error("plugin %s not loaded: %s", ep.name, info.errors[-1])
        return
    _register(pm, info, module)


def plugins_dir_modules(directory: Path) -> list[tuple[str, Path]]:
    """The plugin modules of a plugins dir, by name: `NAME.py` files and `NAME/__init__.py`
    packages. Names starting with `_` or `.` (`__pycache__`, editor files) are not plugins."""
    found: list[tuple[str, Path]] = []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(("_", ".")):
            continue
        if entry.is_file() and entry.suffix == ".py":
            found.append((entry.stem, entry))
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            found.append((entry.name, entry / "__init__.py"))
    return found


def _register_plugins_dir_module(
    pm: pluggy.PluginManager, registry: Registry, name: str, path: Path
) -> None:
    info = PluginInfo(name=name, package=PLUGINS_DIR_PACKAGE, version=None)
    registry.plugins.append(info)
    try:
        module = _import_from_path(name, path)
    except Exception as exc:  # anything a half-written experiment raises on import
        info.errors.append(
            f"failed to import {path}: {type(exc).__name__}: {exc}. Fix it, or move it out "
            "of the plugins dir"
        )
        log.error("plugin %s not loaded: %s", name, info.errors[-1])
        return
    _register(pm, info, module)


def _import_from_path(name: str, path: Path) -> ModuleType:
    """Import the module at `path` afresh (a reload picks up the file's latest edit)."""
    qualified = f"{_PLUGINS_DIR_NAMESPACE}.{name}"
    package_dir = [str(path.parent)] if path.name == "__init__.py" else None
    spec = importlib.util.spec_from_file_location(
        qualified, path, submodule_search_locations=package_dir
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it, as `import` does: a package's relative imports need it.
    sys.modules[qualified] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(qualified, None)
        raise
    return module


def _api_problem(info: PluginInfo, plugin: object) -> str | None:
    """Why the plugin's declared API version rules it out, or None when it is compatible."""
    declared = getattr(plugin, API_ATTRIBUTE, None)
    if declared is None:
        return None
    if isinstance(declared, bool) or not isinstance(declared, int):
        return (
            f"{API_ATTRIBUTE} = {declared!r} is not a plugin API version: set it to an "
            f"integer, {PLUGIN_API_VERSION} for this pixmill"
        )
    info.api_version = declared
    if declared == PLUGIN_API_VERSION:
        return None
    package = info.package if info.package not in (None, PLUGINS_DIR_PACKAGE) else info.name
    if declared > PLUGIN_API_VERSION:
        remedy = (
            f"upgrade pixmill (pip install -U pixmill) or install a release of {package} "
            f"for API {PLUGIN_API_VERSION}"
        )
    else:
        remedy = (
            f"install a release of {package} for API {PLUGIN_API_VERSION} "
            f"(pip install -U {package}), or a pixmill that provides API {declared}"
        )
    return (
        f"targets plugin API {declared}, this pixmill provides {PLUGIN_API_VERSION}: {remedy}; "
        "none of its tools, extractors or sources were loaded"
    )


def _register(pm: pluggy.PluginManager, info: PluginInfo, plugin: object) -> None:
    # Checked before registering: an incompatible plugin's hooks are never called.
    api_problem = _api_problem(info, plugin)
    if api_problem:
        info.errors.append(api_problem)
        log.error("plugin %s not loaded: %s", info.name, api_problem)
        return
    if pm.is_registered(plugin) or pm.has_plugin(info.name):
        info.errors.append(f"plugin {info.name!r} is registered twice; the second was skipped")
        return
    try:
        pm.register(plugin, name=info.name)
    except Exception as exc:  # pluggy's PluginValidationError and friends
        info.errors.append(f"invalid hook implementation: {exc}")
        return
    marked = [name for name in dir(plugin) if pm.parse_hookimpl_opts(plugin, name) is not None]
    unknown = [name for name in marked if name not in _HOOK_KINDS]
    unmarked = [
        name for name in _HOOK_KINDS if name not in marked and callable(getattr(plugin, name, None))
    ]
    problems = []
    if unknown:
        problems.append(
            f"implements unknown hook(s) {', '.join(unknown)}; "
            f"known hooks: {', '.join(sorted(_HOOK_KINDS))}"
        )
    if unmarked:
        # pluggy would never call them: say so instead of serving a plugin that does nothing.
        problems.append(
            f"{', '.join(unmarked)} lack(s) the @pixmill.hookimpl marker, so pixmill would "
            "never call them; decorate them with @hookimpl"
        )
    if problems:
        pm.unregister(plugin)
        info.errors.extend(problems)
        return
    info.loaded = True
    info.hooks = sorted(name for name in marked if name in _HOOK_KINDS)


def _collect(pm: pluggy.PluginManager, registry: Registry, info: PluginInfo) -> None:
    plugin = pm.get_plugin(info.name)
    for hook_name, (kind, cls) in _HOOK_KINDS.items():
        impls = [
            impl for impl in getattr(pm.hook, hook_name).get_hookimpls() if impl.plugin is plugin
        ]
        for impl in impls:
            try:
                with traced(f"{hook_name}() of plugin {info.name}"):
                    definitions = list(impl.function() or ())
            except Exception as exc:
                info.errors.append(f"{hook_name}() raised {type(exc).__name__}: {exc}")
                continue
            for definition in definitions:
                _add(registry, info, kind, cls, definition)


def _add(
    registry: Registry, info: PluginInfo, kind: PluginKind, cls: type, definition: Any
) -> None:
    problem = _check_definition(kind, cls, definition)
    label = f"{kind.value} {getattr(definition, 'id', definition)!r}"
    if problem:
        info.errors.append(f"{label} skipped: {problem}")
        log.error("plugin %s: %s", info.name, info.errors[-1])
        return
    key = (_namespace(kind), definition.id)
    if key in registry.owners:
        first = registry.owners[key]
        first_package = next((p.package for p in registry.plugins if p.name == first), None)
        info.errors.append(
            f"{label} skipped: the id is already provided by plugin {first!r} "
            f"(package {first_package or 'unknown'}); plugin {info.name!r} "
            f"(package {info.package or 'unknown'}) declares it again. Uninstall one of them "
            "or restrict loading with PIXMILL_LOAD_PLUGINS"
        )
        log.error("duplicate id: %s", info.errors[-1])
        return
    registry.owners[key] = info.name
    if kind is PluginKind.TOOL:
        registry.tools[definition.id] = definition
        info.tools.append(definition.id)
    elif kind is PluginKind.EXTRACTOR:
        registry.extractors[definition.id] = definition
        info.extractors.append(definition.id)
    else:
        registry.sources[definition.id] = definition
        info.sources.append(definition.id)


QUEUE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
# A sub-route sits under another tool's path; `batch` is taken by the batch endpoint.
ROUTE_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*/(?!batch$)[a-z0-9]+(?:-[a-z0-9]+)*$")


def _check_run_policy(definition: Tool | Extractor) -> str | None:
    if not isinstance(definition.queue, str) or not QUEUE_NAME.match(definition.queue):
        return f"queue {definition.queue!r} is not a queue name (lowercase, e.g. 'default', 'ai')"
    timeout = definition.timeout
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        return f"timeout must be a positive number of seconds or None, got {timeout!r}"
    attempts = definition.max_attempts
    if attempts is not None and (
        isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1
    ):
        return f"max_attempts must be an integer of at least 1 or None, got {attempts!r}"
    route = definition.route
    if route is not None and (not isinstance(route, str) or not ROUTE_PATTERN.match(route)):
        return (
            f"route {route!r} is not `<tool-id>/<action>` (kebab-case words; the action cannot "
            "be 'batch')"
        )
    requires = definition.requires
    if not isinstance(requires, tuple) or not all(isinstance(m, str) for m in requires):
        return f"requires must be a tuple of module names, got {requires!r}"
    if requires and not isinstance(definition.install, str):
        return "a definition that requires optional modules names its `install` requirement"
    return None


def _check_definition(kind: PluginKind, cls: type, definition: Any) -> str | None:
    """Why a definition cannot be served, or None when it is sound."""
    if not isinstance(definition, Tool | Extractor | Source) or not isinstance(definition, cls):
        return f"expected a pixmill.{cls.__name__}, got {type(definition).__name__}"
    entry_point = {"tool": "run", "extractor": "extract", "source": "fetch"}[kind.value]
    if not callable(getattr(definition, entry_point, None)):
        return f"{entry_point} must be a function, got {getattr(definition, entry_point)!r}"
    if not isinstance(definition.id, str) or not ID_PATTERN.match(definition.id):
        return "ids are kebab-case: lowercase letters and digits joined by single hyphens"
    section = getattr(definition, "section", None)
    if section is not None and section not in SECTIONS:
        return f"unknown section {section!r}; known: {', '.join(SECTIONS)}"
    if isinstance(definition, Tool | Extractor):
        problem = _check_run_policy(definition)
        if problem:
            return problem
    schemas: list[tuple[str, Any]] = [("settings", definition.settings)]
    if isinstance(definition, Extractor) and definition.output_schema is not None:
        schemas.append(("output_schema", definition.output_schema))
    for attr, schema in schemas:
        if not (isinstance(schema, type) and issubclass(schema, Schema)):
            return f"{attr} must be a marshmallow Schema class, got {schema!r}"
        try:
            to_json_schema(schema)
        except Exception as exc:
            return f"{attr} {schema.__name__} cannot be exported as JSON Schema: {exc}"
    try:
        validate_settings(definition.settings, definition.example)
    except PixmillError as exc:
        return f"its example settings do not validate: {exc.message}"
    except Exception as exc:
        return f"its settings schema fails to load its example: {type(exc).__name__}: {exc}"
    return None
