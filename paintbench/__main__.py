"""`python -m paintbench` (also what `torchrun -m paintbench` runs)."""

import sys

from paintbench.cli import main

sys.exit(main())
