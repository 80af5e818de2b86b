"""``python -m datascale.launch ...``: the Hydra job's entry point, kept short to type (the code is in
:mod:`datascale.orchestration.launch`; the console script ``datascale`` is the same)."""

from datascale.orchestration.launch import main

if __name__ == "__main__":
    main()
