"""`python -m blobmount.azfuse TASK FILES...`: azfuse's command line, through blobmount.

    d | download FILES     fetch them into the cache, in one prefetch
    ls FOLDER              a table: name, size_in_bytes, last_modified
    url FILE               the blob's URL with a read-only SAS (30 days, as azfuse)
    cat | head | tail FILES  a fresh copy, then the command on it
    rm FILES               delete them
    rmtree FOLDERS         delete everything under them
    update FILE            edit it ($EDITOR, else nvim); saved, it is uploaded
    cold FILES             set their access tier to Cold

`-c NAME` uses the config aux_data/azfuse/NAME.yaml, as azfuse does. Errors are one
line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import BlobmountError
from . import File
from .serving import CONFIG_FILE

TASKS = ("d", "download", "ls", "url", "cat", "head", "tail", "rm", "rmtree", "update",
         "cold")
#: azfuse's other tasks, which this command does not take.
NOT_HERE = ("cp", "nvim", "display", "open", "u", "upload", "meta", "clear_meta", "break")
#: azfuse's `url` gives a read SAS for this long.
URL_LIFETIME = dt.timedelta(days=30)


def _download(names: list[str]) -> int:
    failed = File._prepare(names)
    for failure in failed:
        path, error = failure["path"], failure["error"]
        said = error if error.startswith(f"{path}: ") else f"{path}: {error}"
        print(f"blobmount.azfuse: {said}", file=sys.stderr)
    return 1 if failed else 0


def _ls(names: list[str]) -> int:
    if len(names) != 1:
        raise BlobmountError("ls takes one folder")
    folder = names[0]
    rows = File.list(folder, return_info=True)
    for row in rows:
        row["name"] = row["name"].replace(folder, "", 1)
    _print_table(rows)
    return 0


def _print_table(rows: list[dict[str, Any]]) -> None:
    keys = sorted({key for row in rows for key in row})
    if not rows:
        return
    widths = [max(len(key), *(len(str(row.get(key, ""))) for row in rows)) for key in keys]
    print(" ".join(key.ljust(width) for key, width in zip(keys, widths, strict=True)).rstrip())
    for row in rows:
        print(" ".join(str(row.get(key, "")).ljust(width)
                       for key, width in zip(keys, widths, strict=True)).rstrip())


def _url(names: list[str]) -> int:
    if len(names) != 1:
        raise BlobmountError("url takes one file")
    where = File._where(names[0])
    if where is None:
        raise BlobmountError(f"{names[0]}: not in any entry of the config")
    remote, blob = where[0].blob(where[1])
    print(f"{remote.blob_url(blob)}?{remote.sas_for_azcopy(blob=blob, lifetime=URL_LIFETIME)}")
    return 0


def _show(command: str) -> Callable[[list[str]], int]:
    def run(names: list[str]) -> int:
        if not names:
            raise BlobmountError(f"{command} takes files")
        File.clear_cache(names)
        File.prepare(names)
        return subprocess.run([command, *map(File.get_cache_file, names)],
                              check=False).returncode
    return run


def _rm(names: list[str]) -> int:
    failed = 0
    for name in names:
        try:
            File.rm(name)
        except OSError as exc:
            print(f"blobmount.azfuse: rm {name}: {exc.strerror}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _rmtree(names: list[str]) -> int:
    failed = 0
    for name in names:
        files = File.list(name, recursive=True)
        with ThreadPoolExecutor(8) as pool:
            errors = [error for error in pool.map(_remove, files) if error]
        for error in errors:
            print(f"blobmount.azfuse: rmtree: {error}", file=sys.stderr)
        failed += len(errors)
        path = File.get_cache_file(name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)  # the folders left, markers and all
    return 1 if failed else 0


def _remove(name: str) -> str | None:
    try:
        File.rm(name)
    except OSError as exc:
        return f"{name}: {exc.strerror}"
    return None


def _update(names: list[str]) -> int:
    if len(names) != 1:
        raise BlobmountError("update takes one file")
    path = File.get_cache_file(names[0])
    if File.isfile(names[0]):
        File.prepare(names)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    editor = os.environ.get("EDITOR") or "nvim"
    # The editor saves through the mount: closing the file uploads it.
    return subprocess.run([*editor.split(), path], check=False).returncode


def _cold(names: list[str]) -> int:
    for name in names:
        File.set_access_tier(name, "cold")
    return 0


HANDLERS: dict[str, Callable[[list[str]], int]] = {
    "d": _download, "download": _download, "ls": _ls, "url": _url, "cat": _show("cat"),
    "head": _show("head"), "tail": _show("tail"), "rm": _rm, "rmtree": _rmtree,
    "update": _update, "cold": _cold,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m blobmount.azfuse",
                                     description="azfuse's command line, through blobmount")
    parser.add_argument("-c", dest="name", help="use aux_data/azfuse/NAME.yaml")
    parser.add_argument("task_type", choices=TASKS + NOT_HERE)
    parser.add_argument("remainders", nargs=argparse.REMAINDER)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.task_type in NOT_HERE:
        print(f"blobmount.azfuse: {args.task_type}: not supported here (it takes"
              f" {', '.join(TASKS)})", file=sys.stderr)
        return 2
    if args.name:
        os.environ[CONFIG_FILE] = os.path.join("aux_data", "azfuse", args.name + ".yaml")
    try:
        return HANDLERS[args.task_type](args.remainders)
    except BlobmountError as exc:
        print(f"blobmount.azfuse: {exc}", file=sys.stderr)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"blobmount.azfuse: {where}{exc.strerror or exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
