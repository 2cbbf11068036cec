"""python -m tools.export"""

import sys

from tools.export.pipeline import main

sys.exit(main())
