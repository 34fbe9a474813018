"""``python -m lazyrich``: the ``lazyrich`` command line (see :mod:`lazyrich.cli`)."""

from lazyrich.cli import main

raise SystemExit(main())
