"""Files a user hands to a command, read so that every way they can be wrong is one clear error.

A prompt file, a config or a model folder may be missing, a folder, unreadable, binary, truncated
or of the wrong shape. Python, diffusers and transformers report each of these as a different
exception deep inside their loaders (``UnicodeDecodeError``, ``OSError``, ``SafetensorError``,
``AttributeError`` on a YAML list); reading through these helpers turns each into an
:class:`EdgefusionError` that names the file and the fix. :func:`check_model_folder` reads a
model folder's JSON files and safetensors headers (no tensor data, milliseconds) before any
loader touches it, so a truncated download fails naming its file, not in the middle of a load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from edgefusion.errors import EdgefusionError

#: The files read as images wherever a folder of images is an input (datasets, WebDataset shards,
#: FID reference folders), by lower-case suffix.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def first_line(err: Exception) -> str:
    """The first line of an exception's message (library messages can run to many lines)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_text_file(path: str | Path, what: str) -> str:
    """The UTF-8 text of ``path``; a missing, unreadable or binary file (bytes that are not UTF-8,
    or NUL bytes, which no text file holds) is an error naming it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EdgefusionError(f"{what} {path} not found (or not a file): check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise EdgefusionError(f"cannot read {what} {path} ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise EdgefusionError(
            f"{what} {path} is not UTF-8 text (byte {err.start} is {err.object[err.start]:#04x}): "
            "is it a binary file?"
        ) from None
    if "\x00" in text:
        raise EdgefusionError(f"{what} {path} holds NUL bytes, which no text file does: is it a binary file?")
    return text


def read_json_file(path: str | Path, what: str = "JSON file") -> dict[str, Any]:
    """The JSON object in ``path``; bad syntax, a binary file or a non-object is an error."""
    try:
        value = json.loads(read_text_file(path, what))
    except json.JSONDecodeError as err:
        raise EdgefusionError(f"{what} {path} is not valid JSON ({err}): fix or replace the file") from None
    if not isinstance(value, dict):
        raise EdgefusionError(f"{what} {path} must hold a JSON object, not {type(value).__name__}")
    return value


def read_config_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The settings mapping of a YAML or JSON config file (empty for an empty file)."""
    import yaml

    try:
        value = yaml.safe_load(read_text_file(path, what))
    except yaml.YAMLError as err:
        raise EdgefusionError(f"{what} {path} is not valid YAML or JSON ({first_line(err)})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EdgefusionError(
            f"{what} {path} must hold a mapping of settings (key: value), not a {type(value).__name__}"
        )
    return value


def open_safetensors(path: Path) -> Any:
    """A safetensors handle; its header is checked on opening (a truncated file fails here)."""
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as err:
        raise EdgefusionError(
            f"{path} is not a readable safetensors file ({first_line(err)}): it is truncated or corrupt; "
            "download or export it again"
        ) from None


def check_safetensors(path: Path) -> None:
    """Refuse a truncated or corrupt safetensors file (its header is read and checked)."""
    with open_safetensors(path):
        pass


def check_model_folder(folder: Path) -> None:
    """Read every JSON file and safetensors header of a model folder and its component folders,
    so that a corrupt one is an error naming it before a library loader reports it as a
    traceback."""
    for file in sorted([*folder.glob("*.json"), *folder.glob("*/*.json")]):
        read_json_file(file, "model file")
    for file in sorted([*folder.glob("*.safetensors"), *folder.glob("*/*.safetensors")]):
        check_safetensors(file)
