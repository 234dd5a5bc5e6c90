"""``manifest.json`` of an engine folder: what was exported, and the checks the runtime makes before using it.

The exporter writes it (``clipsam.export.engines``); the runtime reads it here and refuses, with an error that says
what differs and how to fix it, a folder whose manifest is missing or malformed, whose format version it does not
know, whose files are missing or do not match their recorded size and SHA-256, or whose method, preset, precision
or models differ from what it is asked to run (``check_request``). Host-side settings (thresholds, image size,
sliding windows, PAMR, templates) may be overridden freely; those baked into the graphs may not
(``GRAPH_FIELDS``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..config import AttentionConfig, DenseConfig
from ..errors import ConfigError, EngineError, EngineFileError, ManifestMismatchError
from ..hashing import file_sha256
from .io_names import FORMAT_VERSION, MANIFEST_FILE

__all__ = ["EngineManifest", "load_manifest", "verify_files", "check_request", "GRAPH_FIELDS"]

# DenseConfig fields baked into the dense graphs (the attention group): they cannot be overridden at run time.
GRAPH_FIELDS = tuple(f.name for f in dataclasses.fields(AttentionConfig))
_REQUIRED = ("format", "clipsam_version", "precision", "opset", "method", "preset", "dense_config", "clip", "sam2",
             "limits", "graphs", "files")


@dataclass(frozen=True)
class EngineManifest:
    """The parsed manifest (see the exporter for every key).

    Attributes:
        folder: the engine folder.
        data: the manifest as a dict (JSON types).
        dense: the DenseConfig the dense graphs were exported for.
    """

    folder: Path
    data: dict
    dense: DenseConfig

    @property
    def precision(self) -> str:
        return self.data["precision"]

    @property
    def method(self) -> str:
        return self.data["method"]

    @property
    def preset(self) -> str | None:
        return self.data["preset"]

    @property
    def clip(self) -> dict:
        return self.data["clip"]

    @property
    def sam2(self) -> dict | None:
        return self.data["sam2"]

    @property
    def limits(self) -> dict:
        return self.data["limits"]

    @property
    def graphs(self) -> dict:
        return self.data["graphs"]

    def path(self, key: str) -> Path:
        """Path of a graph (by graph name) or of a named file ("tokenizer", "bpe", "host_constants")."""
        if key in self.graphs:
            return self.folder / self.graphs[key]["file"]
        return self.folder / self.data["files"][key]["file"]


def load_manifest(folder) -> EngineManifest:
    """Read and sanity-check ``folder/manifest.json``.

    Raises:
        EngineError: no folder, no manifest, invalid JSON, unknown format version or missing keys.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EngineError(f"engine folder not found: {folder}. Create one with: clipsam export --out {folder}")
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise EngineError(f"{folder} has no {MANIFEST_FILE}: it is not an engine folder written by 'clipsam export' "
                          "(or the export did not finish). Export again.")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EngineError(f"{path} is not valid JSON ({e}); the file is corrupt: export the engines again.") from e
    if not isinstance(data, dict):
        raise EngineError(f"{path} does not hold a JSON object; export the engines again.")
    if data.get("format") != FORMAT_VERSION:
        raise EngineError(f"{path} has engine format {data.get('format')!r}; this clipsam reads format "
                          f"{FORMAT_VERSION}. Export the engines again with this clipsam version.")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise EngineError(f"{path} lacks {', '.join(missing)}; export the engines again.")
    try:
        dense = DenseConfig.from_dict(data["dense_config"])
    except Exception as e:
        raise EngineError(f"{path}: dense_config is invalid ({e}); export the engines again.") from e
    return EngineManifest(folder, data, dense)


def verify_files(manifest: EngineManifest, check_hash: bool = True) -> None:
    """Every file the manifest names exists with its recorded size (and SHA-256 when ``check_hash``).

    Raises:
        EngineFileError: naming the file, what is wrong, and the fix.
    """
    entries = [(name, g) for name, g in manifest.graphs.items()] + list(manifest.data["files"].items())
    for name, entry in entries:
        path = manifest.folder / entry["file"]
        if not path.is_file():
            raise EngineFileError(f"engine file missing: {path} ({name}). The folder is incomplete: export the "
                                  "engines again.")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise EngineFileError(f"engine file {path} is {size} bytes, the manifest says {entry['bytes']}: it is "
                                  "truncated or was replaced. Export the engines again.")
        if check_hash and file_sha256(path) != entry["sha256"]:
            raise EngineFileError(f"engine file {path} does not match its SHA-256 in the manifest: it is corrupt or "
                                  "was replaced. Export the engines again.")


def check_request(manifest: EngineManifest, *, method=None, preset=dataclasses.MISSING, precision=None, clip=None,
                  sam2=None, overrides: dict | None = None) -> DenseConfig:
    """The DenseConfig to run, after checking the request against the manifest.

    Arguments:
        method, preset, precision: expected values (None/MISSING: accept the folder's).
        clip: expected CLIP architecture name; sam2: expected SAM2 model name.
        overrides: DenseConfig fields to change; fields in ``GRAPH_FIELDS`` must equal the exported ones.

    Raises:
        ManifestMismatchError: what was asked, what the folder holds, and how to get a matching folder.
    """
    fix = f"Export a matching folder: clipsam export --out DIR --method {method or manifest.method}" + (
        f" --preset {preset}" if preset not in (None, dataclasses.MISSING) else "")
    checks = [("method", method, manifest.method), ("precision", precision, manifest.precision),
              ("CLIP model", clip, manifest.clip.get("arch"))]
    if preset is not dataclasses.MISSING:
        checks.append(("preset", preset, manifest.preset))
    for what, asked, have in checks:
        if asked is not None and asked != have:
            raise ManifestMismatchError(f"the engine folder {manifest.folder} was exported for {what} {have!r}, but "
                                        f"{what} {asked!r} was asked for. {fix}")
    if sam2 is not None and (manifest.sam2 or {}).get("model") != sam2:
        have = (manifest.sam2 or {}).get("model")
        raise ManifestMismatchError(f"the engine folder {manifest.folder} holds SAM2 model {have!r}, but {sam2!r} was "
                                    f"asked for. Export it with --sam2 {sam2}.")
    overrides = dict(overrides or {})
    att = manifest.dense.attention
    baked = {k: v for k, v in overrides.items() if k in GRAPH_FIELDS and _norm(v) != _norm(getattr(att, k))}
    if "attention" in overrides and overrides["attention"] != att:
        baked["attention"] = overrides["attention"]
    if baked:
        have = {k: getattr(att, k, att) for k in baked}
        raise ManifestMismatchError(f"{', '.join(sorted(baked))} are baked into the exported graphs ({have}); asked "
                                    f"for {baked}. {fix} and the same options.")
    cfg = manifest.dense.replace(**overrides) if overrides else manifest.dense
    if cfg.calibration.mode != "none":
        raise ConfigError(f"calibration={cfg.calibration.mode!r} is not available with exported engines: their dense graphs "
                          "end in logits and do not include the calibration. Use the PyTorch Segmenter for it.")
    return cfg


def _norm(v):
    return tuple(v) if isinstance(v, list) else v
