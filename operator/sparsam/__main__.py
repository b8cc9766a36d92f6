import sys

from sparsam.cli import main

sys.exit(main())
