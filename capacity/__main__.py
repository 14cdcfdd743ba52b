"""``python -m capacity`` is ``capplan``."""

from capacity.cli import main

main()
