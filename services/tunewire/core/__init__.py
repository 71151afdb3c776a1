"""The shared core of every tunewire service: one copy of what all five need.

The core is a stack of layers; a layer imports only the layers below it, and the core
imports no service (both enforced by import-linter, see ``pyproject.toml``):

``console`` | ``launchers``
    ``console``: the web console's shell (page rendering with autoescaping, the sign-in
    script, the stylesheet, security headers); each service keeps its own pages.
    ``launchers``: how train and evaluate run workloads: the interface (``launching``),
    the Kubernetes Job and local subprocess launchers (``kubejobs``, ``localjobs``, with
    the local supervisor's entry point), the ``factory`` that picks one, and the two
    workers that follow them (``following``).
``process``
    One service process: the task ``runner``, the HTTP app with probes, metrics and error
    mapping (``http``), the policy table of every route (``authorization``), the token
    and body-size checks before any route reads a body (``guard``), and ``assembly``,
    which puts a service together from its parts and runs it.
``bus``
    Kafka: topic names (``topics``), the CloudEvents envelope (``envelope``), the
    producer (``producing``, and ``producer_process`` for one in a child process), the
    consumer loop (``consuming``) and worker pools with prefetching (``pooling``).
``state``
    The S3 documents every service agrees on: the bucket ``layout`` (every shared key),
    ``objectives``, how an objective's model sees its input at training and serving alike
    (``model_input``), the adapter ``registry``, run ``outcomes`` and the window of seen
    event ids (``idempotency``).
``text``
    Text as models see it: PII ``redaction`` and the one normal form (``normalising``).
``base``
    What every process needs first: ``errors`` (with their HTTP status), ``settings``,
    the ``principals`` who may call (with their roles), rule regexes matched in linear
    time (``patterns``), JSON ``logs``, ``metrics`` helpers, the S3 artifact ``store``,
    ``retry`` with jittered back-off and the garbage-collector tuning (``heap``).
"""
