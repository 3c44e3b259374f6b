"""`python -m aiflywheel.cli` runs the flywheel command."""

from aiflywheel.cli import main

raise SystemExit(main())
