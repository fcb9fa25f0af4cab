"""Plain-Python entry point for the studies (no Jupyter needed; the GPU machine
has none).  ``python -m blockprune_utils.sweep --study lenet --profile quick``.
Each study module has a ``main(argv)`` that parses its own options."""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    studies = {"lenet": "blockprune_utils.lenet_study", "cifar": "blockprune_utils.cifar_study"}
    if "--study" not in argv or argv.index("--study") + 1 >= len(argv):
        print(f"usage: python -m blockprune_utils.sweep --study {{{','.join(studies)}}} [study options]", file=sys.stderr)
        return 2
    i = argv.index("--study")
    study = argv[i + 1]
    if study not in studies:
        print(f"unknown study {study!r}; choose one of {sorted(studies)}", file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(studies[study]).main(argv[:i] + argv[i + 2 :])


if __name__ == "__main__":
    raise SystemExit(main())
