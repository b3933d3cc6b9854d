"""The load test: ``zonechat loadtest SCENARIO`` runs Locust against a running cluster.

``command`` is the click command (attached by ``cluster.cli``); it runs Locust on
``locustfile.py`` of this package, found beside the package's own files, so an installed
copy works as well as a source checkout. ``locustfile`` holds the Locust users and
``conductor`` the master side of a run (plan, user steps, results.json); the users talk
through ``locust_client`` (``client.Client`` firing Locust's events) and check seqs with
``seqcheck``; ``report`` turns a run's results into its summary, in the words of
``verdict`` (the verdict line, advice, labelled figures) and ``notes``, with the time
series of ``series``, written as summary.md (``markdown``) and summary.html
(``htmlreport``, which inlines ``static/``: uPlot, MIT, and summary.js). Locust is an optional
dependency (``pip install 'zonechat[load]'``): only ``locustfile`` and ``conductor``
import it.
"""
