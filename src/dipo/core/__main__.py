"""``python -m dipo.core --markdown``: print the options table of ``docs/algorithm.md`` from the declarations in
:mod:`dipo.core.config` (``tests/test_option_parity.py`` checks that the committed table equals it)."""

from __future__ import annotations

import argparse

from dipo.core.config import CORE_OPTIONS
from dipo.core.options import markdown_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dipo.core", description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print the options table of docs/algorithm.md")
    args = parser.parse_args(argv)
    if not args.markdown:
        parser.error("nothing to do; pass --markdown")
    print(markdown_table(CORE_OPTIONS), end="")


if __name__ == "__main__":
    main()
