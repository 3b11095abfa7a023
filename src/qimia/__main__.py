import sys

from qimia.cli import main

sys.exit(main())
