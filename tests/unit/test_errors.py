"""errors.py: one table maps every error type of the package to one errno, and nothing
else decides an errno (no per-instance codes, no FUSEError raised outside fs.py's
decorator)."""

from __future__ import annotations

import ast
import errno
import importlib
import pkgutil
from pathlib import Path

import pytest

import blobmount
from blobmount import errors
from blobmount.errors import ERRNO, BlobmountError, errno_of

PACKAGE_DIR = Path(blobmount.__file__).parent


def _every_error_type() -> set[type]:
    for module in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="blobmount."):
        if module.name != "blobmount.__main__":  # it runs the command line
            importlib.import_module(module.name)
    found: set[type] = set()
    todo = [BlobmountError]
    while todo:
        kind = todo.pop()
        found.add(kind)
        todo.extend(kind.__subclasses__())
    return {kind for kind in found if kind.__module__.startswith("blobmount")}


def _trees() -> dict[str, ast.AST]:
    return {str(path.relative_to(PACKAGE_DIR)): ast.parse(path.read_text(), str(path))
            for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def test_every_error_type_of_the_package_has_exactly_one_errno_in_the_table() -> None:
    kinds = _every_error_type()
    assert len(kinds) > 30  # the walk found the package's errors, not just the root
    assert {kind for kind in kinds if kind not in ERRNO} == set()
    assert {kind for kind in kinds if kind.__module__ != "blobmount.errors"} == set()
    assert all(isinstance(code, int) and code > 0 for code in ERRNO.values())


def test_an_error_answers_with_its_type_s_errno() -> None:
    assert errors.NotFound("x").errno == errno.ENOENT
    assert errno_of(errors.Exists("x")) == errno.EEXIST
    assert errno_of(errors.NoSuchAttribute("x")) == errno.ENODATA
    assert errno_of(errors.Unimplemented("x")) == errno.ENOSYS
    assert errno_of(errors.RemoteNotFound("x")) == errno.ENOENT
    assert errno_of(errors.ConfigError("f.yaml", "k", "bad")) == errno.EINVAL


def test_types_outside_the_table_get_their_base_s_or_an_oserror_s_or_eio() -> None:
    class Nearer(errors.ReadOnly):
        pass

    assert errno_of(Nearer("x")) == errno.EROFS
    assert errno_of(OSError(errno.ENOSPC, "full")) == errno.ENOSPC
    assert errno_of(FileNotFoundError(errno.ENOENT, "gone")) == errno.ENOENT
    assert errno_of(OSError("no code")) == errno.EIO
    assert errno_of(ValueError("a bug")) == errno.EIO


def test_a_copy_of_an_error_keeps_its_errno() -> None:
    # blocks.py and transfers.py raise a copy per waiter: the type carries the errno.
    original = errors.RemoteAuthError("denied")
    assert type(original)(*original.args).errno == errno.EACCES


def test_no_module_sets_an_errno_of_its_own() -> None:
    """An errno is the table's: nobody assigns `x.errno = ...`."""
    assigned = [
        f"{name}:{node.lineno}" for name, tree in _trees().items() for node in ast.walk(tree)
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute) and target.attr == "errno"]
    assert assigned == []
    with pytest.raises(AttributeError):
        errors.NotFound("x").errno = errno.EIO


def test_only_fs_decorator_raises_fuse_errors() -> None:
    raised = [
        f"{name}:{node.lineno}" for name, tree in _trees().items() for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr == "FUSEError"]
    assert len(raised) == 1 and raised[0].startswith("fs.py:")
