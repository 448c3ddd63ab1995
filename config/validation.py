"""The one way a TOML file becomes validated models, and a pydantic error an operator's message.

Both configuration files (the sender's `flux-pmi.toml`, a département's receive file) are
described by pydantic models that forbid unknown keys at every level: a typo must not
silently disable a setting. Pydantic reports where and why; this module turns its first
error into `ConfigError(file, dotted key, what is expected)`, the message operators know
(and whose exit code, USAGE, monitoring knows). It also holds what both files share:
reading the TOML, resolving relative paths, and reading secrets, which never sit in the
TOML (an environment variable, or a file readable by its owner only).
"""

from __future__ import annotations

import os
import stat
import tomllib
import types
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, TypeAdapter, ValidationError, ValidationInfo
from pydantic_core import ErrorDetails, PydanticCustomError

from ..core.errors import ConfigError

T = TypeVar("T")

# What each of pydantic's type errors expects, in the words the hand-written loader used.
_TYPE_NAMES = {
    "int_type": "a whole number",
    "float_type": "a number",
    "string_type": "a string (in quotes)",
    "bool_type": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "bytes_type": "a string (in quotes)",
}


class Strict(BaseModel):
    """A TOML table: exact types (TOML has them: no "8" for 8, no true for 1), unknown keys refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def invalid(expected: str, at: str = "") -> PydanticCustomError:
    """A rule of ours broken: `expected` is the operator's message, `at` a key below the validated value."""
    return PydanticCustomError("flux", "{expected}", {"expected": expected, "at": at})


def context(info: ValidationInfo) -> dict[str, Any]:
    return info.context if isinstance(info.context, dict) else {}


def resolve(base: Path, value: str, *, normalise: bool = False) -> Path:
    p = Path(value).expanduser()
    p = p if p.is_absolute() else base / p
    return Path(os.path.normpath(p)) if normalise else p


def _path(value: Any, info: ValidationInfo) -> Any:
    """A relative path is relative to the file's folder (context `base`); `normalise` as the receive side wants."""
    if not isinstance(value, str):
        return value  # the strict Path check then says what is wrong
    ctx = context(info)
    return resolve(ctx.get("base", Path.cwd()), value, normalise=ctx.get("normalise", False))


# A path in the TOML, resolved against the file's folder.
FilePath = Annotated[Path, BeforeValidator(_path)]


def existing(info: ValidationInfo, path: Path, at: str) -> Path:
    """`path` must be a file, unless the loader was asked not to look (context `check_files`)."""
    if context(info).get("check_files", True) and not path.is_file():
        raise invalid(f"an existing file ({path} not found)", at)
    return path


def https_url(value: str) -> str:
    """A URL the client secret may travel to: https, or plain http only towards this machine."""
    u = urlsplit(value)
    local = u.scheme == "http" and u.hostname in ("127.0.0.1", "::1", "localhost")
    if not u.hostname or not (u.scheme == "https" or local):
        raise invalid("an https:// URL (http:// only towards 127.0.0.1 or localhost)")
    return value.rstrip("/")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            # A byte-order mark (a Windows editor's) is invisible, and TOML refuses it at "line 1, column 1".
            return tomllib.loads(fh.read().removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(path, "(file)", "no such file: check the --config path") from exc
    except IsADirectoryError as exc:
        raise ConfigError(path, "(file)", "a TOML file, not a folder: check the --config path") from exc
    except UnicodeDecodeError as exc:  # e.g. saved as Latin-1: TOML is UTF-8
        raise ConfigError(path, "(syntax)", f"UTF-8 text (byte {exc.start} is not UTF-8)") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "(syntax)", f"valid TOML ({exc})") from exc


def secret_from_env(name: str, at: str) -> bytes:
    if name not in os.environ:
        raise invalid(f"the environment variable {name} to be set", at)
    return os.environ[name].encode()


def secret_from_file(p: Path, at: str) -> bytes:
    try:
        st = p.stat()
    except FileNotFoundError:
        raise invalid(f"an existing file ({p} not found)", at) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise invalid(f"a file readable by its owner only ({p} is not)", at)
    return p.read_bytes().rstrip(b"\r\n")


def passphrase(info: ValidationInfo, prefix: str, env: str | None, file: str | None) -> bytes | None:
    """`<prefix>_passphrase_env` (read first) or `<prefix>_passphrase_file`, read at load time."""
    return secret(info, env, file, f"{prefix}_passphrase")


def secret(info: ValidationInfo, env: str | None, file: str | None, key: str) -> bytes | None:
    """`<key>_env` (read first) or `<key>_file` (owner-only), read at load time; None when neither is set."""
    if env is not None:
        return secret_from_env(env, f"{key}_env")
    if file is not None:
        return secret_from_file(resolve(context(info).get("base", Path.cwd()), file), f"{key}_file")
    return None


def validate(kind: Any, data: Any, file: Path, *, prefix: str = "", **ctx: Any) -> Any:
    """`data` validated as `kind` (a model or an annotated type); the first problem as a ConfigError."""
    adapter: TypeAdapter[Any] = TypeAdapter(kind)
    try:
        return adapter.validate_python(data, context=ctx)
    except ValidationError as exc:
        raise to_config_error(exc, kind, file, prefix) from None


def to_config_error(exc: ValidationError, kind: Any, file: Path, prefix: str = "") -> ConfigError:
    err = exc.errors(include_url=False)[0]
    keys, parent, last = _walk(kind, err["loc"])
    at = str((err.get("ctx") or {}).get("at", ""))
    kind_of_error = err["type"]
    if kind_of_error in ("union_tag_invalid", "union_tag_not_found"):
        at = "type"
    key = ".".join([p for p in (prefix, *keys, at) if p])
    return ConfigError(file, key, _expected(err, parent, last))


def _expected(err: ErrorDetails, parent: Any, last: Any) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "flux":
        return str(ctx["expected"])
    if kind == "missing":
        return "a value (missing)"
    if kind == "extra_forbidden":
        allowed = sorted(_keys(parent))
        return f"a known key (unknown key; expected one of {', '.join(allowed)})"
    if kind == "union_tag_invalid":
        return f"one of {', '.join(sorted(_tags(last)))}"
    if kind == "union_tag_not_found":
        return "a value (missing)"
    if kind in ("greater_than", "greater_than_equal"):
        return f"a value greater than {ctx.get('gt', ctx.get('ge'))}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        return f"one of {ctx.get('expected', '')}"
    if kind in _TYPE_NAMES:
        if isinstance(value, bool) and kind != "bool_type":
            return f"{_TYPE_NAMES[kind]}, not a boolean"
        return _TYPE_NAMES[kind]
    return str(err["msg"])


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _members(tp: Any) -> list[Any]:
    """The alternatives of a union (None left out), or the type itself."""
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return [m for a in get_args(tp) if a is not type(None) for m in _members(a)]
    return [tp]


def _tag(model: Any) -> str | None:
    field = model.model_fields.get("type") if isinstance(model, type) and issubclass(model, BaseModel) else None
    if field is None or get_origin(field.annotation) is not Literal:
        return None
    return str(get_args(field.annotation)[0])


def _tags(tp: Any) -> list[str]:
    return [t for m in _members(tp) if (t := _tag(m)) is not None]


def _keys(tp: Any) -> set[str]:
    models = [m for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
    return set(models[0].model_fields) if models else set()


def _step(tp: Any, item: int | str) -> tuple[Any, bool]:
    """The type one location step below `tp`, and whether the step is a key the operator wrote."""
    members = _members(tp)
    if len(members) > 1 and isinstance(item, str) and item in _tags(tp):
        # A discriminated union puts the tag in the location: not a key of the file.
        return next(m for m in members if _tag(m) == item), False
    tp = members[0]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(str(item))
        return (field.annotation if field else None), True
    args = get_args(tp)
    if get_origin(tp) is dict:
        return args[1], True
    return (args[0] if args else None), True


def _walk(kind: Any, loc: tuple[int | str, ...]) -> tuple[list[str], Any, Any]:
    """The dotted key parts of a pydantic location, the type holding its last step, and the last step's type."""
    keys: list[str] = []
    tp, parent = kind, kind
    for item in loc:
        parent = tp
        tp, shown = _step(tp, item)
        if shown:
            keys.append(str(item))
        else:
            parent = tp
    return keys, parent, tp
