"""detect_fn: normalized events from Event Hub → rules → state in Table Storage → alerts.

Bindings only; the work is `shared.detect.engine.detect_batch`. The retry policy covers the one case that
raises (state or alert table unreachable, alerts hub down): the Event Hub trigger checkpoints even after
a failure, so without it the batch would be lost. Retries are in memory and hold the partition; they
redeliver the same batch, and the per-partition watermarks in the state make the re-run change only
what the failed run had not yet written.
The engine is imported by the first invocation, not when the host indexes the app: every scale-out pays
the import of what the app registers (README "Scaling and cost", cold start).
"""

import typing
from datetime import UTC, datetime

import azure.functions as func

from shared import settings as names
from shared.clients.eventhubs import EVENT_HUB_RETRY, bodies_with_positions, fanout_trigger

bp = func.Blueprint()

# Hourly at minute 7 (NCRONTAB with seconds): horizons are minutes to days, so hourly is plenty, and
# a missed run only delays deletion — the next run catches up.
HOUSEKEEPING_SCHEDULE = "0 7 * * * *"


@bp.function_name("detect")
@bp.retry(**EVENT_HUB_RETRY)
@bp.event_hub_message_trigger(**fanout_trigger(names.NORMALIZED_HUB, names.DETECT_CONSUMER_GROUP))
def detect(events: typing.List[func.EventHubEvent]) -> None:
    from shared.detect.engine import detect_batch, detector  # noqa: PLC0415 - cold start

    detect_batch(bodies_with_positions(events), detector())


@bp.function_name("detect_housekeeping")
@bp.timer_trigger(arg_name="timer", schedule=HOUSEKEEPING_SCHEDULE, run_on_startup=False, use_monitor=True)
def detect_housekeeping(timer: func.TimerRequest) -> None:
    from shared.detect.engine import detector, housekeep  # noqa: PLC0415 - cold start

    housekeep(detector(), datetime.now(UTC))
