"""`python -m evalsvc.cli`."""

from evalsvc.cli import main

main()
