"""``python -m qinspect`` runs the command line (and the GUI with no sub-command)."""

from qinspect.cli import main

raise SystemExit(main())
