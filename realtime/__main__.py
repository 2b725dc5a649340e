"""``python -m realtime`` runs the ``cortex-core`` command line."""

from realtime.cli import main

raise SystemExit(main())
