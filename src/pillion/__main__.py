import sys

from pillion.cli import main

sys.exit(main())
