"""`python -m mycelium` is the `mycelium` command."""

from mycelium.cli.main import main

main()
