"""`python -m customer_sync` runs the CLI."""

from customer_sync.cli import main

main()
