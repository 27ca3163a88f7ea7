"""`python -m blobmount`: the same as the `blobmount` command."""

from .cli import main

main()
