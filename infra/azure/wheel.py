"""The serving app as a wheel, built from this installation's ``serving`` package, for the
default image to install from the share (the AI Toolkit's way: a stock PyTorch image whose
command installs the inference code at start).

The wheel holds ``serving/`` alone (it imports nothing else of loraplane) and is reproducible:
the same sources give the same bytes and the same name. Its version carries a digest of the
sources, so a new serving version is a new file name, hence a new container command, hence a
new revision.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

DISTRIBUTION = "loraplane-serving"
# What ``serving`` imports, by distribution name; their version ranges come from loraplane's
# own metadata (pyproject.toml), so there is one place to change them.
SERVING_DEPENDENCIES = (
    "fastapi",
    "uvicorn",
    "pydantic",
    "pydantic-settings",
    "prometheus-client",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "safetensors",
    "gradio",
)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same bytes


@dataclass(frozen=True)
class ServingWheel:
    filename: str
    content: bytes

    @property
    def version(self) -> str:
        return self.filename.split("-")[1]


def serving_sources() -> Path:
    """The ``serving`` package's folder, found without importing it."""
    spec = importlib.util.find_spec("serving")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the serving package is not installed alongside loraplane")
    return Path(next(iter(spec.submodule_search_locations)))


def _requirements() -> list[str]:
    wanted = {name.replace("_", "-") for name in SERVING_DEPENDENCIES}
    found: dict[str, str] = {}
    for requirement in importlib.metadata.requires("loraplane") or []:
        spec = requirement.split(";", 1)[0].strip()
        name = re.split(r"[\s<>=!~\[(]", spec, maxsplit=1)[0].lower().replace("_", "-")
        if name in wanted:
            found[name] = spec
    return [found.get(name, name) for name in sorted(wanted)]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_serving_wheel(source: Path | None = None) -> ServingWheel:
    folder = source or serving_sources()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".py", ".typed") and "__pycache__" not in p.parts)
    if not any(p.name == "__main__.py" for p in files):
        raise RuntimeError(f"{folder} does not look like the serving package (no __main__.py)")
    contents = {f"serving/{p.relative_to(folder).as_posix()}": p.read_bytes() for p in files}
    digest = hashlib.sha256()
    for name, data in contents.items():
        digest.update(name.encode() + b"\0" + data + b"\0")
    base = importlib.metadata.version("loraplane")
    version = f"{base}+g{digest.hexdigest()[:12]}"
    dist_info = f"loraplane_serving-{version}.dist-info"
    metadata = "\n".join(
        [
            "Metadata-Version: 2.1",
            f"Name: {DISTRIBUTION}",
            f"Version: {version}",
            "Summary: loraplane's inference app: transformers + peft behind an OpenAI-compatible API",
            "Requires-Python: >=3.10",
            *(f"Requires-Dist: {r}" for r in _requirements()),
            "",
        ]
    )
    contents[f"{dist_info}/METADATA"] = metadata.encode()
    contents[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: loraplane\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    contents[f"{dist_info}/entry_points.txt"] = b"[console_scripts]\nloraplane-serve = serving.__main__:main\n"
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in contents.items())
    contents[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    filename = f"loraplane_serving-{version}-py3-none-any.whl"
    buffer = _zip(contents)
    return ServingWheel(filename, buffer)


def _zip(contents: dict[str, bytes]) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()
