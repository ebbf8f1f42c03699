"""What each command does, start to end: ``report``, ``trace``, ``compare``, ``profile``.

The commands read a validated :class:`~ditmeter.config.RunConfig`, ask its model
family for the analysis and the reference modules, run the tracer and the
comparison, and hand the results to ``ditmeter.reports`` to publish a run
folder. The CLI only parses arguments, calls these, and prints.
"""
