"""Reading manifests: YAML (several documents) or JSON, from a file or standard input.

Held to what kubectl accepts: a key given twice in one mapping is an error (which value was
meant?), and so is a document that aliases its way to more nodes than a manifest could need
(a "billion laughs" file expands to 10^9 strings from a few hundred bytes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

from api.cli.client import CliError
from api.strictjson import DuplicateKey, no_duplicate_keys

# A manifest is tens of nodes; aliases may repeat some, not multiply them past this.
MAX_EXPANDED_NODES = 10_000
MERGE_TAG = "tag:yaml.org,2002:merge"


class ManifestLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, refusing duplicate keys and excessive aliasing."""

    def compose_document(self) -> Node | None:
        node = super().compose_document()
        if node is not None:
            expanded = _expanded_size(node, {})
            if expanded > MAX_EXPANDED_NODES:
                raise ConstructorError(
                    None,
                    None,
                    f"the document expands to {expanded} nodes through its aliases (at most {MAX_EXPANDED_NODES}): "
                    "excessive aliasing, refused",
                    node.start_mark,
                )
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue  # '<<' merges: what it brings may be overridden, as YAML means
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the constructor below says so
                continue
            if duplicate:
                raise ConstructorError("while reading a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: Node, memo: dict[int, int]) -> int:
    """Nodes in the document once every alias is replaced by what it names."""
    known = memo.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, SequenceNode):
        size += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, MappingNode):
        size += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[id(node)] = size
    return size


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def load_manifests(path: str) -> list[dict[str, Any]]:
    """Read YAML or JSON (several YAML documents allowed); '-' reads standard input, and a
    folder is every .yaml, .yml and .json file in it, in name order (as kubectl reads one)."""
    if path == "-":
        return _documents(sys.stdin.read(), "<stdin>")
    given = Path(path)
    if given.is_dir():
        files = sorted(p for p in given.iterdir() if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES)
        if not files:
            raise CliError(f"{path}: a folder with no manifest in it (files ending in {', '.join(MANIFEST_SUFFIXES)})")
        return [document for file in files for document in _documents(_read(file), str(file))]
    if not given.exists():
        raise CliError(f"{path}: no such file or folder")
    return _documents(_read(given), path)


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{file}: cannot read it ({exc})") from exc


def _documents(text: str, where: str) -> list[dict[str, Any]]:
    try:
        if where.endswith(".json"):
            documents = [json.loads(text, object_pairs_hook=no_duplicate_keys)]
        else:
            documents = [doc for doc in yaml.load_all(text, Loader=ManifestLoader) if doc is not None]
    except DuplicateKey as exc:
        raise CliError(f"{where}: not valid JSON for a manifest: {exc}") from exc
    except RecursionError as exc:
        raise CliError(f"{where}: nested too deeply to be a manifest") from exc
    except json.JSONDecodeError as exc:
        raise CliError(f"{where}: not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise CliError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}{at}") from exc
    if not documents:
        raise CliError(f"{where}: holds no manifest")
    for index, document in enumerate(documents, start=1):
        if not isinstance(document, dict):
            raise CliError(f"{where}: document {index} is not a mapping (expected an InferenceDeployment)")
        name = (document.get("metadata") or {}).get("name") if isinstance(document.get("metadata"), dict) else None
        if not isinstance(name, str) or not name:
            raise CliError(f"{where}: document {index} has no metadata.name")
    return documents
