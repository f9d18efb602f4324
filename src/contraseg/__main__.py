import sys

from contraseg.cli import main

sys.exit(main())
