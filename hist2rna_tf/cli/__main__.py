"""`python -m hist2rna_tf.cli`: the same as `hist2rna`."""

import sys

from hist2rna_tf.cli import main

sys.exit(main())
