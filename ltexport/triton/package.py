"""`ltexport package OUT --triton REPO`: write a Triton model repository entry for one build.

Layout (everything for one model lives under REPO/NAME and appears in one rename):

    REPO/README.md                       serve command for the whole repository (if ltexport owns it)
    REPO/NAME/config.pbtxt
    REPO/NAME/README.md, ltexport.json   per-model notes and packaging record (Triton ignores files)
    REPO/NAME/N/model.onnx + external data                    onnxruntime builds
    REPO/NAME/N/model.plan + libltexport_trt_plugin.so        TensorRT and TensorRT-RTX builds

The plugin sits in the version directory, not in REPO/plugins/: Triton treats every directory of
the repository as a model and would fail to load a `plugins` "model".

Re-packaging the identical build to the same REPO/NAME/N is allowed and changes nothing; any other
content already at REPO/NAME is refused (remove it, or pick another --name).
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ltexport.errors import LtexportError
from ltexport.staging import dir_mode
from ltexport.triton.build_io import BuildIO, graph_tensors, load_model_proto, read_build, SEQUENCE_START
from ltexport.triton.config import ServeOptions, model_config_text
from ltexport.export.sequence_start import add_sequence_start
from ltexport.export.contract import ENGINE_FILE, PLUGIN_LIBRARY, build_plugin_path
from ltexport.triton.readme import REPO_README_MARKER, model_readme, repo_readme

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
MANIFEST = "ltexport.json"


@dataclass(frozen=True)
class TritonPackage:
    """Result of package_triton: where the model is and whether this call wrote it."""

    path: Path  # REPO/NAME
    config: Path  # REPO/NAME/config.pbtxt
    changed: bool  # False when REPO/NAME already held exactly this package
    notes: tuple = ()


def check_model_name(name: str) -> str:
    """A Triton model (directory) name: letters, digits, '_', '.', '-'; no separators, no leading dot."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise LtexportError(
            f"invalid model name {name!r}; use 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        )
    return name


def _check_version(version) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise LtexportError(f"invalid model version {version!r}; use a positive integer such as 1")
    return version


def _all_tensors(model):
    def from_graph(graph):
        yield from graph.initializer
        yield from from_nodes(graph.node)

    def from_nodes(nodes):
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    yield from from_graph(attr.g)
                for g in attr.graphs:
                    yield from from_graph(g)

    yield from from_graph(model.graph)
    for fn in model.functions:
        yield from from_nodes(fn.node)


def external_data_files(model, build_dir: Path) -> list[str]:
    """Relative paths of the external data files the model references (checked to lie in build_dir)."""
    from onnx import TensorProto

    locations = set()
    for t in _all_tensors(model):
        if t.data_location == TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            p = PurePosixPath(loc or "")
            if not loc or p.is_absolute() or ".." in p.parts or "\\" in loc:
                raise LtexportError(
                    f"{build_dir}/model.onnx references external data {loc!r} outside its directory; rebuild it"
                )
            if not (build_dir / p).is_file():
                raise LtexportError(f"{build_dir / p} (external data of model.onnx) is missing; rebuild the build")
            locations.add(str(p))
    return sorted(locations)


def _plan_files(io: BuildIO, repo: Path, name: str, version: int, opts: ServeOptions) -> dict:
    """{relative path under REPO/NAME: bytes to write | Path to copy}."""
    out = io.build_dir
    files: dict = {}
    plugin_rel = None
    seq_start_added = False
    if io.is_engine:
        plugin = build_plugin_path(out)
        if io.engine is not None and not io.engine.get("plugin", True):
            plugin = None  # built without the plugin: the lazy layers are plain TensorRT layers
        elif not plugin.is_file():
            raise LtexportError(f"{plugin} is missing; a TensorRT build needs its plugin library, rebuild it")
        if io.seq_start is None and io.has_growing_caches:
            raise LtexportError(
                f"{out}/model.onnx has full-attention layers but no '{SEQUENCE_START}' input, so the engine cannot "
                "reset its growing caches under Triton; rebuild the engine from a graph passed through "
                "ltexport.triton.add_sequence_start"
            )
        files[f"{version}/model.plan"] = out / ENGINE_FILE
        if plugin is not None:
            plugin_rel = f"{version}/{PLUGIN_LIBRARY}"
            files[plugin_rel] = plugin
        seq_start = io.seq_start
    else:
        model = load_model_proto(out / "model.onnx")
        data_files = external_data_files(model, out)
        if io.seq_start is None:
            add_sequence_start(model, [c.input_name for c in io.caches if c.growing])
            seq_start_added = True
        seq_start = graph_tensors(model.graph)[0].get(SEQUENCE_START)
        files[f"{version}/model.onnx"] = model.SerializeToString(deterministic=True)
        for rel in data_files:
            files[f"{version}/{rel}"] = out / rel

    files["config.pbtxt"] = model_config_text(io, name, opts, seq_start).encode()
    files["README.md"] = model_readme(
        io, repo, name, version, opts.gpu, opts.instances, opts.max_sequence_idle_us, seq_start_added,
        repo / name / plugin_rel if plugin_rel else None,
    ).encode()
    manifest = {
        "format": "ltexport-triton-package", "version": 1, "name": name, "model_version": version,
        "backend": io.backend, "build_dir": str(io.build_dir), "plugin": plugin_rel,
    }
    files[MANIFEST] = (json.dumps(manifest, indent=2) + "\n").encode()
    return files


def _tree(root: Path) -> set:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _same_content(target: Path, files: dict) -> bool:
    if _tree(target) != set(files) or any(p.is_symlink() for p in target.rglob("*")):
        return False
    for rel, src in files.items():
        dst = target / rel
        if isinstance(src, bytes):
            if dst.stat().st_size != len(src) or dst.read_bytes() != src:
                return False
        elif not filecmp.cmp(src, dst, shallow=False):
            return False
    return True


def _write(stage: Path, files: dict) -> None:
    for rel, src in files.items():
        dst = stage / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            dst.write_bytes(src)
        else:
            shutil.copyfile(src, dst)


def _update_repo_readme(repo: Path) -> str | None:
    """Rewrite REPO/README.md from all packaging records; leave a README ltexport did not write."""
    readme = repo / "README.md"
    if readme.exists():
        try:
            owned = readme.read_text().startswith(REPO_README_MARKER)
        except (OSError, UnicodeDecodeError):
            owned = False
        if not owned:
            return f"{readme} was not written by ltexport and was left as it is; see the model's own README.md"
    models = []
    for manifest in sorted(repo.glob(f"*/{MANIFEST}")):
        try:
            m = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(m, dict) and m.get("format") == "ltexport-triton-package" and m.get("name") == manifest.parent.name:
            models.append(m)
    tmp = repo / f".README.md.{os.getpid()}.tmp"
    try:
        tmp.write_text(repo_readme(repo, models))
        os.replace(tmp, readme)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        return f"could not write {readme} ({exc.__class__.__name__}); see the model's own README.md"
    return None


def _missing_ancestors(path: Path) -> list[Path]:
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    return missing


def package_triton(
    build_dir,
    repo,
    name: str = "ltexport",
    version: int = 1,
    gpu: bool = False,
    *,
    instances: int = 1,
    max_sequence_idle_us: int = 10_000_000,
) -> TritonPackage:
    """Package the build directory `build_dir` as model `name`, version `version`, in Triton repository `repo`.

    gpu: KIND_GPU instances for onnxruntime builds (TensorRT builds always use KIND_GPU).
    instances: model instances = sequences served concurrently.
    Returns a TritonPackage; raises LtexportError (leaving nothing behind) on any user error.
    """
    check_model_name(name)
    version = _check_version(version)
    opts = ServeOptions(gpu=bool(gpu), instances=int(instances), max_sequence_idle_us=int(max_sequence_idle_us))
    io = read_build(Path(build_dir).resolve())
    repo = Path(repo).resolve()
    if repo.exists() and not repo.is_dir():
        raise LtexportError(f"{repo} exists and is not a directory; give --triton a model repository directory")
    target = repo / name
    files = _plan_files(io, repo, name, version, opts)

    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise LtexportError(f"{target} exists and is not a model directory; remove it or choose another --name")
    if target.is_dir() and any(target.iterdir()):
        if not _same_content(target, files):
            raise LtexportError(
                f"{target} already holds a different model; remove it or choose another --name"
            )
        note = _update_repo_readme(repo)
        return TritonPackage(target, target / "config.pbtxt", changed=False, notes=(note,) if note else ())

    created = _missing_ancestors(repo)
    stage = None
    try:
        repo.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{name}.staging-", dir=repo))
        os.chmod(stage, dir_mode())  # mkdtemp makes 0700; Triton may run as another user
        _write(stage, files)
        try:
            os.rename(stage, target)  # replaces only an empty directory
        except OSError:
            raise LtexportError(f"{target} appeared while packaging; remove it or choose another --name") from None
        stage = None
    except BaseException:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        for d in created:  # innermost first
            try:
                d.rmdir()
            except OSError:
                break
        raise
    note = _update_repo_readme(repo)
    return TritonPackage(target, target / "config.pbtxt", changed=True, notes=(note,) if note else ())
