import sys

from simacan_token_operator.app.cli import main

sys.exit(main())
