import sys

from tekapbench.cli import main

sys.exit(main())
