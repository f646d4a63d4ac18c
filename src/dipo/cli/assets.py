"""``dipo assets``: install the offline asset packages (``--no-deps``) and convert SmolLM2-135M-Instruct.

Examples::

    dipo assets                 # install what is missing, then convert the model (once, ~15-30 s)
    dipo assets --check         # report what is installed and cached; exit code 1 if something is missing
    dipo assets --print_command # the pip command, for Makefiles and Dockerfiles
    dipo assets --models qwen2.5-coder-0.5b-instruct,gemma-3-270m   # opt-in larger models (minutes each)
"""

from __future__ import annotations

import argparse
import errno
import logging
import shlex
import subprocess
import sys
import time

from dipo.cli.errors import describe_error
from dipo.cli.options import add_option
from dipo.tasks import assets as task_assets
from dipo.tasks.assets import (
    ASSET_PACKAGES,
    OPTIONAL_MODELS,
    gguf_cache_dir,
    gguf_model_dir,
    install_command,
    installed_version,
    model_install_command,
    model_installed,
    optional_model,
    smollm2_cache_dir,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="only report the state of the assets")
    add_option(parser, "--print_command", action="store_true", help="print the pip install command and exit")
    add_option(parser, "--no_install", action="store_true", help="do not run pip")
    add_option(parser, "--no_convert", action="store_true", help="do not convert the SmolLM2 GGUF")
    parser.add_argument("--force", action="store_true", help="reinstall the packages and reconvert the model")

    add_option(
        parser,
        "--models",
        default="",
        help="comma-separated opt-in models to install and convert as well (chunked GGUFs, minutes each, "
        "several GB of memory): "
        + ", ".join(f"{m.alias} ({m.licence})" for m in OPTIONAL_MODELS.values())
        + "; 'all' for every one",
    )


def _status(models: list[str]) -> tuple[list[str], bool]:
    lines, complete = [], True
    for package in ASSET_PACKAGES:
        wanted = package.spec.split("==")[1]
        have = installed_version(package.spec)
        state = "missing" if have is None else ("ok" if have == wanted else f"version {have} (pinned {wanted})")
        complete &= have is not None
        lines.append(f"  {package.spec:<32} {state:<24} {package.what}")
    cache = smollm2_cache_dir()
    converted = (cache / "dipo_conversion.json").is_file()
    complete &= converted
    lines.append(f"  {'SmolLM2-135M-Instruct (converted)':<32} {'ok' if converted else 'missing':<24} {cache}")
    for alias in models:
        model = optional_model(alias)
        installed, cache = model_installed(model), gguf_cache_dir(model)
        converted = (cache / "dipo_conversion.json").is_file()
        complete &= installed and converted
        state = "ok" if installed and converted else ("not converted" if installed else "missing")
        lines.append(f"  {alias:<32} {state:<24} {len(model.specs)} packages -> {cache}")
    return lines, complete


def _parse_models(text: str) -> list[str]:
    """Aliases from ``--models`` (``all``: every optional model); ``ValueError`` for an unknown one."""
    aliases = [a.strip().lower() for a in text.split(",") if a.strip()]
    if aliases == ["all"]:
        return list(OPTIONAL_MODELS)
    for alias in aliases:
        optional_model(alias)
    return list(dict.fromkeys(aliases))


def _convert_models(models: list[str], force: bool) -> int:
    """Assemble, check and convert each optional model, one at a time (memory); 0 or 1."""
    for alias in models:
        start = time.perf_counter()
        try:
            path = gguf_model_dir(alias, force=force)
        except (OSError, ValueError) as err:
            print(f"dipo assets: cannot convert {alias}: {describe_error(err)}", file=sys.stderr)
            return 1
        print(f"{alias}: {path} ({time.perf_counter() - start:.0f} s)")
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        models = _parse_models(args.models)
    except ValueError as err:
        print(f"dipo assets: --models: {err}", file=sys.stderr)
        return 2
    if args.print_command:
        print(shlex.join(install_command()))
        if models:
            print(shlex.join(model_install_command(models)))
        return 0
    if args.check:
        lines, complete = _status(models)
        print("dipo assets:\n" + "\n".join(lines))
        return 0 if complete else 1
    if not args.no_install:
        specs = [p.spec for p in ASSET_PACKAGES] + [s for a in models for s in optional_model(a).specs]
        stale = [spec for spec in specs if installed_version(spec) != spec.split("==")[1]]
        if stale or args.force:
            cmd = install_command()[:5] + specs + (["--force-reinstall"] if args.force else [])
            print("running:", shlex.join(cmd), flush=True)
            try:
                subprocess.run(cmd, check=True)
            except subprocess.CalledProcessError as err:
                print(f"dipo assets: pip failed with exit code {err.returncode}", file=sys.stderr)
                return err.returncode or 1
            except OSError as err:  # the interpreter cannot be started
                print(f"dipo assets: cannot run pip: {describe_error(err)}", file=sys.stderr)
                return 1
    if not args.no_convert:
        try:
            path = task_assets.smollm2_model_dir(force=args.force)  # looked up when called: tests replace it
        except ModuleNotFoundError as err:
            print(f"dipo assets: {err}", file=sys.stderr)
            return 1
        except OSError as err:  # e.g. a read-only or full cache folder: say which, and how to choose another
            unwritable = isinstance(err, PermissionError) or err.errno in (errno.EROFS, errno.ENOSPC)
            hint = "; set DIPO_CACHE to a writable folder with ~300 MB free" if unwritable else ""
            print(f"dipo assets: cannot convert SmolLM2-135M-Instruct: {describe_error(err)}{hint}", file=sys.stderr)
            return 1
        print(f"SmolLM2-135M-Instruct: {path}")
        if _convert_models(models, args.force):
            return 1
    lines, complete = _status(models)
    print("dipo assets:\n" + "\n".join(lines))
    return 0 if complete or args.no_convert or args.no_install else 1
