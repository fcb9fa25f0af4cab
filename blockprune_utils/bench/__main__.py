"""``python -m blockprune_utils.bench``: see :mod:`blockprune_utils.bench.cli`."""
from .cli import main

raise SystemExit(main())
