"""Small pure helpers for reading loosely typed Azure records: keys in any casing, times, IPs, levels."""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import UTC, date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

import orjson

Record = dict[str, Any]


class MappingError(ValueError):
    """A record cannot become a normalized event; the message is the dead letter's reason."""


_LOWERED_SHAPES: dict[tuple[str, ...], tuple[str, ...]] = {}


def lower_keys(record: Record) -> Record:
    """The record's keys lower-cased, for the rarer sources whose casing varies most (Defender exports).

    Records of one source share a handful of key sets, so the lower-cased names are kept per key set
    (bounded) and zipped with the values in C instead of lower-casing every key of every record.
    """
    shape = tuple(record)
    names = _LOWERED_SHAPES.get(shape)
    if names is None:
        names = tuple(key.lower() for key in shape)
        if len(_LOWERED_SHAPES) < 4096:
            _LOWERED_SHAPES[shape] = names
    return dict(zip(names, record.values(), strict=True))


# The top-level names mappers read, spelled as Azure's common schemas document them. Records spelled
# otherwise (`ResultType`, `Level`, `TENANTID`) are renamed to these; correctly spelled ones are used as
# they are, which spares building a lower-cased copy of every record (a fifth of the mapping cost).
FIELD_SPELLINGS = (
    "time", "eventTimestamp", "timestamp", "timeGenerated", "eventTime",
    "resourceId", "operationName", "category", "resultType", "resultSignature", "resultDescription",
    "status", "durationMs", "callerIpAddress", "caller", "correlationId", "identity", "level",
    "location", "properties", "tenantId", "eventDataId",
    "eventType", "data", "id", "subject", "type", "SystemAlertId", "AlertDisplayName",
)
_SPELLING = {name.lower(): name for name in FIELD_SPELLINGS}
_RENAMES: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {}


def spelled_fields(record: Record) -> Record:
    """The record with the keys mappers read spelled as in FIELD_SPELLINGS, whatever their casing.

    Returns the record itself (not a copy) when it is already spelled so; callers must not mutate it.
    The renames are computed once per key set (bounded), as for `lower_keys`.
    """
    shape = tuple(record)
    renames = _RENAMES.get(shape)
    if renames is None:
        renames = tuple((key, spelling) for key in shape if (spelling := _SPELLING.get(key.lower(), key)) != key)
        if len(_RENAMES) < 4096:
            _RENAMES[shape] = renames
    if not renames:
        return record
    fields = record.copy()
    for key, spelling in renames:
        fields[spelling] = fields.pop(key)
    return fields


def first(fields: Record, *names: str) -> Any:
    """The first non-empty value among key names."""
    for name in names:
        value = fields.get(name)
        if value is not None and value != "":
            return value
    return None


def text(value: Any) -> str | None:
    """A value as a trimmed string; dicts of the REST shape `{"value": ...}` give their value."""
    if type(value) is str:  # the overwhelmingly common case, checked first: this runs per field
        stripped = value.strip()
        return stripped or None
    while isinstance(value, dict):  # a loop, not recursion: a record may nest `{"value": ...}` 1,000 deep
        value = value.get("value") or value.get("localizedValue")
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value).strip() or None
    return None


def first_text(fields: Record, names: tuple[str, ...]) -> str | None:
    """`text(fields.get(a)) or text(fields.get(b)) or ...` in one call: mappers try several names per field."""
    get = fields.get
    for name in names:
        value = get(name)
        if value is not None:
            found = value.strip() if type(value) is str else text(value)
            if found:
                return found
    return None


def copy_texts(target: Record, source: Record, names: tuple[tuple[str, str], ...]) -> None:
    """For each `(key, name)`, `target[key] = text(source[name])` when that is non-empty text."""
    get = source.get
    for key, name in names:
        value = get(name)
        if value is not None and (found := value.strip() if type(value) is str else text(value)):
            target[key] = found


def nested(record: Any, *path: str) -> Any:
    """Follow a path of keys (exact case) through nested dicts; None where it breaks."""
    for key in path:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def as_dict(value: Any) -> Record:
    """A dict, or an empty one for anything else (properties can be null or a string)."""
    return value if isinstance(value, dict) else {}


_US_TIME = re.compile(
    r"^(\d{1,2})/(\d{1,2})/(\d{4})[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(?:\s*([AaPp][Mm]))?(?:\s*(Z|[+-]\d{2}:?\d{2}))?$"
)
_ISO_FRACTION = re.compile(r"\.(\d+)")


def parse_time(value: Any) -> datetime:
    """Any time Azure writes (0-9 fraction digits, offsets, `Z`, US `M/D/YYYY h:mm:ss AM`) in UTC.

    A time without an offset is taken as UTC, which is what Azure logs mean by it.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        moment = _parse_time_text(value.strip())
    elif value is None:
        raise MappingError("record has no time")
    else:
        raise MappingError(f"time is not a string: {type(value).__name__}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError as error:  # `9999-12-31T23:00:00-05:00` is past year 9999 in UTC
        raise MappingError(f"time out of range in UTC: {str(value)[:64]!r}") from error


def _parse_time_text(value: str) -> datetime:
    if not value:
        raise MappingError("time is empty")
    if value[0].isdigit() and len(value) >= 10 and value[4] == "-":
        iso = value
        digits = _ISO_FRACTION.search(iso)
        if digits and len(digits.group(1)) > 6:  # Python keeps microseconds; drop nanoseconds
            iso = iso[: digits.start(1) + 6] + iso[digits.end(1):]
        try:
            return datetime.fromisoformat(iso)
        except ValueError:
            pass
    match = _US_TIME.match(value)
    if match is None:
        raise MappingError(f"unrecognized time format: {value[:64]!r}")
    month, day, year, hour, minute, second, fraction, meridiem, offset = match.groups()
    hour_number = int(hour)
    if meridiem:
        hour_number = hour_number % 12 + (12 if meridiem.lower() == "pm" else 0)
    try:
        moment = datetime(int(year), int(month), int(day), hour_number, int(minute), int(second or 0),
                          int((fraction or "0")[:6].ljust(6, "0")))
    except ValueError as error:
        raise MappingError(f"invalid time {value[:64]!r}: {error}") from error
    if offset and offset != "Z":
        sign = -1 if offset[0] == "-" else 1
        offset_digits = offset[1:].replace(":", "")
        delta = timedelta(hours=int(offset_digits[:2]), minutes=int(offset_digits[2:]))
        moment = moment.replace(tzinfo=timezone(sign * delta))
    return moment


_UTC_ISO = re.compile(r"\d{4}-\d\d-\d\dT(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?(?:Z|\+00:?00)\Z", re.ASCII)


def utc_text(value: Any) -> str:
    """`parse_time` then `format_time`, with fast paths for UTC times (`Z` or `+00:00`).

    Most Azure times are already UTC: they only need their fraction cut to microseconds, so the
    datetime round trip (a visible share of normalize's cost) is skipped. Azure's own forms
    (`2026-11-12T14:03:11.4620317Z` or `...4620317+00:00`) are checked whole by the C ISO parser once
    their separators are in place; other UTC forms by a regex (clock ranges) and a cache of known-good
    days; anything else takes the round trip. A hypothesis test holds all three to the same answers.
    """
    if type(value) is str:
        if ((value[27:] == "Z" or value[27:] == "+00:00") and value[19] == "." and value[10] == "T"
                and value[4] == "-" == value[7] and value[13] == ":" == value[16]):
            try:
                moment = _from_iso(value)
            except ValueError:
                moment = None
            if moment is not None:
                return value[:26] + "Z" if moment.microsecond else value[:19] + "Z"
        match = _UTC_ISO.match(value)
        if match and _is_date(value[:10]):
            fraction = match.group(1)
            if fraction is None or not fraction[1:7].strip("0"):  # no microseconds: none written
                return value[:19] + "Z"
            if len(fraction) >= 7:  # the dot and at least six digits: cut to microseconds
                return value[:26] + "Z"
            return value[:19] + fraction.ljust(7, "0") + "Z"
    return format_time(parse_time(value))


_from_iso = datetime.fromisoformat


@lru_cache(maxsize=4096)
def _is_date(day: str) -> bool:
    try:
        date.fromisoformat(day)
    except ValueError:
        return False
    return True


def format_time(moment: datetime) -> str:
    """ISO-8601 UTC with `Z`, microseconds only when present (the contract's JSON form)."""
    return moment.replace(tzinfo=None).isoformat() + "Z"


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def int64(value: int) -> int | None:
    """The integer when it fits 64 bits, else None: orjson (and every consumer of the contract) writes
    no larger integer, so a record's `durationMs` or error code beyond it is treated as absent."""
    return value if INT64_MIN <= value <= INT64_MAX else None


def valid_ip(value: Any) -> str | None:
    """A valid IPv4/IPv6 address in canonical form, else None (`<null>`, `NotSet`, wrong types)."""
    if type(value) is not str or not value or len(value) > 64:
        return None
    return _canonical_ip(value)


@lru_cache(maxsize=65536)
def _canonical_ip(value: str) -> str | None:
    """Cached: the same few addresses recur in every batch, and parsing them is a visible cost."""
    candidate = value.strip()
    if candidate.startswith("[") and "]" in candidate:  # [v6]:port
        candidate = candidate[1:candidate.index("]")]
    elif candidate.count(":") == 1:  # v4:port
        candidate = candidate.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


_LEVELS = {
    "critical": "Critical", "error": "Error", "warning": "Warning", "informational": "Informational",
    "information": "Informational", "info": "Informational", "verbose": "Informational",
    "1": "Critical", "2": "Error", "3": "Warning", "4": "Informational", "5": "Informational",
    "0": "Informational",
    # Defender for Cloud alert severities
    "high": "Critical", "medium": "Error", "low": "Warning",
}


# The spellings Azure actually writes (`Informational`, `Warning`, `WARNING`), looked up without lowering.
_LEVELS_AS_WRITTEN: dict[str | int, str] = {
    spelling: level for name, level in _LEVELS.items() for spelling in (name, name.capitalize(), name.upper())}
_LEVELS_AS_WRITTEN.update({int(name): level for name, level in _LEVELS.items() if name.isdigit()})  # `"Level": 4`


def severity(value: Any) -> str | None:
    """Map a level (name or Windows-style number) or alert severity to the contract's four values."""
    if type(value) is str or type(value) is int:
        known = _LEVELS_AS_WRITTEN.get(value)
        if known is not None:
            return known
    level = text(value)
    return _LEVELS.get(level.lower()) if level else None


_TITLED = frozenset({"Start", "Accept", "Success", "Succeeded", "Failure", "Failed", "Active", "Resolved",
                     "In Progress", "Updated", "Compliant", "NonCompliant", "Dismissed"})


def title(value: Any) -> str | None:
    """`succeeded` → `Succeeded`; `Start` stays; other values pass through title-cased."""
    if type(value) is str and value in _TITLED:  # the results Azure writes, already in shape
        return value
    word = text(value)
    if word is None:
        return None
    return word[:1].upper() + word[1:]


def parse_json_text(value: Any) -> Any:
    """Azure often nests JSON inside strings (`requestbody`, `policies`): parse it, or keep the text."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("{", "["):
            try:
                return orjson.loads(stripped)
            except orjson.JSONDecodeError:
                return value
    return value


def for_log(value: object) -> str:
    """A value from a record in a log line, JSON-encoded (ASCII): a newline, an ANSI escape or a bidi
    override in an `event_id` or a caller cannot forge or disguise a line. Never raises."""
    return json.dumps(value if isinstance(value, str) else str(value))


def is_loopback_host(host: str | None) -> bool:
    """`localhost` or a loopback address: where plain http and the emulator's well-known key are allowed."""
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
