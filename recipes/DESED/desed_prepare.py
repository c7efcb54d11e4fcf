#!/usr/bin/env python3
"""Prepare DESED (or generated mini-DESED) for the SED recipes.

A thin command line over
:func:`speechbrain_sed_condmix.dataio.desed.prepare_desed`::

    python recipes/DESED/desed_prepare.py --data_folder /path/to/DESED \
        --save_folder results/desed_prep

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import sys

from speechbrain_sed_condmix.cli import prepare_desed_main

if __name__ == "__main__":
    sys.exit(prepare_desed_main())
