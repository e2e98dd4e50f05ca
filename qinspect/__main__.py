"""``python -m qinspect`` runs the command line (and the GUI with no sub-command); also the frozen app's entry."""

import multiprocessing

if __name__ == "__main__":
    # In the frozen app, sys.executable is qinspect itself: the GUI's helper processes and
    # multiprocessing's resource tracker start it again with their own arguments, which freeze_support
    # recognises and serves instead of handing them to the command line. A no-op everywhere else.
    multiprocessing.freeze_support()

    from qinspect.cli import main

    raise SystemExit(main())
