"""``manifest.json`` of an engine folder: what was exported, and the checks the runtime makes before using it.

The exporter writes it (``clipsam.export.engines``); the runtime reads it here and refuses, with an error that says
what differs and how to fix it, a folder whose manifest is missing or malformed, whose format version it does not
know, whose files are missing or do not match their recorded size and SHA-256, or whose method, preset, precision
or models differ from what it is asked to run (``check_request``). Host-side settings (thresholds, image size,
sliding windows, PAMR, templates) may be overridden freely; those baked into the graphs may not
(``GRAPH_FIELDS``, and for RF-CLIP and CorrCLIP also their method's graph fields: ``graph_fields``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import AttentionConfig, DenseConfig
from ..errors import ConfigError, EngineError, EngineFileError, ManifestMismatchError, first_line
from ..hashing import file_sha256
from ..method_config import CORRCLIP_GRAPH_FIELDS, RFCLIP_GRAPH_FIELDS
from ..paths import check_usable, is_url, shown
from .io_names import FORMAT_VERSION, MANIFEST_FILE

# DenseConfig fields baked into the dense graphs (the attention group): they cannot be overridden at run time.
GRAPH_FIELDS = tuple(f.name for f in dataclasses.fields(AttentionConfig))


def graph_fields(base: str | None) -> tuple[str, ...]:
    """The DenseConfig fields (flat names) baked into the dense graphs of a method with attention base ``base``:
    the attention group, RF-CLIP's denoising and last-block settings for ``base == "rfclip"``, CorrCLIP's spatial
    blocks and branch weights for ``base == "corrclip"``."""
    return GRAPH_FIELDS + (_METHOD_FIELDS.get(base, ()) if isinstance(base, str) else ())  # an edited base: no extras


_METHOD_FIELDS = {"rfclip": RFCLIP_GRAPH_FIELDS, "corrclip": CORRCLIP_GRAPH_FIELDS}


_REQUIRED = (
    "format",
    "clipsam_version",
    "precision",
    "opset",
    "method",
    "preset",
    "dense_config",
    "clip",
    "sam2",
    "limits",
    "graphs",
    "files",
    "graph_settings",
)
_CLIP_INTS = ("patch", "width", "heads", "layers", "embed_dim", "native_grid")
_LIMITS = ("max_batch", "max_side", "max_grid", "max_images", "max_prompts", "max_queries")
_FILES = ("tokenizer", "bpe", "host_constants")
_EDITED = "The manifest was edited or is corrupt: restore it, or export the engines again."


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
    if not isinstance(folder, (str, Path)) and not hasattr(folder, "__fspath__"):
        raise EngineError(
            f"the engine folder must be a path (str or os.PathLike), got {type(folder).__name__} {folder!r:.80}"
        )
    if is_url(folder):
        raise EngineError(
            f"engine folder {str(folder)!r} is a URL; clipsam reads local folders only (no network "
            "access). Copy the folder here and pass its path."
        )
    folder = check_usable(Path(folder), "engine folder", EngineError)
    if folder.is_file():
        raise EngineError(
            f"engine folder {shown(folder)} is a file; pass the folder written by 'clipsam export' (the one "
            "holding manifest.json)."
        )
    if not folder.is_dir():
        raise EngineError(
            f"engine folder not found: {shown(folder)}. Create one with: clipsam export --out {shown(folder)}"
        )
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise EngineError(
            f"{shown(folder)} has no {MANIFEST_FILE}: it is not an engine folder written by 'clipsam export' "
            "(or the export did not finish). Export again."
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EngineError(
            f"{shown(path)} is not valid JSON ({e}); the file is corrupt: export the engines again."
        ) from e
    if not isinstance(data, dict):
        raise EngineError(f"{shown(path)} does not hold a JSON object; export the engines again.")
    if data.get("format") != FORMAT_VERSION:
        raise EngineError(
            f"{shown(path)} has engine format {data.get('format')!r}; this clipsam reads format "
            f"{FORMAT_VERSION}. Export the engines again with this clipsam version."
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise EngineError(f"{shown(path)} lacks {', '.join(missing)}; export the engines again.")
    _check_schema(data, path)
    _check_graph_settings(data, path)
    _check_method(data, path)
    try:
        dense = DenseConfig.from_dict(data["dense_config"])
    except Exception as e:
        raise EngineError(f"{shown(path)}: dense_config is invalid ({e}); export the engines again.") from e
    return EngineManifest(folder, data, dense)


# -- the manifest's own fields, validated before anything is loaded --------------------------------------------------
def _check_schema(data: dict, path: Path) -> None:
    """Types and keys of everything the runtime reads (a named EngineError instead of a KeyError later)."""

    def fail(where: str, problem: str):
        raise EngineError(f"{shown(path)}: {where} {problem}. {_EDITED}")

    def obj(value, where):
        if not isinstance(value, dict):
            fail(where, f"must be a JSON object, got {type(value).__name__}")
        return value

    def key(d, k, where):
        if k not in d:
            fail(f"{where}.{k}", "is missing")
        return d[k]

    def pos_int(value, where):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(where, f"must be a positive integer, got {value!r}")

    def string(value, where):
        if not isinstance(value, str):
            fail(where, f"must be a string, got {value!r}")

    def file_entry(entry, where):
        obj(entry, where)
        name = key(entry, "file", where)
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            fail(f"{where}.file", f"must be a plain file name inside the engine folder, got {name!r}")
        size = key(entry, "bytes", where)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            fail(f"{where}.bytes", f"must be a non-negative integer, got {size!r}")
        string(key(entry, "sha256", where), f"{where}.sha256")

    for k in ("method", "precision"):
        string(data[k], k)
    if data["preset"] is not None:
        string(data["preset"], "preset")
    pos_int(data["opset"], "opset")
    obj(data["dense_config"], "dense_config")
    clip = obj(data["clip"], "clip")
    for k in _CLIP_INTS:
        pos_int(key(clip, k, "clip"), f"clip.{k}")
    for k in ("arch", "weights_sha256"):
        string(key(clip, k, "clip"), f"clip.{k}")
    limits = obj(data["limits"], "limits")
    for k in _LIMITS:
        pos_int(key(limits, k, "limits"), f"limits.{k}")
    graphs = obj(data["graphs"], "graphs")
    if not graphs:
        fail("graphs", "lists no graph")
    for name, entry in graphs.items():
        file_entry(entry, f"graphs.{name}")
        for io in ("inputs", "outputs"):
            names = key(entry, io, f"graphs.{name}")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                fail(f"graphs.{name}.{io}", f"must be a list of names, got {names!r}")
    files = obj(data["files"], "files")
    for k in _FILES:
        file_entry(key(files, k, "files"), f"files.{k}")
    for k, entry in files.items():
        file_entry(entry, f"files.{k}")
    if data["sam2"] is not None:
        sam2 = obj(data["sam2"], "sam2")
        string(key(sam2, "model", "sam2"), "sam2.model")
        for k in ("image_size", "embed_size"):
            pos_int(key(sam2, k, "sam2"), f"sam2.{k}")
        for k in ("mean", "std"):
            v = key(sam2, k, "sam2")
            if not isinstance(v, list) or len(v) != 3 or not all(isinstance(x, (int, float)) for x in v):
                fail(f"sam2.{k}", f"must be a list of 3 numbers, got {v!r}")
    seal = obj(data["graph_settings"], "graph_settings")
    obj(key(seal, "fields", "graph_settings"), "graph_settings.fields")
    string(key(seal, "sha256", "graph_settings"), "graph_settings.sha256")


def graph_settings(data: dict) -> dict:
    """The manifest fields the exported graphs were built for (method, precision, opset, the graph-baked DenseConfig
    fields, the CLIP and SAM2 models, limits, every graph's inputs and outputs), sealed by the exporter with the
    graphs' SHA-256 (``_seal``) so that an edited field is found and named."""
    dense = data.get("dense_config") or {}
    dino = {"dino": data["dino"]} if "dino" in data else {}  # CorrCLIP's DINO (absent from other folders)
    return {
        **dino,
        "method": data.get("method"),
        "precision": data.get("precision"),
        "opset": data.get("opset"),
        "dense_config": {k: dense.get(k) for k in graph_fields(dense.get("base"))},
        "clip": data.get("clip"),
        "sam2": data.get("sam2"),
        "limits": data.get("limits"),
        "graphs": {
            n: {"inputs": g.get("inputs"), "outputs": g.get("outputs")} for n, g in (data.get("graphs") or {}).items()
        },
    }


def _seal(fields: dict, data: dict) -> str:
    """SHA-256 of ``fields`` together with the SHA-256 of every graph and file the manifest lists."""
    hashes = sorted(
        f"{kind}:{name}:{entry.get('sha256')}"
        for kind in ("graphs", "files")
        for name, entry in (data.get(kind) or {}).items()
    )
    return hashlib.sha256(json.dumps([fields, hashes], sort_keys=True).encode()).hexdigest()


def seal_manifest(data: dict) -> dict:
    """The ``graph_settings`` record the exporter writes into a manifest (fields and their seal)."""
    fields = json.loads(json.dumps(graph_settings(data)))
    return {"fields": fields, "sha256": _seal(fields, data)}


def _check_graph_settings(data: dict, path: Path) -> None:
    """The manifest's graph-baked fields still equal those sealed at export with the graphs' SHA-256."""
    record = data["graph_settings"]
    live = json.loads(json.dumps(graph_settings(data)))
    if _seal(live, data) == record["sha256"]:
        return
    if _seal(record["fields"], data) != record["sha256"]:
        raise EngineError(
            f"{shown(path)}: its graph_settings record does not match the graphs' SHA-256 it lists, so the "
            f"manifest's fields cannot be trusted. {_EDITED}"
        )
    diffs = _differences(record["fields"], live)
    where, exported, says = diffs[0] if diffs else ("graph_settings", None, None)
    more = f" (and {len(diffs) - 1} more field(s))" if len(diffs) > 1 else ""
    raise ManifestMismatchError(
        f"{shown(path)} says {where} {says!r}, but its graphs were exported for {where} {exported!r}{more}: the fields baked "
        f"into the graphs cannot change after export. {_EDITED}"
    )


def _differences(a, b, where: str = "") -> list[tuple[str, object, object]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += _differences(a.get(k), b.get(k), f"{where}.{k}" if where else k)
        return out
    return [] if a == b else [(where, a, b)]


def _check_method(data: dict, path: Path) -> None:
    """The method names the dense configuration and the graphs the folder holds (a re-sealed edit is still caught)."""
    from ..config import METHODS
    from .io_names import CLIP_TEXT, SAM2_IMAGE_ENCODER, SAM2_PROMPT_DECODER, dense_graphs

    method, dense = data["method"], data["dense_config"]
    if method not in METHODS:
        raise ManifestMismatchError(
            f"{shown(path)}: method {method!r} is not a clipsam method ({', '.join(METHODS)}). {_EDITED}"
        )
    base, residual, res, _ = METHODS[method]
    want = {"base": base, "residual": residual, "rcs": res, "sfr": res, "method": method}
    for k, v in want.items():
        if dense.get(k) != v:
            raise ManifestMismatchError(
                f"{shown(path)}: method {method!r} has dense_config.{k} {v!r}, the manifest says {dense.get(k)!r}. {_EDITED}"
            )
    expected = {g.name: g for g in (CLIP_TEXT, *dense_graphs(base, res, res))}
    if data["sam2"] is not None:
        expected.update({g.name: g for g in (SAM2_IMAGE_ENCODER, SAM2_PROMPT_DECODER)})
    if set(data["graphs"]) != set(expected):
        raise ManifestMismatchError(
            f"{shown(path)}: method {method!r} needs the graphs {sorted(expected)}, the manifest lists "
            f"{sorted(data['graphs'])}. {_EDITED}"
        )
    for name, io in expected.items():
        entry = data["graphs"][name]
        if tuple(entry["inputs"]) != io.inputs or tuple(entry["outputs"]) != io.outputs:
            raise ManifestMismatchError(
                f"{shown(path)}: graph {name} of method {method!r} has inputs {io.inputs} and outputs "
                f"{io.outputs}, the manifest says {tuple(entry['inputs'])} -> "
                f"{tuple(entry['outputs'])}. {_EDITED}"
            )


def load_host_constants(manifest: EngineManifest) -> dict:
    """``host_constants.npz`` as arrays, checked against the manifest's CLIP model."""
    path = manifest.path("host_constants")
    try:
        with np.load(path, allow_pickle=False) as consts:
            out = {k: consts[k] for k in consts.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise EngineFileError(
            f"cannot read {shown(path)} ({first_line(e)}): it is corrupt. Export the engines again."
        ) from e
    clip = manifest.clip
    want = (1 + clip["native_grid"] ** 2, clip["width"])
    need: tuple[str, ...] = ("clip_pos_embed", "sfr_linspace", "sfr_linspace_offsets")
    need += ("dino_pos_embed",) if manifest.method == "corrclip" else ()
    missing = [k for k in need if k not in out]
    if missing or tuple(out["clip_pos_embed"].shape) != want:
        found = getattr(out.get("clip_pos_embed"), "shape", None)
        raise EngineFileError(
            f"{shown(path)} does not hold the host constants of this manifest's CLIP model (missing "
            f"{missing or 'nothing'}; positional embedding {found}, expected {want}). Export the "
            "engines again."
        )
    return out


def load_tokenizer(manifest: EngineManifest):
    """The folder's ``ClipTokenizer``, or ``EngineFileError`` naming a corrupt tokenizer file."""
    from .tokenizer import ClipTokenizer

    files = manifest.data["files"]
    try:
        return ClipTokenizer.from_folder(manifest.folder, files["tokenizer"]["file"], files["bpe"]["file"])
    except (OSError, ValueError, KeyError, TypeError, EOFError, zlib.error) as e:  # zlib: a corrupt .gz
        names = f"{files['tokenizer']['file']} / {files['bpe']['file']}"
        raise EngineFileError(
            f"cannot read the tokenizer files {names} in {manifest.folder} ({first_line(e)}): they "
            "are corrupt. Export the engines again."
        ) from e


def verify_files(manifest: EngineManifest, check_hash: bool = True) -> None:
    """Every file the manifest names exists with its recorded size (and SHA-256 when ``check_hash``).

    Raises:
        EngineFileError: naming the file, what is wrong, and the fix.
    """
    entries = [(name, g) for name, g in manifest.graphs.items()] + list(manifest.data["files"].items())
    for name, entry in entries:
        path = manifest.folder / entry["file"]
        if not path.is_file():
            raise EngineFileError(
                f"engine file missing: {shown(path)} ({name}). The folder is incomplete: export the engines again."
            )
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise EngineFileError(
                f"engine file {shown(path)} is {size} bytes, the manifest says {entry['bytes']}: it is "
                "truncated or was replaced. Export the engines again."
            )
        if check_hash and file_sha256(path) != entry["sha256"]:
            raise EngineFileError(
                f"engine file {shown(path)} does not match its SHA-256 in the manifest: it is corrupt or "
                "was replaced. Export the engines again."
            )


def check_request(
    manifest: EngineManifest,
    *,
    method=None,
    preset=dataclasses.MISSING,
    precision=None,
    clip=None,
    sam2=None,
    overrides: dict | None = None,
) -> DenseConfig:
    """The DenseConfig to run, after checking the request against the manifest.

    Arguments:
        method, precision: expected values (None: accept the folder's); preset: the expected preset, None for a
            folder exported without one (MISSING: accept the folder's).
        clip: expected CLIP architecture name; sam2: expected SAM2 model name.
        overrides: DenseConfig fields to change; fields in ``GRAPH_FIELDS`` must equal the exported ones.

    Raises:
        ManifestMismatchError: what was asked, what the folder holds, and how to get a matching folder.
    """
    fix = f"Export a matching folder: clipsam export --out DIR --method {method or manifest.method}" + (
        f" --preset {preset}" if preset not in (None, dataclasses.MISSING) else ""
    )
    checks = [
        ("method", method, manifest.method),
        ("precision", precision, manifest.precision),
        ("CLIP model", clip, manifest.clip.get("arch")),
    ]
    for what, asked, have in checks + (
        [("preset", preset, manifest.preset)] if preset is not dataclasses.MISSING else []
    ):
        explicit = what == "preset"  # preset=None asks for no preset (open vocabulary), as from_pretrained's does
        if (asked is not None or explicit) and asked != have:
            raise ManifestMismatchError(
                f"the engine folder {manifest.folder} was exported for {what} {have!r}, but "
                f"{what} {asked!r} was asked for. {fix}"
            )
    if sam2 is not None and (manifest.sam2 or {}).get("model") != sam2:
        have = (manifest.sam2 or {}).get("model")
        raise ManifestMismatchError(
            f"the engine folder {manifest.folder} holds SAM2 model {have!r}, but {sam2!r} was "
            f"asked for. Export it with --sam2 {sam2}."
        )
    overrides = dict(overrides or {})
    dense = manifest.dense
    fields = graph_fields(dense.attention.base)
    baked = {k: v for k, v in overrides.items() if k in fields and _norm(v) != _norm(getattr(dense, k))}
    base = dense.attention.base
    groups: dict[str, tuple[str, ...]] = {"attention": GRAPH_FIELDS}
    groups.update({g: f for g, f in _METHOD_FIELDS.items() if g == base})
    for group, names in groups.items():  # a whole group passed: its baked fields must equal the export's
        if group in overrides and any(getattr(overrides[group], k) != getattr(dense, k) for k in names):
            baked[group] = overrides[group]
    if baked:
        have = {k: getattr(dense, k) for k in baked}
        raise ManifestMismatchError(
            f"{', '.join(sorted(baked))} are baked into the exported graphs ({have}); asked "
            f"for {baked}. {fix} and the same options."
        )
    cfg = manifest.dense.replace(**overrides) if overrides else manifest.dense
    if cfg.calibration.mode != "none":
        raise ConfigError(
            f"calibration={cfg.calibration.mode!r} is not available with exported engines: their dense graphs "
            "end in logits and do not include the calibration. Use the PyTorch Segmenter for it."
        )
    return cfg


def _norm(v):
    return tuple(v) if isinstance(v, list) else v
