"""Human review of the data and the models: curation tasks and blind A/B preference tasks.

One database (an SQLite file, or a PostgreSQL server a team shares) holds reviewers, tasks, the
items of each task and every answer. Its schema and the queue logic (hand-outs, answers, undo)
live in :mod:`edgefusion.data.review_db` and :mod:`edgefusion.data.review_queue`, because
``edgefusion data curate`` writes its review queue there too: ``edgefusion data review``
(terminal), ``edgefusion review serve`` (browser) and ``edgefusion data curate --apply`` all read
and write one set of decisions.

This package builds on them: ``tasks`` (opening tasks from datasets and generation folders,
exports), ``stats`` and ``report`` (win rates, rankings, agreement), ``auth`` (accounts, sessions),
``app`` (the web app) and ``cli`` (``edgefusion review ...``). ``auth``, ``app`` and the server
need the ``review`` extra; the rest needs only edgefusion's own dependencies.
"""
