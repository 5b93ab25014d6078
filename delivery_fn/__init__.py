"""delivery_fn: alerts to webhooks and Log Analytics through the outbox, and the alert lifecycle over HTTP;
normalized events into Log Analytics when STORMWATCH_EVENTS_STREAM names the stream (`events_export`, on
its own consumer group of the normalized hub; not registered otherwise, so no consumer group is needed).

Bindings only; the work is `shared.delivery`. A timer (not the alerts hub) drives delivery: the outbox
in Table Storage is the source of truth, so a run that fails or a worker that restarts loses nothing,
and a receiver that is down only delays its own route. Timer runs are singletons across instances.
The engine is imported by the first invocation, not when the host indexes the app (cold start).
"""

import os
import typing

import azure.functions as func

from shared import settings as names
from shared.caller import route_auth_level
from shared.clients.eventhubs import EVENT_HUB_RETRY, bodies_with_positions, fanout_trigger

bp = func.Blueprint()

# Every minute, at second 20 (NCRONTAB with seconds): an alert waits at most about a minute plus its backoff.
DELIVERY_SCHEDULE = "20 * * * * *"


@bp.function_name("delivery")
@bp.timer_trigger(arg_name="timer", schedule=DELIVERY_SCHEDULE, run_on_startup=False, use_monitor=True)
def delivery(timer: func.TimerRequest) -> None:
    from shared.delivery.engine import deliverer, run_delivery  # noqa: PLC0415 - cold start

    run_delivery(deliverer())


@bp.function_name("alert_status")
@bp.route(route="alerts/{id}/status", methods=["GET", "POST"], auth_level=route_auth_level())
def alert_status(req: func.HttpRequest) -> func.HttpResponse:
    from shared.delivery.api import handle_status  # noqa: PLC0415 - cold start

    return handle_status(req)


def bind_events_export(blueprint: func.Blueprint) -> None:
    """The events_export function: the normalized hub on its own consumer group, retried like detect."""

    @blueprint.function_name("events_export")
    @blueprint.retry(**EVENT_HUB_RETRY)
    @blueprint.event_hub_message_trigger(**fanout_trigger(names.NORMALIZED_HUB, names.EVENTS_CONSUMER_GROUP))
    def events_export(events: typing.List[func.EventHubEvent]) -> None:
        from shared.delivery.events import export  # noqa: PLC0415 - cold start

        export(bodies_with_positions(events))


if os.environ.get(names.EVENTS_STREAM, "").strip():  # read at indexing, like shared.caller's auth mode
    bind_events_export(bp)
