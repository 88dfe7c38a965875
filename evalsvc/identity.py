"""Content hashes that give suites, variants and requests their identity.

Two things are "the same" exactly when their canonical JSON is byte-identical,
so key order, whitespace and float formatting never change an identity.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no insignificant whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(value: Any, length: int = 16) -> str:
    """Short sha256 of ``value``'s canonical JSON (16 hex digits = 64 bits)."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


_file_hashes: dict[tuple[str, int, int], str] = {}
# files of a model folder that make the model: weights, config, tokenizer, and code a folder may ship
_MODEL_FILES = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "*.pt", "*.pth", "*.gguf",
                "config.json", "generation_config.json", "quantization_config.json", "preprocessor_config.json",
                "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "*.tiktoken",
                "chat_template*", "*.py")


def cache_dir() -> Path:
    """evalsvc's machine-wide cache (EVALSVC_CACHE, default ~/.cache/evalsvc): environments, checkpoints, file hashes."""
    return Path(os.environ.get("EVALSVC_CACHE") or Path.home() / ".cache" / "evalsvc")


def _stored(key: tuple[str, int, int], digest: str | None = None) -> str | None:
    """The hash stored for this file state on this machine (or store ``digest`` for it); None where none is."""
    import sqlite3

    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(cache_dir() / "file-hashes.sqlite", timeout=30) as db:
            db.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT, size INTEGER, mtime_ns INTEGER, sha256 TEXT, "
                       "PRIMARY KEY (path, size, mtime_ns))")
            if digest is not None:
                db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)", (*key, digest))
                return digest
            row = db.execute("SELECT sha256 FROM hashes WHERE path = ? AND size = ? AND mtime_ns = ?", key).fetchone()
            return row[0] if row else None
    except (OSError, sqlite3.Error):  # a read-only home or a locked file: hash again rather than fail
        return None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, read once per state (path, size, modification time): memoised in the process and stored in
    the machine's cache, so a 140 GB checkpoint is not read again by the next command."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _file_hashes:
        worth_storing = st.st_size >= 1 << 20 or p.suffix in (".safetensors", ".gguf", ".bin")  # small files: just read
        known = _stored(key) if worth_storing else None
        if known is None:
            digest = hashlib.sha256()
            with p.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            known = digest.hexdigest()
            if worth_storing:
                _stored(key, known)
        _file_hashes[key] = known
    return _file_hashes[key]


def checkpoint_hash(path: str | os.PathLike[str]) -> str:
    """sha256 of a checkpoint file, or of a model folder's model files (weights, config, tokenizer, code: names and
    contents), so any edit to the model shows and a log or README written beside it does not."""
    p = Path(path)
    if p.is_file():
        return file_sha256(p)
    if not p.is_dir():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    files = sorted({f for pattern in _MODEL_FILES for f in p.rglob(pattern) if f.is_file()})
    return content_hash({str(f.relative_to(p)): file_sha256(f) for f in files}, 64)
