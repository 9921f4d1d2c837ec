"""`python -m edge_runner ...` is the same as the `edge-runner` command."""

from edge_runner.cli import main

raise SystemExit(main())
