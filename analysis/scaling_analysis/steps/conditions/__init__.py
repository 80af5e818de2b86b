"""The condition step and its parts: one sub-wing per study axis besides size and seed.

``labels`` finds the conditions (their labels and reference), ``effective`` fits the effective-data law,
``decision`` ranks conditions across sizes, ``snr`` weighs each pair's difference against the seed noise,
``transfer`` builds the domain matrix, ``mixing`` fits the data mixing law, ``pool_quality`` reads what the
pool transforms removed; ``plots`` and ``sections`` draw and render them; ``step`` runs them all as one
study step (``STEP``).
"""
