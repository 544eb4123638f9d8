"""`python -m choreo.cli`: the `choreo` command where no console script is installed (the
service image)."""

from choreo.cli import main

main()
