"""``python -m torchloader`` is the ``torchloader`` command."""

from torchloader.tools.cli import main

raise SystemExit(main())
