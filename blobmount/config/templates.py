"""Placeholders such as {user} in the keys that take them."""

from __future__ import annotations

import difflib
import os
import pwd
import re
from collections.abc import Mapping

# Placeholders such as {user}: one config serves many users. Only these keys take them.
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
TEMPLATED_KEYS = frozenset({"cache_dir", "local", "remote", "url", "container", "cache"})


def default_variables(user: str | None = None) -> dict[str, str]:
    """The values of the config's placeholders: {user} is `user` if given, else
    $BLOBMOUNT_USER, else the name of the user running blobmount."""
    if not user:
        user = os.environ.get("BLOBMOUNT_USER") or _invoking_user()
    return {"user": user}


def fill(text: str, variables: Mapping[str, str]) -> str:
    """`text` with each {name} replaced by its value; {{ and }} stand for { and }."""

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name is None:
            raise ValueError(f"a lone {token!r}: write {token * 2} for a literal {token}")
        if name not in variables:
            close = difflib.get_close_matches(name, list(variables), n=1, cutoff=0.6)
            hint = f"; did you mean {{{close[0]}}}?" if close else ""
            known = ", ".join(f"{{{key}}}" for key in variables) or "none"
            raise ValueError(f"unknown placeholder {{{name}}}{hint} (known: {known};"
                             " write {{ and }} for literal braces)")
        return _variable_value(name, variables[name])

    return _PLACEHOLDER.sub(one, text)


def _variable_value(name: str, value: str) -> str:
    """A placeholder's value, checked: it becomes part of paths and blob names."""
    where = "--user or $BLOBMOUNT_USER" if name == "user" else f"{{{name}}}"
    if not value:
        raise ValueError(f"{{{name}}} is empty: give {where}")
    if value in (".", "..") or any(c in value for c in "/\0{}") or value != value.strip():
        raise ValueError(f"{{{name}}} is {value!r}, which cannot be one name: give {where}")
    return value


def _invoking_user() -> str:
    """The name of the user running this process (its real uid)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
