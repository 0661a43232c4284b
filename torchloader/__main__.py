"""``python -m torchloader`` is the ``torchloader`` command."""

from .cli import main

raise SystemExit(main())
