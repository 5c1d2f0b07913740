"""What each change of issue 11's recipe bought: one run per change taken away from it.

- ``plan``: the runs (the recipe, and one run per change removed) as training configurations;
- ``job``: one run as a child process (train or resume, then score on the zoom-out set);
- ``campaign``: the runs on the CPU across sittings, resumable, a few at a time;
- ``report``: the table and the curves for ``docs/accuracy.md``.

A GPU lease (``training.gpu_lease``) trains the same runs with epochs fitted to its time.
"""
