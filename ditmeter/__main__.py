"""``python -m ditmeter`` runs the same CLI as the ``ditmeter`` console script."""

from ditmeter.cli import main

raise SystemExit(main())
