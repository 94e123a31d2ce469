import sys

from nqec.cli import main

sys.exit(main())
