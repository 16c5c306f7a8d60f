"""`python -m qwenscribe` runs the command line."""

from qwenscribe.cli import main

main()
