"""DESIGN.md's layer table, enforced: a module imports only from its own layer or lower
ones, the same-layer imports never form a cycle, and every module is in the table.

Every import counts, wherever it stands (module level, inside a function, under
`if TYPE_CHECKING:`): a dependency that only type checkers see is still a dependency.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

import blobmount

PACKAGE = "blobmount"
PACKAGE_DIR = Path(blobmount.__file__).parent

#: DESIGN.md's table. A new module must be placed here before its test passes.
LAYERS: dict[int, frozenset[str]] = {
    # `__init__` is the package itself: it may import nothing of ours (so importing
    # any one module never drags in the rest); it hands out `Client` (layer 4) lazily.
    # `versions`: what blobmount runs on, for --version (packages, libfuse, AzCopy).
    # `supervise`: background tasks that fail alone, workers restarted, test faults.
    # `children`: child processes that die with the daemon (AzCopy's).
    # `metrics`: the daemon's counters and its Prometheus endpoint.
    # `posix`: modes, owners, symlinks and special nodes as blob metadata, and the rules.
    # `access`: AzCopy's login for an identity, SAS lifetimes, endpoints trusted with a token.
    # `decide`: every size and tool choice of a transfer, each with its measurement.
    # `threads`: the daemon's one bound on worker threads (every blocking call).
    # `taskdump`: what each trio task waits on (SIGUSR1), for a mount that seems stuck.
    # `burst`: the async upload worker waits for a burst of closes to end.
    # `transaction`: one sqlite transaction (the store's connection autocommits).
    # `config` (a package): the model, where files are, the YAML reader, credentials,
    # placeholders, names and the mount table, and the two formats, one module each.
    0: frozenset({"__init__", "errors", "config", "config.model", "config.locate",
                  "config.reader", "config.credentials", "config.templates", "config.checks",
                  "config.native", "config.azfuse", "log", "tools", "singleflight",
                  "sdnotify", "progress", "versions", "supervise", "children", "metrics",
                  "posix", "access", "decide", "threads", "taskdump", "burst",
                  "transaction"}),
    # `azure` (a package): the storage client, one module per job (see its __init__).
    # `journal`, `cachetables`, `patchtables`: the store's tables, one module each;
    # `migrations`: its schema, an earlier blobmount's database brought to this one's.
    1: frozenset({"store", "journal", "cachetables", "patchtables", "migrations", "azure",
                  "azure.transport", "azure.listing", "azure.base", "azure.ranges",
                  "azure.staging", "azure.sas", "azure.protocol", "azure.container",
                  "azure.aio", "azcopy", "azurite"}),
    # `uploads` (the write path's journal and worker) sits with `transfers`.
    # `eviction` (cache limits), `catalog` (mount paths to blobs), `xattrs` sit with `cache`.
    # `blocks`: large files read by blocks into sparse copies, beside `transfers`.
    # `moves`: the local half of a rename (cached copies and journal rows follow).
    # `patch`: edits of those files uploaded by blocks, beside `uploads`; `blocklist`:
    # the block list an edit commits, planned (pure).
    # `listing`: a container folder listed into the store, the names POSIX can show.
    # `puts`: an upload's conditional puts; `batches`: prefetch batches, for `transfers`.
    # `commits`: the journal's group commit, for `uploads`.
    # `copysync`: downloaded copies, installed with no fsync, synced in bulk.
    2: frozenset({"namespace", "listing", "cache", "transfers", "uploads", "eviction", "catalog",
                  "xattrs", "readahead", "blocks", "moves", "patch", "blocklist", "puts",
                  "batches", "commits", "copysync"}),
    # `manage`: the control requests for the cache (prefetch, cache ls/evict, stats).
    # `files`: a file's life (handles, local changes, renames); `fs` forwards to it.
    # `renames`: unlink, rename, mkdir and rmdir for `files`; `handles`: its open files.
    # `attrs`: what stat and statfs show, and what setattr, mknod and create keep.
    3: frozenset({"files", "renames", "handles", "fs", "attrs", "control", "manage"}),
    # `preflight`: `blobmount check`, the mount's own checks run without mounting.
    # `azfuse` (a package): azfuse's File API and command line, on `client`.
    4: frozenset({"daemon", "cli", "__main__", "helper", "inventory", "client", "commands",
                  "preflight", "azfuse"}),
}
LAYER_OF = {module: layer for layer, modules in LAYERS.items() for module in modules}

#: The storage client's own order, lowest first: each of its modules imports only the
#: ones before it (the transport knows nothing of downloads; `Remote` composes all).
AZURE_ORDER = ["azure.wire", "azure.transport", "azure.lean", "azure.listing", "azure.base",
               "azure.ranges", "azure.staging", "azure.sas", "azure.protocol",
               "azure.container", "azure.aio", "azure"]


def module_name(path: Path, root: Path = PACKAGE_DIR) -> str:
    """`x.py` -> 'x'; `sub/y.py` -> 'sub.y'; `sub/__init__.py` -> 'sub' (relative to root)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if len(parts) > 1 and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path = PACKAGE_DIR) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def _resolve(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute dotted module an ImportFrom names (`from ..x import y` -> '...x')."""
    if node.level == 0:
        return node.module or ""
    # What `.` means: the package itself for an __init__.py, else the module's package.
    if path.name == "__init__.py":
        package = [PACKAGE] + ([] if name == "__init__" else name.split("."))
    else:
        package = [PACKAGE, *name.split(".")[:-1]]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _ours(dotted: str | None, modules: set[str]) -> str | None:
    """'blobmount.x.y' -> the longest of 'x.y', 'x' that is one of our modules."""
    if dotted is None or (dotted != PACKAGE and not dotted.startswith(PACKAGE + ".")):
        return None
    parts = dotted.split(".")[1:]
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return "__init__"  # `blobmount` itself, or something in it we cannot place


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The blobmount modules `name` imports, each as a module name ('store', 'sub.y')."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                module = _ours(alias.name, modules)
                if module is not None:
                    found.add(module)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, path, node)
            module = _ours(target, modules)
            if module is None:
                continue
            # `from blobmount import store` / `from . import control` import modules.
            named = [
                _ours(f"{target}.{alias.name}", modules) for alias in node.names
            ]
            submodules = {m for m in named if m is not None and m != module}
            if submodules:
                found |= submodules
            else:
                found.add(module)
    found.discard(name)
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


def layer_of(module: str) -> int | None:
    return LAYER_OF.get(module, LAYER_OF.get(_top(module)))


def import_graph(root: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    modules = package_modules(root)
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


@functools.cache
def our_graph() -> dict[str, set[str]]:
    return import_graph()


def upward_imports(graph: dict[str, set[str]], name: str) -> list[str]:
    """What `name` imports from a higher layer (or from a module the table lacks)."""
    mine = layer_of(name)
    return sorted(
        f"{target} (layer {layer_of(target)})"
        for target in graph[name]
        if mine is None or layer_of(target) is None or layer_of(target) > mine
    )


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, str] = {}  # 'open' while on the stack, 'done' after
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


# --------------------------------------------------------------------------- the tests


def test_every_module_is_in_the_layer_table() -> None:
    unplaced = sorted(name for name in package_modules() if layer_of(name) is None)
    assert not unplaced, (
        f"modules missing from DESIGN.md's layer table (and LAYERS in this test): {unplaced}"
    )


@pytest.mark.parametrize("name", sorted(package_modules()))
def test_imports_go_down_the_layers(name: str) -> None:
    upward = upward_imports(our_graph(), name)
    assert not upward, f"{name} (layer {layer_of(name)}) imports from higher layers: {upward}"


def test_no_import_cycles() -> None:
    cycles = import_cycles(our_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_storage_client_imports_in_one_direction() -> None:
    graph = our_graph()
    package = {name for name in graph if _top(name) == "azure"}
    assert package == set(AZURE_ORDER), "place every module of azure/ in AZURE_ORDER"
    upward = {
        name: sorted(graph[name] & set(AZURE_ORDER[index + 1:]))
        for index, name in enumerate(AZURE_ORDER)
    }
    assert not any(upward.values()), f"azure modules importing later ones: {upward}"


def test_the_checker_sees_every_import_form(tmp_path: Path) -> None:
    """The parser above catches each way of spelling an import of ours."""
    modules = {"__init__", "store", "cache", "control", "errors"}
    source = tmp_path / "probe.py"
    source.write_text(
        "import os\n"
        "import blobmount.store\n"
        "from blobmount import cache as c\n"
        "from . import control\n"
        "from .errors import BlobmountError\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from blobmount.store import Node\n"
        "def later():\n"
        "    from .cache import Cache\n"
        "    import blobmount\n",
        encoding="utf-8",
    )
    assert imports_of("probe", source, modules) == {
        "store", "cache", "control", "errors", "__init__",
    }


def test_the_checker_flags_upward_imports_and_cycles(tmp_path: Path) -> None:
    """Run on a made-up package: an upward import and a same-layer cycle are caught."""
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "errors.py").write_text("")
    (tmp_path / "store.py").write_text("from .cache import Cache\n")  # 1 -> 2: upward
    (tmp_path / "cache.py").write_text("from blobmount import transfers\n")
    (tmp_path / "transfers.py").write_text("def f():\n    from . import cache\n")  # cycle
    (tmp_path / "fs.py").write_text("from .errors import X\nfrom .cache import Cache\n")
    graph = import_graph(tmp_path)
    assert graph == {
        "__init__": set(), "errors": set(), "store": {"cache"}, "cache": {"transfers"},
        "transfers": {"cache"}, "fs": {"errors", "cache"},
    }
    assert upward_imports(graph, "store") == ["cache (layer 2)"]
    assert upward_imports(graph, "fs") == []
    assert upward_imports(graph, "cache") == []  # same layer is allowed...
    assert import_cycles(graph) == [["cache", "transfers", "cache"]]  # ...unless circular


#: The modules that may run blocking calls in threads themselves: the one limiter's
#: (`threads`) and the storage client's (whose face holds it, and whose downloads lend
#: it to each range).
THREAD_MODULES = {"threads"} | set(AZURE_ORDER)


def thread_calls(path: Path) -> list[str]:
    """Where a module starts worker threads or makes a thread limiter of its own."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        attribute = isinstance(node, ast.Attribute) and node.attr == "to_thread"
        imported = isinstance(node, ast.ImportFrom) and any(
            alias.name == "to_thread" for alias in node.names)
        if attribute or imported:
            found.append((node.lineno, "trio.to_thread"))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "CapacityLimiter":
                found.append((node.lineno, "CapacityLimiter()"))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def test_blocking_calls_go_through_the_one_limiter() -> None:
    """Only `threads` and `azure/` call trio.to_thread or make a CapacityLimiter: every
    other module runs its blocking work through `Threads` or `AsyncContainer`."""
    offenders = {name: found for name, path in package_modules().items()
                 if name not in THREAD_MODULES and (found := thread_calls(path))}
    assert not offenders, f"threads outside the one limiter: {offenders}"


def test_the_thread_scan_sees_each_form(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        "import trio\n"
        "from trio import to_thread\n"
        "async def f():\n"
        "    await trio.to_thread.run_sync(len, 'x')\n"
        "    limiter = trio.CapacityLimiter(2)\n"
        "    bound = trio.Semaphore(2)\n",
        encoding="utf-8",
    )
    assert thread_calls(source) == ["line 2: trio.to_thread", "line 4: trio.to_thread",
                                    "line 5: CapacityLimiter()"]
