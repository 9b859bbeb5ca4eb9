import sys

from presales_ws.cli import main

sys.exit(main())
