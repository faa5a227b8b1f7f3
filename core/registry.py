"""The plugin manager: built-in plugins from ``ovquant.plugins`` and third-party plugins from the
entry-point group ``ovquant``, registered through the hooks of :mod:`ovquant.hookspecs`.

Set ``OVQUANT_DISABLE_PLUGIN_AUTOLOAD=1`` (or ``true``/``yes``/``on``) to load built-ins only (tests do, so
that whatever is installed in the environment cannot change their results); ``0``/``false``/``no``/``off`` or
unset loads entry-point plugins (unlike pytest's PYTEST_DISABLE_PLUGIN_AUTOLOAD, where any non-empty value,
"0" included, disables); any other value is an error.

A plugin that raises, or calls ``sys.exit``, while it is imported or in a hook is a :class:`PluginError`
naming the plugin, in one line.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import threading
from typing import Any, Optional

import attrs
import pluggy

from . import hookspecs
from .errors import OVQuantError, PluginError

ENTRY_POINT_GROUP = "ovquant"
DISABLE_AUTOLOAD_ENV = "OVQUANT_DISABLE_PLUGIN_AUTOLOAD"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")
KINDS = ("estimators", "aggregators", "algorithms", "hw_targets", "placement_rules")

_lock = threading.RLock()
_pm: Optional[pluggy.PluginManager] = None
_registry: Optional["Registry"] = None
_dists: dict = {}   # id(plugin) -> "project version", for entry-point plugins


def one_line(text: Any, limit: int = 500) -> str:
    """A message as one line (a plugin's multi-line message joined with " | "), at most ``limit`` characters."""
    text = " | ".join(l.strip() for l in str(text).splitlines() if l.strip())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _exc_text(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    return one_line(f"{type(exc).__name__}: {exc}")


def autoload_disabled() -> bool:
    """Whether ``OVQUANT_DISABLE_PLUGIN_AUTOLOAD`` asks for built-ins only (1/true/yes/on)."""
    raw = os.environ.get(DISABLE_AUTOLOAD_ENV, "")
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise PluginError(f"{DISABLE_AUTOLOAD_ENV}={raw!r}: give 1 (or true/yes/on) to load built-in plugins only, "
                      "0 (or false/no/off) to load installed plugins too")


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    """Import and register every plugin of the entry-point group; a failure names the plugin and its package."""
    import importlib.metadata

    for dist in list(importlib.metadata.distributions()):
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or pm.get_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            package = f"{dist.metadata['name']} {dist.version}"
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except (Exception, SystemExit) as exc:   # a broken third-party package, or one that exits
                raise PluginError(f"plugin {ep.name!r} (package {package}, entry point {ep.value}) failed to load: "
                                  f"{_exc_text(exc)}") from None
            _dists[id(plugin)] = package


@attrs.define
class Entry:
    """One registered thing: its name, the object, the plugin that registered it and its package."""

    name: str
    obj: Any
    plugin: str
    package: str


class Registry:
    """Everything the plugins registered, by kind and name."""

    def __init__(self):
        self.entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}

    def add(self, kind: str, name: str, obj: Any, plugin: str, package: str) -> None:
        base = _base_class(kind)
        if base is not None and not (isinstance(obj, type) and issubclass(obj, base)):
            what = "an instance" if isinstance(obj, base) else f"{obj!r:.60}"
            raise PluginError(f"plugin {plugin!r} registered {what} as {kind[:-1]}; register a subclass of "
                              f"{base.__module__}.{base.__name__} (the class, not an instance)")
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered {kind[:-1]} {obj!r} without a name")
        known = self.entries[kind]
        key = name.lower() if kind == "hw_targets" else name
        if key in known:
            other = known[key]
            if other.obj is obj:
                raise PluginError(f"plugin {plugin!r}: {kind[:-1].replace('_', ' ')} {name!r} names the same "
                                  f"{kind[:-1].replace('_', ' ')} twice (an alias equal to its name, or a repeated alias)")
            raise PluginError(f"{kind[:-1]} {name!r} is registered twice: by plugin {other.plugin!r} "
                              f"(package {other.package}) and by plugin {plugin!r} (package {package})")
        known[key] = Entry(name, obj, plugin, package)

    def get(self, kind: str, name: str) -> Entry:
        key = name.lower() if kind == "hw_targets" else name
        try:
            return self.entries[kind][key]
        except KeyError:
            raise KeyError(f"unknown {kind[:-1].replace('_', ' ')} {name!r} (known: {', '.join(self.names(kind))})") from None

    def names(self, kind: str) -> list[str]:
        return sorted(e.name for e in self.entries[kind].values())


def _builtin_modules():
    import ovquant.plugins as root

    for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
        yield importlib.import_module(info.name)


def _base_class(kind: str):
    """The class a registered estimator, aggregator or algorithm must subclass (None for other kinds)."""
    if kind == "algorithms":
        from .algorithm import Algorithm

        return Algorithm
    if kind in ("estimators", "aggregators"):
        from . import statistics

        return statistics.Estimator if kind == "estimators" else statistics.Aggregator
    return None


def _check_hooks(pm: pluggy.PluginManager) -> None:
    """A hook implementation whose name is no ovquant hook (a typo: ``register_estimatorz``) is an error."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) if exc.plugin is not None else "?"
        raise PluginError(f"plugin {name!r}: {one_line(exc)} (the hooks are in ovquant.hookspecs)") from None


def _check_api_version(plugin: Any, name: str) -> None:
    need = getattr(plugin, "ovquant_api_version", None)
    if need is None:
        return
    if not isinstance(need, int) or isinstance(need, bool):
        raise PluginError(f"plugin {name!r} declares ovquant_api_version {need!r}; it must be an integer "
                          f"(this ovquant implements version {hookspecs.HOOK_API_VERSION})")
    if need > hookspecs.HOOK_API_VERSION:
        raise PluginError(f"plugin {name!r} needs ovquant hook API version {need!r}, but this ovquant "
                          f"implements version {hookspecs.HOOK_API_VERSION}; upgrade ovquant")


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, created on first use."""
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager(hookspecs.PROJECT)
            pm.add_hookspecs(hookspecs)
            for mod in _builtin_modules():
                if any(hasattr(getattr(mod, h, None), "ovquant_impl") for h in dir(mod)):
                    pm.register(mod, name=mod.__name__)
            if not autoload_disabled():
                _load_entry_points(pm)
            for name, plugin in pm.list_name_plugin():
                _check_api_version(plugin, name)
            _check_hooks(pm)
            _pm = pm
        return _pm


def register_plugin(plugin: Any, name: Optional[str] = None) -> str:
    """Register a plugin object (a module or an instance with hook implementations) at run time."""
    name = name or getattr(plugin, "__name__", None) or repr(plugin)
    _check_api_version(plugin, name)
    with _lock:
        pm = get_plugin_manager()
        pm.register(plugin, name=name)
        try:
            _check_hooks(pm)
        except PluginError:
            pm.unregister(name=name)
            raise
        _reset_registry()
    return name


def unregister_plugin(name: str) -> None:
    with _lock:
        get_plugin_manager().unregister(name=name)
        _reset_registry()


def _reset_registry():
    global _registry
    _registry = None


def _package_of(pm: pluggy.PluginManager, plugin: Any) -> str:
    if id(plugin) in _dists:
        return _dists[id(plugin)]
    for p, dist in pm.list_plugin_distinfo():
        if p is plugin:
            return f"{dist.project_name} {dist.version}"
    mod = getattr(plugin, "__name__", "") or type(plugin).__module__
    if mod.startswith("ovquant."):
        from . import __version__
        return f"ovquant {__version__}"
    return mod.split(".")[0] or "?"


def call_each(hook_name: str, **kwargs) -> list:
    """Call every implementation of ``hook_name``; an exception names the plugin and the hook."""
    pm = get_plugin_manager()
    return [_call_impl(impl, hook_name, **kwargs) for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls())]


def _call_impl(impl, hook_name: str, **kwargs):
    """Call one plugin's implementation of a hook; an exception names the plugin and the hook."""
    try:
        return impl.function(**{a: kwargs[a] for a in impl.argnames})
    except PluginError as exc:
        if "\n" in str(exc):
            raise PluginError(one_line(exc)) from exc
        raise
    except (Exception, SystemExit) as exc:
        if isinstance(exc, SystemExit):
            raise PluginError(f"plugin {impl.plugin_name!r} {_exc_text(exc)} in hook {hook_name!r}") from None
        raise PluginError(f"plugin {impl.plugin_name!r} raised in hook {hook_name!r}: {_exc_text(exc)}") from exc


def _build_registry() -> Registry:
    pm = get_plugin_manager()
    reg = Registry()
    from .hwtarget import load_target  # local: hwtarget imports nothing of plugins

    for kind in KINDS:
        hook = getattr(pm.hook, f"register_{kind}")
        for impl in reversed(hook.get_hookimpls()):
            package = _package_of(pm, impl.plugin)

            def register(obj, _impl=impl, _kind=kind, _package=package):
                if _kind == "hw_targets":
                    try:
                        target = load_target(obj)
                    except Exception as exc:
                        raise PluginError(f"plugin {_impl.plugin_name!r} registered a malformed hardware "
                                          f"target: {exc}") from exc
                    reg.add(_kind, target.name, target, _impl.plugin_name, _package)
                    for alias in target.aliases:
                        reg.add(_kind, alias, target, _impl.plugin_name, _package)
                else:
                    reg.add(_kind, getattr(obj, "name", None), obj, _impl.plugin_name, _package)

            _call_impl(impl, f"register_{kind}", register=register)
    return reg


def get_registry() -> Registry:
    """The registry of every estimator, aggregator, algorithm and hardware target (built once)."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = _build_registry()
        return _registry


def known(kind: str) -> list[str]:
    return get_registry().names(kind)


def lookup(kind: str, name: str) -> Any:
    """The registered object of ``kind`` called ``name``; KeyError lists the known names."""
    return get_registry().get(kind, name).obj


def notify(event: str, **kwargs) -> None:
    """Fire a pipeline event hook (stage_started, sample_processed, ...)."""
    call_each(event, **kwargs)


def make_estimator(name: str, **params):
    return lookup("estimators", name)(**params)


def make_aggregator(name: str, **params):
    return lookup("aggregators", name)(**params)




def plugin_error(kind: str, name: str, where: str, exc: BaseException) -> PluginError:
    """A one-line error for an exception raised by a registered object (set OVQUANT_DEBUG=1 to get the
    original traceback instead)."""
    try:
        plugin = get_registry().get(kind, name).plugin
    except KeyError:
        plugin = "?"
    return PluginError(f"{kind[:-1]} {name!r} (plugin {plugin!r}) failed in {where}: {_exc_text(exc)}")


def guarded(kind: str, name: str, where: str, fn, *args, passthrough: tuple = (OVQuantError,), **kwargs):
    """``fn(*args, **kwargs)`` for a registered object (a plugin's algorithm, estimator or aggregator):
    an exception other than ``passthrough`` becomes :func:`plugin_error`, one line naming the object, its
    plugin and ``where`` (with OVQUANT_DEBUG=1 the original exception instead)."""
    try:
        return fn(*args, **kwargs)
    except passthrough as exc:
        if isinstance(exc, OVQuantError) and "\n" in str(exc):   # a plugin's own multi-line message
            try:
                short = type(exc)(one_line(exc))
            except Exception:
                short = PluginError(one_line(exc))
            raise short from exc
        raise
    except (Exception, SystemExit) as exc:
        if debug():
            raise
        raise plugin_error(kind, name, where, exc) from exc


def debug() -> bool:
    return bool(os.environ.get("OVQUANT_DEBUG"))
