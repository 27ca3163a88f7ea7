"""Reading YAML: a file into data, a mapping into typed values, every mistake a one-line
`ConfigError` that names the file and the key path; and the parsers of single values
(sizes, ids, umasks, addresses, mount options) that the command line shares."""

from __future__ import annotations

import difflib
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import yaml

from blobmount.errors import ConfigError
from blobmount.log import register_secret

from .locate import absolute
from .model import GiB, KiB, MiB, TiB
from .templates import TEMPLATED_KEYS, fill

# Named for the package: the log lines said `blobmount.config` before it was split.
log = logging.getLogger("blobmount.config")

# (uid_t)-1 means "leave unchanged" to the kernel, so it cannot be an owner.
_MAX_ID = 2**32 - 2
_DIGITS = re.compile(r"\s*\d+\s*")
_OCTAL = re.compile(r"\s*(?:0o)?([0-7]+)\s*", re.IGNORECASE)

_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": KiB, "kib": KiB, "m": MiB, "mib": MiB, "g": GiB, "gib": GiB, "t": TiB, "tib": TiB,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
}  # fmt: skip


def parse_size(value: object) -> int:
    """A byte count from an int or a string such as "32MiB", "1.5GiB", "100MB" or "4096".

    KiB/MiB/GiB/TiB and bare K/M/G/T are powers of 1024; KB/MB/GB/TB powers of 1000.
    Raises ValueError with a message fit for the user.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected a size such as 32MiB or a byte count, got {kind(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must be >= 0, got {value}")
        return value
    match = _SIZE.fullmatch(value)
    unit = match and _SIZE_UNITS.get(match.group(2).lower())
    if not match or unit is None:
        raise ValueError(
            f"bad size {value!r}: give bytes or a number with a unit: "
            "KiB, MiB, GiB, TiB (1024-based) or KB, MB, GB, TB (1000-based)"
        )
    return int(float(match.group(1)) * unit)


def parse_address(value: object) -> tuple[str, int]:
    """HOST:PORT ("127.0.0.1:9464", "[::1]:9464", "0.0.0.0:9464"; port 0: any free
    one) as (host, port); ValueError fit for the user."""
    if not isinstance(value, str):
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9464, got {kind(value)}")
    host, colon, port = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not _DIGITS.fullmatch(port) or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9464, got {value!r}")
    return host, int(port)


def parse_id(value: object) -> int:
    """A uid or gid from an int or a string of digits; ValueError fit for the user."""
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_ID:
        plain = isinstance(value, (int, str)) and not isinstance(value, bool)
        shown = repr(value) if plain else kind(value)
        raise ValueError(f"expected a user or group id (0 to {_MAX_ID}), got {shown}")
    return value


def parse_umask(value: object) -> int:
    """A umask from an int or an octal string ("022", "0027", "0o077").

    A string is always octal, as mount(8) and libfuse read `umask=`; an int is taken as
    YAML read it (YAML reads `022` as octal, but `22` as twenty-two).
    """
    if isinstance(value, str):
        match = _OCTAL.fullmatch(value)
        if not match:
            raise ValueError(f"expected octal digits such as 022 or 0027, got {value!r}")
        value = int(match.group(1), 8)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected octal digits such as 022 or 0027, got {kind(value)}")
    if not 0 <= value <= 0o777:
        raise ValueError(f"must be from 0 to 0777 (octal), got {value:#o}")
    return value


_OPTION_SETTINGS: dict[str, Callable[[str], int]] = {
    "uid": parse_id, "gid": parse_id, "umask": parse_umask,
}


def setting_option(option: str) -> tuple[str, int] | None:
    """(setting, value) for a mount option that sets one (`uid=N`, `gid=N`,
    `umask=OCTAL`); None for any other option; ValueError for a bad value."""
    name, has_value, value = option.partition("=")
    parse = _OPTION_SETTINGS.get(name)
    if parse is None:
        return None
    if not has_value:
        raise ValueError(f"needs a value, such as {name}={'027' if name == 'umask' else 1000}")
    return name, parse(value)


def read_yaml(path: Path, source: str) -> object:
    """Parse one YAML file, turning every way it can fail into a ConfigError.

    A YAML error's full text quotes the offending line, which may hold a key, so only
    the problem and the position go into the message.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "no such file") from None
    except IsADirectoryError:
        raise ConfigError(source, "", "is a folder, not a file") from None
    except PermissionError:
        raise ConfigError(source, "", "cannot read: permission denied") from None
    except UnicodeDecodeError:
        raise ConfigError(source, "", "cannot read: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(source, "", _yaml_problem(exc)) from None
    except yaml.YAMLError:
        raise ConfigError(source, "", "YAML syntax error") from None
    if data is None:
        raise ConfigError(source, "", "empty file")
    return data


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"YAML syntax error{where}: {exc.problem or exc.context or 'invalid YAML'}"


_T = TypeVar("_T")
_V = TypeVar("_V")


class Section:
    """A YAML mapping being read, that knows its file and key path so errors can say where.

    `strict` sections reject unknown keys (a typo must not silently mean "default");
    azfuse's files are read leniently, since azfuse itself ignores extra keys.
    """

    def __init__(
        self,
        source: str,
        path: str,
        data: object,
        known: Iterable[str],
        *,
        strict: bool = True,
        variables: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(data, dict):
            raise ConfigError(source, path, f"expected a mapping, got {kind(data)}")
        self.source = source
        self.path = path
        self.data: dict[object, object] = data
        # Placeholders are filled in the keys that take them; None: this section has none.
        self.variables = variables
        known = tuple(known)
        for key in data:
            if key in known:
                continue
            if strict:
                raise self.error(str(key), f"unknown key{suggest(str(key), known, 'known keys')}")
            log.warning("%s: %s: unknown key, ignored", source, self.where(str(key)))

    def where(self, key: str) -> str:
        return join_key(self.path, key)

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, self.where(key), problem)

    def has(self, key: str) -> bool:
        """Whether `key` is given; null counts as not given."""
        return self.data.get(key) is not None

    def string(self, key: str) -> str | None:
        """The string at `key`, or None when absent.

        Numbers are not turned into strings: YAML reads `remote: 010` as 8.
        """
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise self.error(key, f"expected a string, got {kind(value)}")
        variables = self.variables
        if value is not None and variables is not None and key in TEMPLATED_KEYS:
            value = self.checked(key, lambda text: fill(text, variables), value)
        return value

    def required(self, key: str, missing: str = "missing") -> str:
        """The string at `key`; `missing` is the problem reported when it is absent."""
        value = self.string(key)
        if value is None:
            raise self.error(key, missing)
        return value

    def secret(self, key: str) -> str | None:
        """Like `string`, but registers the value for redaction before looking at it."""
        value = self.data.get(key)
        if isinstance(value, str):
            register_secret(value)
            if not value.strip():
                raise self.error(key, "empty")
        return self.string(key)

    def checked(self, key: str, check: Callable[[_V], _T], value: _V) -> _T:
        """`check(value)`, with its ValueError reported at `key`."""
        try:
            return check(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {kind(value)}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.string(key)
        if value is None:
            return default
        if value not in choices:
            listed = " or ".join(choices)
            raise self.error(key, f"must be {listed}, got {value!r}")
        return value

    def number(self, key: str, default: float, *, minimum: float, inclusive: bool) -> float:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number, got {kind(value)}")
        if not math.isfinite(value):
            raise self.error(key, "must be a finite number")
        if value < minimum or (value == minimum and not inclusive):
            raise self.error(key, f"must be {'>=' if inclusive else '>'} {minimum:g}, got {value}")
        return float(value)

    def integer(self, key: str, default: int, *, minimum: int) -> int:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {kind(value)}")
        if value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        return value

    def folder(self, key: str, *, relative_to: Path | None = None) -> Path | None:
        """An absolute folder path at `key` (with ~ expanded), or None when absent.

        A relative path is an error unless `relative_to` says what it is relative to.
        """
        value = self.string(key)
        if value is None:
            return None
        if not value.strip():
            raise self.error(key, "empty")
        expanded = Path(value).expanduser()
        if not expanded.is_absolute():
            if relative_to is None:
                raise self.error(key, f"must be an absolute path, got {value!r}")
            expanded = relative_to / expanded
        return absolute(expanded)


def join_key(path: str, key: str | int) -> str:
    """The key path of `key` inside `path`: `mounts[1]`, `mounts[1].local`, `listing_ttl`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


#: How each YAML type reads to a user, in the order they are tried (a bool is an int too).
_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
    (list, "a list"), (dict, "a mapping"))


def kind(value: object) -> str:
    """How a YAML value reads to a user, for "expected X, got Y"."""
    if value is None:
        return "null"
    for yaml_type, name in _KINDS:
        if isinstance(value, yaml_type):
            return name
    return f"a {type(value).__name__}"


def suggest(word: str, choices: Iterable[str], listing: str) -> str:
    """A hint for a likely typo (" (did you mean 'x'?)"), else the valid choices."""
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if not choices:
        return " (none defined)"
    return f" ({listing}: {', '.join(choices)})"
