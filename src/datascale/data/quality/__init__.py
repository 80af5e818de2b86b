"""Pool transforms for the quality axis (groups ``degrade``, ``dedup``, ``filter``, ``select``).

Each leaf implements :class:`datascale.data.transforms.PoolTransform`:

* :mod:`.degrade`: controlled corruption of a fraction of documents (typos, word noise, shuffled spans,
  duplicates, boilerplate), every corrupted document marked, so that later steps' recall can be measured.
* :mod:`.dedup`: exact (normalised text) and MinHash-LSH near-duplicate removal.
* :mod:`.heuristic`: datatrove's Gopher / C4 / FineWeb heuristic filters; a threshold on a quality value.
* :mod:`.classifier`: a DCLM-style quality classifier (hashed n-grams + logistic regression), top-q selection.
* :mod:`.evaluation`: precision and recall of a step's removals against the planted corruption.

Heavy libraries (datatrove, spacy, scikit-learn, datasketch) are imported when a transform runs, not when it
is configured, so that validating a sweep stays fast.
"""
