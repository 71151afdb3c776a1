"""The serve service's consumer: any change of evaluations, deployments or objectives.

A replica does not act on the message itself: the registry and the objectives in S3 are the
truth, so a message only wakes the reconciler (:mod:`tunewire.serve.deployments`), which
re-reads them and loads or unloads adapters until this replica serves what they say.
"""

from __future__ import annotations

from tunewire.core.bus import consuming, producing, topics
from tunewire.serve import config, deployments


def loop(
    settings: config.ServeSettings,
    deployed: deployments.Deployments,
    producer: producing.Producer,
) -> consuming.ConsumerLoop:
    """The consumer loop of the three topics that change what a replica serves."""
    return consuming.ConsumerLoop(
        config=settings.kafka,
        group_id=settings.consumer_group,
        topic_names=[topics.EVALUATIONS, topics.DEPLOYMENTS, topics.OBJECTIVES],
        handler=consuming.EachMessage(lambda _: deployed.wake.set()),
        producer=producer,
        flush_interval_s=1.0,
    )
