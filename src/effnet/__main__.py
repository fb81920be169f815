"""`python -m effnet ...` (and so `torchrun -m effnet ...`) runs the CLI."""
import sys

from effnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
